"""The partition period of an exposure (pipeline.json ``$.partition``: day, week, month).

Unit tests on the keys, paths and ledger sums (spelled-out expectations), then the real
workflow: one exposure built with day and with month partitions gives the same rows in
every stage, in fewer jobs; a second run does nothing; a new day re-runs only its month.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from wf import REPO, drawer, edit, pyjama, slow_down

sys.path.insert(0, str(REPO))

from pyjama import io, timewindow as tw  # noqa: E402
from pyjama.io import merge_counts  # noqa: E402


# ---------------------------------------------------------------- keys

def test_period_keys_name_themselves():
    assert tw.period_key("2026-01-31", "day") == "2026-01-31"
    assert tw.period_key("2026-01-31", "month") == "2026-01"
    assert tw.period_key("2026-02-01", "month") == "2026-02"
    assert tw.period_key("2026-01-01", "week") == "2026-W01"       # ISO: Thursday 2026-01-01
    assert tw.period_key("2021-01-03", "week") == "2020-W53"       # a Sunday of 2020's last week
    assert tw.period_key("2026-01", "month") == "2026-01"          # a key stays itself
    assert [tw.key_period(k) for k in ("2026-01-31", "2026-W05", "2026-01")] == ["day", "week", "month"]
    with pytest.raises(ValueError):
        tw.key_period("2026")


def test_key_days_and_bounds():
    assert tw.key_days("2026-01-31") == ["2026-01-31"]
    feb = tw.key_days("2024-02")
    assert (feb[0], feb[-1], len(feb)) == ("2024-02-01", "2024-02-29", 29)
    week = tw.key_days("2026-W01")
    assert (week[0], week[-1], len(week)) == ("2025-12-29", "2026-01-04", 7)
    utc = dt.timezone.utc
    assert tw.day_bounds("2025-12") == (dt.datetime(2025, 12, 1, tzinfo=utc), dt.datetime(2026, 1, 1, tzinfo=utc))
    assert tw.day_bounds("2026-W01") == (dt.datetime(2025, 12, 29, tzinfo=utc), dt.datetime(2026, 1, 5, tzinfo=utc))
    # consecutive keys, consecutive ordinals (groups of N partitions rely on it)
    assert tw.key_ordinal("2026-01") - tw.key_ordinal("2025-12") == 1
    assert tw.key_ordinal("2026-W01") - tw.key_ordinal("2025-W52") == 1
    assert tw.key_ordinal("2026-03-01") - tw.key_ordinal("2026-02-28") == 1


def test_window_selects_the_periods_it_touches():
    w = tw.parse_window("2026-01-31T12:00:00Z", "2026-02-01")
    assert w.contains_day("2026-01") and w.contains_day("2026-02")
    assert not w.contains_day("2025-12") and not w.contains_day("2026-03")
    assert w.contains_day("2026-W05") and not w.contains_day("2026-W06")   # W05: Jan 26 .. Feb 1


def test_partition_files_of_each_period():
    assert io.partition_file("E", "30_clean", "a", "2026-01-31") == \
        "data/E/30_clean/device_id=a/day=2026-01-31/part.parquet"
    assert io.partition_file("E", "30_clean", "a", "2026-01-31", period="month") == \
        "data/E/30_clean/device_id=a/month=2026-01/part.parquet"
    assert io.partition_file("E", "30_clean", "a", "2026-01", period="month") == \
        "data/E/30_clean/device_id=a/month=2026-01/part.parquet"
    assert io.partition_file("E", "30_clean", "{device}", "{day}", period="week") == \
        "data/E/30_clean/device_id={device}/week={day}/part.parquet"
    assert io.multi_day("data/E/30_clean/device_id=a/month=2026-01/part.parquet")
    assert not io.multi_day("data/E/30_clean/device_id=a/day=2026-01-31/part.parquet")
    assert io.stage_of("data/E/70_aggregated/window=10s/device_id=a/week=2026-W05/part.parquet") == \
        "70_aggregated/window=10s"


def test_merge_counts_adds_numbers_by_reason_and_joins_lists():
    days = [{"rows_in": 10, "rows_out": 8, "rejected": {"spike": 2}, "warnings": ["a"], "unit": "rows"},
            {"rows_in": 5, "rows_out": 5, "rejected": {"flat": 1, "spike": 1}, "warnings": [], "unit": "rows"},
            {"rows_in": 1, "rows_out": 1, "rejected": {}, "warnings": ["b"], "unit": "cells"}]
    assert merge_counts(days) == {"rows_in": 16, "rows_out": 14, "rejected": {"spike": 3, "flat": 1},
                                  "warnings": ["a", "b"], "unit": ["rows", "cells"]}


# ---------------------------------------------------------------- the real workflow

def _exposure(root: Path, partition: str) -> Path:
    """DEMO as ./manager.sh create DEMO makes it, every step but the database ones, on tiny
    data across a month's end (2 devices × 3 days from 2026-01-30, one sample every 20 s on
    a 20-s grid, a bad line), with ``partition``."""
    from pyjama.demo import generate
    from pyjama.manage import create

    create("DEMO", root, partition)
    cfg = root / "configs" / "DEMO"
    edit(cfg / "40_resample.json", lambda c: [r.update(freq="20s", max_gap="60s")
                                              for r in [*c["domains"].values(), c["default_rule"]]])
    edit(cfg / "60_behaviour.json", lambda c: slow_down(c, 20))
    edit(cfg / "70_aggregate.json", lambda c: c.update(windows=["60s", "1h"], fill_day=True))
    generate(root / "data" / "DEMO" / "00_raw", "DEMO", devices=2, days=3, hz=0.05, start="2026-01-30")
    # a line the parser rejects, and a file that runs into the next month: valve01's
    # February reads its January batch too
    with open(root / "data/DEMO/00_raw/DEMO_valve01_2026-01-31.csv", "a") as f:
        f.write("not a line\n2026-02-01T00:00:10Z;m0:300\n")
    return root


def _stages(root: Path) -> dict:
    """stage → every row of its files (partition columns dropped), devices and days in order."""
    out: dict = {}
    base = root / "data" / "DEMO"
    for f in sorted(base.rglob("part.parquet")):
        rel = f.relative_to(base).parts
        if rel[0].startswith((".", "_", "00_", "10_")):
            continue
        i = next(k for k, p in enumerate(rel) if p.startswith("device_id="))
        df = pd.read_parquet(f)
        df = df.drop(columns=[c for c in ("device_id", "day", "week", "month") if c in df])
        for c in df.columns:
            if str(df[c].dtype) == "category":
                df[c] = df[c].astype(str)
        df.insert(0, "device", rel[i].split("=", 1)[1])
        out.setdefault("/".join(rel[:i]), []).append(df)
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    roots = {}
    for partition in ("day", "month"):
        root = _exposure(tmp_path_factory.mktemp(partition), partition)
        res = drawer(root, "run", "configs/DEMO/pipeline.json", "--cores", "2", check=True)
        roots[partition] = (root, res.stdout + res.stderr)
    return roots


def test_month_partitions_hold_the_same_rows_as_day_partitions(built):
    day_root, day_out = built["day"]
    month_root, month_out = built["month"]
    assert "done, 50 jobs" in day_out          # 6 raw files + 7 steps × 2 devices × 3 days + 2 fits
    # 4 parser batches (2 devices × 2 months: a batch per device and month of its files'
    # first day) + 7 steps × 2 devices × 2 months + 2 fits
    assert "done, 34 jobs" in month_out
    ref, got = _stages(day_root), _stages(month_root)
    assert sorted(got) == sorted(ref) and len(ref) == 11
    for stage in ref:
        assert len(ref[stage]) > 0, stage
        pd.testing.assert_frame_equal(got[stage], ref[stage], check_dtype=True, obj=stage)
    files = sorted(p.relative_to(month_root / "data/DEMO/30_clean").as_posix()
                   for p in (month_root / "data/DEMO/30_clean").rglob("part.parquet"))
    assert files == [f"device_id={d}/month={m}/part.parquet" for d in ("valve01", "valve02")
                     for m in ("2026-01", "2026-02")]
    daily = pd.read_parquet(month_root / "data/DEMO/60_daily/device_id=valve01/month=2026-01/part.parquet")
    assert sorted(set(daily["day"])) == ["2026-01-30", "2026-01-31"]      # its rows say their day
    led = io.read_ledger(month_root / "data/DEMO/20_split/device_id=valve01/month=2026-01/part.parquet")
    days = [io.read_ledger(day_root / f"data/DEMO/20_split/device_id=valve01/day={d}/part.parquet")
            for d in ("2026-01-30", "2026-01-31")]
    assert led["partition"] == "valve01/2026-01"
    assert led["rows_in"] == sum(d["rows_in"] for d in days) and led["rows_out"] == sum(d["rows_out"] for d in days)
    assert (month_root / "data/DEMO/.pyjama/partition").read_text() == "month\n"


def _parsed_rows(root: Path) -> pd.DataFrame:
    """Every row of the parsed stage, whatever its layout, in (device, sensor, ts, value) order."""
    files = sorted((root / "data/DEMO/10_parsed").rglob("part.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    for c in df.columns:
        if str(df[c].dtype) == "category":
            df[c] = df[c].astype(str)
    return df.sort_values(["device_id", "sensor", "ts", "value"], kind="stable").reset_index(drop=True)


def test_month_parser_jobs_parse_a_batch_of_raw_files_each(built):
    day_root, _ = built["day"]
    month_root, _ = built["month"]
    base = month_root / "data/DEMO/10_parsed"
    assert sorted(p.name for p in base.iterdir()) == [
        "batch=valve01_2026-01", "batch=valve01_2026-02", "batch=valve02_2026-01", "batch=valve02_2026-02"]
    pd.testing.assert_frame_equal(_parsed_rows(month_root), _parsed_rows(day_root), check_dtype=True)
    # a batch's rows: its files' rows in file-name order, each file's by device and time
    got = pd.read_parquet(base / "batch=valve01_2026-01/part.parquet")
    ref = pd.concat([pd.read_parquet(day_root / f"data/DEMO/10_parsed/raw=DEMO_valve01_{d}.csv/part.parquet")
                     for d in ("2026-01-30", "2026-01-31")], ignore_index=True)
    for c in ("sensor", "device_id", "domain"):
        got[c], ref[c] = got[c].astype(str), ref[c].astype(str)
    pd.testing.assert_frame_equal(got, ref)
    # the ledger: the files' own entries (as a day exposure's parser writes them) and their sums
    led = io.read_ledger(base / "batch=valve01_2026-01/part.parquet")
    assert led["partition"] == "batch=valve01_2026-01"
    assert sorted(led["files"]) == ["DEMO_valve01_2026-01-30.csv", "DEMO_valve01_2026-01-31.csv"]
    for name, own in led["files"].items():
        alone = io.read_ledger(day_root / f"data/DEMO/10_parsed/raw={name}/part.parquet")
        assert {k: v for k, v in own.items() if k != "warning"} == {k: v for k, v in alone.items() if k != "warning"}
    assert led["rows_in"] == sum(f["rows_in"] for f in led["files"].values())
    assert led["rows_out"] == sum(f["rows_out"] for f in led["files"].values())
    days = {}
    for f in led["files"].values():
        for k, n in f["partitions"].items():
            days[k] = days.get(k, 0) + n
    assert led["partitions"] == days and days["valve01/2026-02-01"] == 1     # the line past midnight
    # one rejects file per batch: the lines of its files, each naming its file
    rej = (month_root / "data/DEMO/_meta/10_parsed/batch=valve01_2026-01/rejects.csv").read_text().splitlines()
    alone = [line for d in ("2026-01-30", "2026-01-31") for line in
             (day_root / f"data/DEMO/_meta/10_parsed/raw=DEMO_valve01_{d}.csv/rejects.csv").read_text().splitlines()[1:]]
    assert rej[0] == "file,line,reason,detail,text" and rej[1:] == alone and len(alone) == 1
    assert rej[1] == "DEMO_valve01_2026-01-31.csv,4296,no values,,not a line"
    # valve01's February: its own batch and the January one that runs into it
    split = io.read_ledger(month_root / "data/DEMO/20_split/device_id=valve01/month=2026-02/part.parquet")
    assert split["input_files"] == 2        # 2026-02-01: rows from both batches
    inputs = json.loads(io.read_meta(month_root / "data/DEMO/20_split/device_id=valve01/month=2026-02/"
                                     "part.parquet")["pyjama.inputs"])
    assert inputs == [f"data/DEMO/10_parsed/batch=valve01_{m}/part.parquet" for m in ("2026-01", "2026-02")]


def test_a_dense_month_of_70_goes_day_by_day_with_the_same_rows(built, tmp_path, monkeypatch):
    # 70 computes a month in one pass up to ONE_PASS_ROWS input rows, day by day above it
    # (its memory: one day at a time): the same rows either way
    from pyjama.runner import run_step
    from pyjama.steps.aggregate import AggregateStep

    src, _ = built["month"]
    root = tmp_path / "p"
    shutil.copytree(src, root, symlinks=True)
    step, st = AggregateStep(), None
    from pyjama.project import Project

    project = Project.for_exposure("DEMO", root)
    st = next(s for s in project.pipeline.steps if s.script == "70_aggregate.py")
    assert step.one_pass(project, st, "valve01", "2026-01")
    monkeypatch.setattr(AggregateStep, "ONE_PASS_ROWS", 10)
    assert not step.one_pass(project, st, "valve01", "2026-01")
    run_step("70_aggregate.py", "configs/DEMO/70_aggregate.json", devices=["valve01"], day="2026-01-30",
             root=root, quiet=True)
    for window in ("60s", "1h"):
        rel = f"data/DEMO/70_aggregated/window={window}/device_id=valve01/month=2026-01/part.parquet"
        one, days = pd.read_parquet(src / rel), pd.read_parquet(root / rel)
        for df in (one, days):
            for c in df.columns:
                if str(df[c].dtype) == "category":
                    df[c] = df[c].astype(str)
        assert len(one) > 0
        pd.testing.assert_frame_equal(days, one, check_exact=True)
    led = io.read_ledger(root / "data/DEMO/70_aggregated/window=60s/device_id=valve01/month=2026-01/part.parquet")
    assert led == io.read_ledger(src / "data/DEMO/70_aggregated/window=60s/device_id=valve01/month=2026-01/part.parquet")


def test_month_exposure_second_run_board_and_direct_run(built):
    root, _ = built["month"]
    again = drawer(root, "run", "configs/DEMO/pipeline.json", "--fresh", check=True)
    assert "nothing to do" in again.stdout + again.stderr
    board = drawer(root, "status", "configs/DEMO/pipeline.json", check=True).stdout
    assert "2026-01" in board and "2026-02" in board and "2026-01-30" not in board
    # one day asked of a month exposure runs its month
    args = ["run", "40_resample.py", "--with", "configs/DEMO/40_resample.json", "--device", "valve01",
            "--day", "2026-01-31"]
    assert pyjama(root, *args, "-n", check=True).stdout.splitlines()[0] == "would write: 40_resample.py valve01/2026-01"
    assert "1 partition(s) written" in pyjama(root, *args, check=True).stdout
    # a month with no day of data for the device: one line, not a traceback
    none = pyjama(root, "run", "40_resample.py", "--with", "configs/DEMO/40_resample.json", "--device",
                  "valve01", "--day", "2026-03-02")
    assert none.returncode == 2 and none.stdout == ""
    assert none.stderr == ("Error: 40_resample.py valve01/2026-03: the raw index has no day of 2026-03 for "
                           "valve01; nothing to compute (drawer.py status lists the partitions)\n")


def test_report_of_a_month_exposure_shows_each_day(built):
    root, _ = built["month"]
    res = drawer(root, "report", "configs/DEMO/pipeline.json", "-o", "report.html", check=True)
    html = (root / "report.html").read_text()
    for day in ("2026-01-30", "2026-01-31", "2026-02-01"):
        assert f"<h3>valve01 · {day}</h3>" in html, day
    assert "not built yet" not in html, res.stdout


def test_a_new_day_reruns_its_device_only(built):
    root, _ = built["month"]      # in place: a copy would lose keep's hard links
    from pyjama.demo import generate

    generate(root / "data/DEMO/00_raw", "DEMO", devices=1, days=1, hz=0.05, start="2026-02-02", seed=7)
    res = drawer(root, "run", "configs/DEMO/pipeline.json", "--dry-run", "--fresh", check=True)
    would = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("would run")]
    assert "would run: 20_split valve01 2026-02: input files updated by another job" in would
    assert not any("valve02" in line or "20_split valve01 2026-01" in line for line in would), would
    drawer(root, "run", "configs/DEMO/pipeline.json", check=True)
    # January's 30 re-reads February's first minutes: unchanged, so what follows it is kept
    assert "kept" in (root / "logs/DEMO/40_resample/valve01/2026-01.log").read_text().splitlines()[1]
    daily = pd.read_parquet(root / "data/DEMO/60_daily/device_id=valve01/month=2026-02/part.parquet")
    assert sorted(set(daily["day"])) == ["2026-02-01", "2026-02-02"]


def test_a_data_tree_keeps_its_period(built, tmp_path):
    src, _ = built["month"]
    root = tmp_path / "p"
    shutil.copytree(src, root, symlinks=True)
    edit(root / "configs/DEMO/pipeline.json", lambda c: c.update(partition="day"))
    res = drawer(root, "run", "configs/DEMO/pipeline.json")
    assert res.returncode != 0
    assert ("Error: configs/DEMO/pipeline.json: $.partition: 'day' is not allowed; allowed: 'month' "
            "(data/DEMO was built with month partitions; to change the period, move the stage folders "
            "of data/DEMO other than 00_raw aside, delete data/DEMO/.pyjama/partition and rebuild)") \
        in res.stderr


def test_create_with_a_partition(tmp_path):
    from wf import run

    res = run(["bash", str(REPO / "manager.sh"), "create", "SLOW", "--partition", "month"], tmp_path)
    assert "month partitions (70_aggregate.json: fill_day false)" in res.stdout
    pipe = json.loads((tmp_path / "configs/SLOW/pipeline.json").read_text())
    agg = json.loads((tmp_path / "configs/SLOW/70_aggregate.json").read_text())
    assert pipe["partition"] == "month" and agg["fill_day"] is False and "--partition" in agg["comment"]
    bad = run(["bash", str(REPO / "manager.sh"), "create", "SLOW2", "--partition", "year"], tmp_path, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "Error: --partition 'year' is not allowed; allowed: day, week, month"
    assert not (tmp_path / "configs/SLOW2").exists()


def test_parser_batches_on_the_command_line_and_their_lost_lines(tmp_path):
    """A month exposure's parser alone: --raw runs the file's batch, --batch names one, a
    batch that holds no file and --batch with day partitions are one line each; a file that
    lost most of its lines is named with its batch's rejects file."""
    from pyjama.demo import generate
    from pyjama.manage import create

    root = tmp_path
    create("DEMO", root, "month")
    raw = root / "data/DEMO/00_raw"
    generate(raw, "DEMO", devices=1, days=2, hz=0.01, start="2026-01-31")
    (raw / "DEMO_valve01_2026-01-29.csv").write_text("2026-01-29T00:00:00Z;m0:300\nbad\nworse\nworst\n")
    cfg = ["run", "10_parser.py", "--with", "configs/DEMO/10_parser.json"]
    assert pyjama(root, *cfg, "-n", check=True).stdout.splitlines() == [
        "would write: 10_parser.py batch=valve01_2026-01", "would write: 10_parser.py batch=valve01_2026-02",
        "10_parser.py: 2 partition(s) would be written (dry run: nothing changed)"]
    assert pyjama(root, *cfg, "--raw", "DEMO_valve01_2026-01-31.csv", "-n", check=True).stdout.splitlines()[0] == (
        "would write: 10_parser.py batch=valve01_2026-01")
    pyjama(root, *cfg, "--raw", "DEMO_valve01_2026-01-31.csv", check=True)
    assert sorted(p.name for p in (root / "data/DEMO/10_parsed").iterdir()) == ["batch=valve01_2026-01"]
    led = io.read_ledger(root / "data/DEMO/10_parsed/batch=valve01_2026-01/part.parquet")
    assert sorted(led["files"]) == ["DEMO_valve01_2026-01-29.csv", "DEMO_valve01_2026-01-31.csv"]
    assert led["rejected"] == {"no values": 3} and led["files"]["DEMO_valve01_2026-01-29.csv"]["rows_in"] == 4
    pyjama(root, *cfg, "--batch", "valve01_2026-02", check=True)
    assert (root / "data/DEMO/10_parsed/batch=valve01_2026-02/part.parquet").exists()
    board = drawer(root, "status", "configs/DEMO/pipeline.json").stdout      # exit 1: steps missing
    assert ("warning: data/DEMO/00_raw/DEMO_valve01_2026-01-29.csv: 3 of 4 lines rejected (75.0 %), mostly "
            "'no values' (3); rejects: data/DEMO/_meta/10_parsed/batch=valve01_2026-01/rejects.csv") in board
    bad = pyjama(root, *cfg, "--batch", "valve09_2026-01")
    assert bad.returncode == 2 and bad.stderr == (
        "Error: configs/DEMO/10_parser.json: batch 'valve09_2026-01' holds no raw file of data/DEMO/00_raw; "
        "allowed: a batch drawer.py status lists (<device>_<period> of a file's first day)\n")
    edit(root / "configs/DEMO/pipeline.json", lambda c: c.update(partition="day"))
    shutil.rmtree(root / "data/DEMO/10_parsed")
    (root / "data/DEMO/.pyjama/partition").unlink(missing_ok=True)
    bad = pyjama(root, *cfg, "--batch", "valve01_2026-01")
    assert bad.returncode == 2 and bad.stderr == (
        "Error: --batch valve01_2026-01: not allowed with day partitions (configs/DEMO/pipeline.json); "
        "allowed: --raw <file name>\n")


def test_kept_period_tables_are_bounded_in_bytes_keeping_the_two_last_used(tmp_path, monkeypatch):
    # io keeps whole period tables for the jobs that read them day by day; a worker keeps
    # them from job to job, so their bytes are bounded; the two most recently used stay
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(io, "_TABLES", {})
    monkeypatch.setattr(io, "_TABLES_BYTES", 1)             # every table is over the budget
    reads = []
    real = io.read_parquet
    monkeypatch.setattr(io, "read_parquet", lambda path, **kw: reads.append(Path(path).name) or real(path, **kw))
    paths = []
    for k in range(4):
        paths.append(tmp_path / f"t{k}.parquet")
        pq.write_table(pa.table({"x": list(range(100))}), paths[-1])
    for k in (0, 1, 0, 2, 0, 3, 1):
        io.period_table(paths[k])
    # 0, used again, outlives 1 and 2; 1 was evicted, so it is read again
    assert reads == ["t0.parquet", "t1.parquet", "t2.parquet", "t3.parquet", "t1.parquet"]
    assert [Path(k[0]).name for k in io._TABLES] == ["t3.parquet", "t1.parquet"]
    monkeypatch.setattr(io, "_TABLES_BYTES", 1 << 30)
    for k in range(4):
        io.period_table(paths[k])
    assert len(io._TABLES) == 4                              # within the budget: all kept
