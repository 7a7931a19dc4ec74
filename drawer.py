#!/usr/bin/env python3
"""Run and inspect a PyJAMA PIPELINE:  python3 drawer.py run configs/DEMO/pipeline.json"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyjama.drawer import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
