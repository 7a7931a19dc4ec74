#!/usr/bin/env python3
"""What a sparse day costs at 40_resample: rows, bytes and seconds, dense vs sparse grid.

    python3 bench/grid_sizes.py [--real ../shared/data/real] [--build DEVICES DAYS]

Two cases from issue 11 (the "691,200-row sparse grid" wall) and issue 14 (G3):

- OWHL hour: the two real OWHL files (18:20–19:20, 4 Hz, pressure + temperature) parsed
  with configs/examples/OWHL/10_parser.json *without* its deployment span (the whole hour),
  on a 250 ms grid (max_gap 1 s);
- slow-logger day: one line per hour (12 Hall channels + outdoor_temp, the demo generator's
  values), the template's grid (bio 1 s, environment 10 s).

Each on ``sparse_after`` null (every cell written, the grid before issue 11) and "10min"
(the template). ``--build D N``: issue 14's G3 shape at a size you choose — D hourly
loggers × N days, template configs, full build 10→70 through Snakemake ``--cores 2`` —
once per ``sparse_after``: wall, jobs, and rows and bytes per stage. Bytes = the partition file :func:`pyjama.io.write_tidy` writes (snappy,
delta-encoded ts). Seconds = best of 3 of :func:`pyjama.resample.resample_frame` (+ write).
Not a timed test: the ratios are taken in one run.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def owhl_hour(real: Path):
    import pandas as pd

    from pyjama.parse import parse_bytes, read_raw_bytes
    from pyjama.pipeline import load_step_config

    st = load_step_config("10_parser.py", "configs/examples/OWHL/10_parser.json", REPO)
    params = copy.deepcopy(st.params)
    params["deployment"] = {}
    frames = [parse_bytes(read_raw_bytes(real / f), params, f).rows
              for f in ("owhl_20160819_1820_00.csv", "owhl_20160819_1900_00.csv")]
    df = pd.concat(frames, ignore_index=True).sort_values(["sensor", "ts"], kind="stable")
    rule = {"freq": "250ms", "reduce": "mean", "fill": "linear", "max_gap": "1s"}
    return df, "2016-08-19", rule


def slow_day():
    import pandas as pd

    from pyjama.demo import generate
    from pyjama.manage import create
    from pyjama.parse import parse_bytes, read_raw_bytes
    from pyjama.pipeline import load_step_config

    tmp = Path(tempfile.mkdtemp())
    create("BENCH", tmp)
    generate(tmp / "raw", "BENCH", devices=1, days=1, hz=1 / 3600, defects=False)
    st = load_step_config("10_parser.py", "configs/BENCH/10_parser.json", tmp)
    f = next((tmp / "raw").glob("BENCH_*.csv"))
    df = parse_bytes(read_raw_bytes(f), st.params, f.name).rows
    return pd.DataFrame(df), "2026-01-20", None


def measure(df, day, rule, sparse_after):
    from pyjama import io, resample

    tmpl = json.loads((REPO / "configs/_template/40_resample.json").read_text().replace("{{EXPOSURE}}", "B"))
    if rule is None:
        params = {k: tmpl[k] for k in ("domains", "default_rule", "sensors")}
    else:
        params = {"domains": {}, "default_rule": dict(rule), "sensors": {}}
    for r in [*params["domains"].values(), params["default_rule"]]:
        r["sparse_after"] = sparse_after
    out_path = Path(tempfile.mkdtemp()) / "part.parquet"
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        out, counts = resample.resample_frame(df, params, day)
        io.write_tidy(out_path, out, {"step": "bench"})
        took = time.perf_counter() - t0
        best = took if best is None else min(best, took)
    return {"rows_in": len(df), "rows_out": len(out), "missing": counts["missing"],
            "not_stored": counts["cells_not_stored"], "expected": counts["cells_expected"],
            "bytes": out_path.stat().st_size, "seconds": best}


def build(devices: int, days: int, sparse_after) -> dict:
    """A G3-shaped full build with the template configs and the given ``sparse_after``."""
    import pyarrow.parquet as pq

    sys.path.insert(0, str(REPO / "bench"))
    from run import job_stats, snakemake

    from pyjama.demo import generate
    from pyjama.manage import create

    root = Path(tempfile.mkdtemp(prefix="grid-build-"))
    create("BENCH", root)
    cfg = root / "configs/BENCH/40_resample.json"
    c = json.loads(cfg.read_text())
    for r in [*c["domains"].values(), c["default_rule"]]:
        r["sparse_after"] = sparse_after
    cfg.write_text(json.dumps(c))
    generate(root / "data/BENCH/00_raw", "BENCH", devices=devices, days=days, hz=1 / 3600, defects=False)
    wall, text = snakemake(root)
    stages = {}
    for f in sorted((root / "data/BENCH").rglob("*.parquet")):
        stage = f.relative_to(root / "data/BENCH").parts[0]
        if stage.startswith("_"):
            continue
        rows, size = stages.get(stage, (0, 0))
        stages[stage] = (rows + pq.ParquetFile(f).metadata.num_rows, size + f.stat().st_size)
    return {"wall": wall, "jobs": sum(job_stats(text).values()), "stages": stages}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", default=str(REPO.parent / "shared/data/real"))
    ap.add_argument("--build", nargs=2, type=int, metavar=("DEVICES", "DAYS"),
                    help="also a full build of DEVICES hourly loggers × DAYS days, dense and sparse")
    a = ap.parse_args(argv)
    cases = [("slow-logger day (1 line/h, template grid)", slow_day())]
    real = Path(a.real)
    if (real / "owhl_20160819_1820_00.csv").exists():
        cases.insert(0, ("OWHL hour (4 Hz, 250 ms grid, no span)", owhl_hour(real)))
    else:
        print(f"OWHL hour: skipped (no real files at {real})")
    print(f"{'case':44s} {'sparse_after':>12s} {'rows in':>8s} {'rows out':>9s} {'missing':>8s} "
          f"{'not stored':>10s} {'bytes':>9s} {'s':>6s}")
    for name, (df, day, rule) in cases:
        for sparse in (None, "10min"):
            m = measure(df, day, rule, sparse)
            print(f"{name:44s} {sparse!s:>12s} {m['rows_in']:8d} {m['rows_out']:9d} {m['missing']:8d} "
                  f"{m['not_stored']:10d} {m['bytes']:9d} {m['seconds']:6.3f}")
    if a.build:
        runs = {sparse: build(*a.build, sparse) for sparse in (None, "10min")}
        print(f"\nfull build, {a.build[0]} hourly loggers × {a.build[1]} days, template configs, --cores 2")
        print(f"{'sparse_after':>12s} {'wall s':>7s} {'jobs':>5s}   rows / MB per stage")
        for sparse, r in runs.items():
            per = ", ".join(f"{k} {v[0]:,} / {v[1] / 1e6:.1f}" for k, v in r["stages"].items())
            print(f"{sparse!s:>12s} {r['wall']:7.1f} {r['jobs']:5d}   {per}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
