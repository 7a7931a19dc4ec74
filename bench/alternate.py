#!/usr/bin/env python3
"""Two code versions alternated on the same files: the evidence for what a change gained.

    python3 bench/alternate.py new-day BEFORE_TREE AFTER_TREE [--pairs 5] [--work DIR]
    python3 bench/alternate.py full BEFORE_TREE AFTER_TREE [--pairs 2] [--work DIR]

On a shared machine one run's wall time moves by a quarter between sittings, so one sample
of each version says little; runs of the two versions one after the other, several times,
do (README "Performance" reports them as pairs). A tree is a checkout of the code (its own
Snakefile and templates); both must give their steps the same code version
(``pyjama.keep.code_version``) for ``new-day``, else the replay recomputes every day.

- ``new-day``: a project of 2 devices × 3 days of dataset M (1 Hz, the seeded generator) is
  built once by BEFORE_TREE and kept as a snapshot; each run copies the snapshot, adds
  valve01's next day and times ``snakemake --cores 2`` with the tree's Snakefile (no window):
  the G2 case (14 jobs, in job threads).
- ``full``: a fresh project of dataset M (2 devices × 14 days) and its full build with
  ``--cores 2`` (227 jobs, in worker processes): the G1 case without pyperun.

Prints one line per run (wall, CPU of the process tree, jobs), then the median of each tree
and in how many pairs AFTER was faster. Run it under ``flock /tmp/pyjama-bench.lock``.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.compare_pyperun import SIZES  # noqa: E402
from bench.g2_new_day import create_project, new_day_files, snakemake_run  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", choices=["new-day", "full"])
    p.add_argument("before", help="the code before the change (a checkout)")
    p.add_argument("after", help="the code after it")
    p.add_argument("--pairs", type=int, default=None, help="pairs of runs (default: 5 new-day, 2 full)")
    p.add_argument("--work", help="keep the projects in this folder (default: a temporary one, removed)")
    a = p.parse_args(argv)
    trees = [Path(a.before).resolve(), Path(a.after).resolve()]
    for t in trees:
        if not (t / "workflow/Snakefile").is_file():
            raise SystemExit(f"Error: {t}: not a PyJAMA checkout (no workflow/Snakefile); allowed: a tree of this repository")
    pairs = a.pairs or (5 if a.case == "new-day" else 2)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="pyjama-alternate-"))
    work.mkdir(parents=True, exist_ok=True)
    raw, new, _ = new_day_files(work, days=3 if a.case == "new-day" else SIZES["M"]["days"])
    runs: dict = {0: [], 1: []}
    if a.case == "new-day":
        snap = work / "snapshot"
        shutil.rmtree(snap, ignore_errors=True)
        create_project(trees[0], snap, raw)
        snakemake_run(trees[0], snap)
    for i in range(pairs):
        for k, tree in enumerate(trees):
            root = work / f"run-{k}"
            shutil.rmtree(root, ignore_errors=True)
            if a.case == "new-day":
                subprocess.run(["cp", "-a", str(snap), str(root)], check=True)
                shutil.copy(new, root / "data/BENCH/00_raw" / new.name)
            else:
                create_project(tree, root, raw)
            r = snakemake_run(tree, root)
            runs[k].append(r["wall"])
            print(f"pair {i + 1} {'before' if k == 0 else 'after '} {tree}: wall {r['wall']:.2f} s, "
                  f"CPU {r['cpu']:.2f} s, {r['jobs']} jobs", flush=True)
    faster = sum(after < before for before, after in zip(runs[0], runs[1]))
    print(f"{a.case}: median wall before {statistics.median(runs[0]):.2f} s, after {statistics.median(runs[1]):.2f} s; "
          f"after faster in {faster} of {pairs} pairs")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
