"""The database pipeline when the database cannot be reached: every parquet stage is
built, step 80 fails with one line naming the server, nothing is recorded as imported."""
import json

import pytest

from tests.wf import drawer, make_project, snakemake

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
    assert not list((tmp_path / "data/T").glob("_meta/80_*/**/receipt.json"))
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error: 80_import_postgres.py")]
    assert errors, res.stderr[-3000:]
    assert "127.0.0.1:1" in errors[0] and "(log: logs/T/" in errors[0]
    # through drawer.py: one line per failed import (step, partition, cause, log), one summary
    # line, exit 2 (a user error: the database cannot be reached) and no Snakemake frames
    res = drawer(tmp_path, "run", "configs/T/pipeline_postgres.json")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    fails = [ln for ln in lines if ln.startswith("FAILED ")]
    pipe = json.loads((cfgs / "pipeline_postgres.json").read_text())
    imports = [s for s in pipe["steps"] if s["script"].startswith("80_")]
    assert len(fails) == len(imports) and len(lines) == len(fails) + 1
    assert all(" valve01 2026-01-20: " in ln and "127.0.0.1:1" in ln and
               ln.endswith("/valve01/2026-01-20.log)") for ln in fails)
    assert lines[-1].startswith(f"PyJAMA: {len(fails)} jobs failed (80_")
    assert lines[-1].endswith("), 0 done; logs named above. Board: python3 drawer.py status "
                              "configs/T/pipeline_postgres.json")
    assert "RuleException" not in res.stderr and "Traceback" not in res.stderr
