#!/usr/bin/env python3
"""Run ONE PyJAMA step:  python3 pyjama.py run 20_split.py --with configs/DEMO/20_split.json"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyjama.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
