"""``drawer.py``: run and inspect a whole PIPELINE through Snakemake.

    python3 drawer.py run configs/DEMO/pipeline.json [--from A] [--to B] [--cores N] [--dry-run]
                                                     [--until STEP | --only STEP] [--profile slurm]
    python3 drawer.py status configs/DEMO/pipeline.json [--from A] [--to B] [--json]
    python3 drawer.py dag    configs/DEMO/pipeline.json [-o rulegraph.svg] [--jobs]
    python3 drawer.py report configs/DEMO/pipeline.json [--from A] [--to B] -o report.html

The pipeline and the window are validated here first (the same loader the Snakefile uses),
so a bad config or bound is one line before Snakemake starts. ``run`` holds the exposure's
run lock (pyjama.runlock) and prints one line per job (pyjama.progress.RunMonitor); exit
codes: 0 done, 1 a job crashed or Snakemake failed, 2 a user error (bad config, or every failed
job ended in a one-line error such as an unreachable database), 3 lost data under --strict,
4 another run of the exposure is active. ``status`` exits 1 when any job is not done.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from . import __version__, child_env, losses
from .cli import add_window_args
from .errors import UserError, one_line_errors

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "workflow" / "Snakefile"
PROFILES = REPO / "workflow" / "profiles"

RUN_EPILOG = """examples:
  python3 drawer.py run configs/DEMO/pipeline.json --cores 2
  python3 drawer.py run configs/DEMO/pipeline.json --from 2026-01-21 --to 2026-01-21 --dry-run
  python3 drawer.py run configs/DEMO/pipeline.json --until 20_split
  python3 drawer.py run configs/DEMO/pipeline.json --only 30_clean --from 2026-01-20 --to 2026-01-20
  python3 drawer.py run configs/DEMO/pipeline.json --results       (then: snakemake --report report.html)
  python3 drawer.py run configs/DEMO/pipeline.json -- --summary    (after --: snakemake's own options)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drawer.py", description="Run and inspect a PyJAMA pipeline.")
    p.add_argument("--version", action="version", version=f"drawer.py {__version__}")
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
    r.add_argument("--quiet", "-q", action="store_true", help="only failed jobs and the final line")
    r.add_argument("--verbose", "-v", action="store_true", help="Snakemake's full output, unchanged (default: one line per finished job, with the time left)")
    r.add_argument("--results", action="store_true", help="also build data/<EXPO>/_report/ (the report "
                   "page, rule graph and daily tables) for `snakemake --report report.html`; only with "
                   "the whole pipeline (not --until/--only)")
    r.add_argument("--fresh", action="store_true", help="ask Snakemake for the plan even when the "
                   "status board's verdict cache says nothing changed since the last run (see "
                   "docs/views.md: without it, a run or dry run with nothing to do, or a dry run "
                   "of a plan that is cached whole, answers from the cache in about a second)")
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
  python3 drawer.py dag configs/DEMO/pipeline.json -o rulegraph.svg
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


def snakemake_command(args, root: Path, plan=None) -> list:
    """The snakemake command line for ``drawer.py run`` (validated first)."""
    from .workflow import WorkflowPlan

    if plan is None:
        plan = WorkflowPlan.for_pipeline(args.pipeline, args.start, args.end, root, until=args.until,
                                         only=args.only, results=args.results)   # validates every config
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
    # --replace-workflow-config: config/config.yaml (a bare `snakemake`'s defaults) adds nothing
    cmd += ["--replace-workflow-config", "--config", *plan.config_args]     # the window as the instants parsed here
    if args.only:
        rules = plan.rule_names()
        cmd += ["--allowed-rules", *rules, "all", "--forcerun", *rules]
    if args.dry_run:
        cmd += ["--dry-run"]
    # Snakemake prints every job block; drawer.py reads them (pyjama.progress.RunMonitor) and
    # prints its own lines; -v passes Snakemake's output unchanged.
    return cmd + list(getattr(args, "snakemake_args", []) or [])


# Exit codes of drawer.py run (README "Running unattended"):
EXIT_JOB_FAILED = 1      # a job crashed (traceback in its log) or Snakemake itself failed
EXIT_USER_ERROR = 2      # bad config or bound, or every failed job ended in a one-line error
EXIT_LOST_DATA = 3       # with --strict: the run warned of lost data (pyjama.steps.parser)
EXIT_BUSY = 4            # another drawer.py run of the exposure is running


def _job_cause(root: Path):
    from .status import log_error

    return lambda log: log_error(root / log)


def _is_traceback(root: Path, log: str) -> bool:
    try:
        return "Traceback (most recent call last)" in (root / log).read_text(encoding="utf-8",
                                                                          errors="replace")
    except OSError:
        return True


def cmd_run(args) -> int:
    from . import runlock
    from .progress import RunMonitor
    from .results import results_of
    from .rules import SnakemakeJobs
    from .workflow import WorkflowPlan

    root = Path.cwd()
    if args.results and (args.until or args.only):
        raise UserError(f"--results draws the whole pipeline; it cannot be combined with "
                        f"--{'until' if args.until else 'only'}")
    plan = WorkflowPlan.for_pipeline(args.pipeline, args.start, args.end, root, until=args.until,
                                     only=args.only, results=args.results)   # one-line errors first
    cmd = snakemake_command(args, root, plan)
    expo = plan.project.exposure
    err = sys.stderr
    lock = None
    if not args.dry_run:
        try:
            lock = runlock.acquire(root, expo, "drawer.py run " + " ".join(getattr(args, "argv", [])))
        except runlock.RunBusy as busy:
            h = busy.holder
            print(f"Error: another drawer.py run of exposure {expo} is running (pid {h.get('pid', '?')}, "
                  f"started {h.get('started', '?')}); nothing was touched. Wait for it to end "
                  f"(lock: {busy.path.relative_to(root)})", file=err)
            return EXIT_BUSY
        n = runlock.clear_stale_snakemake_locks(root, expo)
        if n:
            print(f"PyJAMA: removed the Snakemake lock left by a run that is no longer alive "
                  f"(.snakemake/locks, {n} files)", file=err)
    try:
        rc = _from_cache(args, root, plan)
        if rc is not None:
            return _after_run(args, root, rc)
        env = child_env()
        env[losses.SHOWN_BY] = "drawer.py"     # drawer prints the lost-data lines itself (dry runs too)
        results = {r.name: f"result {Path(r.output).name}" for r in results_of(plan)}
        mon = RunMonitor(SnakemakeJobs(plan.job, results), _job_cause(root), err, quiet=args.quiet,
                         verbose=args.verbose,
                         dry_run=args.dry_run)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1)
        for line in proc.stdout:
            mon.feed(line)
        rc = proc.wait()
        mon.close()
    finally:
        if lock is not None:
            lock.close()
    return _after_run(args, root, _finish(args, root, plan, mon, rc))


def _after_run(args, root, rc) -> int:
    warnings = run_warnings(args.pipeline, root)     # lost data (issue 11), after every run
    for line in losses.render(warnings, "run"):
        print(line, file=sys.stderr)
    if warnings and args.strict and rc == 0:
        rc = EXIT_LOST_DATA
    return rc


def _from_cache(args, root, plan):
    """``drawer.py run`` without Snakemake, when the status board's verdict cache
    (:func:`pyjama.verdict.cached_verdicts`) holds for the whole plan as it is now: a run or
    dry run with nothing to do says so; a dry run lists the jobs the cache says would run,
    with the words Snakemake printed. None: ask Snakemake (something changed, no cache, or a
    run Snakemake must judge itself: ``--fresh``, ``--only``, ``--until``, ``--results``,
    ``--profile``, ``-v`` or arguments after ``--``). Returns the exit code."""
    from . import verdict

    if (args.fresh or args.only or args.until or args.results or args.profile or args.verbose
            or getattr(args, "snakemake_args", None)):
        return None
    found = verdict.cached_verdicts(root, plan)
    if found is None:
        return None
    todo = [(job, rec) for job, rec in found.items() if rec["needrun"]]
    err = sys.stderr
    if todo and not args.dry_run:
        return None                     # work to do: Snakemake runs it
    if not todo:
        if args.dry_run:
            print("PyJAMA: dry run: nothing to do, every job is up to date; nothing was changed "
                  "(from the verdict cache; --fresh asks Snakemake)", file=err)
        else:
            print(f"PyJAMA: nothing to do, every job is up to date (from the verdict cache; --fresh "
                  f"asks Snakemake). Step × day board with rows and rejects: {_board_command(args)}",
                  file=err)
        return 0
    if not args.quiet:
        order = {rule.name: i for i, rule in enumerate(plan.rules)}
        for job, rec in sorted(todo, key=lambda jr: (order.get(jr[0].rule, 0), jr[0].where)):
            what = " ".join(x for x in (job.step, job.where) if x)
            print(f"would run: {what}: {rec.get('printed', '')}".rstrip(": "), file=err)
    n = len(todo)
    print(f"PyJAMA: dry run: {n} job{'s' if n != 1 else ''} would run; nothing was changed "
          f"(from the verdict cache; --fresh asks Snakemake)", file=err)
    return 0


def _board_command(args) -> str:
    """The ``drawer.py status`` command of this run's pipeline and window (final lines)."""
    window = " ".join(f"--{k} {v}" for k, v in (("from", args.start), ("to", args.end)) if v)
    return f"python3 drawer.py status {args.pipeline}{' ' + window if window else ''}"


def _finish(args, root, plan, mon, rc) -> int:
    err = sys.stderr
    board = _board_command(args)
    if args.dry_run:
        if rc == 0:
            n = len(mon.planned)
            what = f"{n} job{'s' if n != 1 else ''} would run" if n else "nothing to do, every job is up to date"
            print(f"PyJAMA: dry run: {what}; nothing was changed", file=err)
            return 0
    if rc == 0:
        took = _elapsed(mon)
        what = (f"done, {mon.finished} job{'s' if mon.finished != 1 else ''} in {took}" if mon.finished
                else "nothing to do, every job is up to date")
        print(f"PyJAMA: {what}. Step × day board with rows and rejects: {board}", file=err)
        return 0
    if mon.failed:
        names = ", ".join(f"{s} {w}".strip() for s, w, _c, _l in mon.failed[:5])
        more = f" and {len(mon.failed) - 5} more" if len(mon.failed) > 5 else ""
        code = EXIT_JOB_FAILED if any(_is_traceback(root, log) for *_x, log in mon.failed) \
            else EXIT_USER_ERROR
        print(f"PyJAMA: {len(mon.failed)} job{'s' if len(mon.failed) != 1 else ''} failed "
              f"({names}{more}), {mon.finished} done; logs named above. Board: {board}", file=err)
        return code
    # Snakemake stopped before or between jobs: its own error lines, once each
    mine = [e for e in mon.errors if e.startswith("Error: ")]
    shown = mine or mon.errors[:3] or [f"Error: snakemake exited with {rc}"]
    if not args.verbose:
        for e in shown:
            print(e if e.startswith("Error") else f"Error: {e}", file=err)
    return EXIT_USER_ERROR if mine or rc == 2 else EXIT_JOB_FAILED


def _elapsed(mon) -> str:
    from .progress import _duration

    return _duration(mon.clock() - mon.t0)


def run_warnings(pipeline, root, project=None) -> list:
    """The end-of-run summary of lost data (pyjama.steps.parser.loss_warnings); ``project``:
    one already loaded (status), else the pipeline is loaded again (after a run: new files)."""
    from .errors import UserError
    from .project import Project
    from .steps.parser import loss_warnings

    try:
        return loss_warnings(project or Project.load(pipeline, root))
    except UserError:
        return []   # a config error has been told already (by Snakemake's run)


def cmd_status(args) -> int:
    """Exit 0 when every job is done (``drawer.py run`` would run nothing), 1 otherwise."""
    from .status import build_board, main_status

    board = build_board(args.pipeline, args.start, args.end)
    sys.stdout.write(main_status(args.pipeline, args.start, args.end, as_json=args.json, board=board))
    if not args.json:
        for line in losses.render(run_warnings(args.pipeline, Path.cwd(), board.project), "status"):
            sys.stdout.write(line + "\n")
    return 0 if all(j.state == "done" for j in board.jobs) else 1


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
    args.argv = argv
    return one_line_errors(COMMANDS[args.command], args)
