"""Grouped jobs for a cluster (docs/slurm.md, "Grouped jobs"): N consecutive days of a device
per group, no group needing a later one, and no groups at all without the knob."""
from __future__ import annotations

import re

import pytest

from tests.wf import make_project, snakemake

STEPS = ("10_parser", "20_split", "30_clean", "40_resample", "50_transform", "50_normalise",
         "60_behaviour", "70_aggregate")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("groups")
    make_project(root, "T", devices=2, days=5, hz=0.0003, steps=STEPS)
    return root


@pytest.fixture(scope="module")
def plan(project):
    from pyjama.workflow import WorkflowPlan

    return WorkflowPlan.for_pipeline("configs/T/pipeline.json", root=project)


def group(plan, job, n=2):
    return plan.group_name(job.rule, dict(job.wildcards), n)


def test_blocks_of_n_days_per_device_and_family(plan):
    by = {(j.step, j.where): group(plan, j) for j in plan.jobs}
    # 30 onwards: days 20-21 → block 0, 22-23 → 1, 24 → 2
    assert by[("30_clean", "valve01 2026-01-21")] == "pyjama_valve01_0"
    assert by[("30_clean", "valve01 2026-01-22")] == "pyjama_valve01_1"
    assert by[("40_resample", "valve02 2026-01-24")] == "pyjama_valve02_2"
    # 20_split is read one day ahead by 30 (s = 1): day 22 goes with days 20-21
    assert by[("20_split", "valve01 2026-01-20")] == "pyjama_valve01_0"
    assert by[("20_split", "valve01 2026-01-22")] == "pyjama_valve01_0"
    assert by[("20_split", "valve01 2026-01-23")] == "pyjama_valve01_1"
    # the parser goes with the earliest job reading its raw file
    assert by[("10_parser", "T_valve02_2026-01-22.csv")] == "pyjama_valve02_0"
    # the fitted step and after: their own family; the fit: no group
    assert by[("50_normalise", "valve01 2026-01-23")] == "pyjama_fitted_valve01_1"
    assert by[("70_aggregate", "valve02 2026-01-20")] == "pyjama_fitted_valve02_0"
    fit = [j for j in plan.jobs if j.rule.endswith("_fit")]
    assert fit and all(plan.group_function(j.rule, None) is None for j in fit)


def test_no_group_needs_a_later_group(plan):
    order = {"pyjama": 0, "pyjama_fitted": 1}
    def rank(name):
        family, device, block = re.fullmatch(r"(pyjama(?:_fitted)?)_(\w+?)_(\d+)", name).groups()
        return device, order[family], int(block)
    pairs = 0
    for consumer, producer in plan._input_producers:
        g_c, g_p = group(plan, consumer), group(plan, producer)
        if g_c is None or g_p is None or g_c == g_p:
            continue
        pairs += 1
        dc, fc, bc = rank(g_c)
        dp, fp, bp = rank(g_p)
        assert (fp, bp) <= (fc, bc), f"{consumer.key} in {g_c} needs {producer.key} in {g_p}"
    assert pairs > 0          # the check saw edges between groups


def test_the_knob_makes_group_jobs_and_no_knob_none(project):
    grouped = snakemake(project, "-n", "--jobs", "4", "--group-components", "pyjama=2").stdout
    names = set(re.findall(r"Group job (\S+) \(jobs in", grouped))
    assert names == {f"{f}_{d}_{b}" for f in ("pyjama", "pyjama_fitted")
                     for d in ("valve01", "valve02") for b in range(3)}
    plain = snakemake(project, "-n").stdout
    assert "Group job" not in plain
    assert re.search(r"^total\s+83$", plain, re.M)
