"""Worker processes (pyjama.workers): a local threaded run computes its jobs in worker
processes; the same bytes as computing in Snakemake's job threads, errors as one line."""
from __future__ import annotations

import re
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from wf import DEMO_STEPS, make_project, snakemake

from pyjama import workers
from pyjama.errors import UserError


def _done_lines(root: Path) -> list:
    return [ln for log in sorted((root / "logs" / "T").rglob("*.log"))
            for ln in log.read_text().splitlines() if ln.startswith("done in ")]


def _data_files(root: Path) -> dict:
    base = root / "data" / "T"
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*.parquet"))}


def test_workers_write_the_same_bytes_as_job_threads(tmp_path, monkeypatch):
    steps = [*DEMO_STEPS, "70_aggregate"]
    a, b = tmp_path / "workers", tmp_path / "threads"
    for root in (a, b):
        root.mkdir()
        make_project(root, devices=2, days=2, steps=steps)
    monkeypatch.setenv(workers.ENV, "2")        # a run this small takes workers only when asked
    snakemake(a)
    monkeypatch.setenv(workers.ENV, "0")
    snakemake(b)
    in_workers, in_threads = _done_lines(a), _done_lines(b)
    # every job of the DEMO chain is a parser or partition job: all computed in a worker
    assert in_workers and all(re.search(r"; worker process \d+\)$", ln) for ln in in_workers)
    assert in_threads and not any("worker process" in ln for ln in in_threads)
    assert len(in_workers) == len(in_threads)
    files_a, files_b = _data_files(a), _data_files(b)
    assert len(files_a) > 20 and files_a.keys() == files_b.keys()
    assert [k for k in files_a if files_a[k] != files_b[k]] == []


def test_a_bad_process_count_is_one_line_before_any_job(tmp_path, monkeypatch):
    make_project(tmp_path)
    monkeypatch.setenv(workers.ENV, "two")
    res = snakemake(tmp_path, check=False)
    assert res.returncode != 0
    assert ("Error: PYJAMA_JOB_PROCESSES='two': not a whole number; allowed: 0 (compute in "
            "Snakemake's job threads) or how many worker processes (unset: as many as --cores)"
            ) in res.stderr.splitlines()
    assert not (tmp_path / "logs" / "T").exists()


def _count_in_thread(workflow) -> int:
    out = []
    t = threading.Thread(target=lambda: out.append(workers.count(workflow)))
    t.start()
    t.join()
    return out[0]


def _run(cores=2, jobs=100, local_exec=True, use_threads=True):
    """The attributes of Snakemake's workflow object that workers.count reads."""
    return SimpleNamespace(local_exec=local_exec, use_threads=use_threads, cores=cores, dag=[None] * jobs)


def test_count_only_for_local_threaded_runs_with_two_cores(monkeypatch):
    monkeypatch.delenv(workers.ENV, raising=False)
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 8)
    local = _run()
    assert workers.MIN_JOBS == 100
    assert _count_in_thread(local) == 2
    assert _count_in_thread(_run(jobs=99)) == 0         # a small run: the workers' start costs more
    assert _count_in_thread(_run(cores=6)) == 6
    assert _count_in_thread(_run(cores=1)) == 0
    assert _count_in_thread(_run(cores=4, local_exec=False)) == 0   # SLURM
    assert _count_in_thread(_run(cores=4, use_threads=False)) == 0
    assert _count_in_thread(None) == 0
    assert _count_in_thread(SimpleNamespace(local_exec=True)) == 0  # not a workflow as we know it
    assert workers.count(local) == 0                    # the main thread: not a job thread
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 2)
    assert _count_in_thread(_run(cores=6)) == 2
    monkeypatch.setenv(workers.ENV, "0")
    assert _count_in_thread(local) == 0
    monkeypatch.setenv(workers.ENV, "1")
    assert _count_in_thread(local) == 0                 # one worker would gain nothing
    monkeypatch.setenv(workers.ENV, "2")
    assert _count_in_thread(_run(jobs=3)) == 2          # asked for: whatever the run's size
    monkeypatch.setenv(workers.ENV, "-1")
    with pytest.raises(UserError, match=r"^PYJAMA_JOB_PROCESSES='-1': not a whole number"):
        _count_in_thread_raising(local)


def _count_in_thread_raising(workflow):
    err = []

    def go():
        try:
            workers.count(workflow)
        except UserError as exc:
            err.append(exc)

    t = threading.Thread(target=go)
    t.start()
    t.join()
    if err:
        raise err[0]


def test_a_worker_raises_what_the_step_raises(tmp_path):
    from pyjama.project import Project
    from pyjama.runner import run_step

    make_project(tmp_path, steps=("10_parser", "20_split", "30_clean"))
    project = Project.load("configs/T/pipeline.json", tmp_path)
    args = {"script": "30_clean.py", "config_path": "configs/T/30_clean.json", "devices": ["valve01"],
            "day": "2026-01-20", "raw": None, "options": {}}
    with pytest.raises(UserError) as here:          # 20_split has not run: its input is missing
        run_step(root=tmp_path, quiet=True, project=project, **args)
    with pytest.raises(UserError) as there:
        workers.run_step_in_worker(2, project, args)
    assert str(there.value) == str(here.value) and "20_split" in str(there.value)
    # a bug inside the worker: its traceback comes back for the job's log
    with pytest.raises(workers.WorkerBug) as bug:
        workers.run_step_in_worker(2, project, {**args, "devices": 7})
    assert bug.value.text.startswith("Traceback (most recent call last):")
    assert bug.value.name == "TypeError"
    # and a good job: the entries run_step returns, the worker's CPU and pid
    snakemake(tmp_path, config=("until=20_split",))
    entries, cpu, pid = workers.run_step_in_worker(2, project, args)
    assert [e["partition"] for e in entries] == ["valve01/2026-01-20"] and cpu >= 0 and pid > 0


def test_a_dead_worker_fails_its_job_in_one_line_and_is_replaced(tmp_path):
    from pyjama.project import Project

    make_project(tmp_path, steps=("10_parser", "20_split"))
    project = Project.load("configs/T/pipeline.json", tmp_path)
    args = {"script": "10_parser.py", "config_path": "configs/T/10_parser.json", "devices": None,
            "day": None, "raw": "T_valve01_2026-01-20.csv", "options": {}}
    entries, _cpu, pid = workers.run_step_in_worker(2, project, args)
    assert entries[0]["partition"] == "raw=T_valve01_2026-01-20.csv"
    pool = workers._pool(2, project)
    for w in pool.all:               # killed (the OOM killer, a user's kill)
        w.proc.kill()
        w.proc.wait()
    for _ in pool.all:
        with pytest.raises(UserError) as err:
            workers.run_step_in_worker(2, project, args)
        assert str(err.value) == ("the worker process computing this job died (killed, or out of memory; "
                                  "PYJAMA_JOB_PROCESSES=0 computes jobs in Snakemake's threads)")
    entries, _cpu, again = workers.run_step_in_worker(2, project, args)   # a new worker
    assert entries[0]["partition"] == "raw=T_valve01_2026-01-20.csv" and again != pid
    workers._close_pool()
    assert all(w.proc.poll() is not None for w in pool.all)


def test_a_worker_started_by_hand_from_a_terminal_says_what_it_is(tmp_path):
    import os
    import pty
    import subprocess

    from wf import PY, REPO

    master, slave = pty.openpty()
    try:
        res = subprocess.run([PY, "-m", "pyjama.workers", str(tmp_path), "configs/T/pipeline.json"],
                             stdin=slave, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(master)
        os.close(slave)
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == ("Error: python3 -m pyjama.workers takes its jobs from the workflow over a pipe, "
                          "not from a terminal; allowed: drawer.py run or snakemake, which start it\n")
