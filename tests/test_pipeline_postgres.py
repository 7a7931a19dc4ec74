"""The database pipeline when the database cannot be reached: every parquet stage is
built, step 80 fails with one line naming the server, nothing is recorded as imported."""
import json

import pytest

from tests.wf import make_project, snakemake

pytestmark = pytest.mark.slow


def test_unreachable_database_fails_only_at_step_80(tmp_path):
    make_project(tmp_path, "T", devices=1, days=1, hz=0.05)
    cfgs = tmp_path / "configs/T"
    for p in cfgs.glob("80_*.json"):
        data = json.loads(p.read_text())
        data["port"] = 1          # nothing listens there
        p.write_text(json.dumps(data, indent=2))
    res = snakemake(tmp_path, check=False, config=("pipeline=configs/T/pipeline_postgres.json",))
    assert res.returncode != 0
    # every parquet stage was built
    for stage in ("20_split", "30_clean", "40_resampled", "50_normalised", "60_behaviour",
                  "70_aggregated/window=10s"):
        assert (tmp_path / f"data/T/{stage}/device_id=valve01/day=2026-01-20/part.parquet").exists(), stage
    # step 80 failed with one line naming the server, and recorded nothing
    assert not list((tmp_path / "data/T").glob("80_*/**/receipt.json"))
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error: 80_import_postgres.py")]
    assert errors, res.stderr[-3000:]
    assert "127.0.0.1:1" in errors[0] and "(log: logs/T/" in errors[0]
