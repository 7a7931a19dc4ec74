"""The OWHL and HFNI example exposures (configs/examples/OWHL, HFNI) on the real files of
../shared/data/real, through the real workflow (issue 11)."""
import shutil

import pandas as pd
import pytest

from tests.wf import REAL, REPO, drawer, snakemake

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not REAL.exists(), reason=f"real logger files not found at {REAL}")]


def ledger(root, expo, stage, part):
    from pyjama import io

    return io.read_ledger(root / f"data/{expo}/{stage}/{part}/part.parquet")


def test_owhl_logger_and_barometer_through_the_workflow(tmp_path):
    shutil.copytree(REPO / "configs/examples/OWHL", tmp_path / "configs/OWHL")
    raw = tmp_path / "data/OWHL/00_raw"
    raw.mkdir(parents=True)
    for f in ("owhl_20160819_1820_00.csv", "owhl_20160819_1900_00.csv", "owhl_201608_airpressure.csv"):
        shutil.copy(REAL / f, raw)
    snakemake(tmp_path, name="OWHL")
    # the serial on the mission line is the device id; the minutes in air are cut by the span
    a = ledger(tmp_path, "OWHL", "10_parsed", "raw=owhl_20160819_1820_00.csv")
    assert (a["rows_in"], a["rows_out"]) == (9598, 5996)
    assert a["rejected"] == {"timestamp outside the deployment span": 3600, "skipped: header line": 1,
                             "skipped: skip_lines": 1}
    assert list(a["partitions"]) == ["SN20150528123933/2016-08-19"]
    assert a["events"] == {}          # the one 1.25 s gap is shorter than max_step (10 s)
    # the next hour's last line has no line end but is complete: kept
    b = ledger(tmp_path, "OWHL", "10_parsed", "raw=owhl_20160819_1900_00.csv")
    assert (b["rows_in"], b["rows_out"], b["rejected"]) == (4794, 4792, {"skipped: header line": 1,
                                                                         "skipped: skip_lines": 1})
    # two hourly files → one day; each chain has its own devices only
    assert sorted(p.name for p in (tmp_path / "data/OWHL/20_split").iterdir()) == ["device_id=SN20150528123933"]
    assert sorted(p.name for p in (tmp_path / "data/OWHL/20_split_baro").iterdir()) == ["device_id=baro01"]
    assert sorted(p.name for p in (tmp_path / "data/OWHL/30_clean").iterdir()) == ["device_id=SN20150528123933"]
    split = ledger(tmp_path, "OWHL", "20_split", "device_id=SN20150528123933/day=2016-08-19")
    assert split["rows_in"] == split["rows_out"] == (5996 + 4792) * 2
    clean = pd.read_parquet(tmp_path / "data/OWHL/30_clean/device_id=SN20150528123933/day=2016-08-19/part.parquet")
    p = clean[clean["sensor"] == "Pressure.mbar"].sort_values("ts")
    assert p["ts"].iloc[0] == pd.Timestamp("2016-08-19 18:35:00", tz="UTC")
    assert p["ts"].iloc[-1] == pd.Timestamp("2016-08-19 19:19:59.75", tz="UTC")
    assert (p["quality_flag"] == 0).all() and p["value"].min() > 1050      # in the water only (air: ~1029)
    # the grid of that day: 45 min of data at 250 ms; the hours before and after are two
    # missing runs written as their ends (sparse_after), not 691,200 rows (issue 11):
    # 2 sensors × (10,800 cells of 18:35–19:20, 12 of them filled: 10,788 samples, + 2 × 2 ends)
    grid = ledger(tmp_path, "OWHL", "40_resampled", "device_id=SN20150528123933/day=2016-08-19")
    assert grid["cells_expected"] == 2 * 345_600
    assert (grid["rows_out"], grid["cells_not_stored"], grid["filled"]) == (21_608, 669_592, 24)
    board = drawer(tmp_path, "status", "configs/OWHL/pipeline.json").stdout.splitlines()
    i = board.index("grid cells (40_resample): 691,200 expected, 21,608 written")
    assert board[i + 1] == "  669,600 missing (1), 669,592 of them not stored (inside gaps longer than sparse_after)"
    baro = pd.read_parquet(tmp_path / "data/OWHL/20_split_baro/device_id=baro01/day=2016-08-19/part.parquet")
    assert len(baro) == 18 and baro["value"].between(1012, 1014).all()


def test_hfni_oyster_record_with_a_declared_origin(tmp_path):
    shutil.copytree(REPO / "configs/examples/HFNI", tmp_path / "configs/HFNI")
    raw = tmp_path / "data/HFNI/00_raw"
    raw.mkdir(parents=True)
    shutil.copy(REAL / "extremefit_dataOyster.csv", raw / "HFNI_oyster01.csv")
    snakemake(tmp_path, name="HFNI")
    led = ledger(tmp_path, "HFNI", "10_parsed", "raw=HFNI_oyster01.csv")
    assert (led["rows_in"], led["rows_out"], led["rejected"]) == (54001, 54000, {"skipped: header line": 1})
    assert led["partitions"] == {"oyster01/2026-01-20": 53999 * 2, "oyster01/2026-01-21": 1 * 2}
    day = pd.read_parquet(tmp_path / "data/HFNI/30_clean/device_id=oyster01/day=2026-01-20/part.parquet")
    op = day[day["sensor"] == "opening"].sort_values("ts")
    assert op["ts"].iloc[0] == pd.Timestamp("2026-01-20 00:00:01", tz="UTC")   # 0.000277777778 h
    assert op["value"].iloc[0] == 3.89331853
    assert op["value"].between(1.9, 4.4).all() and (op["quality_flag"] == 0).all()
    gaps = op["ts"].diff().dt.total_seconds().dropna()
    assert gaps.between(1.59, 1.61).all()                                    # one sample every 1.6 s
