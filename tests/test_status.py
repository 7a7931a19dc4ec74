"""drawer.py status: the step × day board, on a tiny real workflow run.

One workflow run (1 device × 2 days, parser + split) is shared; each test works on its own
copy (mtimes preserved) and changes one thing: a config, a deleted partition, a failing job.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import pytest

from wf import PY, REPO, drawer, make_project, run

from pyjama import status as st_mod
from pyjama.status import build_board, flagged_share, incomplete_outputs, log_error

PIPE = "configs/T/pipeline.json"
DAYS = ["2026-01-20", "2026-01-21"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("status_built")
    make_project(root, "T", devices=1, days=2, hz=0.05)
    run([PY, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--cores", "2",
         "--config", f"pipeline={PIPE}"], root)
    return root


@pytest.fixture
def proj(built, tmp_path):
    dst = tmp_path / "p"
    shutil.copytree(built, dst, symlinks=True)   # copy2: mtimes kept, so nothing looks newer
    return dst


def cells(root, **window):
    board = build_board(PIPE, window.get("start"), window.get("end"), root)
    return {(c.step, c.day): c for c in board.cells.values()}, board


def edit_json(path: Path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


# ---------------------------------------------------------------- states

def test_fresh_run_is_done_everywhere_with_rows_from_the_ledgers(proj):
    got, board = cells(proj)
    assert sorted(got) == [(s, d) for s in ("10_parser", "20_split") for d in DAYS]
    assert {c.state for c in got.values()} == {"done"}
    assert all(c.reasons == [] for c in got.values())
    from pyjama import io

    ledger = io.read_ledger(proj / "data/T/20_split/device_id=valve01/day=2026-01-20/part.parquet")
    c = got[("20_split", "2026-01-20")]
    assert (c.rows_in, c.rows_out, c.rejected) == (ledger["rows_in"], ledger["rows_out"], ledger["rejected"])
    # the demo writes 5 duplicated lines of 13 values a day: 65 rows merged away
    assert c.rejected == {"duplicate (sensor, ts) merged: first": 65}
    text = st_mod.render_text(board)
    assert "all 4 jobs done" in text
    assert "2026-01-20  ok " in text          # one grid row per day, cells start with 'ok'


def test_parser_config_change_makes_it_and_everything_downstream_stale(proj):
    cfg = proj / "configs/T/10_parser.json"
    data = json.loads(cfg.read_text())
    edit_json(cfg, missing_values=data["missing_values"] + ["null"])
    got, board = cells(proj)
    for day in DAYS:
        assert got[("10_parser", day)].state == "stale"
        assert got[("10_parser", day)].reasons == ["config changed"]
        # split's own config did not change: it is stale because what it reads will be rebuilt
        assert got[("20_split", day)].state == "stale"
        assert got[("20_split", day)].reasons == ["upstream job will run"]
    text = st_mod.render_text(board)
    assert "S:c" in text and "S:u" in text
    assert "STALE   10_parser T_valve01_2026-01-20.csv: config changed" in text


def test_split_config_change_leaves_the_parser_done(proj):
    edit_json(proj / "configs/T/20_split.json", duplicates="last")
    got, _ = cells(proj)
    assert [got[("10_parser", d)].state for d in DAYS] == ["done", "done"]
    assert [got[("20_split", d)].reasons for d in DAYS] == [["config changed"]] * 2


def test_deleted_partition_is_missing_and_named(proj):
    (proj / "data/T/20_split/device_id=valve01/day=2026-01-21/part.parquet").unlink()
    got, board = cells(proj)
    assert got[("20_split", "2026-01-21")].state == "missing"
    assert got[("20_split", "2026-01-20")].state == "done"   # the other day is untouched
    text = st_mod.render_text(board)
    assert "MISSING 20_split valve01 2026-01-21" in text
    assert "needs attention: 1 missing" in text


def test_newer_input_makes_the_consumer_stale(proj):
    import pyarrow.parquet as pq

    parsed = proj / "data/T/10_parsed/raw=T_valve01_2026-01-20.csv/part.parquet"
    later = os.stat(parsed).st_mtime + 3600
    os.utime(parsed, (later, later))
    got, _ = cells(proj)
    # newer with the same bytes: Snakemake compares the checksum of small files, runs nothing
    assert got[("20_split", "2026-01-20")].state == "done"
    pq.write_table(pq.read_table(parsed), parsed, compression="none")   # other bytes
    os.utime(parsed, (later, later))
    got, _ = cells(proj)
    assert got[("20_split", "2026-01-20")].reasons == ["input newer"]
    assert got[("20_split", "2026-01-21")].state == "done"


def test_code_version_alone_is_not_a_reason_because_snakemake_reruns_nothing(proj, monkeypatch):
    monkeypatch.setattr(st_mod, "__version__", "9.9.9")
    got, _ = cells(proj)
    assert {c.state for c in got.values()} == {"done"}
    assert drawer(proj, "run", PIPE, "--dry-run", "--fresh").stderr.splitlines()[-1] == \
        "PyJAMA: dry run: nothing to do, every job is up to date; nothing was changed"


def test_failed_job_shows_its_error_line_and_log(proj):
    # a parsed file that is not parquet: the split job of that day fails for real
    parsed = proj / "data/T/10_parsed/raw=T_valve01_2026-01-21.csv/part.parquet"
    parsed.write_bytes(b"not a parquet file")
    res = run([PY, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--cores", "1",
               "--keep-going", "--config", f"pipeline={PIPE}"], proj, check=False)
    assert res.returncode != 0
    got, board = cells(proj)
    c = got[("20_split", "2026-01-21")]
    log = "logs/T/20_split/valve01/2026-01-21.log"
    assert c.state == "failed" and c.logs == [log]
    assert c.error and c.error == log_error(proj / log)
    assert got[("20_split", "2026-01-20")].state == "done"
    text = st_mod.render_text(board)
    assert "FAILED  20_split valve01 2026-01-21: " in text
    assert f"log: {log}" in text


def test_window_selects_the_days(proj):
    got, _ = cells(proj, start="2026-01-21", end="2026-01-21")
    assert sorted(got) == [("10_parser", "2026-01-21"), ("20_split", "2026-01-21")]


# ---------------------------------------------------------------- the CLI

def test_cli_json_parses_and_lists_every_cell(proj):
    res = drawer(proj, "status", PIPE, "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["exposure"] == "T" and data["steps"] == ["10_parser", "20_split"]
    assert data["totals"] == {"done": 4, "stale": 0, "missing": 0, "running": 0, "failed": 0}
    assert {(c["step"], c["day"], c["state"]) for c in data["cells"]} == \
        {(s, d, "done") for s in ("10_parser", "20_split") for d in DAYS}
    split = next(s for s in data["summary"] if s["step"] == "20_split")
    assert (split["rows_in"] - split["rows_out"]) == sum(split["rejected"].values()) == 130


def test_cli_text_fits_100_columns(proj):
    res = drawer(proj, "status", PIPE)
    assert res.returncode == 0, res.stderr
    assert max(len(line) for line in res.stdout.splitlines()) <= 100


def test_cli_exit_code_is_1_when_anything_is_not_done(proj):
    (proj / "data/T/20_split/device_id=valve01/day=2026-01-21/part.parquet").unlink()
    res = drawer(proj, "status", PIPE)
    assert res.returncode == 1
    assert res.stdout.splitlines()[-2:] == ["  MISSING 20_split valve01 2026-01-21: output missing",
                                            "rebuild: python3 drawer.py run configs/T/pipeline.json"]


def test_cli_bad_window_is_one_line(proj):
    res = drawer(proj, "status", PIPE, "--from", "2026-01-22", "--to", "2026-01-21")
    assert res.returncode == 2
    assert res.stderr == "Error: --from 2026-01-22 is after --to 2026-01-21; the window would be empty\n"


# ---------------------------------------------------------------- the pieces

def test_log_error_finds_the_one_line_error(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("progress 1/2\nError: 20_split.py valve01/2026-01-21: input missing\n")
    assert log_error(log) == "Error: 20_split.py valve01/2026-01-21: input missing"


def test_log_error_reads_the_last_line_of_a_traceback(tmp_path):
    log = tmp_path / "b.log"
    log.write_text('Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
                   "    boom()\npyarrow.lib.ArrowInvalid: Parquet magic bytes not found\n")
    assert log_error(log) == "pyarrow.lib.ArrowInvalid: Parquet magic bytes not found"


def test_log_error_is_empty_for_a_clean_or_missing_log(tmp_path):
    (tmp_path / "ok.log").write_text("")
    assert log_error(tmp_path / "ok.log") == ""
    assert log_error(tmp_path / "absent.log") == ""


def test_incomplete_markers_are_decoded(tmp_path):
    path = "data/T/20_split/device_id=valve01/day=2026-01-21/part.parquet"
    d = tmp_path / ".snakemake" / "incomplete"
    d.mkdir(parents=True)
    (d / base64.urlsafe_b64encode(path.encode()).decode()).write_text("{}")
    assert incomplete_outputs(tmp_path) == {path}


def test_rows_out_of_a_step_that_adds_series_are_the_rows_it_wrote():
    """50 and 60 pass their input rows through and add series (rows_added): the board's rows
    out are the rows written, i.e. the next stage's rows in, not the rows passed through."""
    from pyjama.status import Cell, _add_ledger

    transformed = {"rows_in": 10, "rows_out": 10, "rejected": {}, "rows_added": 8, "rows_written": 18}
    c = Cell(step="50_transform", device="d", day="2026-01-20")
    _add_ledger(c, transformed, "d", "2026-01-20")
    assert (c.rows_in, c.rows_out) == (10, 18)
    resampled = {"rows_in": 12, "rows_out": 10, "rejected": {}, "combined": {"combined into grid cells": 2}}
    c = Cell(step="40_resample", device="d", day="2026-01-20")
    _add_ledger(c, resampled, "d", "2026-01-20")
    assert (c.rows_in, c.rows_out) == (12, 10)


def test_star_marks_rejected_lines_not_lines_skipped_as_configured():
    from pyjama.status import Cell, _cell_text

    skipped = Cell(step="10_parser", device="d", day="2026-01-20", rows_out=10,
                   rejected={"skipped: header line": 1, "skipped: skip_pattern '^#'": 3})
    assert _cell_text(skipped, True) == "ok 10"
    lost = Cell(step="10_parser", device="d", day="2026-01-20", rows_out=10,
                rejected={"skipped: header line": 1, "line too long": 1})
    assert _cell_text(lost, True) == "ok 10*"


def test_flagged_share_from_ledger_counts():
    assert flagged_share({"OK": 90, "SPIKE": 6, "MISSING": 4}) == pytest.approx(0.10)   # 10 of 100
    assert flagged_share({"OK": 0, "MISSING": 5}) == 1.0
    assert flagged_share({}) is None            # no counts in this ledger
    assert flagged_share({"OK": 0}) is None     # no rows: no share
