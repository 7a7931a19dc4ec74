"""A job whose inputs carry the same data as when its outputs were made does not recompute.

Every partition output records in its footer (:mod:`pyjama.io`):

- ``pyjama.content``: the digest of its rows (:func:`pyjama.io.content_digest`);
- ``pyjama.key``: what it was made from (:func:`job_key`): the step, its config file and
  config digest, what else the step's result depends on (``Step.key_extra``: 70's grid
  periods come from the 40 config), the code version (``pyjama.__version__`` + a digest of
  the source of the step's module and every pyjama module it and the runner import), and
  each input file with the digest of its data (``pyjama.content`` of a parquet input, the
  bytes of any other file, e.g. a normalise fit).

Snakemake decides which jobs run, as before (mtimes, params, input sets), and deletes a
job's outputs just before running it. So the runner keeps a hard link of every partition
output it writes under ``data/<EXPO>/.pyjama/kept/`` (no space while the output exists).
A workflow job then, before reading any data (:func:`keep_unchanged`):

- keeps only when it runs in Snakemake's main process (the default profile's job threads),
  that run was given no force flag (``--forceall``, ``--forcerun``/``drawer.py run
  --only``, ``--force``) and ``PYJAMA_RECOMPUTE`` is unset;
- for each output: the output (or its kept link) must have been removed by this run, i.e.
  its kept link changed after the run took its Snakemake lock — an output you deleted
  before the run recomputes;
- reads only footers: every output's recorded key must equal the key of its inputs now.

Then the outputs are linked back from the kept copies and touched (new mtimes for
Snakemake), the log says ``inputs unchanged since <time>: kept`` and the ledger in the
footer stays the job's ledger (the same rows in, the same rows out). Otherwise the job
computes, and writes the same digest again when its rows came out the same — so the jobs
after it are kept. README "How the workflow decides what to run".
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import __version__, io
from .timewindow import iso_seconds

RECOMPUTE_ENV = "PYJAMA_RECOMPUTE"      # set (not "" or "0"): no job keeps its outputs
LOCKS = ".snakemake/locks"
_PKG = Path(__file__).resolve().parent


# ---------------------------------------------------------------- the key

def input_digest(path: Path) -> str | None:
    """The digest of one input's data: a parquet file's recorded ``pyjama.content`` (its
    footer only; None when it has none, e.g. written before this rule), else the digest
    of the file's bytes (a fit file)."""
    if path.suffix == ".parquet":
        return io.read_meta(path).get(io.CONTENT_KEY)
    return "bytes:" + hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def job_key(step, project, st, inputs) -> dict | None:
    """What a partition job's outputs are made from (see the module doc), or None when an
    input is missing or has no recorded digest (then the job computes)."""
    digests = {}
    for rel in sorted(set(str(r) for r in inputs)):
        path = project.root / rel
        if not path.exists():
            return None
        d = input_digest(path)
        if d is None:
            return None
        digests[rel] = d
    return {"step": st.script, "config": st.path, "config_digest": st.digest,
            "extra": step.key_extra(project, st), "code": code_version(step), "inputs": digests}


def key_text(key: dict) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_CODE: dict = {}


def code_version(step) -> str:
    """``<pyjama.__version__>+<16 hex>``: the digest of the source of the step's module and of
    every pyjama module it imports, directly or not (read with ast, imports inside
    functions included), and the runner's. Editing any of them makes its jobs recompute
    the next time they run; a library upgrade (pandas, numpy) does not (force it:
    README "How the workflow decides what to run")."""
    mod = type(step).__module__
    if mod not in _CODE:
        h = hashlib.blake2b(digest_size=8)
        for name in sorted(module_closure([mod, "pyjama.runner"])):
            h.update(name.encode() + b"\0" + _module_path(name).read_bytes() + b"\0")
        _CODE[mod] = f"{__version__}+{h.hexdigest()}"
    return _CODE[mod]


def _module_path(name: str) -> Path:
    rel = Path(*name.split(".")[1:])
    path = _PKG / rel.with_suffix(".py") if name != "pyjama" else _PKG / "__init__.py"
    return path if path.exists() else _PKG / rel / "__init__.py"


# an import statement at the start of a line: `import a.b as c, d` or `from .x import (a, b)`
_IMPORT = re.compile(r"^[ \t]*(?:import[ \t]+([\w., \t]+)|from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n;]*))",
                     re.MULTILINE)


@functools.lru_cache(maxsize=None)
def _imports(name: str) -> frozenset:
    """The pyjama modules ``name``'s source imports (imports inside functions included;
    parsed once per process: a run's code_version of each step module walks the same files).

    Read by a regular expression over the lines, not by ``ast``: parsing the 33 modules a
    run's steps import cost ~0.25 CPU-s of the first job of each step (issue 14, G2). A line
    of a docstring that reads like an import adds a module at worst (a code version that
    changes more often); an import after ``;`` on a line would be missed, so
    tests/test_keep.py checks the result against ``ast`` on every module of the package."""
    path = _module_path(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = {"pyjama"}
    text = re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))   # comments out (a ")" in one)
    for m in _IMPORT.finditer(text):
        plain, source, names = m.groups()
        if plain is not None:
            out.update(n for n in (x.strip().split(" ")[0] for x in plain.split(","))
                       if n.split(".")[0] == "pyjama")
            continue
        level = len(source) - len(source.lstrip("."))
        module = source[level:]
        if level:
            base = package.split(".")
            target = ".".join(base[: len(base) - level + 1] + ([module] if module else []))
        else:
            target = module
        if target.split(".")[0] != "pyjama":
            continue
        for a in names.strip("() \t\n").split(","):   # `from . import io` imports the module pyjama.io
            a = a.strip().split(" ")[0]
            if not a:
                continue
            sub = f"{target}.{a}"
            out.add(sub if _module_path(sub).exists() else target)
    return frozenset(out)


def module_closure(roots) -> set:
    """The pyjama modules ``roots`` import, transitively, and the roots."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_imports(name) - seen)
    return seen


# ---------------------------------------------------------------- may this job keep?

def why_not_allowed(workflow) -> str | None:
    """None when jobs of this run may keep their outputs, else the reason in words."""
    flag = os.environ.get(RECOMPUTE_ENV, "")
    if flag not in ("", "0"):
        return f"{RECOMPUTE_ENV}={flag}"
    if workflow is None:
        return "not a Snakemake job"
    try:
        from snakemake.settings.types import ExecMode

        if workflow.exec_mode != ExecMode.DEFAULT:
            # a job in its own process (SLURM, no threads) cannot see the run's force flags
            return "a job process of its own (only the main Snakemake process keeps)"
        ds = workflow.dag_settings
        if ds.forceall or ds.forcerun or ds.forcetargets:
            return "a force flag (--forceall, --forcerun, --force) was given"
    except (AttributeError, ImportError):
        return "Snakemake's settings unreadable"
    return None


def run_started(root: Path) -> float | None:
    """When this Snakemake run took its lock (the newest ``.snakemake/locks/*.lock``): it
    builds its DAG first, then locks, then deletes each job's outputs just before running
    it. None: no lock (``--nolock``)."""
    try:
        with os.scandir(Path(root) / LOCKS) as it:
            times = [e.stat().st_mtime for e in it if e.name.endswith(".lock")]
    except FileNotFoundError:
        return None
    return max(times) if times else None


# ---------------------------------------------------------------- keep or not

@dataclass
class Kept:
    since: str          # the outputs' time before they were kept (UTC, seconds)
    ledger: dict        # the ledger in the main output's footer


def link_kept(root: Path, rel: str) -> None:
    """Make ``data/<EXPO>/.pyjama/kept/<rel>`` a hard link of the output ``rel`` just
    written (atomically; no link where the filesystem has none: then it cannot be kept)."""
    out = Path(root) / rel
    link = Path(root) / io.kept_file(rel)
    tmp = None
    try:
        # pyjama.io's temporary (its name, its clean-up of a killed writer's), made a link
        tmp = io._temp_for(link)
        os.unlink(tmp)
        os.link(out, tmp)
        os.replace(tmp, link)
    except OSError:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def keep_unchanged(job, step, project, st, started: float):
    """(Kept, None) when every output of ``job`` can be put back unchanged, else (None, why).
    ``started``: :func:`run_started`. Reads footers only."""
    from .rules import flat_files

    root = project.root
    device, day = job.partition
    key = job_key(step, project, st, flat_files(step.job_input_files(project, st, device, day)))
    if key is None:
        return None, "an input has no recorded digest"
    want = key_text(key)
    sources = []
    for rel in job.output_files:
        out, link = root / rel, root / io.kept_file(rel)
        if out.exists():
            src = out
        elif not link.exists():
            return None, f"no kept copy of {rel} (a new output, or made before keep existed)"
        elif link.stat().st_ctime < started:
            link.unlink()        # the output was deleted before this run: you asked for it anew
            return None, f"{rel} was deleted before this run"
        else:
            src = link
        had = io.read_meta(src).get(io.JOB_KEY)
        if had != want:
            return None, _what_changed(had, key)
        sources.append((src, out))
    since = max(src.stat().st_mtime for src, _ in sources)
    for src, out in sources:
        if src != out:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, out)
        os.utime(out)
    ledger = io.read_ledger(root / job.main_output) or {}
    return Kept(iso_seconds(dt.datetime.fromtimestamp(since, dt.timezone.utc)), ledger), None


def _what_changed(had: str | None, key: dict) -> str:
    """The first difference between a recorded key and the current one, in words."""
    if had is None:
        return "its output has no recorded key"
    try:
        old = json.loads(had)
    except ValueError:
        return "its output's key is unreadable"
    for name, words in (("code", "code"), ("config_digest", "config"), ("config", "config file"),
                        ("extra", "upstream config"), ("step", "step")):
        if old.get(name) != key[name]:
            return f"{words} changed"
    was, now = old.get("inputs", {}), key["inputs"]
    if set(was) != set(now):
        return "its set of inputs changed"
    changed = sorted(k for k in now if was[k] != now[k])
    return f"input {changed[0]} changed" if changed else "key changed"
