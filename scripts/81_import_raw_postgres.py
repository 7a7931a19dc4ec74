#!/usr/bin/env python3
"""Step 81_import_raw_postgres: a thin shell; the work is in the pyjama package (pyjama.steps).

    python3 scripts/81_import_raw_postgres.py --with configs/DEMO/81_import_raw_postgres_10s.json [--from A --to B | --mode auto] [--dry-run]
is the same as
    python3 pyjama.py run 81_import_raw_postgres.py --with configs/DEMO/81_import_raw_postgres_10s.json [--from A --to B | --mode auto] [--dry-run]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyjama.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", "81_import_raw_postgres.py", *sys.argv[1:]]))
