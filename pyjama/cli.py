"""``pyjama.py``: run ONE step over the partitions of a window, with the workflow's code.

    python3 pyjama.py run 20_split.py --with configs/DEMO/20_split.json [--from A --to B]
    python3 pyjama.py list          # the known step scripts
"""
from __future__ import annotations

import argparse
import sys
import time

from . import __version__
from .errors import UserError, one_line_errors
from .steps import all_options

EPILOG = """example:
  python3 pyjama.py run 20_split.py --with configs/DEMO/20_split.json --from 2026-01-20 --to 2026-01-21
"""


def add_window_args(p):
    """``--from`` / ``--to`` of pyjama.py and drawer.py (parsed by pyjama.timewindow)."""
    p.add_argument("--from", dest="start", help="window start: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ, {NOW}, {NOW-2d}")
    p.add_argument("--to", dest="end", help="window end, inclusive (a bare date = that whole UTC day)")


def build_parser(scripts=None) -> argparse.ArgumentParser:
    """The parser; ``scripts``: the steps whose own options it knows (default every step)."""
    p = argparse.ArgumentParser(prog="pyjama.py", description="Run one PyJAMA step.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"pyjama.py {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one step over the partitions of a window", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("script", help="the step script, e.g. 20_split.py")
    r.add_argument("--with", dest="config", required=True, help="the step's config JSON")
    add_window_args(r)
    r.add_argument("--device", action="append", help="only this device (repeatable)")
    r.add_argument("--day", help="exactly one UTC day (used by the workflow)")
    r.add_argument("--raw", help="exactly one raw file name (parser steps; used by the workflow; with "
                   "week or month partitions: the batch that holds it)")
    r.add_argument("--batch", help="exactly one batch of raw files, <device>_<period> (parser steps of "
                   "a week or month exposure; used by the workflow)")
    # the short flags of drawer.py run: -q quiet, -n dry run, -v one line per partition
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary line")
    r.add_argument("--verbose", "-v", action="store_true", help="one line per partition written "
                   "(rows in, out, set aside), then the summary")
    r.add_argument("--dry-run", "-n", dest="dry_run", action="store_true", default=None,
                   help="list the partitions (or raw files) the run would write; write nothing")
    for opt, owners in all_options(scripts):   # declared by the steps (pyjama.steps.Option)
        if opt.dest == "dry_run":              # the steps' own dry run (imports) is -n above
            continue
        flags = [opt.flag, *([opt.short] if opt.short else [])]
        if opt.choices:
            r.add_argument(*flags, dest=opt.dest, choices=list(opt.choices), default=None,
                           help=f"{opt.help} (default {opt.default}; {', '.join(owners)})")
        else:
            r.add_argument(*flags, dest=opt.dest, action="store_true", default=None,
                           help=f"{opt.help} ({', '.join(owners)})")
    sub.add_parser("list", help="list the known step scripts")
    return p


def step_options(args) -> dict:
    """The step options given on the command line (unset ones left out; ``--dry-run`` is a
    step option only of the steps that declare it)."""
    return {opt.dest: getattr(args, opt.dest) for opt, _ in all_options([args.script])
            if getattr(args, opt.dest, None) is not None}


def _run_args(args, quiet: bool) -> list:
    """`pyjama.py run` arguments → the runner."""
    from .runner import run_step

    return run_step(args.script, args.config, args.start, args.end, args.device, args.day, args.raw,
                    quiet=quiet, options=step_options(args), batch=args.batch)


def _dry_run(args) -> int:
    """``-n`` of a partition or raw-file step: what would be written, nothing written."""
    from .runner import would_run

    todo = would_run(args.script, args.config, args.start, args.end, args.device, args.day, args.raw,
                     batch=args.batch)
    if not args.quiet:
        for label in todo:
            print(f"would write: {args.script} {label}")
    print(f"{args.script}: {len(todo)} partition(s) would be written (dry run: nothing changed)")
    return 0


def _command(args) -> int:
    from .steps import get_step

    if args.command == "list":
        from .steps import known_scripts

        for s in known_scripts():
            print(f"{s:28s} {get_step(s).summary}")
        return 0
    if args.dry_run and not any(o.dest == "dry_run" for o in get_step(args.script).options):
        return _dry_run(args)
    t0 = time.monotonic()
    try:
        entries = _run_args(args, args.quiet)
    except OSError as exc:      # the same line as a workflow job (run_job_logged) gives
        from .errors import os_error_text

        raise UserError(f"{args.script}: {os_error_text(exc)}") from None
    if args.verbose and not args.quiet:
        for e in entries:
            rej = sum(e.get("rejected", {}).values())
            print(f"{args.script} {e.get('partition', '?')}: rows in {e.get('rows_in', 0)}, "
                  f"out {e.get('rows_out', 0)}, set aside {rej}")
    if not args.quiet:
        rows_in = sum(e.get("rows_in", 0) for e in entries)
        rows_out = sum(e.get("rows_out", 0) for e in entries)
        rej = sum(sum(e.get("rejected", {}).values()) for e in entries)
        done = "would be written (dry run: nothing changed)" if getattr(args, "dry_run", None) else "written"
        print(f"{args.script}: {len(entries)} partition(s) {done}, rows in {rows_in}, "
              f"out {rows_out}, set aside {rej}, in {time.monotonic() - t0:.1f} s")
        if not entries:
            print(f"{args.script}: nothing to do in this window (no input partitions)")
    return 0


def main(argv=None) -> int:
    return one_line_errors(_parse_and_run, list(sys.argv[1:] if argv is None else argv))


def _parse_and_run(argv) -> int:
    """Only the named step's options are known (its module alone is imported: a quick
    start); another step's option is one line naming the allowed ones."""
    from .alloc import tune_malloc
    from .steps import get_step

    tune_malloc()                       # freed arrays kept for reuse (pyjama/alloc.py)

    script = argv[1] if len(argv) > 1 and argv[0] == "run" and not argv[1].startswith("-") else None
    if script is None:
        return _command(build_parser().parse_args(argv))
    step = get_step(script)
    args, extra = build_parser([step.script]).parse_known_args(argv)
    if extra:
        allowed = ", ".join(o.flag for o in step.options) or "none"
        raise UserError(f"{extra[0]}: not an option of {step.script}; allowed: {allowed}")
    return _command(args)
