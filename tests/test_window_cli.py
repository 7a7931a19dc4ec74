"""The window crosses into Snakemake once, as text that pyjama.timewindow parses.

``drawer.py`` parses ``--from/--to`` once and passes Snakemake the exact instants
(``from=2026-01-21T00:00:00.000000Z``); ``snakemake --config from=… to=…`` typed by hand is
read from Snakemake's raw ``--config`` texts by the same parser, and its errors name
``from=`` / ``to=``, not ``--from``. A tiny real exposure (1 device × 2 days, parser +
split), no mocks.
"""
from __future__ import annotations

import datetime as dt

import pytest
from wf import PY, REPO, drawer, make_project, run

from pyjama.errors import UserError
from pyjama.timewindow import ALLOWED, UTC, Window
from pyjama.workflow import WorkflowPlan, window_from_config

PIPE = "configs/T/pipeline.json"


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    root = tmp_path_factory.mktemp("window_cli")
    make_project(root, "T", devices=1, days=2, hz=0.05)     # days 2026-01-20, 2026-01-21
    return root


def snakemake_dry(root, *config):
    return run([PY, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--cores", "1",
                "-n", "--config", "exposure=T", *config], root, check=False)


def error_lines(res) -> list:
    return [ln for ln in (res.stdout + res.stderr).splitlines() if "Error" in ln]


# ---------------------------------------------------------------- snakemake --config by hand

def test_bad_from_typed_to_snakemake_names_from_equals(proj):
    res = snakemake_dry(proj, "from=yesterday")
    assert res.returncode == 2
    assert error_lines(res) == [f"Error: from='yesterday' is not a time bound; allowed: {ALLOWED}"]
    assert "Traceback" not in res.stderr and "--from" not in res.stderr


def test_bad_date_typed_to_snakemake_names_to_equals(proj):
    res = snakemake_dry(proj, "to=2026-02-30")
    assert res.returncode == 2
    assert error_lines(res) == [("Error: to='2026-02-30' is not a valid date (day is out of range for "
                                 f"month); allowed: {ALLOWED}")]


def test_from_after_to_typed_to_snakemake(proj):
    res = snakemake_dry(proj, "from=2026-01-22", "to=2026-01-21")
    assert res.returncode == 2
    assert error_lines(res) == ["Error: from=2026-01-22 is after to=2026-01-21; the window would be empty"]


def test_now_typed_to_snakemake_is_parsed_as_text_not_yaml(proj):
    # YAML turns {NOW} into a mapping; the window is read from the raw text instead
    res = snakemake_dry(proj, "from=2026-01-21", "to={NOW}")
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "wildcards: device=valve01, day=2026-01-21" in out
    assert "day=2026-01-20" not in out
    res = snakemake_dry(proj, "from={NOW-1d}")     # after the data: nothing selected
    assert res.returncode == 0 and "s20_split" not in res.stdout + res.stderr


# ---------------------------------------------------------------- drawer.py

def test_bad_from_to_drawer_names_the_option(proj):
    res = drawer(proj, "run", PIPE, "--from", "yesterday", "--dry-run")
    assert res.returncode == 2
    assert res.stderr.splitlines()[-1] == f"Error: --from: 'yesterday' is not a time bound; allowed: {ALLOWED}"
    assert error_lines(res) == [res.stderr.splitlines()[-1]]
    res = drawer(proj, "run", PIPE, "--from", "2026-01-22", "--to", "2026-01-21", "--dry-run")
    assert res.returncode == 2
    assert error_lines(res) == ["Error: --from 2026-01-22 is after --to 2026-01-21; the window would be empty"]


def test_drawer_passes_the_instants_it_parsed(proj):
    from pyjama.drawer import build_parser, snakemake_command

    args = build_parser().parse_args(["run", PIPE, "--from", "2026-01-21", "--to", "2026-01-21", "-n"])
    cmd = snakemake_command(args, proj)
    config = cmd[cmd.index("--config") + 1: cmd.index("--dry-run")]
    assert config == ["pipeline=configs/T/pipeline.json", "from=2026-01-21T00:00:00.000000Z",
                      "to=2026-01-21T23:59:59.999999Z"]


def test_drawer_dry_run_plans_the_window(proj):
    res = drawer(proj, "run", PIPE, "--from", "2026-01-21", "--to", "2026-01-21", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("would run")] == [
        "would run: 10_parser T_valve01_2026-01-21.csv: missing output files",
        "would run: 20_split valve01 2026-01-21: missing output files; input files updated by another job"]


# ---------------------------------------------------------------- the one parse

def test_now_is_read_once_the_snakefile_gets_the_same_instants(proj):
    plan = WorkflowPlan.for_pipeline(PIPE, "{NOW-2d}", "{NOW}", proj)
    again = WorkflowPlan({"pipeline": PIPE}, proj, config_args=plan.config_args)
    assert again.window == plan.window        # to the microsecond, though time has passed


def test_raw_text_wins_over_snakemakes_yaml_value():
    # what Snakemake hands the Snakefile for `--config from=2026-01-21 to={NOW-2h}`
    config = {"exposure": "T", "from": "2026-01-21", "to": {"NOW-2h": ""}}
    now = dt.datetime.now(UTC)
    w = window_from_config(config, ["exposure=T", "from=2026-01-21", "to={NOW-2h}"])
    assert w.start == dt.datetime(2026, 1, 21, tzinfo=UTC)
    assert abs((now - dt.timedelta(hours=2)) - w.end) < dt.timedelta(seconds=5)


def test_configfile_bound_must_be_text():
    w = window_from_config({"from": "2026-01-20"}, [])
    assert w == Window(dt.datetime(2026, 1, 20, tzinfo=UTC), None)
    with pytest.raises(UserError) as err:
        window_from_config({"from": dt.date(2026, 1, 20)}, [])
    assert str(err.value) == ("from: 2026-01-20 in a --configfile is not text (YAML read a date); allowed: "
                              "the bound in quotes, e.g. from: '2026-01-20' or from: '{NOW-2d}'")
    assert window_from_config({"to": None}, []) == Window(None, None)
