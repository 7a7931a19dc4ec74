"""Snakemake's own conventions (issue 12): a bare `snakemake -n` plans the DEMO from
config/config.yaml, `snakemake --report` holds PyJAMA's results, no `conda:` directive that
cannot work, and a `.snakemake-workflow-catalog.yml` the catalog can read."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.wf import PY, REPO, drawer, make_fast_demo, run

RESULTS = ["pyjama_report.html", "rulegraph.svg", "daily_ledger.html", "daily_60_daily.html",
           "daily_60_device_daily.html"]
CONFIG_ERROR = ("Error: Snakemake config (config/config.yaml, --config): $.exposur: unknown key "
                "'exposur'; allowed keys: exposure, from, only, pipeline, results, to, until")


def bare_project(root: Path) -> Path:
    """A project root laid out like the repository: workflow/ and config/ (links to the
    repository's), configs/DEMO and its raw files, so a bare `snakemake` finds everything."""
    make_fast_demo(root)
    (root / "workflow").symlink_to(REPO / "workflow")
    (root / "config").symlink_to(REPO / "config")
    return root


def bare_snakemake(root, *args, check=True):
    return run([PY, "-m", "snakemake", *args], root, check=check)


def job_stats(text: str) -> dict:
    m = re.search(r"Job stats:\n(.*?)\n\n", text + "\n\n", re.DOTALL)
    rows = [ln.split() for ln in m.group(1).splitlines()] if m else []
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit() and r[0] != "total"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The fast DEMO built by a bare `snakemake --cores 2` (config/config.yaml's defaults)."""
    root = bare_project(tmp_path_factory.mktemp("bare"))
    bare_snakemake(root, "--cores", "2")
    return root


def test_default_config_names_the_demo_and_asks_for_the_results():
    assert yaml.safe_load((REPO / "config" / "config.yaml").read_text()) == {"exposure": "DEMO",
                                                                           "results": True}


@pytest.mark.slow
def test_bare_dry_run_plans_the_demo(tmp_path):
    root = bare_project(tmp_path)
    res = bare_snakemake(root, "-n")
    assert res.returncode == 0
    jobs = job_stats(res.stdout + res.stderr)
    assert jobs == {"s10_parser": 1, "s20_split": 1, "s30_clean": 1, "s40_resample": 1,
                    "s50_transform": 1, "s50_normalise_fit": 1, "s50_normalise": 1,
                    "s60_behaviour": 1, "s70_aggregate": 1,
                    "results_pyjama_report": 1, "results_rulegraph": 1, "results_daily_ledger": 1,
                    "results_daily_60_daily": 1, "results_daily_60_device_daily": 1, "all": 1}, jobs
    assert not (root / "data" / "DEMO" / "20_split").exists()     # a dry run builds nothing


@pytest.mark.slow
def test_bare_lint_with_the_result_rules_has_nothing_to_say(tmp_path):
    """The catalog runs a bare `snakemake --lint` in the repository; the result rules too."""
    res = bare_snakemake(bare_project(tmp_path), "--lint", check=False)
    text = res.stdout + res.stderr
    assert res.returncode == 0 and "Lints for" not in text, text


@pytest.mark.slow
def test_a_misspelled_config_key_is_one_line_not_the_default_exposure(tmp_path):
    root = bare_project(tmp_path)
    res = bare_snakemake(root, "-n", "--config", "exposur=X", check=False)
    assert res.returncode != 0
    assert CONFIG_ERROR in res.stderr.splitlines()
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_drawer_ignores_config_yaml(tmp_path):
    """drawer.py passes its own pipeline and window: a config/config.yaml narrowing the
    steps (until) or asking for the results changes nothing it plans."""
    root = make_fast_demo(tmp_path)
    (root / "config").mkdir()
    (root / "config" / "config.yaml").write_text("exposure: DEMO\nuntil: 10_parser\nresults: true\n")
    res = drawer(root, "run", "configs/DEMO/pipeline.json", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines()[-1] == "PyJAMA: dry run: 9 jobs would run; nothing was changed"
    assert "results_" not in res.stderr


@pytest.mark.slow
def test_drawer_run_results_asks_for_them_and_names_each_in_one_line(tmp_path):
    root = make_fast_demo(tmp_path)
    res = drawer(root, "run", "configs/DEMO/pipeline.json", "--results", "--dry-run")
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    planned = [ln for ln in lines if ln.startswith("would run: result ")]
    assert sorted(ln.split(": ")[1] for ln in planned) == sorted(f"result {name}" for name in RESULTS)
    assert "would run: result rulegraph.svg: missing output files" in planned
    assert lines[-1] == "PyJAMA: dry run: 14 jobs would run; nothing was changed"
    res = drawer(root, "run", "configs/DEMO/pipeline.json", "--results", "--until", "20_split")
    assert (res.returncode, res.stderr) == (2, "Error: --results draws the whole pipeline; it cannot be "
                                               "combined with --until\n")


@pytest.mark.slow
def test_snakemake_report_holds_the_results(built, tmp_path):
    base = built / "data" / "DEMO" / "_report"
    assert sorted(p.name for p in base.iterdir()) == sorted(RESULTS)
    assert "<h1>Daily ledger · exposure DEMO</h1>" in (base / "daily_ledger.html").read_text()
    ledger = (base / "daily_ledger.html").read_text()
    assert '<td class="l">60_behaviour</td>' in ledger
    assert ('<tr><th class="l">step</th><th class="l">partition</th><th class="">rows in</th><th class="">'
            'created</th><th class="">rows out</th><th class="">combined</th><th class="">set aside</th>'
            '<th class="l">reasons</th></tr>') in ledger
    from pyjama.results import ledger_rows
    from pyjama.workflow import WorkflowPlan

    rows = ledger_rows(WorkflowPlan.for_pipeline("configs/DEMO/pipeline.json", root=built), built)
    assert [(r["step"], r["partition"]) for r in rows] == [
        ("10_parser", "DEMO_valve01_2026-01-20.csv"), *((s, "valve01 2026-01-20") for s in (
            "20_split", "30_clean", "40_resample", "50_transform", "50_normalise", "60_behaviour",
            "70_aggregate"))]
    for r in rows:                       # every row of the table balances
        assert r["rows_in"] + r["created"] == r["rows_out"] + r["combined"] + r["set_aside"], r
    # and a step's rows out are the next step's rows in (50 and 60 add series: created)
    grid = [r for r in rows if r["step"] != "10_parser"]
    assert [a["rows_out"] for a in grid[:-1]] == [b["rows_in"] for b in grid[1:]]
    assert "<svg" in (base / "rulegraph.svg").read_text()
    assert ">Opening of each animal</h" in (base / "pyjama_report.html").read_text()
    # a second run with nothing changed runs nothing, results included
    again = bare_snakemake(built, "-n")
    assert job_stats(again.stdout + again.stderr) == {}
    out = tmp_path / "report.html"
    res = bare_snakemake(built, "--report", str(out))
    assert res.returncode == 0
    text = out.read_text()
    for name in RESULTS:
        m = re.search(r'"data_uri": "data:[^;"]+;charset=utf8;filename=' + re.escape(name)
                      + r';base64,([A-Za-z0-9+/=]+)"', text)
        assert m, f"{name} is not in Snakemake's report"
        assert base64.b64decode(m.group(1)) == (base / name).read_bytes(), name
    for category in ("1. PyJAMA report", "2. Rule graph", "3. Daily tables"):
        assert json.dumps(category) in text, category


def test_no_conda_directive_that_cannot_work():
    """Every rule is a `run:` block, which --sdm conda does not wrap: no `conda:` directive,
    no env file Snakemake would have to build; the README says how to use a conda env."""
    for f in [REPO / "workflow" / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]:
        assert not re.search(r"^\s*conda:", f.read_text(), re.MULTILINE), f
    assert not (REPO / "workflow" / "envs").exists()
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-r requirements.txt"]
    assert "conda env create -f environment.yml && conda activate pyjama" in (REPO / "README.md").read_text()


def test_workflow_catalog_file_has_the_keys_the_catalog_reads():
    settings = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = settings["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment", "report"}
    assert set(usage["mandatory-flags"]) == {"desc", "flags"}
    assert usage["mandatory-flags"]["flags"] == ""       # config/config.yaml: no flag needed
    sdm = usage["software-stack-deployment"]
    assert sdm == {"conda": False, "apptainer": False, "apptainer+conda": False, "report": True}
    assert usage["report"] is True
    # "standardized usage" also needs these two files
    assert (REPO / "workflow" / "Snakefile").is_file()
    assert (REPO / "config" / "README.md").is_file()


SNAKEFMT = shutil.which("snakefmt") or next(
    (str(c) for c in [Path(sys.executable).parent / "snakefmt"] if c.is_file()), None)


@pytest.mark.skipif(SNAKEFMT is None, reason="snakefmt is not installed (the catalog's formatting check): "
                    "pip install -r requirements.txt")
def test_snakefiles_pass_the_catalogs_formatting_check():
    files = [REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    res = subprocess.run([SNAKEFMT, "--check", *map(str, files)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
