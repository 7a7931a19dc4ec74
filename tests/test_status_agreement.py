"""The status board and ``drawer.py run --dry-run`` agree, job for job, in every scenario
of issue 9: the set of jobs the board calls not done equals the set of jobs the dry run
would run (concrete (step, device/day or raw file) pairs, never counts)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.wf import PY, REPO, drawer, make_project, pyjama

pytestmark = pytest.mark.slow

PIPE = "configs/T/pipeline.json"


def where(wc: dict) -> str:
    keys = [k for k in ("device", "day", "raw") if k in wc]
    return " ".join(wc[k] for k in keys)


HOW: list = []      # how each board got Snakemake's verdict: cache, partial, full


def board(root, **window):
    args = [f"--{k}={v}" for k, v in window.items()]
    res = drawer(root, "status", PIPE, "--json", *args)
    assert res.returncode in (0, 1), res.stderr
    data = json.loads(res.stdout)
    HOW.append(data["verdict"])
    states = {(j["step"], where(j["wildcards"])): j["state"] for j in data["jobs"]}
    not_done = {k for k, s in states.items() if s != "done"}
    assert res.returncode == (1 if not_done else 0)
    return states, not_done


def dry_plan(root, **window):
    args = [f"--{k}={v}" for k, v in window.items()]
    res = drawer(root, "run", PIPE, "--dry-run", "--fresh", *args)     # Snakemake's own dry run
    assert res.returncode == 0, res.stderr
    plan = set()
    for line in res.stderr.splitlines():
        if line.startswith("would run: "):
            text = line.removeprefix("would run: ").split(": ", 1)[0]
            step, _, w = text.partition(" ")
            plan.add((step, w))
    return plan


def same_as_snakemakes_whole_dag(root, **window):
    """The verdicts the board used (cached, or partly rebuilt from the DAG of the touched
    jobs) equal those of Snakemake's whole DAG built now, job for job, reasons included."""
    from pyjama import verdict
    from pyjama.workflow import WorkflowPlan

    plan = WorkflowPlan.for_pipeline(PIPE, window.get("from"), window.get("to"), root)
    used, how, _stats = verdict.verdicts(root, plan)
    assert how == "cache"       # the board has just brought the cache up to date
    whole = verdict.snakemake_verdicts(root, plan)           # key → record
    used = {job.key: rec for job, rec in used.items()}
    assert set(used) == set(whole)
    assert {k: r["needrun"] for k, r in used.items()} == {k: r["needrun"] for k, r in whole.items()}
    # Reasons: equal job for job where the job's outputs exist. For a job with an output
    # missing (the board says "missing" from the files), which further reasons Snakemake
    # names ("output files have to be generated", "updated input files", "input files updated
    # by another job") depends on the DAG it was asked for (the whole DAG, or the touched
    # jobs' outputs), not on the job.
    jobs = {job.key: job for job in plan.jobs}
    def missing(key):
        job = jobs.get(key) or plan.job(whole[key]["rule"], whole[key]["wildcards"])
        return any(not (Path(root) / f).exists() for f in job.output_files)
    differ = {k: (used[k]["reasons"], whole[k]["reasons"]) for k in used
              if not missing(k) and used[k]["reasons"] != whole[k]["reasons"]}
    assert differ == {}


def agree(root, **window):
    states, not_done = board(root, **window)
    plan = dry_plan(root, **window)
    assert not_done == plan, f"board not done: {sorted(not_done)}\ndry run plans: {sorted(plan)}"
    same_as_snakemakes_whole_dag(root, **window)
    return states


@pytest.fixture
def proj(tmp_path):
    make_project(tmp_path, days=2, steps=("10_parser", "20_split", "30_clean"), defects=False)
    return tmp_path


def test_board_and_dry_run_agree_in_every_scenario(proj):
    root = proj
    d1, d2 = "valve01 2026-01-20", "valve01 2026-01-21"
    # fresh: everything to do
    states = agree(root)
    assert set(states.values()) == {"missing"} and len(states) == 6

    # after a full run: nothing to do, and the board knows it without asking Snakemake (the
    # run's onsuccess wrote the verdict cache)
    assert drawer(root, "run", PIPE).returncode == 0
    states = agree(root)
    assert set(states.values()) == {"done"}
    assert HOW[-1] == "cache"

    # pyjama.py run rewrote the split partitions with the same bytes (writes are
    # deterministic): newer, but Snakemake compares checksums of small files, so nothing runs
    time.sleep(0.01)
    assert pyjama(root, "run", "20_split.py", "--with", "configs/T/20_split.json").returncode == 0
    states = agree(root)
    assert set(states.values()) == {"done"}
    # ... and with other bytes (a partition rewritten from one raw file only): 30 follows
    assert pyjama(root, "run", "20_split.py", "--with", "configs/T/20_split.json",
                  "--from", "2026-01-20", "--to", "2026-01-20").returncode == 0
    part = root / "data/T/20_split/device_id=valve01/day=2026-01-20/part.parquet"
    import pyarrow.parquet as pq

    table = pq.read_table(part)
    pq.write_table(table.slice(0, table.num_rows // 2).replace_schema_metadata(table.schema.metadata), part)
    states = agree(root)
    # d1's clean, and d2's: it reads d1's last minutes (its neighbour edge)
    assert {k for k, s in states.items() if s != "done"} == {("30_clean", d1), ("30_clean", d2)}
    assert drawer(root, "run", PIPE).returncode == 0

    # a config edit: that step and nothing upstream
    cfg = root / "configs/T/30_clean.json"
    data = json.loads(cfg.read_text())
    data["comment"] = "x"   # comments are not part of the digest: no change
    cfg.write_text(json.dumps(data))
    assert agree(root) and all(s == "done" for s in board(root)[0].values())
    data["rules"]["bio_signal"]["spike"]["threshold_mad"] = 7
    cfg.write_text(json.dumps(data))
    states = agree(root)
    assert {k for k, s in states.items() if s != "done"} == {("30_clean", d1), ("30_clean", d2)}
    assert drawer(root, "run", PIPE).returncode == 0

    # a raw file added: its jobs only
    from pyjama.demo import generate

    gen = root / "gen"
    generate(gen, "T", devices=1, days=1, hz=0.05, defects=False, start="2026-01-22")
    for f in gen.iterdir():
        f.rename(root / "data/T/00_raw" / f.name)
    states = agree(root)
    new = {k for k, s in states.items() if s != "done"}
    assert ("20_split", "valve01 2026-01-22") in new and ("30_clean", "valve01 2026-01-22") in new
    # ... and the clean of the day before, which reads the new day's first minutes
    assert ("30_clean", d2) in new
    assert all("2026-01-22" in k[1] for k in new - {("30_clean", d2)})

    # after --until 20_split: the 30_clean job is still to do
    assert drawer(root, "run", PIPE, "--until", "20_split").returncode == 0
    states = agree(root)
    assert {k for k, s in states.items() if s != "done"} == {("30_clean", "valve01 2026-01-22"),
                                                             ("30_clean", d2)}
    assert drawer(root, "run", PIPE).returncode == 0
    agree(root)
    # the incremental verdict was used (and checked against the whole DAG above)
    assert "partial" in HOW and "full" in HOW


def _stop_during_a_job(proc, root, deadline=120):
    """SIGSTOP the run (its whole process group) while a job holds Snakemake's incomplete
    marker: the run stays alive, with its locks, in the middle of that job."""
    inc = root / ".snakemake" / "incomplete"
    end = time.monotonic() + deadline
    while time.monotonic() < end and proc.poll() is None:
        if inc.is_dir() and any(p.is_file() for p in inc.rglob("*")):
            os.killpg(proc.pid, signal.SIGSTOP)
            if any(p.is_file() for p in inc.rglob("*")):
                return True
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.005)
    return False


def test_running_and_failed_jobs_agree_with_the_dry_run(proj):
    root = proj
    assert drawer(root, "run", PIPE, "--until", "10_parser").returncode == 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([PY, str(REPO / "drawer.py"), "run", PIPE, "--cores", "1"], cwd=root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert _stop_during_a_job(proc, root), "the run ended before a job could be caught"
        states = agree(root)
        running = {k for k, s in states.items() if s == "running"}
        assert len(running) == 1 and next(iter(running))[0] in ("20_split", "30_clean")
        # a second run refuses, naming the live one, and touches nothing
        second = drawer(root, "run", PIPE)
        assert second.returncode == 4
        line = second.stderr.strip()
        assert line.startswith(f"Error: another drawer.py run of exposure T is running (pid {proc.pid}, "
                               "started ")
        assert line.endswith("); nothing was touched. Wait for it to end "
                             "(lock: data/T/.pyjama/run.lock)")
        assert "\n" not in line
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert set(agree(root).values()) == {"done"}

    # a failed job: its input damaged (older than its output, so only the failure says so)
    d2 = "valve01 2026-01-21"
    part = root / "data/T/20_split/device_id=valve01/day=2026-01-21/part.parquet"
    good = part.read_bytes()
    stamp = part.stat().st_mtime_ns
    part.write_bytes(b"not parquet")
    os.utime(part, ns=(stamp, stamp))
    for f in (root / "data/T/30_clean/device_id=valve01/day=2026-01-21").iterdir():
        f.unlink()
    res = drawer(root, "run", PIPE)
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert lines[0] == (f"FAILED 30_clean {d2}: {part}: not a readable parquet file (Could not open "
                        f"Parquet input source '{part}': Parquet magic "
                        "bytes not found in footer. Either the file is corrupted or this is not a "
                        "parquet file.); delete it and re-run the step that writes it "
                        "(log: logs/T/30_clean/valve01/2026-01-21.log)")
    assert lines[1:] == ["PyJAMA: 1 job failed (30_clean valve01 2026-01-21), 0 done; logs named above. "
                         "Board: python3 drawer.py status configs/T/pipeline.json"]
    states = agree(root)
    assert states[("30_clean", d2)] == "failed"
    assert {k for k, s in states.items() if s != "done"} == {("30_clean", d2)}
    text = drawer(root, "status", PIPE).stdout
    assert f"  FAILED  30_clean {d2}: Error: 30_clean.py valve01/2026-01-21: " in text
    assert "          log: logs/T/30_clean/valve01/2026-01-21.log" in text
    part.write_bytes(good)
    os.utime(part, ns=(stamp, stamp))
    assert drawer(root, "run", PIPE).returncode == 0
    assert set(agree(root).values()) == {"done"}


def would_run(res) -> list:
    return sorted(line for line in res.stderr.splitlines() if line.startswith("would run: "))


def test_run_answers_from_the_verdict_cache_only_when_it_holds(proj):
    """drawer.py run without Snakemake: a dry run listed from the cache equals Snakemake's own,
    line for line; a run with nothing to do says so from the cache; any change (a new raw
    file) goes to Snakemake, and --fresh always does."""
    root = proj
    assert drawer(root, "status", PIPE).returncode == 1              # fresh: the cache holds "missing"
    cached, fresh = drawer(root, "run", PIPE, "--dry-run"), drawer(root, "run", PIPE, "--dry-run", "--fresh")
    assert "from the verdict cache" in cached.stderr and "from the verdict cache" not in fresh.stderr
    assert would_run(cached) == would_run(fresh) and len(would_run(fresh)) == 6
    assert "PyJAMA: dry run: 6 jobs would run; nothing was changed (from the verdict cache; " \
           "--fresh asks Snakemake)" in cached.stderr

    built = drawer(root, "run", PIPE)                                 # work to do: Snakemake
    assert built.returncode == 0 and "PyJAMA: done, 6 jobs in" in built.stderr
    noop = drawer(root, "run", PIPE)
    assert noop.returncode == 0
    assert noop.stderr.startswith("PyJAMA: nothing to do, every job is up to date (from the verdict "
                                  "cache; --fresh asks Snakemake)")
    asked = drawer(root, "run", PIPE, "--fresh")
    assert "from the verdict cache" not in asked.stderr and "nothing to do" in asked.stderr

    # a new raw file: the cache no longer holds, Snakemake plans (its day, and the day before)
    from pyjama.demo import generate

    generate(root / "gen", "T", devices=1, days=1, hz=0.05, defects=False, start="2026-01-22")
    for f in (root / "gen").iterdir():
        f.rename(root / "data/T/00_raw" / f.name)
    dry = drawer(root, "run", PIPE, "--dry-run")
    assert "from the verdict cache" not in dry.stderr
    assert would_run(dry) == would_run(drawer(root, "run", PIPE, "--dry-run", "--fresh"))
    assert any("30_clean valve01 2026-01-21" in line for line in would_run(dry))
