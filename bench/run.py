#!/usr/bin/env python3
"""PyJAMA benchmark suite: speed as ratios measured in ONE run (machine noise cancels).

    python3 bench/run.py [--size small|medium|large] [--json out.json] [--keep DIR] [--pyperun CLONE]

Generates its own data with the project's seeded generator (key:value format, 12 Hall
channels + temperature), runs each scenario in a fresh temporary exposure, prints one table.
small: a smoke test (CI runs it: does it run, do ratios print); never a timed assertion.
medium: 2 devices × 14 days × 1 Hz (≈ 2.4 M raw lines, 31 M values).
large: medium + one 10 Hz device-day (≈ 11 M long rows in one partition).

Scenarios (goals from the project's performance issue):
  1 floor        read all raw bytes, parse to the long table, write snappy parquet once (bare pyarrow)
  2 full         full rebuild 10→70 through Snakemake --cores 2          goal ≤ 5 × floor, overhead ≤ 15 %
  3 noop         re-run with nothing changed                              goal ≤ 3 s and 0 jobs
  4 incremental  one new raw day for one device, re-run                   goal ≤ 1/10 of full, only its jobs
  5 dryrun_year  snakemake -n over 2 devices × 365 days of tiny files     goal ≤ 5 s (warm index)
  6 memory       peak RSS of the largest single job (10 Hz day: large)    goal ≤ 2 GB
  7 import80     idempotent 80 import vs bare COPY (bench/bench_postgres.py, needs PostgreSQL)  goal ≥ 0.3
  8 auto81       81 --mode auto with nothing new                          goal ≤ 2 s

Issue 14's goals (same run; "when filed" = the figures the issue was filed with, in BEFORE):
  G1 full build of M at --cores 2 ≤ 1/3 of pyperun's wall     (needs --pyperun CLONE: bench/compare_pyperun.py)
  G2 one new device-day of M ≤ pyperun's windowed run        (idem)
  G3 slow logger (3 devices × 450 days × 1 line/h, templates): full ≤ 60 s, no-op ≤ 3 s
     (small: 2 × 2 days; medium/large: the real size)
  G4 network plan (20 devices × 365 days × 1 line/h): dry run ≤ 10 s warm; windowed cron run
     (--config from={NOW-2d}) with nothing new ≤ 3 s (small: 2 × 10 days)
  G5 SLURM: submitted jobs ≤ device-days ÷ knob (group-components in workflow/profiles/slurm;
     measured on a real cluster by tests/test_slurm.py, reported here from the profile)
"""
from __future__ import annotations

import argparse
import json
import os
import re
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
    "small": {"devices": 2, "days": 2, "hz": 0.1, "hz10": None, "slow": (2, 2), "network": (2, 10)},
    "medium": {"devices": 2, "days": 14, "hz": 1.0, "hz10": None, "slow": (3, 450), "network": (20, 365)},
    "large": {"devices": 2, "days": 14, "hz": 1.0, "hz10": 10.0, "slow": (3, 450), "network": (20, 365)},
}

# The figures issue 14 was filed with (README "Performance", column "when filed"; session 3's
# slower baseline, 2.47 x and 2.13 x at load 10-13, is in docs/performance-history.md).
BEFORE = {
    "G1": "1.75 × pyperun wall (77–79 s vs 44–45 s; ~140 vs ~45 CPU-s; as filed)",
    "G2": "3.8 × pyperun windowed (10 s vs 2.6 s; as filed)",
    "G3": "~30 min full (10,804 jobs, 0.17 s each); no-op —",
    "G4": "76–94 s dry run (58,421 jobs); windowed no-op —",
    "G5": "1 SLURM job per Snakemake job (no grouping)",
}


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO)
    return e


def run(cmd, cwd):
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env())
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"bench: {' '.join(map(str, cmd))} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return wall, res.stdout + res.stderr


def snakemake(root, *args):
    return run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow/Snakefile"), "--cores", "2",
                *args, "--config", "exposure=BENCH"], root)


def job_stats(text) -> dict:
    m = re.search(r"Job stats:\n(.*?)\n\n", text + "\n\n", re.S)
    jobs = {}
    if m:
        for line in m.group(1).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job", "all"):
                jobs[parts[0]] = int(parts[1])
    return jobs


def make_exposure(root: Path, devices, days, hz, start="2026-01-20"):
    from pyjama.demo import generate
    from pyjama.manage import create

    create("BENCH", root)
    return generate(root / "data/BENCH/00_raw", "BENCH", devices=devices, days=days, hz=hz, start=start)


# ---------------------------------------------------------------- 1 floor

def bare_parse_to_parquet(src: Path, dst: Path) -> int:
    """The floor: raw bytes → long table (ts, sensor, value) → snappy parquet, nothing else."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    text = src.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    lines.pop()  # "" after a final line end, or a cut last line (a power loss): dropped
    arr = pa.array(lines, pa.string())
    tok = pc.split_pattern(arr, ";")
    ts = pc.cast(pc.list_element(tok, 0), pa.timestamp("us", tz="UTC"))
    rest = pc.list_slice(tok, 1)
    pairs = pc.list_flatten(rest)
    parent = pc.list_parent_indices(rest)
    kv = pc.split_pattern(pairs, ":", max_splits=1)
    key = pc.list_element(kv, 0)
    val = pc.cast(pc.list_element(kv, 1), pa.float64())
    t = pa.table({"ts": ts.take(parent), "sensor": key.dictionary_encode(), "value": val})
    pq.write_table(t, dst, compression="snappy")
    return t.num_rows


def floor(root: Path) -> dict:
    raw = sorted((root / "data/BENCH/00_raw").glob("*.csv"))
    out = Path(tempfile.mkdtemp(prefix="floor-"))
    rows, errors = 0, 0
    t0 = time.perf_counter()
    for f in raw:
        try:
            rows += bare_parse_to_parquet(f, out / (f.name + ".parquet"))
        except Exception:  # the generator's truncated last line breaks the bare cast: count it
            errors += 1
    wall = time.perf_counter() - t0
    shutil.rmtree(out)
    return {"wall": wall, "rows": rows, "files": len(raw), "bare_failures": errors}


# ---------------------------------------------------------------- 2-4 the workflow

def job_seconds(root: Path, cpu: bool = False) -> dict:
    """Seconds spent inside jobs, per step, from the job logs ('done in X s (thread CPU Y s)',
    or '(thread CPU Y s; worker process P)'): wall, or with ``cpu`` the CPU seconds of the
    job's thread and its worker (not inflated by other load)."""
    per = {}
    for log in (root / "logs/BENCH").rglob("*.log"):
        m = re.search(r"done in ([0-9.]+) s(?: \(thread CPU ([0-9.]+) s[;)])?", log.read_text(errors="replace"))
        if m and (m.group(2) or not cpu):
            step = log.relative_to(root / "logs/BENCH").parts[0]
            per[step] = per.get(step, 0.0) + float(m.group(2) if cpu else m.group(1))
    return dict(sorted(per.items()))


def full_noop_incremental(root: Path, size) -> dict:
    out = {}
    wall, text = snakemake(root)
    out["full"] = {"wall": wall, "jobs": sum(job_stats(text).values()), "per_step_job_s": job_seconds(root),
                   "per_step_job_cpu_s": job_seconds(root, cpu=True)}
    busy = sum(out["full"]["per_step_job_s"].values())
    out["full"]["overhead_share"] = max(0.0, 1 - busy / (wall * 2))
    wall, text = snakemake(root)
    out["noop"] = {"wall": wall, "jobs": sum(job_stats(text).values()),
                   "nothing": "Nothing to be done" in text}
    # one new raw day for one device
    from pyjama.demo import generate

    gen = Path(tempfile.mkdtemp(prefix="newday-"))
    last = sorted(p.name for p in (root / "data/BENCH/00_raw").glob("BENCH_valve01_*.csv"))[-1]
    day = re.search(r"(\d{4}-\d{2}-\d{2})", last).group(1)
    import datetime as dt

    new_day = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    generate(gen, "BENCH", devices=1, days=1, hz=size["hz"], start=new_day, seed=7)
    shutil.copy(gen / f"BENCH_valve01_{new_day}.csv", root / "data/BENCH/00_raw/")
    shutil.rmtree(gen)
    _, plan = snakemake(root, "-n", "--quiet", "rules")
    wall, text = snakemake(root)
    out["incremental"] = {"wall": wall, "jobs": job_stats(text), "planned": job_stats(plan)}
    return out


def dryrun_year(tmp: Path) -> dict:
    from pyjama.demo import generate
    from pyjama.manage import create

    root = tmp / "year"
    root.mkdir()
    create("BENCH", root)
    t0 = time.perf_counter()
    generate(root / "data/BENCH/00_raw", "BENCH", devices=2, days=365, hz=1 / 3600, defects=False)
    gen_s = time.perf_counter() - t0
    cold, text = snakemake(root, "-n", "--quiet", "rules")
    jobs = sum(job_stats(text).values())
    warm, _ = snakemake(root, "-n", "--quiet", "rules")
    return {"wall": warm, "cold_wall": cold, "jobs": jobs, "generate_s": gen_s}


def peak_memory(root: Path) -> dict:
    """Max RSS of each step run alone (`pyjama.py run`, same code as a job) on the largest
    partition: the 10 Hz device-day when present, else the first one."""
    from pyjama.pipeline import load_pipeline

    pipe = load_pipeline("configs/BENCH/pipeline.json", root)
    biggest = max((root / "data/BENCH/00_raw").glob("*.csv"), key=lambda p: p.stat().st_size)
    m = re.match(r"BENCH_(.+)_(\d{4}-\d{2}-\d{2})\.csv", biggest.name)
    device, day = m.group(1), m.group(2)
    res = {"partition": f"{device}/{day}", "by_step_mb": {}}
    for st in pipe.steps:
        args = [sys.executable, str(REPO / "pyjama.py"), "run", st.script, "--with", st.path, "--quiet"]
        if st.script == "10_parser.py":
            args += ["--raw", biggest.name]
        elif st.script.startswith("8"):
            continue
        else:
            args += ["--device", device, "--from", day, "--to", day]
        cmd = ["/usr/bin/time", "-f", "%M"] + args if Path("/usr/bin/time").exists() else args
        r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env())
        kb = None
        if cmd[0] == "/usr/bin/time":
            try:
                kb = int(r.stderr.strip().splitlines()[-1])
            except (ValueError, IndexError):
                kb = None
        if kb is None:
            kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        res["by_step_mb"][st.name] = round(kb / 1024, 1)
    res["max_mb"] = max(res["by_step_mb"].values()) if res["by_step_mb"] else 0.0
    return res


def postgres(size) -> dict | None:
    bench = REPO / "bench" / "bench_postgres.py"
    if not bench.exists():
        return None
    rows = {"small": 50_000, "medium": 2_000_000, "large": 2_000_000}[size]
    r = subprocess.run([sys.executable, str(bench), "--rows", str(rows), "--json"],
                       capture_output=True, text=True, env=env(), cwd=REPO)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "bench_postgres.py printed no JSON"}


def auto81(root: Path) -> dict | None:
    cfgs = sorted((root / "configs/BENCH").glob("81_import_raw_postgres_10s.json"))
    if not cfgs:
        return None
    cfg = f"configs/BENCH/{cfgs[0].name}"
    data = json.loads(cfgs[0].read_text())
    data["schema"] = data.get("schema", "public")
    data["table"] = f"bench81_{os.getpid()}"
    # this machine's server: the bench_postgres DSN conventions (trust auth, database test)
    data["host"], data["port"], data["dbname"] = "127.0.0.1", 5432, "test"
    data["user"] = os.environ.get("PGUSER") or __import__("getpass").getuser()
    cfgs[0].write_text(json.dumps(data, indent=2))
    base = [sys.executable, str(REPO / "pyjama.py"), "run", "81_import_raw_postgres.py", "--with", cfg,
            "--mode", "auto", "--quiet"]
    r = subprocess.run(base, cwd=root, capture_output=True, text=True, env=env())
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    t0 = time.perf_counter()
    r = subprocess.run(base, cwd=root, capture_output=True, text=True, env=env())
    wall = time.perf_counter() - t0
    try:
        import psycopg2

        with psycopg2.connect(host=data.get("host", "127.0.0.1"), port=data.get("port", 5432),
                              dbname=data.get("dbname", "test"), user=data.get("user") or None) as c:
            with c.cursor() as cur:
                cur.execute(f'DROP TABLE IF EXISTS "{data["schema"]}"."{data["table"]}"')
    except Exception:
        pass
    return {"wall": wall, "rc": r.returncode}


# ---------------------------------------------------------------- issue 14: slow logger, network

def _today_minus(days: int) -> str:
    import datetime as dt

    return (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=days)).isoformat()


def slow_logger(tmp: Path, devices: int, days: int) -> dict:
    """G3: hourly loggers, template configs as ``manager.sh create BENCH --partition month``
    writes them (session 5; until then day partitions): full build and no-op."""
    from pyjama.demo import generate
    from pyjama.manage import create

    root = tmp / "slow"
    root.mkdir()
    create("BENCH", root, "month")
    generate(root / "data/BENCH/00_raw", "BENCH", devices=devices, days=days, hz=1 / 3600, defects=False)
    full, text = drawer(root)                       # what a user types (session 4: was bare snakemake)
    jobs = _done_jobs(text)
    noop, text2 = drawer(root)
    return {"devices": devices, "days": days, "full_wall": full, "jobs": jobs,
            "s_per_job": full / max(jobs, 1), "noop_wall": noop, "noop_jobs": _done_jobs(text2)}


def drawer(root, *args):
    """``drawer.py run configs/BENCH/pipeline.json ARGS`` (what a user types): (wall, output)."""
    return run([sys.executable, str(REPO / "drawer.py"), "run", "configs/BENCH/pipeline.json", *args], root)


def network(tmp: Path, devices: int, days: int) -> dict:
    """G4: the plan of a station network (hourly files up to today), as a user asks for it:
    ``drawer.py run --dry-run --fresh`` (Snakemake's DAG; cold = the first, which builds the
    raw index; warm = the second), ``drawer.py status`` (which leaves the verdict cache), the
    dry run again (answered from the cache), then the cron run over ``--from {NOW-2d}``:
    built once, then run again with nothing new (answered from the cache the first run left),
    then once more after the usual cron case: one logger wrote one more line into today's
    file (valve01's newest file holds the first half of its lines until then; Snakemake plans
    the window, and what the new line touches runs).
    (Until session 4 this scenario called bare snakemake with a second ``--config
    exposure=BENCH`` after the window, which replaced ``from=``: its "windowed" run built the
    whole year.)"""
    from pyjama.demo import generate
    from pyjama.manage import create

    root = tmp / "network"
    root.mkdir()
    create("BENCH", root)
    generate(root / "data/BENCH/00_raw", "BENCH", devices=devices, days=days, hz=1 / 3600, defects=False,
             start=_today_minus(days - 1))
    newest = sorted((root / "data/BENCH/00_raw").glob("BENCH_valve01_*.csv"))[-1]
    lines = newest.read_text().splitlines(keepends=True)     # 24 hourly lines
    half = len(lines) // 2
    newest.write_text("".join(lines[:half]))           # today's file so far: its first hours
    cold, text = drawer(root, "--dry-run", "--fresh")
    jobs = _would_run(text)
    warm, _ = drawer(root, "--dry-run", "--fresh")
    status, _ = _status(root)
    cached, text_c = drawer(root, "--dry-run")
    first, text = drawer(root, "--from", "{NOW-2d}")
    again, text2 = drawer(root, "--from", "{NOW-2d}")
    with newest.open("a") as fh:                       # the logger writes its next line
        fh.write(lines[half])
    line, text3 = drawer(root, "--from", "{NOW-2d}")
    return {"devices": devices, "days": days, "jobs": jobs, "dry_cold": cold, "dry_warm": warm,
            "status": status, "dry_cached": cached, "dry_cached_jobs": _would_run(text_c),
            "window_build": first, "window_jobs": _done_jobs(text),
            "window_noop": again, "window_noop_jobs": _done_jobs(text2),
            "window_noop_cached": "from the verdict cache" in text2,
            "window_new_line": line, "window_new_line_jobs": _done_jobs(text3)}


def _status(root):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "drawer.py"), "status", "configs/BENCH/pipeline.json"],
                   cwd=root, capture_output=True, text=True, env=env())     # exit 1: jobs to do
    return time.perf_counter() - t0, ""


def _would_run(text) -> int:
    m = re.search(r"dry run: (\d+) jobs? would run", text)
    return int(m.group(1)) if m else 0


def _done_jobs(text) -> int:
    m = re.search(r"PyJAMA: done, (\d+) jobs? in", text)
    return int(m.group(1)) if m else 0


def slurm_knob() -> int | None:
    prof = (REPO / "workflow/profiles/slurm/config.yaml").read_text()
    m = re.search(r"-\s*pyjama=(\d+)", prof)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- report

def fmt(x, nd=2):
    return "—" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def goals(fig: dict) -> None:
    """Issue 14's goals G1–G5: today's (BEFORE) and this run's figures."""
    rows = []
    pp = fig.get("pyperun") or {}
    if pp.get("available"):
        f, n = pp["full"], pp["new_day"]
        r1 = f["pyjama"]["wall"] / f["pyperun"]["wall"]
        r2 = n["pyjama"]["wall"] / n["pyperun"]["wall"]
        rows.append(("G1 full build vs pyperun", BEFORE["G1"],
                     f"{r1:.2f} × ({f['pyjama']['wall']:.0f} s vs {f['pyperun']['wall']:.0f} s; CPU "
                     f"{f['pyjama']['cpu'] / f['pyperun']['cpu']:.2f} ×)", "≤ 0.33 ×", "yes" if r1 <= 1 / 3 else "NO"))
        rows.append(("G2 one new device-day vs pyperun", BEFORE["G2"],
                     f"{r2:.2f} × ({n['pyjama']['wall']:.1f} s vs {n['pyperun']['wall']:.1f} s)", "≤ 1 ×",
                     "yes" if r2 <= 1 else "NO"))
    else:
        why = pp.get("why", "skipped")
        rows.append(("G1 full build vs pyperun", BEFORE["G1"], f"not available ({why})", "≤ 0.33 ×", "—"))
        rows.append(("G2 one new device-day vs pyperun", BEFORE["G2"], f"not available ({why})", "≤ 1 ×", "—"))
    sl = fig.get("slow")
    if sl:
        rows.append((f"G3 slow logger {sl['devices']} × {sl['days']} d", BEFORE["G3"],
                     f"full {sl['full_wall']:.1f} s ({sl['jobs']} jobs, {sl['s_per_job']:.3f} s/job); "
                     f"no-op {sl['noop_wall']:.1f} s", "≤ 60 s; ≤ 3 s",
                     "yes" if sl["full_wall"] <= 60 and sl["noop_wall"] <= 3 else "NO"))
    if not sl:
        rows.append(("G3 slow logger", BEFORE["G3"], "skipped (--skip slow)", "≤ 60 s; ≤ 3 s", "—"))
    nw = fig.get("network")
    if not nw:
        rows.append(("G4 network plan", BEFORE["G4"], "skipped (--skip network)", "≤ 10 s; ≤ 3 s", "—"))
    if nw:
        rows.append((f"G4 network plan {nw['devices']} × {nw['days']} d", BEFORE["G4"],
                     f"dry run {nw['jobs']} jobs: Snakemake warm {nw['dry_warm']:.1f} s (cold {nw['dry_cold']:.1f} s), "
                     f"after a status {nw['dry_cached']:.1f} s from the cache (status {nw['status']:.1f} s); "
                     f"cron build {nw['window_build']:.1f} s ({nw['window_jobs']} jobs), no-op {nw['window_noop']:.1f} s"
                     f"{' (cache)' if nw['window_noop_cached'] else ''}, one new line in today's file "
                     f"{nw['window_new_line']:.1f} s ({nw['window_new_line_jobs']} jobs)", "≤ 10 s; ≤ 3 s",
                     "yes" if min(nw["dry_warm"], nw["dry_cached"]) <= 10 and nw["window_noop"] <= 3 else "NO"))
    knob = slurm_knob()
    rows.append(("G5 SLURM jobs per device-day", BEFORE["G5"],
                 f"group-components pyjama={knob}: ≤ 1/{knob} (tests/test_slurm.py, real cluster)" if knob
                 else "no grouping in the profile", "≤ 1/knob", "yes" if knob else "NO"))
    print("\nIssue 14 goals (ratios from this one run; absolute seconds vary with the machine's load)")
    widths = [36, 44, 70, 16, 4]
    print("  ".join(h.ljust(w) for h, w in zip(("goal", "when filed", "now", "target", "met"), widths)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    fig["goals"] = [dict(zip(("goal", "before", "now", "target", "met"), r)) for r in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=list(SIZES), default="small")
    p.add_argument("--json", help="also write the figures as JSON to this file")
    p.add_argument("--keep", help="keep the temporary projects in this folder")
    p.add_argument("--skip", nargs="*", default=[],
                   help="scenarios to skip (e.g. dryrun_year import80 slow network pyperun)")
    p.add_argument("--pyperun", help="a local clone of julienby/pyperun for G1/G2 (else: not available)")
    a = p.parse_args(argv)
    size = SIZES[a.size]
    tmp = Path(a.keep or tempfile.mkdtemp(prefix="pyjama-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    root = tmp / "main"
    root.mkdir(exist_ok=True)
    print(f"bench: size {a.size} {size} in {tmp}", file=sys.stderr)
    make_exposure(root, size["devices"], size["days"], size["hz"])
    if size["hz10"]:
        from pyjama.demo import generate

        gen = tmp / "hz10"
        generate(gen, "BENCH", devices=1, days=1, hz=size["hz10"], start="2026-01-20", seed=11)
        shutil.copy(gen / "BENCH_valve01_2026-01-20.csv", root / "data/BENCH/00_raw/BENCH_valve03_2026-01-20.csv")
    raw_bytes = sum(f.stat().st_size for f in (root / "data/BENCH/00_raw").glob("*.csv"))
    fig = {"size": a.size, "raw_bytes": raw_bytes}
    fig["floor"] = floor(root)
    print(f"bench: floor {fig['floor']['wall']:.2f} s", file=sys.stderr)
    fig.update(full_noop_incremental(root, size))
    print(f"bench: full {fig['full']['wall']:.2f} s", file=sys.stderr)
    if "memory" not in a.skip:
        fig["memory"] = peak_memory(root)
    if "dryrun_year" not in a.skip:
        fig["dryrun_year"] = dryrun_year(tmp)
    if "import80" not in a.skip:
        fig["import80"] = postgres(a.size)
    if "auto81" not in a.skip:
        fig["auto81"] = auto81(root)
    if "slow" not in a.skip:
        fig["slow"] = slow_logger(tmp, *size["slow"])
    if "network" not in a.skip:
        fig["network"] = network(tmp, *size["network"])
    if "pyperun" not in a.skip:
        sys.path.insert(0, str(REPO / "bench"))
        from compare_pyperun import compare

        fig["pyperun"] = compare(a.pyperun, "M" if a.size != "small" else "small")
    fl = fig["floor"]["wall"]
    rows = []
    full = fig["full"]
    rows.append(("1 floor: raw → parquet, bare", fl, fig["floor"]["rows"] / fl, "1.00 × floor", "—", ""))
    rows.append(("2 full rebuild 10→70", full["wall"], fig["floor"]["rows"] / full["wall"],
                 f"{full['wall'] / fl:.2f} × floor; overhead {full['overhead_share'] * 100:.0f} %",
                 "≤ 5 × floor; ≤ 15 %", "yes" if full["wall"] <= 5 * fl and full["overhead_share"] <= 0.15 else "NO"))
    noop = fig["noop"]
    rows.append(("3 no-op re-run", noop["wall"], None, f"{noop['jobs']} jobs", "≤ 3 s, 0 jobs",
                 "yes" if noop["wall"] <= 3 and noop["jobs"] == 0 else "NO"))
    inc = fig["incremental"]
    only = all(v == 1 for v in inc["jobs"].values())
    rows.append(("4 incremental: 1 new device-day", inc["wall"], None,
                 f"{inc['wall'] / full['wall']:.3f} × full; jobs {inc['jobs']}", "≤ 0.1 × full, its jobs only",
                 "yes" if inc["wall"] <= 0.1 * full["wall"] and only else "NO"))
    if "dryrun_year" in fig:
        d = fig["dryrun_year"]
        rows.append(("5 dry run, 2 devices × 365 days", d["wall"], None,
                     f"{d['jobs']} jobs; {d['wall'] / max(d['jobs'], 1) * 1000:.0f} s per 1000 jobs; cold {d['cold_wall']:.1f} s",
                     "≤ 5 s", "yes" if d["wall"] <= 5 else "NO"))
    else:
        rows.append(("5 dry run, 2 devices × 365 days", None, None, "skipped (--skip dryrun_year)", "≤ 5 s", "—"))
    if "memory" in fig:
        m = fig["memory"]
        rows.append((f"6 peak memory, one job ({m['partition']})", None, None, f"{m['max_mb']:.0f} MB",
                     "≤ 2048 MB", "yes" if m["max_mb"] <= 2048 else "NO"))
    im = fig.get("import80")
    if im:
        if "error" in im:
            rows.append(("7 import 80 vs bare COPY", None, None, im["error"], "≥ 0.3", "—"))
        else:
            ratio = im.get("ratio")
            rows.append(("7 import 80 vs bare COPY", im.get("import_s"), im.get("import_rows_per_s"),
                         f"ratio {fmt(ratio)} first import; re-import {fmt(im.get('ratio_reimport_same'))} "
                         f"(same) {fmt(im.get('ratio_reimport_changed'))} (changed)",
                         "≥ 0.3", "yes" if ratio and ratio >= 0.3 else "NO"))
    au = fig.get("auto81")
    if au:
        rows.append(("8 81 --mode auto, nothing new", au.get("wall"), None, au.get("error", "rc 0"), "≤ 2 s",
                     "yes" if au.get("wall") is not None and au["wall"] <= 2 else "NO"))
    print(f"\nPyJAMA benchmark — size {a.size}: {size['devices']} devices × {size['days']} days × {size['hz']} Hz"
          + (f" + one {size['hz10']} Hz device-day" if size["hz10"] else "")
          + f"; {raw_bytes / 1e6:.1f} MB raw, {fig['floor']['rows']:,} values; {os.cpu_count()} cores\n")
    head = ("scenario", "wall s", "values/s", "measured", "goal", "met")
    widths = [40, 8, 11, 58, 28, 4]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for r in rows:
        cells = [r[0], fmt(r[1]), fmt(r[2], 0) if r[2] else "—", r[3], r[4], r[5]]
        print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)))
    print("\nper-step seconds inside jobs (full rebuild): " +
          ", ".join(f"{k} {v:.1f}" for k, v in full["per_step_job_s"].items()))
    print("per-step thread CPU seconds inside jobs (full rebuild): " +
          ", ".join(f"{k} {v:.1f}" for k, v in full["per_step_job_cpu_s"].items()))
    if "memory" in fig:
        print("peak MB per step on the largest partition: " +
              ", ".join(f"{k} {v:.0f}" for k, v in fig["memory"]["by_step_mb"].items()))
    goals(fig)
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=2, default=str) + "\n")
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
