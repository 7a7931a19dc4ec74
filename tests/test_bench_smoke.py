"""The benchmark suite runs end to end and prints its ratios (a smoke test, never a timed
assertion: speed is reported by bench/run.py, not asserted)."""
import json
import subprocess
import sys

import pytest

from tests.wf import REPO

pytestmark = pytest.mark.slow


def test_bench_small_runs_and_prints_every_scenario(tmp_path):
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--size", "small", "--json", str(out),
                          "--skip", "slow", "network", "dryrun_year"],   # minutes at any size: rows say skipped
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    for row in ("1 floor", "2 full rebuild 10→70", "3 no-op re-run", "4 incremental", "5 dry run",
                "6 peak memory", "7 import 80 vs bare COPY", "8 81 --mode auto"):
        assert row in res.stdout, f"bench table lacks {row!r}:\n{res.stdout}"
    for goal in ("G1 full build vs pyperun", "G2 one new device-day", "G3 slow logger", "G4 network plan",
                 "G5 SLURM"):                                 # issue 14's goals, today and now
        assert goal in res.stdout, f"bench goals lack {goal!r}:\n{res.stdout}"
    assert "not available" in res.stdout                 # no pyperun clone given
    fig = json.loads(out.read_text())
    assert fig["floor"]["rows"] > 0 and fig["full"]["wall"] > 0
    assert fig["noop"]["jobs"] == 0                       # nothing re-runs: a property, not a time
    # the new day's chain runs once, and the day before it re-runs from 30 on (its clean reads
    # the new day's first minutes: docs/steps/clean-resample.md): no step runs more than twice
    assert min(fig["incremental"]["jobs"].values()) == 1 and max(fig["incremental"]["jobs"].values()) == 2
    assert "error" not in (fig.get("import80") or {}), fig.get("import80")


def test_network_scenario_runs_the_cron_cases(tmp_path):
    """G4's scenario at a tiny size (2 devices × 3 days of hourly files up to today): the
    cron run with nothing new is answered from the verdict cache and runs no job; one more
    line in a logger's file of today runs its jobs: its parser and split, and 30 → 70 of its
    day and of the day before (whose 30 reads today's first minutes: 2 + 2 × 6 jobs)."""
    sys.path.insert(0, str(REPO))
    from bench.run import network

    fig = network(tmp_path, 2, 3)
    assert fig["jobs"] > 0 and fig["dry_cached_jobs"] == fig["jobs"]
    assert fig["window_jobs"] > 0
    assert fig["window_noop_jobs"] == 0 and fig["window_noop_cached"]
    assert fig["window_new_line_jobs"] == 14


def test_alternate_refuses_a_folder_that_is_not_a_checkout(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "bench" / "alternate.py"), "new-day", str(tmp_path), str(REPO)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 1
    assert res.stderr.strip() == (f"Error: {tmp_path}: not a PyJAMA checkout (no workflow/Snakefile); "
                                  "allowed: a tree of this repository")
