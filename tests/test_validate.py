"""The science validation suite (bench/validate.py) runs end to end on its small size and
prints every metric of issue 10 with its target (a smoke test: the figures are in the README;
the targets met are asserted by the unit tests of each rule)."""
import subprocess
import sys

from tests.wf import REAL, REPO

REAL_METRICS = ("real_closure_recall", "real_spike_flags_on_adductions")


def test_validate_small_runs_and_prints_every_metric(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "bench" / "validate.py"), "--size", "small",
                          "--json", str(tmp_path / "v.json")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for metric in ("closure_recall", "closure_precision", "micro_false_per_animal_h", "micro_recall",
                   "spike_recall_edge_glitch", "spike_recall_day_first", "ramp_false_flags_per_100_closures",
                   "spike_precision", "flat_recall", "shift_recall",
                   *(REAL_METRICS if (REAL / "extremefit_dataOyster.csv").exists() else ())):
        assert metric in res.stdout, f"validation table lacks {metric}:\n{res.stdout}"
    if not (REAL / "extremefit_dataOyster.csv").exists():   # the real record is beside the repo
        assert not any(m in res.stdout for m in REAL_METRICS)


def test_generator_is_seeded_and_independent_of_the_demo():
    sys.path.insert(0, str(REPO / "bench"))
    import valvegen

    a1, t1 = valvegen.exposure("qc", 1, 1.0, 2, 43200.0, start_s=64800.0)
    a2, _ = valvegen.exposure("qc", 1, 1.0, 2, 43200.0, start_s=64800.0)
    assert all((x.counts == y.counts).all() for x, y in zip(a1, a2))
    assert t1.spikes["day_first"] and t1.spikes["day_last"]          # the record crosses midnight
    assert "pyjama.demo" not in (REPO / "bench" / "valvegen.py").read_text()
