"""drawer.py run's lines (issue 12), read from Snakemake 9's own output: one line per
finished job naming step, device and day with its duration, a running count and the time
left; -q nothing but failures; -v Snakemake's lines unchanged; a failed job in one line
(step, partition, cause, log). A fake clock makes every number exact."""
from __future__ import annotations

import io
from types import SimpleNamespace

from pyjama.progress import RunMonitor
from pyjama.rules import Rule, SnakemakeJobs


def _rule(name, step, outputs, log):
    st = SimpleNamespace(name=step, script=f"{step}.py", path=f"configs/T/{step}.json", digest="d")
    return Rule(name=name, step=st, outputs=outputs, log=log, wildcard_sets=[])


# the plan's rules of the two steps: each job block is read onto their Jobs
RULES = {"s10_parser": _rule("s10_parser", "10_parser", {"data": "data/T/10_parsed/raw={raw}/part.parquet"},
                             "logs/T/10_parser/{raw}.log"),
         "s20_split": _rule("s20_split", "20_split",
                            {"data": "data/T/20_split/device_id={device}/day={day}/part.parquet"},
                            "logs/T/20_split/{device}/{day}.log")}
JOBS = SnakemakeJobs(lambda rule, wc: RULES[rule].job(wc) if rule in RULES else None)
LOG20 = "logs/T/20_split/valve01/2026-01-20.log"

# Snakemake 9.27's output of a two-job run (tests/wf.py make_project, 1 device, 1 day),
# cut into the moments the clock moves
START = """Building DAG of jobs...
Job stats:
job           count
----------  -------
s10_parser        1
s20_split         1
all               1
total             3

Select jobs to execute...
Execute 1 jobs...

[Wed Dec  2 07:09:42 2026]
localrule s10_parser:
    input: data/T/00_raw/T_valve01_2026-01-20.csv
    output: data/T/10_parsed/raw=T_valve01_2026-01-20.csv/part.parquet
    log: logs/T/10_parser/T_valve01_2026-01-20.csv.log
    jobid: 1
    reason: Missing output files: data/T/10_parsed/raw=T_valve01_2026-01-20.csv/part.parquet
    wildcards: raw=T_valve01_2026-01-20.csv
    resources: tmpdir=/tmp
"""
PARSER_DONE = """[Wed Dec  2 07:09:43 2026]
Finished jobid: 1 (Rule: s10_parser)
1 of 3 steps (33%) done
Select jobs to execute...
Execute 1 jobs...

[Wed Dec  2 07:09:43 2026]
localrule s20_split:
    input: data/T/10_parsed/raw=T_valve01_2026-01-20.csv/part.parquet
    output: data/T/20_split/device_id=valve01/day=2026-01-20/part.parquet
    log: logs/T/20_split/valve01/2026-01-20.log
    jobid: 2
    reason: Missing output files: data/T/20_split/device_id=valve01/day=2026-01-20/part.parquet
    wildcards: device=valve01, day=2026-01-20
    resources: tmpdir=/tmp
"""
SPLIT_DONE = """[Wed Dec  2 07:09:45 2026]
Finished jobid: 2 (Rule: s20_split)
2 of 3 steps (67%) done
Finished jobid: 0 (Rule: all)
3 of 3 steps (100%) done
"""
SPLIT_FAILED = f"""[Wed Dec  2 07:09:45 2026]
Error in rule s20_split:
    message: None
    jobid: 2
    input: data/T/10_parsed/raw=T_valve01_2026-01-20.csv/part.parquet
    output: data/T/20_split/device_id=valve01/day=2026-01-20/part.parquet
    log: {LOG20} (check log file(s) for error details)
RuleException:
WorkflowError in file /work/main/workflow/Snakefile, line 43:
Error: 20_split.py valve01/2026-01-20: data/T/10_parsed/raw=T_valve01_2026-01-20.csv/part.parquet: not a readable parquet file
Exiting because a job execution failed. Look below for details.
"""
CAUSE = ("Error: 20_split.py valve01/2026-01-20: data/T/10_parsed/raw=T_valve01_2026-01-20.csv/part.parquet: "
         f"not a readable parquet file (log: {LOG20})")


def monitor(chunks, **kw):
    """Feed ``chunks`` [(clock time, text)] to a RunMonitor; (its output, the monitor)."""
    now = [0.0]
    out = io.StringIO()
    mon = RunMonitor(JOBS, lambda log: CAUSE if log == LOG20 else "", out, clock=lambda: now[0], **kw)
    for t, text in chunks:
        now[0] = t
        for line in text.splitlines(keepends=True):
            mon.feed(line)
    mon.close()
    return out.getvalue(), mon


RUN = [(0.0, START), (1.5, PARSER_DONE), (2.5, SPLIT_DONE)]


def test_one_line_per_finished_job_with_count_duration_and_time_left():
    text, mon = monitor(RUN)
    assert text == ("[1/2] 10_parser T_valve01_2026-01-20.csv done in 1.5 s · about 1.5 s left\n"
                    "[2/2] 20_split valve01 2026-01-20 done in 1.0 s\n")
    assert (mon.total, mon.finished, mon.failed) == (2, 2, [])


def test_quiet_prints_nothing_when_nothing_fails():
    text, mon = monitor(RUN, quiet=True)
    assert (text, mon.finished) == ("", 2)


def test_verbose_passes_snakemake_lines_unchanged():
    text, _mon = monitor(RUN, verbose=True)
    assert text == START + PARSER_DONE + SPLIT_DONE


def test_a_failed_job_is_one_line_naming_step_partition_cause_and_log():
    for quiet in (False, True):
        text, mon = monitor([(0.0, START), (1.5, PARSER_DONE), (2.5, SPLIT_FAILED)], quiet=quiet)
        failed = ("FAILED 20_split valve01 2026-01-20: data/T/10_parsed/raw=T_valve01_2026-01-20.csv/"
                  f"part.parquet: not a readable parquet file (log: {LOG20})\n")
        done = "" if quiet else "[1/2] 10_parser T_valve01_2026-01-20.csv done in 1.5 s · about 1.5 s left\n"
        assert text == done + failed
        cause = "data/T/10_parsed/raw=T_valve01_2026-01-20.csv/part.parquet: not a readable parquet file"
        assert mon.failed == [("20_split", "valve01 2026-01-20", cause, LOG20)]


def test_dry_run_is_one_line_per_job_with_snakemakes_reasons():
    text, mon = monitor([(0.0, START + PARSER_DONE.split("\n\n", 1)[1])], dry_run=True)
    assert text == ("would run: 10_parser T_valve01_2026-01-20.csv: missing output files\n"
                    "would run: 20_split valve01 2026-01-20: missing output files\n")
    assert len(mon.planned) == 2


def test_a_job_without_wildcards_is_named_without_a_gap():
    """A per-exposure result job (drawer.py run --results) has no device or day."""
    block = """localrule results_rulegraph:
    input: configs/T/pipeline.json
    output: data/T/_report/rulegraph.svg
    log: logs/T/_report/rulegraph.log
    jobid: 3
    reason: Missing output files: data/T/_report/rulegraph.svg
    resources: tmpdir=/tmp
"""
    jobs = SnakemakeJobs(JOBS.plan_job, {"results_rulegraph": "result rulegraph.svg"})   # outside the plan
    out = io.StringIO()
    mon = RunMonitor(jobs, lambda log: "", out, dry_run=True, clock=lambda: 0.0)
    for line in block.splitlines(keepends=True):
        mon.feed(line)
    mon.close()
    assert out.getvalue() == "would run: result rulegraph.svg: missing output files\n"
    out = io.StringIO()
    mon = RunMonitor(jobs, lambda log: "", out, clock=lambda: 0.0)
    for line in (block + "Finished jobid: 3 (Rule: results_rulegraph)\n").splitlines(keepends=True):
        mon.feed(line)
    assert out.getvalue() == "[1] result rulegraph.svg done in 0.0 s\n"
