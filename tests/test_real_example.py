"""The MusselTracker example exposure (configs/examples/MT) on the real logger files of
../shared/data/real, through the real workflow: their real defects are accounted for."""
import shutil

import pandas as pd
import pytest

from tests.wf import REAL, REPO, snakemake

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not REAL.exists(), reason=f"real logger files not found at {REAL}")]


@pytest.fixture(scope="module")
def mt(tmp_path_factory):
    """The MT example exposure on the real logger files, built once by the real workflow."""
    root = tmp_path_factory.mktemp("MT")
    shutil.copytree(REPO / "configs/examples/MT", root / "configs/MT")
    raw = root / "data/MT/00_raw"
    raw.mkdir(parents=True)
    for f in (REAL / "petersen_MusselTracker_raw").glob("*.TXT"):
        shutil.copy(f, raw)
    snakemake(root, name="MT")
    return root


def test_musseltracker_files_through_the_workflow(mt):
    # only the hourly data files are parsed (the glob leaves out the calibration and reset logs)
    parsed = sorted(p.name for p in (mt / "data/MT/10_parsed").iterdir())
    assert parsed == ["raw=MT061713.TXT", "raw=MT061714.TXT"]
    # two rows per clock tick: merged by their mean, and counted
    from pyjama import io

    led = io.read_ledger(mt / "data/MT/20_split/device_id=mt01/day=2014-06-17/part.parquet")
    assert led["rows_in"] == (2098 + 4418) * 9
    assert led["rows_in"] == led["rows_out"] + led["rejected"]["duplicate (sensor, ts) merged: mean"]
    # the magnetometer's overflow (-4096) and the pinned supply ADC (1023) are flagged 3, kept as values
    clean = pd.read_parquet(mt / "data/MT/30_clean/device_id=mt01/day=2014-06-17/part.parquet")
    mag_x = clean[clean["sensor"] == "mag_x"]
    assert (mag_x["value"] == -4096).all() and (mag_x["quality_flag"] == 3).all()
    supply = clean[clean["sensor"] == "supply_adc"]
    assert (supply["quality_flag"][supply["value"] == 1023] == 3).all()
    hall = clean[clean["sensor"] == "hall"]
    assert (hall["quality_flag"] == 0).mean() > 0.99   # the bench run's Hall channel is clean
    # the reset gaps (33 s and 113 s) are real gaps in the data, not filled here
    gaps = hall["ts"].sort_values().diff().dt.total_seconds()
    assert sorted(gaps.nlargest(2).round().tolist()) == [33.0, 113.0]


def test_60_on_the_real_musseltracker_day_computes_sparse_and_equals_the_full_grid(mt, tmp_path):
    """The real logger's day (2014-06-17: ~2 h of 1 Hz Hall samples with its reset gaps, the
    rest of the day empty) as 60's input — the Hall channel min-max scaled to an opening
    (higher field = more closed), one value per second — gives the same tables on the sparse
    path as on the whole-day grid (docs/steps/behaviour-aggregate.md, "Sparse days")."""
    import json

    import numpy as np

    from pyjama import behaviour, tidy
    from pyjama.pipeline import load_step_config

    clean = pd.read_parquet(mt / "data/MT/30_clean/device_id=mt01/day=2014-06-17/part.parquet")
    hall = clean[(clean["sensor"] == "hall") & (clean["quality_flag"] == 0)]
    v = hall["value"].to_numpy(float)
    lo, hi = np.percentile(v, [1, 99])
    x = pd.Series(1 - np.clip((v - lo) / (hi - lo), 0, 1), index=hall["ts"].dt.floor("1s"))
    x = x.groupby(level=0).mean()
    df = tidy.frame(ts=x.index, device_id="mt01", domain="bio_signal", sensor="hall__norm",
                    value=x.to_numpy(), quality_flag=0)
    cfg = json.loads((REPO / "configs/_template/60_behaviour.json").read_text().replace("{{EXPOSURE}}", "MT"))
    cfg["active"]["min_usable"] = "0s"
    (tmp_path / "60.json").write_text(json.dumps(cfg))
    p = load_step_config("60_behaviour.py", "60.json", tmp_path).params
    full = behaviour.compute_behaviour(df, "2014-06-17", p, sparse=False)
    fast = behaviour.compute_behaviour(df, "2014-06-17", p)
    present = behaviour.to_grid(df, "bio_signal", ["hall__norm"], "2014-06-17", 1_000_000)[2]
    kept = behaviour.sparse_columns(present, 126)               # template: 120 s + 4 s + 2
    assert len(x) > 3000 and kept is not None and len(kept) < 86_400 / 2    # the sparse path ran
    assert len(full.events) > 0
    for a, b in ((full.data, fast.data), (full.events, fast.events), (full.daily, fast.daily),
                 (full.device_daily, fast.device_daily)):
        pd.testing.assert_frame_equal(a, b)
    assert full.counts == fast.counts
