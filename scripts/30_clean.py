#!/usr/bin/env python3
"""Step 30_clean: a thin shell; the work is in the pyjama package (pyjama.steps).

    python3 scripts/30_clean.py --with configs/DEMO/30_clean.json [--from A --to B]
is the same as
    python3 pyjama.py run 30_clean.py --with configs/DEMO/30_clean.json [--from A --to B]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyjama.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", "30_clean.py", *sys.argv[1:]]))
