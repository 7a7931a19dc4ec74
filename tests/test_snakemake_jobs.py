"""One reader of Snakemake's jobs onto the plan's Job (pyjama.rules.SnakemakeJobs): a printed
job block (drawer.py run's lines, pyjama.progress.RunMonitor) and a job of the DAG
(pyjama.verdict) are the plan's Job of the same rule and wildcards. Hand-written Snakemake
output, spelled-out lines."""
from __future__ import annotations

import io
from types import SimpleNamespace

from pyjama.progress import RunMonitor
from pyjama.rules import Rule, SnakemakeJobs, job_key, parse_wildcards

CLEAN = Rule(name="s30_clean", step=SimpleNamespace(name="30_clean", script="30_clean.py",
                                                    path="configs/T/30_clean.json", digest="d1"),
             outputs={"data": "data/T/30_clean/device_id={device}/day={day}/part.parquet"},
             log="logs/T/30_clean/{device}/{day}.log", wildcard_sets=[])
RULES = {"s30_clean": CLEAN}


def plan_job(rule, wildcards):
    return RULES[rule].job(wildcards) if rule in RULES else None


def monitor(**kw):
    out = io.StringIO()
    ticks = iter(range(0, 1000, 2))
    mon = RunMonitor(SnakemakeJobs(plan_job), lambda log: "Error: 30_clean.py valve01/2026-01-21: boom",
                     out, clock=lambda: float(next(ticks)), **kw)
    return mon, out


def feed(mon, text):
    for line in text.splitlines():
        mon.feed(line + "\n")
    mon.close()


def test_parse_wildcards_and_job_key():
    assert parse_wildcards("device=valve01, day=2026-01-20") == {"device": "valve01", "day": "2026-01-20"}
    assert parse_wildcards("") == {}
    assert job_key("s30_clean", {"device": "v", "day": "d"}) == "s30_clean|day=d,device=v"


def test_a_dag_job_is_the_plans_job():
    dag_job = SimpleNamespace(rule=SimpleNamespace(name="s30_clean"),
                              wildcards_dict={"device": "valve01", "day": "2026-01-20"})
    job = SnakemakeJobs(plan_job).of_dag_job(dag_job)
    assert job.key == "s30_clean|day=2026-01-20,device=valve01" and job.step == "30_clean"
    assert SnakemakeJobs(plan_job).of_dag_job(SimpleNamespace(rule=SimpleNamespace(name="all"),
                                                              wildcards_dict={})) is None


def test_a_block_is_the_plans_job():
    job = SnakemakeJobs(plan_job).of_block("s30_clean", "device=valve01, day=2026-01-20")
    assert job.step == "30_clean" and job.where == "valve01 2026-01-20"
    assert job.key == "s30_clean|day=2026-01-20,device=valve01"
    assert job.main_output == "data/T/30_clean/device_id=valve01/day=2026-01-20/part.parquet"
    assert SnakemakeJobs(plan_job).of_block("all", "") is None


DRY = """Building DAG of jobs...
rule s30_clean:
    input: data/T/20_split/device_id=valve01/day=2026-01-20/part.parquet
    output: data/T/30_clean/device_id=valve01/day=2026-01-20/part.parquet
    log: logs/T/30_clean/valve01/2026-01-20.log
    jobid: 1
    reason: Missing output files: data/T/30_clean/device_id=valve01/day=2026-01-20/part.parquet
    wildcards: device=valve01, day=2026-01-20
    resources: tmpdir=/tmp

rule all:
    jobid: 0
    reason: Input files updated by another job: data/T/30_clean/device_id=valve01/day=2026-01-20/part.parquet
"""


def test_dry_run_names_step_place_and_reasons():
    mon, out = monitor(dry_run=True)
    feed(mon, DRY)
    assert mon.planned == [("30_clean", "valve01 2026-01-20", "missing output files")]
    assert out.getvalue() == "would run: 30_clean valve01 2026-01-20: missing output files\n"


RUN = """Job stats:
job          count
---------  -------
s30_clean        2
all              1
total            3

rule s30_clean:
    jobid: 1
    log: logs/T/30_clean/valve01/2026-01-20.log
    wildcards: device=valve01, day=2026-01-20

rule s30_clean:
    jobid: 2
    log: logs/T/30_clean/valve01/2026-01-21.log
    wildcards: device=valve01, day=2026-01-21

Finished jobid: 1 (Rule: s30_clean)
Error in rule s30_clean:
    jobid: 2
    log: logs/T/30_clean/valve01/2026-01-21.log (check log file(s) for error details)
"""


def test_run_lines_finished_and_failed():
    mon, out = monitor()
    feed(mon, RUN)
    assert mon.total == 2 and mon.finished == 1
    assert mon.failed == [("30_clean", "valve01 2026-01-21", "boom", "logs/T/30_clean/valve01/2026-01-21.log")]
    # the clock ticks 2 s per read: start 0, job 1 seen at 2, job 2 at 4, job 1 finished at 6:
    # took 6 - 2 = 4 s; 4 s per job since the first start, 1 job left
    assert out.getvalue().splitlines() == [
        "[1/2] 30_clean valve01 2026-01-20 done in 4.0 s · about 4.0 s left",
        "FAILED 30_clean valve01 2026-01-21: boom (log: logs/T/30_clean/valve01/2026-01-21.log)"]


def test_a_rule_the_plan_has_not_is_named_by_its_rule():
    mon, out = monitor(dry_run=True)
    feed(mon, "rule s99_other:\n    jobid: 4\n    wildcards: device=valve02, day=2026-01-22\n")
    assert mon.planned == [("s99_other", "valve02 2026-01-22", "")]
    assert out.getvalue() == "would run: s99_other valve02 2026-01-22\n"
