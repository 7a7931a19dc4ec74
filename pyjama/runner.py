"""The runner: run ONE step over the partitions (or raw files) it selects, with its log.

The one code path of ``pyjama.py run``, ``scripts/NN_*.py``, ``drawer.py`` and every
workflow job (the Snakefile calls :func:`run_job` with a :class:`pyjama.rules.Job`).
"""
from __future__ import annotations

import json
import time
import traceback
from pathlib import Path

from .errors import UserError, WorkerBug


def _load(script, config_path, start, end, devices, day, raw, root, options, project=None):
    """(step, step config, selection, project, options) of one step run, checked.
    ``project``: the loaded project whose pipeline lists ``config_path`` (a workflow job
    passes the plan's: its configs were validated when the plan was made, and the job
    needs neither to read them again nor to re-check the raw folders)."""
    from dataclasses import replace

    from .pipeline import load_step_config
    from .project import Project
    from .steps import Selection, get_step
    from .timewindow import parse_window

    root = Path(root or Path.cwd())
    step = get_step(script)
    st = None if project is None else next(
        (s for s in project.pipeline.steps if s.path == str(config_path) and s.script == step.script), None)
    if st is None:
        st = load_step_config(script, config_path, root)
        project = None
    check_options(step, options or {})
    options = {o.dest: (options or {}).get(o.dest, o.default) for o in step.options}
    sel = Selection(parse_window(start, end), tuple(devices or ()), day, raw)
    if project is None:
        project = Project.for_exposure(st.exposure, root)
        st = replace(st, partition=project.pipeline.partition)
    check_ownership(step, st, project.pipeline)
    return step, st, sel, project, options


def would_run(script, config_path, start=None, end=None, devices=None, day=None, raw=None,
              root=None, batch=None) -> list:
    """What :func:`run_step` would run, touching nothing: ``device/day`` partitions or
    ``raw=<file>`` names (``pyjama.py run -n``). A step that runs itself (an import) has
    its own dry run and is not listed here."""
    from .steps import PartitionStep, RawFileStep

    step, st, sel, project, _options = _load(script, config_path, start, end, devices, day, raw, root, {})
    if isinstance(step, PartitionStep):
        return [f"{d}/{dd}" for d, dd in step.direct_partitions(project, st, sel)]
    if isinstance(step, RawFileStep):
        key = step.unit_key(project, st)
        return [f"{key}={x}" for x in raw_units(step, project, st, sel, raw, batch)]
    raise UserError(f"{script}: no dry run of its own; allowed: a partition or raw-file step")


def run_step(script, config_path, start=None, end=None, devices=None, day=None, raw=None,
             root=None, quiet=True, options=None, project=None, batch=None) -> list:
    """Run one step; returns its ledger entries. ``options``: the step's own options by
    name (``{"fit": True}``); an option the step does not declare is a one-line error.
    ``project``: see :func:`_load` (a workflow job passes the plan's)."""
    from .steps import ExternalStep, PartitionStep, RawFileStep

    step, st, sel, project, options = _load(script, config_path, start, end, devices, day, raw,
                                            root, options, project)
    if isinstance(step, PartitionStep):
        return run_partitions(step, project, st, sel, options, quiet)
    if isinstance(step, RawFileStep):
        key = step.unit_key(project, st)
        return _loop(step, raw_units(step, project, st, sel, raw, batch),
                     lambda unit: step.run_unit(project, st, unit), lambda x: f"{key}={x}", quiet)
    if isinstance(step, ExternalStep):
        return step.run(project, st, sel, options, quiet)
    raise TypeError(f"{type(step).__name__} is none of PartitionStep, RawFileStep, ExternalStep")


def raw_units(step, project, st, sel, raw=None, batch=None) -> list:
    """The parser jobs of one run: raw file names (day partitions) or batch labels (week or
    month). ``raw``: that file's job (in a week or month exposure, its batch: the output is
    per batch); ``batch``: that batch; neither: the window's."""
    idx = project.raw_index(st)
    if batch is not None:
        if idx.batches() is None:
            raise UserError(f"--batch {batch}: not allowed with {st.partition} partitions "
                            f"({project.pipeline.path}); allowed: --raw <file name>")
        step.batch_files(project, st, batch)          # a one-line error if it holds no file
        return [batch]
    if raw is not None:
        if idx.batches() is None or raw not in idx.files:
            return [raw]       # run_raw says "raw file not found" for a file that is not there
        return [idx.unit_of(raw)]
    return step.selected_units(project, st, sel.window, sel.devices)


def check_ownership(step, st, pipeline) -> None:
    """A step never writes into 00_raw or into a stage another step (another script) of the
    exposure's pipeline owns (also when run alone): one line naming the config, the JSON
    path, the stage and its owner."""
    for stage in step.output_stages(st).values():
        key = next((k for k, v in st.params.items() if v == stage and k != "input_stage"), "output_stage")
        if stage == "00_raw":
            raise UserError(f"{st.path}: $.{key}: '00_raw' is owned by the raw files; allowed: a stage "
                            "of this step's own")
        owner = pipeline.producer_of(stage)
        # a variant config of the same step (e.g. another p_low to compare) may rewrite it
        if owner is not None and owner.script != st.script:
            raise UserError(f"{st.path}: $.{key}: {stage!r} is owned by {owner.path} (in {pipeline.path}); "
                            "allowed: a stage no other step writes")


def check_options(step, options: dict) -> None:
    """A set option that ``step`` does not declare is an error naming the allowed ones."""
    known = {o.dest: o for o in step.options}
    for name, value in options.items():
        if value in (None, False) or name in known:
            continue
        flag = "--" + name.replace("_", "-")
        allowed = ", ".join(o.flag for o in step.options) or "none"
        raise UserError(f"{flag}: not an option of {step.script}; allowed: {allowed}")


def run_partitions(step, project, st, sel, options: dict, quiet: bool) -> list:
    """A partition step over the partitions of ``sel``."""
    todo = step.direct_partitions(project, st, sel)
    done = step.prepare(project, st, sel, todo, options, quiet)
    if done is not None:
        return done
    return _loop(step, todo, lambda part: run_partition(step, project, st, *part),
                 lambda x: f"{x[0]}/{x[1]}", quiet)


def _loop(step, todo, run_one, label, quiet) -> list:
    from .progress import iterate

    entries = []
    for item in iterate(todo, step.script, quiet=quiet):
        try:
            entries.append(run_one(item))
        except UserError as exc:
            raise UserError(f"{step.script} {label(item)}: {exc}") from None
    return entries


def read_inputs(step, project, st, device: str, day: str):
    """(frames by key, input files): each input read with the step's reader for its key."""
    from . import io
    from .rules import flat_files

    files = step.input_files(project, st, device, day)
    frames = {}
    for key, rel in files.items():
        read = step.readers.get(key, lambda path, dev, d: io.read_tidy(path, dev, d))

        def one(r):
            if not (project.root / r).exists():
                raise io.input_missing(r)
            return read(project.root / r, device, day)

        frames[key] = [one(r) for r in rel] if isinstance(rel, (list, tuple)) else one(rel)
    return frames, flat_files(files)


def run_partition(step, project, st, device: str, day: str) -> dict:
    """One partition: read the inputs, compute, write every output table (the ledger in the
    main output's footer; in every footer the key it was made from, :mod:`pyjama.keep`).
    Returns the ledger entry.

    A week's or a month's partition (``day`` is its key) is computed day by day, each day
    exactly as its own job would compute it (its inputs, its neighbours' edges), and its
    tables are written as one file per output, the days in order: the period changes the
    files and the jobs, never a value. Its ledger sums the days' counts."""
    from . import io, keep, tidy
    from .rules import flat_files

    from .pipeline import record_layout

    record_layout(project.root, st)
    days = step.days_of(project, st, device, day)
    if not days:        # a week or month with no day of data for the device (day keys always have one)
        raise UserError(f"the raw index has no day of {day} for {device}; nothing to compute "
                        "(drawer.py status lists the partitions)")
    parts = []
    whole = step.whole_period and days != [day] and step.one_pass(project, st, device, day)
    if whole:
        if any(o.schema is not None for o in step.output_tables(st).values()):
            raise TypeError(f"{step.script}: whole_period is for tidy outputs (a side table needs its day column)")
        frames, inputs_d = read_period(step, project, st, device, day, days)
        tables, counts = step.compute(frames, st, device, days)
        parts.append((day, frames, (tables, counts)))
    else:
        for d in days:
            frames, inputs_d = read_inputs(step, project, st, device, d)   # a bad input: its one line first
            tables, counts = step.compute(frames, st, device, d)
            parts.append((d, frames, step.pass_on(st, frames, tables, counts)))
    job_inputs = flat_files(step.job_input_files(project, st, device, day))
    made_from = keep.job_key(step, project, st, job_inputs)
    frames = parts[0][1] if parts else {}
    if whole or days == [day]:
        tables, counts = parts[0][2]
        inputs = inputs_d
    else:
        counts = io.merge_counts([c for _, _, (_, c) in parts])
        tables = None
        inputs = job_inputs
    entry = io.ledger_entry(step.script, f"{device}/{day}", **counts)
    outs = step.output_files(st, device, day)
    for i, (key, out) in enumerate(step.output_tables(st).items()):
        meta = io.provenance(step.script, st.path, st.digest, inputs, ledger=entry if i == 0 else None)
        meta.update(step.extra_meta(frames))
        if made_from is not None:
            meta[io.JOB_KEY] = keep.key_text(made_from)

        def arrow(t, out=out):
            return tidy.to_arrow(t) if out.schema is None else tidy.to_table(t, out.schema)

        if tables is not None:
            table = arrow(tables[key])
        else:
            table = _concat_days([(d, arrow(t[key])) for d, _, (t, _) in parts], out.schema is not None)
        io.write_table(project.root / outs[key], table, meta)
        keep.link_kept(project.root, outs[key])
    return entry


def read_period(step, project, st, device: str, key: str, days: list):
    """(frames by key, input files) of a week's or a month's job computed in one pass
    (``step.whole_period``): each input file read once, its rows of ``days`` (what reading
    it day by day gives, in the same order)."""
    import pyarrow as pa

    from . import io, tidy
    from .rules import flat_files

    files = step.job_input_files(project, st, device, key)
    frames = {}
    for k, rel in files.items():
        if k in step.readers:
            raise TypeError(f"{step.script}: input {k!r} has its own reader; whole_period needs plain inputs")
        parts = []
        for r in (rel if isinstance(rel, (list, tuple)) else [rel]):
            path = project.root / r
            if not path.exists():
                raise io.input_missing(r)
            # a period's file: its rows of each day, as day by day reads them; a day's: whole
            parts.extend([io.read_day(path, d) for d in days] if io.multi_day(path)
                         else [io.read_parquet(path)])
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts).unify_dictionaries()
        frames[k] = tidy.from_arrow(table, device)
    return frames, flat_files(files)



def _concat_days(tables: list, side: bool):
    """One table of a week's or a month's days, in day order. A side table (one with its
    own schema: 60's events and daily metrics) gains a first column ``day`` (YYYY-MM-DD):
    its rows, one per animal and day, would otherwise not say their day; a tidy table has
    its ``ts``."""
    import pyarrow as pa

    if side:
        tables = [(d, t.add_column(0, pa.field("day", pa.string()), pa.array([d] * t.num_rows, pa.string())))
                  for d, t in tables]
    return pa.concat_tables([t for _, t in tables]).unify_dictionaries().combine_chunks()


def keep_or_why(job, project, workflow) -> tuple:
    """(Kept, None) when the workflow job ``job`` keeps its outputs (:mod:`pyjama.keep`),
    else (None, why not) — why is None when keeping is not even tried (not a partition job)."""
    from . import keep
    from .steps import PartitionStep, get_step

    if job.partition is None or project is None:
        return None, None
    step = get_step(job.script)
    st = next((s for s in project.pipeline.steps if s.path == job.config and s.script == step.script), None)
    if not isinstance(step, PartitionStep) or st is None:
        return None, None
    why = keep.why_not_allowed(workflow)
    if why is not None:
        return None, why
    started = keep.run_started(project.root)
    if started is None:
        return None, "no Snakemake lock (--nolock)"
    try:
        return keep.keep_unchanged(job, step, project, st, started)
    except (OSError, ValueError, UserError) as exc:   # a damaged footer or kept copy: compute
        return None, f"could not check the kept outputs ({type(exc).__name__}: {exc})"


def run_job(job, log_path, root=None, project=None, workflow=None, compute=None) -> None:
    """A workflow job, run in this process, its messages in ``log_path``. ``project``: the
    plan's project (see :func:`run_step`); ``workflow``: Snakemake's workflow object running
    the job (the Snakefile passes its ``workflow``; None outside Snakemake: no keeping);
    ``compute``: job → (ledger entries, CPU seconds, worker pid) or None, to compute
    elsewhere (:func:`pyjama.workers.computer`); None: here.

    A partition job whose inputs carry the same data as when its outputs were made keeps
    them (:mod:`pyjama.keep`; the log's first line after the command says which and why).

    Raises ``UserError("... (log: <path>)")`` on failure so Snakemake reports the job failed
    with the partition and the log named."""
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0, cpu0 = time.monotonic(), time.thread_time()
    where = " ".join(f"{k}={v}" for k, v in job.wildcards.items())
    if job.partition:
        where = "/".join(job.partition)
    worker_cpu, worker = 0.0, None
    with open(log, "w", encoding="utf-8") as fh:
        fh.write(job.command() + "\n")
        try:
            kept, why = keep_or_why(job, project, workflow)
            if kept is not None:
                fh.write(f"inputs unchanged since {kept.since}: kept\n")
                entries = [kept.ledger]
            else:
                if why is not None:
                    fh.write(f"recomputed: {why}\n")
                done = compute(job) if compute is not None else None
                if done is None:
                    done = run_step(root=root, quiet=True, project=project, **job.run_arguments()), 0.0, None
                entries, worker_cpu, worker = done
        except UserError as exc:
            fh.write(f"Error: {exc}\n")
            text = str(exc)
            if not text.startswith(job.script):   # name the job's partition once
                text = f"{job.script} {where}: {text}"
            raise UserError(f"{text} (log: {log})") from None
        except OSError as exc:    # disk full, permission, read-only: the line pyjama.py run prints
            from .errors import os_error_text

            try:
                fh.write(f"Error: {os_error_text(exc)}\n")
            except OSError:             # the log's disk may be the full one
                pass
            raise UserError(f"{job.script} {where}: {os_error_text(exc)} (log: {log})") from None
        except WorkerBug as exc:  # a bug in a worker process: its traceback, as below
            fh.write(exc.text)
            raise UserError(f"{job.script} {where}: internal error {exc.name}: {exc.message} "
                            f"(traceback in {log})") from None
        except Exception as exc:  # a bug: the traceback goes to the log, one line to the user
            fh.write(traceback.format_exc())
            raise UserError(f"{job.script} {where}: internal error {type(exc).__name__}: {exc} "
                            f"(traceback in {log})") from None
        for e in entries:
            fh.write(json.dumps(e, sort_keys=True) + "\n")
        # thread CPU: what this job cost, whatever else loads the machine (Snakemake runs
        # jobs as threads; with worker processes, the thread's and its worker's; pyarrow's
        # own I/O threads are not in it)
        cpu = time.thread_time() - cpu0 + worker_cpu
        where_run = "" if worker is None else f"; worker process {worker}"
        fh.write(f"done in {time.monotonic() - t0:.2f} s (thread CPU {cpu:.2f} s{where_run})\n")

