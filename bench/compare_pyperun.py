#!/usr/bin/env python3
"""PyJAMA next to pyperun (julienby/pyperun) on the same generated files, in one sitting.

    python3 bench/compare_pyperun.py --pyperun /path/to/pyperun-clone [--size small|M] [--json out.json]

pyperun is not on the package index: clone its public repository
(``git clone https://github.com/julienby/pyperun``) and pass the clone's path. Without
``--pyperun`` (or when the path is not a pyperun clone) the script prints
``pyperun comparison: not available (...)`` and exits 0, so CI can call it blindly.

What it does, in this order (both tools back to back, so machine noise mostly cancels in
the ratios; on a shared 2-core machine take ratios, not absolute seconds):

1. installs the clone in its own venv ``/tmp/pyperun-bench-venv-<commit>`` (reused when it
   exists). The venv sees this interpreter's site-packages through a ``.pth`` file, so both
   tools run on the same pandas/pyarrow builds; pip adds only what pyperun needs beyond them;
2. generates the dataset with PyJAMA's seeded generator (``pyjama.demo.generate``, key:value
   format, 12 Hall channels + temperature, defects on) once, and gives the same files to both
   tools. Sizes: ``small`` = 2 devices × 2 days × 0.1 Hz (a smoke run), ``M`` = 2 devices ×
   14 days × 1 Hz (2.42 M lines, issue 14's dataset M);
3. full build: PyJAMA ``snakemake --cores N`` (parse → aggregate, the template pipeline),
   then pyperun ``pyperun flow bench`` (parse → aggregate with its init defaults and
   ``normalize.fit = true``, one process);
4. one new device-day (day 15 of device 1): PyJAMA re-run with no window; pyperun with the
   window of that day (``--from D --to D+1``), its fastest way to take a new day;
5. nothing new: PyJAMA re-run (pyperun has no no-op: it rebuilds what its window covers).

Wall seconds and CPU seconds (user + system of the whole process tree, from
``getrusage(RUSAGE_CHILDREN)``) per scenario, and the ratio PyJAMA / pyperun.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIZES = {
    "small": {"devices": 2, "days": 2, "hz": 0.1},
    "M": {"devices": 2, "days": 14, "hz": 1.0},
}
PYPERUN_STEPS = ["parse", "clean", "resample", "transform", "normalize", "aggregate"]


def not_available(why: str) -> dict:
    print(f"pyperun comparison: not available ({why}; pass --pyperun PATH, a local clone of "
          "https://github.com/julienby/pyperun)")
    return {"available": False, "why": why}


def timed(cmd, cwd, env=None) -> dict:
    """Run ``cmd``; wall and CPU (user + system of the process tree) seconds."""
    # both tools as on a user's machine, where Python keeps its bytecode caches: a sandbox
    # that sets PYTHONDONTWRITEBYTECODE makes every process compile each module it imports
    # from a source tree (PyJAMA's ~0.15 s per Snakemake run, pyperun's from its clone)
    env = {k: v for k, v in (os.environ if env is None else env).items() if k != "PYTHONDONTWRITEBYTECODE"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"compare_pyperun: {' '.join(map(str, cmd))} failed (exit {res.returncode}):\n"
                         f"{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": round(wall, 3), "cpu": round(cpu, 3), "out": res.stdout + res.stderr}


def pyperun_venv(clone: Path) -> Path:
    """A venv with the clone installed; reused per commit. Returns its ``pyperun`` script."""
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    venv = Path(tempfile.gettempdir()) / f"pyperun-bench-venv-{commit}"
    exe = venv / "bin" / "pyperun"
    if exe.exists():
        return exe
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    purelib = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    import sysconfig

    # the same pandas/pyarrow builds for both tools
    Path(purelib, "pyjama-shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([str(vpy), "-m", "pip", "install", "-q", str(clone)], capture_output=True, text=True)
    if r.returncode != 0 or not exe.exists():
        shutil.rmtree(venv, ignore_errors=True)
        raise SystemExit(f"compare_pyperun: pip install {clone} failed:\n{r.stderr[-2000:]}")
    return exe


def pyperun_project(root: Path, exe: Path, raw_files) -> None:
    root.mkdir(parents=True)
    (root / "presets.json").write_text(json.dumps({"core": PYPERUN_STEPS}))
    subprocess.run([str(exe), "init", "BENCH", "--preset", "core"], cwd=root, check=True,
                   capture_output=True, text=True)
    flow_path = root / "flows" / "bench.json"
    flow = json.loads(flow_path.read_text())
    for st in flow["steps"]:
        if st["treatment"] == "normalize":      # as pyperun's own reference flow (seed.py)
            st.setdefault("params", {})["fit"] = True
    flow_path.write_text(json.dumps(flow, indent=2))
    raw = root / "datasets" / "BENCH" / "00_raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in raw_files:
        shutil.copy(f, raw / f.name)


def pyjama_env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO)
    return e


def pyjama_run(root: Path, cores: int) -> dict:
    return timed([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow/Snakefile"),
                  "--cores", str(cores), "--config", "exposure=BENCH"], root, pyjama_env())


def compare(clone: str | None, size: str = "small", cores: int = 2, keep: str | None = None) -> dict:
    if not clone:
        return not_available("no clone given")
    clone_p = Path(clone).expanduser().resolve()
    if not (clone_p / "pyperun" / "cli.py").exists():
        return not_available(f"{clone_p} is not a pyperun clone (no pyperun/cli.py)")
    from pyjama.demo import generate
    from pyjama.manage import create

    exe = pyperun_venv(clone_p)
    spec = SIZES[size]
    tmp = Path(keep or tempfile.mkdtemp(prefix="pyjama-vs-pyperun-"))
    tmp.mkdir(parents=True, exist_ok=True)
    pj = tmp / "pyjama"
    pj.mkdir()
    create("BENCH", pj)
    raw_dir = pj / "data/BENCH/00_raw"
    generate(raw_dir, "BENCH", devices=spec["devices"], days=spec["days"], hz=spec["hz"])
    raw_files = sorted(raw_dir.glob("BENCH_*.csv"))
    pp = tmp / "pyperun"
    pyperun_project(pp, exe, raw_files)
    fig = {"available": True, "size": size, "cores": cores, "spec": spec,
           "raw_lines": sum(sum(1 for _ in open(f, "rb")) for f in raw_files),
           "raw_bytes": sum(f.stat().st_size for f in raw_files)}
    pp_env = dict(os.environ)
    pp_env.pop("PYTHONPATH", None)

    print(f"compare: {size} {spec} in {tmp}", file=sys.stderr)
    fig["full"] = {"pyjama": pyjama_run(pj, cores),
                   "pyperun": timed([str(exe), "flow", "bench"], pp, pp_env)}
    # one new device-day
    last = max(dt.date.fromisoformat(f.stem.rsplit("_", 1)[1]) for f in raw_files)
    new_day = last + dt.timedelta(days=1)
    gen = tmp / "newday"
    generate(gen, "BENCH", devices=1, days=1, hz=spec["hz"], start=new_day.isoformat(), seed=7)
    new = gen / f"BENCH_valve01_{new_day.isoformat()}.csv"
    shutil.copy(new, raw_dir / new.name)
    shutil.copy(new, pp / "datasets/BENCH/00_raw" / new.name)
    fig["new_day"] = {"pyjama": pyjama_run(pj, cores),
                      "pyperun": timed([str(exe), "flow", "bench", "--from", f"{new_day}T00:00:00Z",
                                        "--to", f"{new_day + dt.timedelta(days=1)}T00:00:00Z"], pp, pp_env)}
    fig["noop"] = {"pyjama": pyjama_run(pj, cores), "pyperun": None}
    for sc in ("full", "new_day", "noop"):
        for tool in ("pyjama", "pyperun"):
            if fig[sc][tool]:
                fig[sc][tool].pop("out", None)
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return fig


def report(fig: dict) -> None:
    if not fig.get("available"):
        return
    s = fig["spec"]
    print(f"\nPyJAMA vs pyperun — {s['devices']} devices × {s['days']} days × {s['hz']} Hz "
          f"({fig['raw_lines']:,} lines, {fig['raw_bytes'] / 1e6:.0f} MB), PyJAMA --cores {fig['cores']}, "
          "same files, one sitting\n")
    print(f"{'scenario':<28}{'PyJAMA wall':>12}{'CPU':>8}{'pyperun wall':>14}{'CPU':>8}"
          f"{'wall ratio':>12}{'CPU ratio':>11}")
    names = {"full": "full build parse→aggregate", "new_day": "one new device-day",
             "noop": "nothing new"}
    for sc, label in names.items():
        a, b = fig[sc]["pyjama"], fig[sc]["pyperun"]
        if b:
            print(f"{label:<28}{a['wall']:>12.2f}{a['cpu']:>8.1f}{b['wall']:>14.2f}{b['cpu']:>8.1f}"
                  f"{a['wall'] / b['wall']:>12.2f}{a['cpu'] / max(b['cpu'], 1e-9):>11.2f}")
        else:
            print(f"{label:<28}{a['wall']:>12.2f}{a['cpu']:>8.1f}{'(rebuilds)':>14}{'':>8}{'—':>12}{'—':>11}")
    print("\nratio = PyJAMA / pyperun (below 1: PyJAMA faster). pyperun's new day uses its time "
          "window; PyJAMA's uses none.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pyperun", help="path of a local clone of https://github.com/julienby/pyperun")
    p.add_argument("--size", choices=list(SIZES), default="small")
    p.add_argument("--cores", type=int, default=2, help="PyJAMA's --cores (default 2)")
    p.add_argument("--json", help="also write the figures as JSON to this file")
    p.add_argument("--keep", help="keep both projects in this folder")
    a = p.parse_args(argv)
    fig = compare(a.pyperun, a.size, a.cores, a.keep)
    report(fig)
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
