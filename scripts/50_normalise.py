#!/usr/bin/env python3
"""Step 50_normalise: a thin shell; the work is in the pyjama package (pyjama.normalise).

    python3 scripts/50_normalise.py --with configs/DEMO/50_normalise.json [--from A --to B]
is the same as
    python3 pyjama.py run 50_normalise.py --with configs/DEMO/50_normalise.json [--from A --to B]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyjama.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", "50_normalise.py", *sys.argv[1:]]))
