"""Snakemake's own verdict per job: which jobs ``drawer.py run`` would run, and why.

``drawer.py status`` does not re-derive Snakemake's rules. It asks Snakemake: the workflow
is parsed and its DAG built in this process through Snakemake's Python API
(``snakemake.api``), with the settings ``drawer.py run`` uses (the default profile's
``rerun-incomplete``, every rerun trigger), and for every job of the DAG we keep
``dag.needrun(job)`` and the names of ``dag.reason(job)`` — exactly what a dry run prints.

Building a year's DAG costs Snakemake several seconds (≈ 1.9 ms per job), so the verdicts
are cached in ``data/<EXPO>/.pyjama/verdict.json``, keyed by a fingerprint of everything
Snakemake looks at: the mtime and size of every file of the DAG (inputs, outputs), the
listing of ``.snakemake/metadata`` and ``.snakemake/incomplete`` (with mtimes), the config
files, the window and the PyJAMA code (workflow/ and pyjama/ sources). Any change there
recomputes the verdicts from Snakemake; otherwise the cache answers in milliseconds.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import io

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "workflow" / "Snakefile"
CACHE_VERSION = 1


def job_key(rule: str, wildcards: dict) -> str:
    """One text per job: ``rule`` plus its sorted wildcards (the same for our plan and
    Snakemake's DAG)."""
    return rule + "|" + ",".join(f"{k}={v}" for k, v in sorted(dict(wildcards).items()))


def _code_digest() -> str:
    h = hashlib.sha256()
    for base in (REPO / "workflow", REPO / "pyjama"):
        for dirpath, _dirs, files in sorted(os.walk(base)):
            for f in sorted(files):
                if f.endswith((".py", ".smk", ".yaml", ".json")) or f == "Snakefile":
                    st = os.stat(os.path.join(dirpath, f))
                    h.update(f"{dirpath}/{f}:{st.st_mtime_ns}:{st.st_size};".encode())
    return h.hexdigest()


def _listing(base: Path, h) -> None:
    if not base.is_dir():
        h.update(b"-")
        return
    for dirpath, dirs, files in os.walk(base):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            try:
                h.update(f"{p}:{os.stat(p).st_mtime_ns};".encode())
            except OSError:
                continue


def fingerprint(root: Path, plan_key: str, files) -> str:
    """The digest of what Snakemake's verdict depends on (see the module text)."""
    h = hashlib.sha256()
    h.update(plan_key.encode())
    h.update(_code_digest().encode())
    base = str(root)
    for rel in files:
        try:
            st = os.stat(os.path.join(base, rel))
            t = f"{st.st_mtime_ns}:{st.st_size}"
        except OSError:
            t = "-"
        h.update(f"{rel}:{t};".encode())
    _listing(root / ".snakemake" / "metadata", h)
    _listing(root / ".snakemake" / "incomplete", h)
    return h.hexdigest()


def snakemake_verdicts(root: Path, config: dict, config_args) -> dict:
    """job key → {"needrun": bool, "reasons": [...], "rule", "wildcards"} for every job of
    Snakemake's DAG of the workflow with ``config`` and the ``--config`` texts
    ``config_args`` (as ``drawer.py run --dry-run`` passes them)."""
    import logging

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings,
                                          Quietness, ResourceSettings, StorageSettings)

    root = Path(root).resolve()
    cwd = os.getcwd()
    out = {}
    prev = logging.getLogger("snakemake").level
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL}, verbose=False)) as api:
            wf_api = api.workflow(resource_settings=ResourceSettings(cores=1),
                                  config_settings=ConfigSettings(config=dict(config),
                                                                config_args=list(config_args),
                                                                replace_workflow_config=True),
                                  storage_settings=StorageSettings(),
                                  snakefile=SNAKEFILE, workdir=root)
            dag_api = wf_api.dag(dag_settings=DAGSettings(force_incomplete=True))
            wf = dag_api.workflow_api._workflow
            wf.dag_settings = dag_api.dag_settings
            wf._prepare_dag(forceall=False, ignore_incomplete=False, lock_warn_only=True,
                            nolock=True)
            wf._build_dag()
            dag = wf.dag
            for job in dag.jobs:
                if job.rule.name == "all":
                    continue
                wc = dict(job.wildcards_dict)
                need = bool(dag.needrun(job))
                reasons = list(dag.reason(job).get_names()) if need else []
                out[job_key(job.rule.name, wc)] = {
                    "rule": job.rule.name, "wildcards": wc, "needrun": need, "reasons": reasons,
                    "inputs": [str(f) for f in job.input], "outputs": [str(f) for f in job.output]}
    finally:
        os.chdir(cwd)
        logging.getLogger("snakemake").setLevel(prev)
    return out


def plan_key(config: dict, targets, digests) -> str:
    """What the DAG's shape depends on: the Snakemake config (without the window: it only
    chooses the targets, so a ``{NOW}`` bound that moved by a second keeps the cache), the
    targets, the step configs."""
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    h.update("\n".join(targets).encode())
    h.update(json.dumps(sorted(digests)).encode())
    return h.hexdigest()


def cache_path(root: Path, exposure: str) -> Path:
    return Path(root) / io.data_dir(exposure) / ".pyjama" / "verdict.json"


def _files_of(jobs: dict) -> list:
    return sorted({f for v in jobs.values() for f in (*v["inputs"], *v["outputs"])})  # noqa: C401


def verdicts(root: Path, exposure: str, plan, digests, use_cache=True):
    """Snakemake's verdicts (see :func:`snakemake_verdicts`), from the cache when nothing
    Snakemake looks at has changed; returns (verdicts, came_from_cache).

    The cache stores the files of the DAG Snakemake built; it is valid while the plan
    (config, targets, step configs) is the same and those files, Snakemake's metadata and
    incomplete markers and the PyJAMA code have the same mtimes."""
    root = Path(root)
    pkey = plan_key(plan.config, plan.targets(), digests)
    cache = cache_path(root, exposure)
    if use_cache and cache.exists():
        try:
            data = json.loads(cache.read_text())
            if (data.get("version") == CACHE_VERSION and data.get("plan") == pkey
                    and data.get("fingerprint") == fingerprint(root, pkey, _files_of(data["jobs"]))):
                return data["jobs"], True
        except (OSError, ValueError, KeyError, TypeError):
            pass
    jobs = snakemake_verdicts(root, plan.config, plan.config_args)
    try:
        io.write_json(cache, {"version": CACHE_VERSION, "plan": pkey,
                              "fingerprint": fingerprint(root, pkey, _files_of(jobs)), "jobs": jobs})
    except OSError:
        pass   # a read-only data folder: no cache, same answer
    return jobs, False
