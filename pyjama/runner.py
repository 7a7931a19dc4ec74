"""The runner: run ONE step over the partitions (or raw files) it selects, with its log.

The one code path of ``pyjama.py run``, ``scripts/NN_*.py``, ``drawer.py`` and every
workflow job (the Snakefile calls :func:`run_job` with a :class:`pyjama.rules.Job`).
"""
from __future__ import annotations

import json
import time
import traceback
from pathlib import Path

from .errors import UserError


def run_step(script, config_path, start=None, end=None, devices=None, day=None, raw=None,
             root=None, quiet=True, options=None) -> list:
    """Run one step; returns its ledger entries."""
    from .pipeline import load_step_config
    from .project import Project
    from .steps import get_step
    from .timewindow import parse_window

    root = Path(root or Path.cwd())
    step = get_step(script)
    st = load_step_config(script, config_path, root)
    window = parse_window(start, end)
    project = Project.for_exposure(st.exposure, root)
    options = dict(options or {})
    if hasattr(step, "run_cli"):
        return step.run_cli(project, st, window, devices, day=day, raw=raw, quiet=quiet, options=options)
    return run_default(step, project, st, window, devices, day=day, raw=raw, quiet=quiet)


def run_default(step, project, st, window, devices=None, day=None, raw=None, quiet=True) -> list:
    """The plain loop of ``run_step``: every selected partition (or raw file), in order."""
    from .progress import iterate

    if step.granularity == "raw_file":
        todo = [raw] if raw else step.selected_raw(project, st, window, devices)
        label = lambda x: f"raw={x}"  # noqa: E731
        run_one = lambda x: step.run_raw(project, st, x)  # noqa: E731
    else:
        todo = [(devices[0] if devices else None, day)] if day else \
            step.direct_partitions(project, st, window, devices)
        if day and not devices:
            raise UserError("--day needs --device")
        label = lambda x: f"{x[0]}/{x[1]}"  # noqa: E731
        run_one = lambda x: step.run_partition(project, st, *x)  # noqa: E731
    entries = []
    for item in iterate(todo, step.script, quiet=quiet):
        try:
            entries.append(run_one(item))
        except UserError as exc:
            raise UserError(f"{step.script} {label(item)}: {exc}") from None
    return entries


def run_job(job, log_path, root=None) -> None:
    """A workflow job, run in this process, its messages in ``log_path``.

    Raises ``UserError("... (log: <path>)")`` on failure so Snakemake reports the job failed
    with the partition and the log named."""
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    where = " ".join(f"{k}={v}" for k, v in job.wildcards.items())
    if job.partition:
        where = "/".join(job.partition)
    with open(log, "w", encoding="utf-8") as fh:
        fh.write(job.command() + "\n")
        try:
            entries = run_step(root=root, quiet=True, **job.run_arguments())
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
        except Exception as exc:  # a bug: the traceback goes to the log, one line to the user
            fh.write(traceback.format_exc())
            raise UserError(f"{job.script} {where}: internal error {type(exc).__name__}: {exc} "
                            f"(traceback in {log})") from None
        for e in entries:
            fh.write(json.dumps(e, sort_keys=True) + "\n")
        fh.write(f"done in {time.monotonic() - t0:.2f} s\n")
