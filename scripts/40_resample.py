#!/usr/bin/env python3
"""Step 40_resample: a thin shell; the work is in the pyjama package (pyjama.steps).

    python3 scripts/40_resample.py --with configs/DEMO/40_resample.json [--from A --to B]
is the same as
    python3 pyjama.py run 40_resample.py --with configs/DEMO/40_resample.json [--from A --to B]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyjama.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", "40_resample.py", *sys.argv[1:]]))
