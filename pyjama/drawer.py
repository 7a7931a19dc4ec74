"""``drawer.py``: run and inspect a whole PIPELINE through Snakemake.

    python3 drawer.py run configs/DEMO/pipeline.json [--from A] [--to B] [--cores N] [--dry-run]
                                                     [--until STEP | --only STEP] [--profile slurm]
    python3 drawer.py status configs/DEMO/pipeline.json [--from A] [--to B] [--json]
    python3 drawer.py dag    configs/DEMO/pipeline.json [-o rulegraph.svg] [--jobs]
    python3 drawer.py report configs/DEMO/pipeline.json [--from A] [--to B] -o report.html

The pipeline and the window are validated here first (the same loader the Snakefile uses),
so a bad config or bound is one line before Snakemake starts.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .errors import UserError, one_line_errors

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "workflow" / "Snakefile"
PROFILES = REPO / "workflow" / "profiles"

RUN_EPILOG = """examples:
  python3 drawer.py run configs/DEMO/pipeline.json --cores 2
  python3 drawer.py run configs/DEMO/pipeline.json --from 2026-01-21 --to 2026-01-21 --dry-run
  python3 drawer.py run configs/DEMO/pipeline.json --until 20_split
  python3 drawer.py run configs/DEMO/pipeline.json --only 30_clean --from 2026-01-20 --to 2026-01-20
  python3 drawer.py run configs/DEMO/pipeline.json -- --summary    (after --: snakemake's own options)
"""


def add_window_args(p):
    p.add_argument("--from", dest="start", help="window start: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ, {NOW}, {NOW-2d}")
    p.add_argument("--to", dest="end", help="window end, inclusive (a bare date = that whole UTC day)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drawer.py", description="Run and inspect a PyJAMA pipeline.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a pipeline through Snakemake", epilog=RUN_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("pipeline", help="configs/<EXPO>/pipeline.json")
    add_window_args(r)
    r.add_argument("--cores", default="2", help="CPU cores to use (default 2; 'all' for every core)")
    r.add_argument("--dry-run", "-n", action="store_true", help="show the plan, run nothing")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--until", metavar="STEP", help="run up to and including this step (name of its config, e.g. 20_split)")
    g.add_argument("--only", metavar="STEP", help="replay just this step over the window (its inputs must exist)")
    r.add_argument("--profile", help="Snakemake profile: a name under workflow/profiles/ (default, slurm) or a path")
    r.add_argument("--quiet", "-q", action="store_true", help="only errors and the progress line")
    r.add_argument("--verbose", "-v", action="store_true", help="Snakemake's full output (every job and why it runs)")
    r.add_argument("--strict", action="store_true", help="exit 3 when the run warns of lost data (a raw file "
                   "not parsed, or one that lost more than its parser's warn_rejected_share of its lines)")
    add_view_parsers(sub)
    return p


STATUS_EPILOG = """examples:
  python3 drawer.py status configs/DEMO/pipeline.json
  python3 drawer.py status configs/DEMO/pipeline.json --from 2026-01-21 --to 2026-01-21
  python3 drawer.py status configs/DEMO/pipeline.json --json > status.json
"""

DAG_EPILOG = """examples:
  python3 drawer.py dag configs/DEMO/pipeline.json -o docs/rulegraph.svg
  python3 drawer.py dag configs/DEMO/pipeline.json --jobs --from 2026-01-20 --to 2026-01-20 -o jobs.png
  python3 drawer.py dag configs/DEMO/pipeline.json -o -        (the DOT source on stdout)
"""

REPORT_EPILOG = """examples:
  python3 drawer.py report configs/DEMO/pipeline.json -o report.html
  python3 drawer.py report configs/DEMO/pipeline.json --from 2026-01-21 --to 2026-01-21 -o day.html
"""


def add_view_parsers(sub):
    """The read-only views: status, dag, report (pyjama/status.py, dag.py, report.py)."""
    raw = argparse.RawDescriptionHelpFormatter
    s = sub.add_parser("status", help="step × day board: done / missing / stale (why) / failed",
                       epilog=STATUS_EPILOG, formatter_class=raw)
    s.add_argument("pipeline", help="configs/<EXPO>/pipeline.json")
    add_window_args(s)
    s.add_argument("--json", action="store_true", help="machine-readable output (every job and cell)")
    d = sub.add_parser("dag", help="draw the rule graph (or, with --jobs, the job DAG) with graphviz",
                       epilog=DAG_EPILOG, formatter_class=raw)
    d.add_argument("pipeline", help="configs/<EXPO>/pipeline.json")
    add_window_args(d)
    d.add_argument("--jobs", action="store_true", help="one node per job (device, day) in the window, "
                   "not one per rule")
    d.add_argument("-o", "--output", help="file to write: .svg, .png, .pdf, or .dot (DOT source); "
                   "'-' prints the DOT source (default: rulegraph.svg, or jobs.svg with --jobs)")
    rp = sub.add_parser("report", help="one self-contained HTML page: completeness, QC flags, "
                        "openings, events, daily metrics, ledger, configs",
                        epilog=REPORT_EPILOG, formatter_class=raw)
    rp.add_argument("pipeline", help="configs/<EXPO>/pipeline.json")
    add_window_args(rp)
    rp.add_argument("-o", "--output", default="report.html", help="HTML file to write (default report.html)")


def snakemake_command(args, root: Path) -> list:
    """The snakemake command line for ``drawer.py run`` (validated first)."""
    from .workflow import WorkflowPlan

    plan = WorkflowPlan.for_pipeline(args.pipeline, args.start, args.end, root,
                                     until=args.until, only=args.only)   # validates every config
    config = plan.config
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(root)]
    if args.profile:
        prof = Path(args.profile)
        if not prof.exists():
            prof = PROFILES / args.profile
        if not prof.is_dir():
            allowed = ", ".join(sorted(p.name for p in PROFILES.iterdir() if p.is_dir()))
            raise UserError(f"--profile: {args.profile!r} not found; allowed: {allowed}, or a folder path")
        cmd += ["--profile", str(prof)]
    else:
        cmd += ["--cores", str(args.cores)]
    cmd += ["--config"] + [f"{k}={v}" for k, v in config.items()]
    if args.only:
        rules = plan.rule_names()
        cmd += ["--allowed-rules", *rules, "all", "--forcerun", *rules]
    if args.dry_run:
        cmd += ["--dry-run"]
    if args.quiet:
        cmd += ["--quiet", "rules", "host", "reason"]
    elif not getattr(args, "verbose", False):
        cmd += ["--quiet", "rules", "host"]   # the plan table, progress and errors; -v for every job
    return cmd + list(getattr(args, "snakemake_args", []) or [])


def cmd_run(args) -> int:
    root = Path.cwd()
    cmd = snakemake_command(args, root)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    rc = subprocess.call(cmd, env=env)
    if not args.dry_run:
        window = " ".join(f"--{k} {v}" for k, v in (("from", args.start), ("to", args.end)) if v)
        what = ("done. Step × day board with rows and rejects" if rc == 0 else
                f"stopped with errors (exit {rc}). Failed jobs and their logs")
        print(f"PyJAMA: {what}: python3 drawer.py status {args.pipeline}{' ' + window if window else ''}",
              file=sys.stderr)
    warnings = run_warnings(args.pipeline, root)
    for w in warnings:
        print(f"PyJAMA: warning: {w}", file=sys.stderr)
    if warnings and args.strict and rc == 0:
        rc = 3
    return rc


def run_warnings(pipeline, root) -> list:
    """The end-of-run summary of lost data (pyjama.steps.parser.loss_warnings)."""
    from .errors import UserError
    from .project import Project
    from .steps.parser import loss_warnings

    try:
        return loss_warnings(Project.load(pipeline, root))
    except UserError:
        return []   # a config error has been told already (by Snakemake's run)


def cmd_status(args) -> int:
    from .status import main_status

    sys.stdout.write(main_status(args.pipeline, args.start, args.end, as_json=args.json))
    if not args.json:
        for w in run_warnings(args.pipeline, Path.cwd()):
            sys.stdout.write(f"warning: {w}\n")
    return 0


def cmd_dag(args) -> int:
    from .dag import draw

    out = draw(args.pipeline, args.output, jobs=args.jobs, start=args.start, end=args.end)
    if out:
        print(f"wrote {out}")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    out = write_report(args.pipeline, args.output, start=args.start, end=args.end)
    print(f"wrote {out}")
    return 0


COMMANDS = {"run": cmd_run, "status": cmd_status, "dag": cmd_dag, "report": cmd_report}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:  # everything after -- goes to snakemake unchanged
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    args.snakemake_args = extra
    return one_line_errors(COMMANDS[args.command], args)
