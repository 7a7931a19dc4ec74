"""``pyjama.py``: run ONE step over the partitions of a window, with the workflow's code.

    python3 pyjama.py run 20_split.py --with configs/DEMO/20_split.json [--from A --to B]
    python3 pyjama.py list          # the known step scripts
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .errors import UserError, one_line_errors

EPILOG = """example:
  python3 pyjama.py run 20_split.py --with configs/DEMO/20_split.json --from 2026-01-20 --to 2026-01-21
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyjama.py", description="Run one PyJAMA step.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one step over the partitions of a window", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("script", help="the step script, e.g. 20_split.py")
    r.add_argument("--with", dest="config", required=True, help="the step's config JSON")
    r.add_argument("--from", dest="start", help="window start (YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ, {NOW-2d})")
    r.add_argument("--to", dest="end", help="window end, inclusive (a bare date = that whole day)")
    r.add_argument("--device", action="append", help="only this device (repeatable)")
    r.add_argument("--day", help="exactly one UTC day (used by the workflow)")
    r.add_argument("--raw", help="exactly one raw file name (parser steps; used by the workflow)")
    r.add_argument("--quiet", action="store_true", help="no progress bar, no summary line")
    r.add_argument("--fit", action="store_true", help="normalise steps: refit the parameters file")
    r.add_argument("--mode", choices=["range", "auto"], default="range",
                   help="81 import: a --from/--to day range, or auto (complete what the table lacks)")
    r.add_argument("--dry-run", action="store_true", help="import steps: print what would be done, touch nothing")
    sub.add_parser("list", help="list the known step scripts")
    return p


def run_step(script, config_path, start=None, end=None, devices=None, day=None, raw=None,
             root=None, quiet=True, options=None) -> list:
    """Run one step (the code path of both ``pyjama.py run`` and every workflow job)."""
    from .config import load_step_config
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
    """The plain loop of ``run_step``: every selected partition (or raw file), in order.
    A step's own ``run_cli`` calls this for its ordinary (non-option) path."""
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
    from .progress import iterate

    for item in iterate(todo, step.script, quiet=quiet):
        try:
            entries.append(run_one(item))
        except UserError as exc:
            raise UserError(f"{step.script} {label(item)}: {exc}") from None
    return entries


def run_job_logged(argv, log_path) -> None:
    """A workflow job: ``pyjama.py run`` arguments, run in this process, log to ``log_path``.

    Raises ``UserError("... (log: <path>)")`` on failure so Snakemake reports the job failed
    with the partition and the log named."""
    import traceback

    args = build_parser().parse_args(["run", *argv])
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    where = f"raw={args.raw}" if args.raw else f"{(args.device or ['?'])[0]}/{args.day}"
    with open(log, "w", encoding="utf-8") as fh:
        fh.write(f"pyjama.py run {' '.join(argv)}\n")
        try:
            entries = _run_args(args, quiet=True)
        except UserError as exc:
            fh.write(f"Error: {exc}\n")
            text = str(exc)
            if not text.startswith(args.script):   # name the job's partition once
                text = f"{args.script} {where}: {text}"
            raise UserError(f"{text} (log: {log})") from None
        except OSError as exc:    # disk full, permission, read-only: the line pyjama.py run prints
            from .errors import os_error_text

            try:
                fh.write(f"Error: {os_error_text(exc)}\n")
            except OSError:             # the log's disk may be the full one
                pass
            raise UserError(f"{args.script} {where}: {os_error_text(exc)} (log: {log})") from None
        except Exception as exc:  # a bug: the traceback goes to the log, one line to the user
            fh.write(traceback.format_exc())
            raise UserError(f"{args.script} {where}: internal error {type(exc).__name__}: {exc} "
                            f"(traceback in {log})") from None
        for e in entries:
            fh.write(json.dumps(e, sort_keys=True) + "\n")
        fh.write(f"done in {time.monotonic() - t0:.2f} s\n")


def _run_args(args, quiet: bool) -> list:
    """`pyjama.py run` arguments → run_step (shared by the CLI and the workflow's jobs)."""
    return run_step(args.script, args.config, args.start, args.end, args.device, args.day, args.raw,
                    quiet=quiet, options={"fit": args.fit, "mode": args.mode, "dry_run": args.dry_run})


def _command(args) -> int:
    if args.command == "list":
        from .steps import get_step, known_scripts

        for s in known_scripts():
            print(f"{s:28s} {get_step(s).summary}")
        return 0
    t0 = time.monotonic()
    try:
        entries = _run_args(args, args.quiet)
    except OSError as exc:      # the same line as a workflow job (run_job_logged) gives
        from .errors import os_error_text

        raise UserError(f"{args.script}: {os_error_text(exc)}") from None
    if not args.quiet:
        rows_in = sum(e.get("rows_in", 0) for e in entries)
        rows_out = sum(e.get("rows_out", 0) for e in entries)
        rej = sum(sum(e.get("rejected", {}).values()) for e in entries)
        done = "would be written (dry run: nothing changed)" if args.dry_run else "written"
        print(f"{args.script}: {len(entries)} partition(s) {done}, rows in {rows_in}, "
              f"out {rows_out}, set aside {rej}, in {time.monotonic() - t0:.1f} s")
        if not entries:
            print(f"{args.script}: nothing to do in this window (no input partitions)")
    return 0


def main(argv=None) -> int:
    return one_line_errors(_command, build_parser().parse_args(argv))
