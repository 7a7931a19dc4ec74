"""Worker processes for the jobs of a local Snakemake run.

The default profile runs ``run:`` jobs as threads of the Snakemake process (no interpreter
start, no re-import of pandas per job). PyJAMA's per-day work is pandas and Python under
the GIL, so two job threads on two cores got about one core's work done (measured on the
slow-logger campaign: job threads' wall 2.2 × their CPU). So in a local threaded run with
``--cores`` N ≥ 2, each job thread hands its computation (:func:`pyjama.runner.run_step`)
to one of N worker processes and waits: the workers compute in parallel, the thread only
writes the log. Same code, same inputs, same bytes written; the log and the keep decision
(:mod:`pyjama.keep`) stay in the thread.

The workers start once per run from a ``forkserver`` that has imported pandas, pyarrow and
PyJAMA's steps, so a job costs no interpreter start; they never run a database step (80/81:
those keep their connections in the thread). SLURM jobs, runs with ``--cores 1`` and runs
without ``--force-use-threads`` compute in the job's own process as before.

``PYJAMA_JOB_PROCESSES``: how many workers (default: Snakemake's ``--cores``, at most the
machine's CPUs); ``0`` computes every job in its thread (as before this module).
"""
from __future__ import annotations

import os
import signal
import threading
import time
import traceback

from .errors import UserError, WorkerBug

ENV = "PYJAMA_JOB_PROCESSES"
PRELOAD = ["pyjama.runner", "pyjama.steps", "pyjama.steps.parser", "pyjama.steps.split",
           "pyjama.steps.clean", "pyjama.steps.resample", "pyjama.steps.transform",
           "pyjama.steps.normalise", "pyjama.steps.behaviour", "pyjama.steps.aggregate",
           "pandas", "numpy", "pyarrow", "pyarrow.parquet", "pyarrow.compute"]

_LOCK = threading.Lock()
_POOL: dict = {}            # "pool": the executor, "key": (root, pipeline path, id of the plan's project)


def count(workflow) -> int:
    """How many worker processes this job's run uses: 0 (compute in the thread) unless
    Snakemake runs the job as a thread of a local run with ``--cores`` ≥ 2."""
    if workflow is None or threading.current_thread() is threading.main_thread():
        return 0
    try:
        local = bool(workflow.local_exec and workflow.use_threads)
        cores = int(workflow.cores)
    except (AttributeError, AssertionError, TypeError, ValueError):
        return 0
    if not local:
        return 0
    n = min(cores if asked() is None else asked(), cores, os.cpu_count() or 1)
    return n if n >= 2 else 0


def asked():
    """The number in ``PYJAMA_JOB_PROCESSES``, or None when it is not set (a bad value is
    one line: the Snakefile checks it before any job runs)."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise UserError(f"{ENV}={text!r}: not a whole number; allowed: 0 (compute in Snakemake's job "
                        "threads) or how many worker processes (unset: as many as --cores)")
    return int(text)


def computer(workflow, project):
    """What :func:`pyjama.runner.run_job` computes a job with in this run: a function
    job → (ledger entries, a worker's CPU seconds, its pid) that hands parser and partition
    steps to the run's workers, or None (no workers: the job computes in its thread)."""
    n = count(workflow) if project is not None else 0
    if not n:
        return None
    from .steps import PartitionStep, RawFileStep, get_step

    def compute(job):
        if not isinstance(get_step(job.script), (PartitionStep, RawFileStep)):
            return None                 # a database step keeps its connection in the thread
        return run_step_in_worker(n, project, job.run_arguments())

    return compute


def _pool(n: int, project):
    """The run's executor (made on the first job; a new plan gets a new one)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    key = (str(project.root), project.pipeline.path, id(project), n)
    with _LOCK:
        if _POOL.get("key") != key or _POOL.get("broken"):
            old = _POOL.get("pool")
            if old is not None:
                old.shutdown(wait=False, cancel_futures=True)
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _POOL.clear()
            _POOL.update(key=key, pool=ProcessPoolExecutor(
                max_workers=n, mp_context=ctx, initializer=_init_worker,
                initargs=(str(project.root), project.pipeline.path)))
        return _POOL["pool"]


def run_step_in_worker(n: int, project, arguments: dict) -> tuple:
    """(ledger entries, the worker's CPU seconds, its pid) of ``run_step(**arguments)`` in a worker.
    Raises what run_step raised (:class:`UserError`, ``OSError``), or :class:`WorkerBug`."""
    from concurrent.futures.process import BrokenProcessPool

    pool = _pool(n, project)
    try:
        status, *rest = pool.submit(_work, arguments).result()
    except BrokenProcessPool:
        with _LOCK:
            _POOL["broken"] = True
        raise UserError("the worker process computing this job died (killed, or out of memory; "
                        f"{ENV}=0 computes jobs in Snakemake's threads)") from None
    if status == "ok":
        return tuple(rest)
    if status == "user":
        raise UserError(rest[0])
    if status == "os":
        raise rest[0]
    raise WorkerBug(*rest)


# ---------------------------------------------------------------- inside a worker

_WORKER: dict = {}


def _init_worker(root: str, pipeline_path: str) -> None:
    # Ctrl-C goes to Snakemake, which waits for its job threads as it always has: a worker
    # finishes the job it has (a thread could not be interrupted either)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER.update(root=root, pipeline=pipeline_path)


def _project():
    if "project" not in _WORKER:
        from .project import Project

        _WORKER["project"] = Project.load(_WORKER["pipeline"], _WORKER["root"])
    return _WORKER["project"]


def _work(arguments: dict) -> tuple:
    from .runner import run_step

    cpu = time.thread_time()
    try:
        entries = run_step(root=_WORKER["root"], quiet=True, project=_project(), **arguments)
        return "ok", entries, time.thread_time() - cpu, os.getpid()
    except UserError as exc:
        return "user", str(exc)
    except OSError as exc:
        return "os", exc
    except Exception as exc:  # noqa: BLE001 - a bug: its traceback goes to the job's log
        return "bug", traceback.format_exc(), type(exc).__name__, str(exc)
