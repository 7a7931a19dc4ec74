"""The plan is data, made once: WorkflowPlan's rules and Job objects are what the
Snakefile declares and what Snakemake runs (no mocks: a tiny generated exposure)."""
import pytest

from tests.wf import make_project, planned_jobs

STEPS = ("10_parser", "20_split", "30_clean", "40_resample", "50_transform", "50_normalise")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    make_project(root, "T", devices=2, days=2, hz=0.05, steps=STEPS)
    return root


def plan_of(root, start=None, end=None):
    from pyjama.workflow import WorkflowPlan

    return WorkflowPlan.for_pipeline("configs/T/pipeline.json", start, end, root)


def test_one_job_per_partition_with_its_files(project):
    plan = plan_of(project)
    clean = plan.jobs_of("30_clean")
    assert [j.partition for j in clean] == [("valve01", "2026-01-20"), ("valve01", "2026-01-21"),
                                            ("valve02", "2026-01-20"), ("valve02", "2026-01-21")]
    job = clean[0]
    assert job.rule == "s30_clean" and job.script == "30_clean.py"
    assert job.config == "configs/T/30_clean.json"
    assert job.inputs["data"] == "data/T/20_split/device_id=valve01/day=2026-01-20/part.parquet"
    assert job.main_output == "data/T/30_clean/device_id=valve01/day=2026-01-20/part.parquet"
    assert job.log == "logs/T/30_clean/valve01/2026-01-20.log"
    assert job.params_digest == plan.project.pipeline.step_named("30_clean").digest
    assert job.command() == ("pyjama.py run 30_clean.py --with configs/T/30_clean.json "
                             "--device valve01 --day 2026-01-20")
    # split reads the parsed files of the raw files holding rows of that (device, day)
    split = plan.jobs_of("20_split")[0]
    assert split.input_files and all(p.startswith("data/T/10_parsed/raw=") for p in split.input_files)


def test_targets_are_the_outputs_of_the_target_jobs(project):
    plan = plan_of(project)
    want = [p for j in plan.jobs if j.target for p in j.output_files]
    assert sorted(plan.targets()) == sorted(want)
    # the normalise fit runs only when a normalise partition needs it: a job, not a target
    fits = plan.jobs_of("50_normalise")
    assert {j.rule for j in fits} == {"s50_normalise", "s50_normalise_fit"}
    assert all(not j.target for j in fits if j.rule == "s50_normalise_fit")


def test_job_for_output_also_outside_the_window(project):
    plan = plan_of(project, "2026-01-21", "2026-01-21")
    assert {j.partition[1] for j in plan.jobs_of("30_clean")} == {"2026-01-21"}
    path = "data/T/30_clean/device_id=valve02/day=2026-01-20/part.parquet"
    job = plan.job_for_output(path)
    assert job.rule == "s30_clean" and job.partition == ("valve02", "2026-01-20")
    assert plan.job_for_output("data/T/99_nothing/x.parquet") is None


def test_snakemake_plans_exactly_the_plans_jobs_on_a_fresh_project(project):
    plan = plan_of(project)
    per_rule = {}
    for job in plan.jobs:
        per_rule[job.rule] = per_rule.get(job.rule, 0) + 1
    assert {k: v for k, v in planned_jobs(project).items() if k != "all"} == per_rule
