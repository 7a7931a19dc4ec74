"""The MusselTracker example exposure (configs/examples/MT) on the real logger files of
../shared/data/real, through the real workflow: their real defects are accounted for."""
import shutil

import pandas as pd
import pytest

from tests.wf import REAL, REPO, snakemake

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not REAL.exists(), reason=f"real logger files not found at {REAL}")]


def test_musseltracker_files_through_the_workflow(tmp_path):
    shutil.copytree(REPO / "configs/examples/MT", tmp_path / "configs/MT")
    raw = tmp_path / "data/MT/00_raw"
    raw.mkdir(parents=True)
    for f in (REAL / "petersen_MusselTracker_raw").glob("*.TXT"):
        shutil.copy(f, raw)
    snakemake(tmp_path, name="MT")
    # only the hourly data files are parsed (the glob leaves out the calibration and reset logs)
    parsed = sorted(p.name for p in (tmp_path / "data/MT/10_parsed").iterdir())
    assert parsed == ["raw=MT061713.TXT", "raw=MT061714.TXT"]
    # two rows per clock tick: merged by their mean, and counted
    from pyjama import io

    led = io.read_ledger(tmp_path / "data/MT/20_split/device_id=mt01/day=2014-06-17/part.parquet")
    assert led["rows_in"] == (2098 + 4418) * 9
    assert led["rows_in"] == led["rows_out"] + led["rejected"]["duplicate (sensor, ts) merged: mean"]
    # the magnetometer's overflow (-4096) and the pinned supply ADC (1023) are flagged 3, kept as values
    clean = pd.read_parquet(tmp_path / "data/MT/30_clean/device_id=mt01/day=2014-06-17/part.parquet")
    mag_x = clean[clean["sensor"] == "mag_x"]
    assert (mag_x["value"] == -4096).all() and (mag_x["quality_flag"] == 3).all()
    supply = clean[clean["sensor"] == "supply_adc"]
    assert (supply["quality_flag"][supply["value"] == 1023] == 3).all()
    hall = clean[clean["sensor"] == "hall"]
    assert (hall["quality_flag"] == 0).mean() > 0.99   # the bench run's Hall channel is clean
    # the reset gaps (33 s and 113 s) are real gaps in the data, not filled here
    gaps = hall["ts"].sort_values().diff().dt.total_seconds()
    assert sorted(gaps.nlargest(2).round().tolist()) == [33.0, 113.0]
