#!/usr/bin/env python3
"""The one shell of every numbered step: ``scripts/NN_name.py`` is a link to this file, and
the step it runs is the name it was called by (the registry knows the rest)::

    python3 scripts/30_clean.py --with configs/DEMO/30_clean.json [--from A --to B]
is the same as
    python3 pyjama.py run 30_clean.py --with configs/DEMO/30_clean.json [--from A --to B]

The links are made from the step registry: ``python3 -m pyjama.docs_gen`` (a test fails
when one is missing or left over).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyjama.cli import main  # noqa: E402

if __name__ == "__main__":
    if Path(sys.argv[0]).name == "step.py":   # the shell itself, not a step's link
        asked = bool({"-h", "--help"} & set(sys.argv[1:]))
        print("usage: python3 scripts/NN_name.py --with CONFIG [--from A] [--to B] [options of the step]\n\n"
              + __doc__.strip(), file=sys.stdout if asked else sys.stderr)
        sys.exit(0 if asked else 2)
    sys.exit(main(["run", Path(sys.argv[0]).name, *sys.argv[1:]]))
