"""Worker processes for the jobs of a local Snakemake run.

The default profile runs ``run:`` jobs as threads of the Snakemake process (no interpreter
start, no re-import of pandas per job). PyJAMA's per-day work is pandas and Python under
the GIL, so two job threads on two cores got about one core's work done (measured on the
slow-logger campaign: job threads' wall 2.2 × their CPU). So in a local threaded run with
``--cores`` N ≥ 2, each job thread hands its computation (:func:`pyjama.runner.run_step`)
to one of N worker processes and waits: the workers compute in parallel, the thread only
writes the log. Same code, same inputs, same bytes written; the log and the keep decision
(:mod:`pyjama.keep`) stay in the thread.

A worker is ``python -m pyjama.workers ROOT PIPELINE``, started once per run (on the first
job; it imports pandas, pyarrow and the steps while it starts) and fed one job at a time
over its stdin/stdout pipes (pickled keyword arguments in, the ledger entries or the error
out; whatever a step prints goes to the worker's stderr). Plain subprocesses, not
``multiprocessing``: nothing of the parent (its ``__main__``, its threads) is re-imported
or forked. Workers never run a database step (80/81: those keep their connections in the
thread). SLURM jobs, runs with ``--cores 1`` and runs without ``--force-use-threads``
compute in the job's own process as before.

``PYJAMA_JOB_PROCESSES``: how many workers (unset: Snakemake's ``--cores`` when the run has
at least ``MIN_JOBS`` = 100 jobs, none for a smaller run; at most ``--cores`` and the
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
PRELOAD = ["pandas", "numpy", "pyarrow", "pyarrow.parquet", "pyarrow.compute", "pyjama.runner",
           "pyjama.steps", "pyjama.steps.parser", "pyjama.steps.split", "pyjama.steps.clean",
           "pyjama.steps.resample", "pyjama.steps.transform", "pyjama.steps.normalise",
           "pyjama.steps.behaviour", "pyjama.steps.aggregate"]

_LOCK = threading.Lock()
_POOL: dict = {}            # "pool": the run's _Pool, "key": (root, pipeline path, id of the plan's project, N)


# Below this many jobs in a run, workers are not started unless asked for (measured, issue 14:
# a new 1 Hz device-day, 14 jobs, took 12.3 s with workers and 8.4 s in threads — the
# workers' start and cold caches; a slow logger's 119 month and parser jobs 15.1 s with
# workers and 25.8 s in threads; 2 × 14 days of 1 Hz, 234 jobs, 97.6 s and 99.6 s)
MIN_JOBS = 100


def count(workflow) -> int:
    """How many worker processes this job's run uses: 0 (compute in the thread) unless
    Snakemake runs the job as a thread of a local run with ``--cores`` ≥ 2 and either the
    run has at least :data:`MIN_JOBS` jobs or ``PYJAMA_JOB_PROCESSES`` asks for workers."""
    if workflow is None or threading.current_thread() is threading.main_thread():
        return 0
    try:
        local = bool(workflow.local_exec and workflow.use_threads)
        cores = int(workflow.cores)
        jobs = len(workflow.dag) if workflow.dag is not None else 0
    except Exception:  # noqa: BLE001 - not a Snakemake run as this module knows it: no workers
        return 0
    if not local:
        return 0
    wanted = asked()
    if wanted is None:
        wanted = cores if jobs >= MIN_JOBS else 0
    n = min(wanted, cores, os.cpu_count() or 1)
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


class _Worker:
    """One worker subprocess and its pipes."""

    def __init__(self, root: str, pipeline: str):
        import subprocess
        import sys

        from . import child_env

        self.proc = subprocess.Popen([sys.executable, "-m", "pyjama.workers", root, pipeline],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(), cwd=root)

    def call(self, arguments: dict) -> tuple:
        _send(self.proc.stdin, arguments)
        return _receive(self.proc.stdout)

    def close(self) -> None:
        try:
            self.proc.stdin.close()         # the worker ends at the end of its input
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - a worker that will not end is stopped
            self.proc.kill()


class _Pool:
    """N workers; a job takes an idle one, or waits for one."""

    def __init__(self, n: int, root: str, pipeline: str):
        import queue

        self.root, self.pipeline = root, pipeline
        self.idle: "queue.Queue" = queue.Queue()
        self.all = [_Worker(root, pipeline) for _ in range(n)]
        for w in self.all:
            self.idle.put(w)

    def call(self, arguments: dict) -> tuple:
        import pickle

        w = self.idle.get()
        try:
            return w.call(arguments)
        except (EOFError, OSError, ValueError, pickle.UnpicklingError):   # the worker died: a new one takes its place
            w.proc.kill()
            fresh = _Worker(self.root, self.pipeline)
            self.all[self.all.index(w)] = w = fresh
            raise UserError("the worker process computing this job died (killed, or out of memory; "
                            f"{ENV}=0 computes jobs in Snakemake's threads)") from None
        finally:
            self.idle.put(w)

    def close(self) -> None:
        for w in self.all:
            w.close()


def _pool(n: int, project) -> _Pool:
    """The run's pool (made on the first job; a new plan gets a new one)."""
    import atexit

    key = (str(project.root), project.pipeline.path, id(project), n)
    with _LOCK:
        if _POOL.get("key") != key:
            old = _POOL.get("pool")
            if old is not None:
                old.close()
            _POOL.clear()
            _POOL.update(key=key, pool=_Pool(n, str(project.root), project.pipeline.path))
            if not _POOL.get("atexit"):
                atexit.register(_close_pool)
                _POOL["atexit"] = True
        return _POOL["pool"]


def _close_pool() -> None:
    pool = _POOL.get("pool")
    if pool is not None:
        pool.close()


def run_step_in_worker(n: int, project, arguments: dict) -> tuple:
    """(ledger entries, the worker's CPU seconds, its pid) of ``run_step(**arguments)`` in a
    worker. Raises what run_step raised (:class:`UserError`, ``OSError``), or :class:`WorkerBug`."""
    status, *rest = _pool(n, project).call(arguments)
    if status == "ok":
        return tuple(rest)
    if status == "user":
        raise UserError(rest[0])
    if status == "os":
        raise rest[0]
    raise WorkerBug(*rest)


def _send(pipe, obj) -> None:
    import pickle

    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(len(data).to_bytes(8, "little") + data)
    pipe.flush()


def _receive(pipe):
    import pickle

    head = pipe.read(8)
    if len(head) < 8:
        raise EOFError("worker pipe closed")
    size = int.from_bytes(head, "little")
    data = pipe.read(size)
    if len(data) < size:
        raise EOFError("worker pipe closed")
    return pickle.loads(data)


# ---------------------------------------------------------------- inside a worker

_WORKER: dict = {}


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


def main(argv) -> int:
    """A worker: ``python -m pyjama.workers ROOT PIPELINE``; jobs on stdin, results on stdout."""
    import argparse
    import importlib
    import sys

    parser = argparse.ArgumentParser(
        prog="python3 -m pyjama.workers",
        description="A worker process of a local Snakemake run of PyJAMA: started by the workflow "
                    "(pyjama/workers.py) for runs of 100 jobs or more, fed one job at a time over its "
                    "stdin; not a command to type. PYJAMA_JOB_PROCESSES=0 runs without workers.")
    parser.add_argument("root", help="the project root")
    parser.add_argument("pipeline", help="the pipeline.json the run's plan was made from (relative to root)")
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        print("Error: python3 -m pyjama.workers takes its jobs from the workflow over a pipe, not from "
              "a terminal; allowed: drawer.py run or snakemake, which start it", file=sys.stderr)
        return 2

    # Ctrl-C goes to Snakemake, which waits for its job threads as it always has: a worker
    # finishes the job it has (a thread could not be interrupted either), then its input ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                        # a step's prints go to stderr, never into the replies
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    _WORKER.update(root=args.root, pipeline=args.pipeline)
    from .alloc import tune_malloc

    tune_malloc()                        # before its first array (pyjama/alloc.py)
    for name in PRELOAD:                 # once, before the first job arrives
        importlib.import_module(name)
    while True:
        try:
            arguments = _receive(requests)
        except EOFError:
            return 0
        _send(replies, _work(arguments))


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
