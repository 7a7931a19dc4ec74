"""Snakemake's own verdict per job: which jobs ``drawer.py run`` would run, and why.

``drawer.py status`` does not re-derive Snakemake's rules. It asks Snakemake: the workflow
is parsed and its DAG built in this process through Snakemake's Python API
(``snakemake.api``), with the settings ``drawer.py run`` uses (the default profile's
``rerun-incomplete``, every rerun trigger, the same ``--config`` texts), and for every job
of the DAG we keep ``dag.needrun(job)`` and the names of ``dag.reason(job)`` — exactly what
a dry run prints. The Snakefile gets the plan already built here (no second plan).

Building a year's DAG costs Snakemake about 1 ms of CPU per job, so the verdicts are kept
in ``data/<EXPO>/.pyjama/verdict.json`` with what Snakemake looked at: the mtime and size
of every input and output of the DAG, the mtimes of Snakemake's ``.snakemake/metadata``
and ``.snakemake/incomplete`` records (one per output), each rule's params digest, each
job's input files, the Snakemake config and the code (PyJAMA's sources, Snakemake's
version). On the next ``status``:

- nothing changed: the cached verdicts, without starting Snakemake;
- some jobs changed (a file, a record, a digest, the set of inputs, a new job): those jobs
  and every job downstream of them are *touched*; Snakemake builds the DAG of just their
  outputs (it adds their upstream jobs itself) and its verdicts replace theirs. A job's
  verdict depends only on its own files and records and on its upstream jobs (Snakemake's
  ``needrun`` flows downstream), so the untouched jobs keep theirs;
- the config or the code changed, or most jobs are touched: Snakemake's whole DAG.

A run that ends well writes the cache too (:func:`record_done`, the Snakefile's
``onsuccess``): Snakemake has just run every job of ``rule all``'s DAG that it found to need
running, so every job of that DAG is done; the snapshot is taken then. The board after a
run therefore starts Snakemake only for what changed since.

API::

    verdicts(root, plan) -> (verdicts, how, stats)  # rules.Job -> record; "cache" | "partial" | "full"
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from . import io
from .progress import short_reasons
from .rules import SnakemakeJobs

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "workflow" / "Snakefile"
CACHE_VERSION = 3
FULL_SHARE = 0.5      # touched share of jobs above which the whole DAG is as cheap


def marker_paths(base: Path) -> dict:
    """{output path: mtime_ns} of Snakemake's per-output records under ``base``
    (``.snakemake/metadata`` or ``.snakemake/incomplete``): each file is named by the urlsafe
    base64 of the output path, split into ``@``-prefixed folders when too long."""
    out = {}
    base = str(base)
    if not os.path.isdir(base):
        return out
    for dirpath, _dirs, files in os.walk(base):
        rel = os.path.relpath(dirpath, base)
        prefix = "" if rel == "." else "".join(p.lstrip("@") for p in rel.split(os.sep))
        for f in files:
            if f == "migration_underway":
                continue
            try:
                path = base64.urlsafe_b64decode((prefix + f).encode()).decode()
                out[path] = os.stat(os.path.join(dirpath, f)).st_mtime_ns
            except (ValueError, UnicodeDecodeError, OSError):
                continue
    return out


def _code_digest() -> str:
    import snakemake

    h = hashlib.sha256(snakemake.__version__.encode())
    for base in (REPO / "workflow", REPO / "pyjama"):
        for dirpath, _dirs, files in sorted(os.walk(base)):
            for f in sorted(files):
                if f.endswith((".py", ".smk", ".yaml", ".json")) or f == "Snakefile":
                    st = os.stat(os.path.join(dirpath, f))
                    h.update(f"{dirpath}/{f}:{st.st_mtime_ns}:{st.st_size};".encode())
    return h.hexdigest()


def setup_key(plan) -> str:
    """What every verdict depends on beyond the jobs: the Snakemake config (without the
    window, which only chooses the targets) and the code."""
    return hashlib.sha256(json.dumps([plan.config, _code_digest()], sort_keys=True,
                                     default=str).encode()).hexdigest()


# ---------------------------------------------------------------- asking Snakemake

def snakemake_verdicts(root: Path, plan, targets=None) -> dict:
    """job key → {"rule", "wildcards", "needrun", "reasons"} for every
    job of Snakemake's DAG of ``plan`` (``drawer.py run --dry-run``'s settings and
    ``--config`` texts); ``targets``: only the DAG of these files (default: ``rule all``)."""
    import logging

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
        StorageSettings,
    )

    from .workflow import preloaded

    root = Path(root).resolve()
    cwd = os.getcwd()
    out = {}
    prev = logging.getLogger("snakemake").level
    dag_settings = DAGSettings(force_incomplete=True, **({"targets": set(targets)} if targets else {}))
    try:
        with preloaded(plan), SnakemakeApi(OutputSettings(quiet={Quietness.ALL}, verbose=False)) as api:
            wf_api = api.workflow(resource_settings=ResourceSettings(cores=1),
                                  config_settings=ConfigSettings(config=dict(plan.config),
                                                                 config_args=list(plan.config_args),
                                                                 replace_workflow_config=True),
                                  storage_settings=StorageSettings(),
                                  snakefile=SNAKEFILE, workdir=root)
            dag_api = wf_api.dag(dag_settings=dag_settings)
            wf = dag_api.workflow_api._workflow
            wf.dag_settings = dag_api.dag_settings
            wf._prepare_dag(forceall=False, ignore_incomplete=False, lock_warn_only=True,
                            nolock=True)
            wf._build_dag()
            dag = wf.dag
            reader = SnakemakeJobs(plan.job)
            for job in dag.jobs:
                mine = reader.of_dag_job(job)
                if mine is None:          # rule all
                    continue
                need = bool(dag.needrun(job))
                reason = dag.reason(job)
                out[mine.key] = {"rule": mine.rule, "wildcards": dict(mine.wildcards),
                                 "needrun": need, "reasons": list(reason.get_names()) if need else [],
                                 # the words a dry run prints (drawer.py run --dry-run's lines)
                                 "printed": short_reasons(str(reason)) if need else ""}
    finally:
        os.chdir(cwd)
        logging.getLogger("snakemake").setLevel(prev)
    return out


# ---------------------------------------------------------------- the jobs of the DAG, from the plan

def dag_jobs(plan) -> dict:
    """job key → rules.Job of every job Snakemake's DAG of ``rule all`` holds: the target
    jobs and, following inputs to the jobs writing them, every job upstream (also outside
    the window, e.g. a fit or a neighbour day)."""
    out, todo, looked = {}, [j for j in plan.jobs if j.target], set()
    while todo:
        job = todo.pop()
        key = job.key
        if key in out:
            continue
        out[key] = job
        for path in job.input_files:
            if path not in looked:         # a file read by many jobs is looked up once
                looked.add(path)
                up = plan.job_for_output(path)
                if up is not None:
                    todo.append(up)
    return out


def _stat(root: str, path: str):
    try:
        st = os.stat(os.path.join(root, path))
        return [st.st_mtime_ns, st.st_size]
    except OSError:
        return None


def snapshot(root: Path, jobs: dict) -> dict:
    """What Snakemake's verdict on ``jobs`` (key → rules.Job) reads: per job its params
    digest and input files; per file its mtime and size; per output Snakemake's metadata
    and incomplete records (their mtimes)."""
    base = str(root)
    meta = marker_paths(Path(root) / ".snakemake" / "metadata")
    incomplete = marker_paths(Path(root) / ".snakemake" / "incomplete")
    files: dict = {}
    records: dict = {}
    per_job = {}
    for key, job in jobs.items():
        for p in job.input_files:
            if p not in files:
                files[p] = _stat(base, p)
        for p in job.output_files:
            if p not in files:
                files[p] = _stat(base, p)
            records[p] = [meta.get(p), incomplete.get(p)]
        per_job[key] = [job.params_digest, job.input_files]
    return {"jobs": per_job, "files": files, "records": records}


def touched_jobs(jobs: dict, now: dict, then: dict) -> set:
    """Keys of the jobs whose part of the snapshot differs from the cached one (or that are
    new), and every job downstream of them (``jobs``: key → rules.Job)."""
    then_jobs, then_files, then_records = (then.get(k, {}) for k in ("jobs", "files", "records"))
    files, records = now["files"], now["records"]
    changed = {p for p, t in files.items() if then_files.get(p, "?") != t}
    changed |= {p for p, r in records.items() if then_records.get(p) != r}
    touched = set()
    consumers: dict = {}
    for key, job in jobs.items():
        ins = job.input_files
        for p in ins:
            consumers.setdefault(p, []).append(key)
        if then_jobs.get(key) != now["jobs"][key] or any(p in changed for p in ins) \
                or any(p in changed for p in job.output_files):
            touched.add(key)
    todo = list(touched)
    while todo:
        key = todo.pop()
        for p in jobs[key].output_files:
            for down in consumers.get(p, ()):
                if down not in touched:
                    touched.add(down)
                    todo.append(down)
    return touched


# ---------------------------------------------------------------- the cache

def cache_path(root: Path, exposure: str) -> Path:
    return Path(root) / io.data_dir(exposure) / ".pyjama" / "verdict.json"


def _load(path: Path):
    try:
        data = json.loads(path.read_text())
        return data if data.get("version") == CACHE_VERSION else None
    except (OSError, ValueError):
        return None


class _Cache:
    """The cache as it stands against the plan now: its jobs, the snapshot taken now, the
    cached verdicts made with the same setup (else none) and the jobs touched since."""

    def __init__(self, root: Path, plan, use_cache=True):
        self.root, self.plan = Path(root), plan
        self.jobs = dag_jobs(plan)
        self.now = snapshot(self.root, self.jobs)   # taken before Snakemake looks: a change
        self.key = setup_key(plan)                   # while it works shows as a change next time
        self.path = cache_path(self.root, plan.project.exposure)
        data = _load(self.path) if use_cache else None
        self.then_snap = data["snapshot"] if data and data.get("setup") == self.key else None
        self.then_jobs = data["jobs"] if self.then_snap else {}
        self.touched = touched_jobs(self.jobs, self.now, self.then_snap or {})

    def holds(self) -> bool:
        """Nothing touched and every job cached: the cached verdicts are Snakemake's now."""
        return not self.touched and set(self.then_jobs) >= set(self.jobs)

    def cached(self) -> dict:
        return _on_jobs(self.plan, self.jobs, {k: self.then_jobs[k] for k in self.jobs})

    def write(self, records: dict) -> bool:
        """Store ``records`` (job key → verdict) with the snapshot taken now; compact: a
        year's cache is megabytes. False on a read-only data folder (same answers, no cache)."""
        try:
            io.write_text(self.path, json.dumps({"version": CACHE_VERSION, "setup": self.key,
                                                 "snapshot": self.now, "jobs": records},
                                                separators=(",", ":")))
        except OSError:
            return False
        return True


def verdicts(root: Path, plan, use_cache=True):
    """Snakemake's verdicts on the jobs of ``plan`` (see the module text); returns (verdicts,
    how, stats): ``verdicts`` maps each rules.Job of the DAG to its record (needrun,
    reasons); ``how`` is "cache" (Snakemake not asked), "partial" (the DAG of the touched
    jobs) or "full"; ``stats``: path → [mtime_ns, size] or None of every file of the DAG, as
    read before Snakemake looked."""
    c = _Cache(root, plan, use_cache)
    if c.holds():
        return c.cached(), "cache", c.now["files"]
    if c.then_snap and len(c.touched) <= FULL_SHARE * len(c.jobs):
        targets = sorted({p for k in c.touched for p in c.jobs[k].output_files})
        fresh, how = snakemake_verdicts(c.root, plan, targets), "partial"
        result = {k: c.then_jobs[k] for k in c.jobs if k in c.then_jobs}
        result.update(fresh)
    else:
        result, how = snakemake_verdicts(c.root, plan), "full"
    c.write(result)
    return _on_jobs(plan, c.jobs, result), how, c.now["files"]


def cached_verdicts(root: Path, plan):
    """The cached verdicts when they hold for every job of the plan's DAG as it is now (no
    file, record, digest or job changed since they were made: ``status``'s "cache" case),
    else None — Snakemake is never started here. ``drawer.py run`` answers from them."""
    c = _Cache(root, plan)
    return c.cached() if c.holds() else None


def record_done(root: Path, plan, dag_settings) -> bool:
    """After a run that succeeded: cache "done" for every job of ``rule all``'s DAG, with the
    snapshot of now. Only for a run of the default target with every rerun trigger and no
    rule excluded (a run of some files, ``--until``/``--omit-from``/``--allowed-rules`` or
    fewer triggers leaves jobs that Snakemake did not judge); returns whether it wrote."""
    from snakemake.settings.enums import RerunTrigger

    if (dag_settings is None or dag_settings.targets or dag_settings.target_jobs
            or dag_settings.until or dag_settings.omit_from or dag_settings.allowed_rules
            or set(dag_settings.rerun_triggers) != set(RerunTrigger.all())):
        return False
    c = _Cache(root, plan, use_cache=False)
    return c.write({k: {"rule": j.rule, "wildcards": dict(j.wildcards), "needrun": False,
                        "reasons": [], "printed": ""} for k, j in c.jobs.items()})


def on_success(plan, workflow) -> None:
    """The Snakefile's ``onsuccess`` (after the lost-data lines): :func:`record_done` with the
    run's DAG settings; a failure is one line (the board then asks Snakemake itself)."""
    import sys

    try:
        record_done(plan.root, plan, getattr(workflow, "dag_settings", None))
    except Exception as exc:
        print(f"status cache not written ({type(exc).__name__}: {exc}); drawer.py status "
              "will ask Snakemake", file=sys.stderr)


def _on_jobs(plan, jobs: dict, records: dict) -> dict:
    """Records by key → by the plan's Job (a job only Snakemake's DAG had: looked up)."""
    out = {}
    for key, rec in records.items():
        job = jobs.get(key) or plan.job(rec["rule"], rec["wildcards"])
        if job is not None:
            out[job] = rec
    return out
