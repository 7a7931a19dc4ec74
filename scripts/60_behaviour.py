#!/usr/bin/env python3
"""Step 60_behaviour: a thin shell; the work is in the pyjama package (pyjama.steps).

    python3 scripts/60_behaviour.py --with configs/DEMO/60_behaviour.json [--from A --to B]
is the same as
    python3 pyjama.py run 60_behaviour.py --with configs/DEMO/60_behaviour.json [--from A --to B]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyjama.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", "60_behaviour.py", *sys.argv[1:]]))
