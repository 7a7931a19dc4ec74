"""The step registry: three kinds of step, registration where a step is defined, the
step options on the command line, and the numbered scripts made from the registry."""
import subprocess
import sys

import pytest

from pyjama.errors import UserError
from pyjama.steps import (REGISTRY, ExternalStep, PartitionStep, RawFileStep, get_step,
                          known_scripts)
from tests.wf import REPO, pyjama


def test_every_step_is_one_of_three_kinds():
    kinds = {s: type(get_step(s)).__mro__[1].__name__ for s in known_scripts()}
    assert kinds == {
        "10_parser.py": "RawFileStep", "20_split.py": "PartitionStep", "30_clean.py": "PartitionStep",
        "40_resample.py": "PartitionStep", "50_normalise.py": "PartitionStep",
        "50_transform.py": "PartitionStep", "60_behaviour.py": "PartitionStep",
        "70_aggregate.py": "PartitionStep", "80_import_postgres.py": "ExternalStep",
        "81_import_raw_postgres.py": "ExternalStep"}
    for s in known_scripts():
        step = get_step(s)
        assert sum(isinstance(step, k) for k in (PartitionStep, RawFileStep, ExternalStep)) == 1
        assert step.kind == s.removesuffix(".py")     # the schema is workflow/schemas/<kind>.schema.json


def test_a_step_registers_where_it_is_defined():
    try:
        class TinyStep(PartitionStep):
            script = "99_tiny.py"

            def compute(self, frames, st, device, day):
                return {"data": frames["data"]}, {"rows_in": 0, "rows_out": 0}

        assert isinstance(get_step("99_tiny"), TinyStep)
        assert "99_tiny.py" in known_scripts()
    finally:
        REGISTRY.pop("99_tiny.py", None)
    with pytest.raises(UserError) as exc:
        get_step("99_tiny.py")
    assert str(exc.value).startswith("unknown script '99_tiny.py'; allowed: 10_parser.py, 20_split.py")


def test_an_option_of_another_step_is_one_line(tmp_path):
    res = pyjama(REPO, "run", "30_clean.py", "--with", "configs/DEMO/30_clean.json", "--fit")
    assert res.returncode == 2
    assert res.stderr == "Error: --fit: not an option of 30_clean.py; allowed: none\n"
    res = pyjama(REPO, "run", "50_normalise.py", "--with", "configs/DEMO/50_normalise.json", "--mode", "auto")
    assert res.stderr == "Error: --mode: not an option of 50_normalise.py; allowed: --fit\n"


def test_step_options_come_from_the_registry():
    res = pyjama(REPO, "run", "--help")
    assert "--fit" in res.stdout and "(50_normalise.py)" in res.stdout
    assert "--mode {range,auto}" in res.stdout and "--dry-run, -n" in res.stdout


def test_numbered_scripts_are_links_to_the_one_shell():
    links = sorted(p.name for p in (REPO / "scripts").glob("[0-9]*.py"))
    assert links == known_scripts()
    assert all((REPO / "scripts" / n).resolve().name == "step.py" for n in links)
    before = (REPO / "docs/config-reference.md").stat().st_mtime_ns
    res = subprocess.run([sys.executable, "-m", "pyjama.docs_gen", "--help"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0 and "--check" in res.stdout
    assert (REPO / "docs/config-reference.md").stat().st_mtime_ns == before   # --help writes nothing
    res = subprocess.run([sys.executable, "-m", "pyjama.docs_gen", "--check"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_a_numbered_script_runs_its_step(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "scripts/30_clean.py"), "--with", "nope.json"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("Error: ") and "nope.json: file not found" in res.stderr


def test_a_step_run_alone_never_writes_a_stage_another_step_owns(tmp_path):
    import json

    from tests.wf import make_project

    make_project(tmp_path, "T", devices=1, days=1, hz=0.01, steps=("10_parser", "20_split", "30_clean"))
    cfg = json.loads((tmp_path / "configs/T/30_clean.json").read_text())
    for stage, owner in (("20_split", "is owned by configs/T/20_split.json (in configs/T/pipeline.json); "
                                      "allowed: a stage no other step writes"),
                         ("00_raw", "is owned by the raw files; allowed: a stage of this step's own")):
        (tmp_path / "configs/T/30_other.json").write_text(json.dumps({**cfg, "output_stage": stage}))
        res = pyjama(tmp_path, "run", "30_clean.py", "--with", "configs/T/30_other.json")
        assert res.returncode == 2
        assert res.stderr == f"Error: configs/T/30_other.json: $.output_stage: {stage!r} {owner}\n"
