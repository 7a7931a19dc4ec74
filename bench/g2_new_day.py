#!/usr/bin/env python3
"""Issue 14's G2 in one sitting: one new device-day of dataset M, PyJAMA with no window
(each code version given) against pyperun's windowed run of that day.

    python3 bench/g2_new_day.py --pyjama BEFORE_TREE --pyjama AFTER_TREE [--pyperun CLONE] [--json out.json] [--keep DIR]

A project of 2 devices × 3 days of M (1 Hz, 13 channels, key:value, the seeded generator)
is built in full (not timed) by each PyJAMA tree given (a checkout of the code: its own
templates, its own Snakefile), then valve01's next day arrives and the re-run with no window
is timed: wall, CPU (user + system of the process tree), the jobs Snakemake ran, their
job-thread CPU from the job logs, and how many jobs logged ``kept``. pyperun (a local clone of
julienby/pyperun, installed as in bench/compare_pyperun.py) builds the same 3 days, then takes
the same new file with its window ``--from D --to D+1``. README "Performance" reports it.
Run it under ``flock /tmp/pyjama-bench.lock`` on a shared machine.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.compare_pyperun import pyperun_project, pyperun_venv, timed  # noqa: E402

DEVICES, DAYS, HZ, START = 2, 3, 1.0, "2026-01-20"


def job_log_figures(root: Path, since: float) -> dict:
    """Job-thread CPU and the kept count of the jobs whose logs were written after ``since``."""
    cpu, jobs, kept = 0.0, 0, 0
    for log in (root / "logs/BENCH").rglob("*.log"):
        if log.stat().st_mtime < since:
            continue
        text = log.read_text(errors="replace")
        jobs += 1
        kept += ": kept\n" in text
        m = re.search(r"thread CPU ([0-9.]+) s", text)
        cpu += float(m.group(1)) if m else 0.0
    return {"logged_jobs": jobs, "kept": kept, "job_thread_cpu": round(cpu, 2)}


def create_project(tree: Path, root: Path, raw: list) -> None:
    """A project at ``root`` made by ``tree``'s own ``create`` (its templates), ``raw`` copied in."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
            "from pyjama.manage import create; create('BENCH', Path(sys.argv[2]))")
    subprocess.run([sys.executable, "-c", code, str(tree), str(root)], check=True, env=tree_env(tree))
    for f in raw:
        shutil.copy(f, root / "data/BENCH/00_raw" / f.name)


def tree_env(tree: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    return env


def snakemake_run(tree: Path, root: Path) -> dict:
    """``snakemake --cores 2`` with ``tree``'s Snakefile in ``root``, no window: :func:`timed`'s
    figures plus ``jobs`` (Snakemake's steps without ``all``; None when it printed none)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(tree / "workflow/Snakefile"), "--cores", "2",
           "--config", "exposure=BENCH"]
    r = timed(cmd, root, tree_env(tree))
    m = re.search(r"(\d+) of (\d+) steps \(100%\) done", r["out"])
    r["jobs"] = int(m.group(2)) - 1 if m else None
    return r


def new_day_files(work: Path, days: int = DAYS) -> tuple:
    """(the raw files of DEVICES × ``days`` of M from START, valve01's next day's file, that
    day): the seeded generator, the new day with its own seed."""
    from pyjama.demo import generate

    generate(work / "raw", "BENCH", devices=DEVICES, days=days, hz=HZ, start=START)
    new_day = dt.date.fromisoformat(START) + dt.timedelta(days=days)
    generate(work / "newday", "BENCH", devices=1, days=1, hz=HZ, start=new_day.isoformat(), seed=7)
    return (sorted((work / "raw").glob("BENCH_*.csv")), work / "newday" / f"BENCH_valve01_{new_day}.csv",
            new_day)


def pyjama_new_day(tree: Path, raw: list, new: Path, work: Path) -> dict:
    import time

    root = work / f"pyjama-{tree.name}"
    create_project(tree, root, raw)
    full = snakemake_run(tree, root)
    shutil.copy(new, root / "data/BENCH/00_raw" / new.name)
    t0 = time.time()
    inc = snakemake_run(tree, root)
    return {"wall": inc["wall"], "cpu": inc["cpu"], "jobs": inc["jobs"],
            "full_build": {"wall": full["wall"], "cpu": full["cpu"]}, **job_log_figures(root, t0)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pyjama", action="append", required=True, help="a PyJAMA tree (repeat: before, after)")
    p.add_argument("--pyperun", help="a local clone of https://github.com/julienby/pyperun")
    p.add_argument("--json")
    p.add_argument("--keep", help="make the projects in this folder and keep them")
    a = p.parse_args(argv)
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="g2-"))
    work.mkdir(parents=True, exist_ok=True)
    raw, new, new_day = new_day_files(work)
    with open("/proc/loadavg") as fh:
        fig = {"load_at_start": fh.read().split()[:3], "pyjama": {}}
    for tree in a.pyjama:
        fig["pyjama"][tree] = pyjama_new_day(Path(tree).resolve(), raw, new, work)
        print(json.dumps({tree: fig["pyjama"][tree]}), file=sys.stderr)
    if a.pyperun:
        exe = pyperun_venv(Path(a.pyperun).resolve())
        pp = work / "pyperun"
        pyperun_project(pp, exe, raw)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        timed([str(exe), "flow", "bench"], pp, env)
        shutil.copy(new, pp / "datasets/BENCH/00_raw" / new.name)
        r = timed([str(exe), "flow", "bench", "--from", f"{new_day}T00:00:00Z",
                   "--to", f"{new_day + dt.timedelta(days=1)}T00:00:00Z"], pp, env)
        fig["pyperun_windowed"] = {"wall": r["wall"], "cpu": r["cpu"]}
    with open("/proc/loadavg") as fh:
        fig["load_at_end"] = fh.read().split()[:3]
    print(json.dumps(fig, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=2) + "\n")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
