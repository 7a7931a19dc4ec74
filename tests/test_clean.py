"""30_clean: the QC rules as a specification (tiny series, expected flags written beside them).

Time is 1 Hz from 2026-01-20T00:00:00Z unless a test says otherwise; values are Hall counts.
"""
import json

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from pyjama import qc, tidy
from pyjama.pipeline import load_step_config
from pyjama.errors import UserError
from pyjama.steps import get_step

T0 = pd.Timestamp("2026-01-20T00:00:00Z").value  # ns
S = 10**9


def every_second(n):
    return T0 + np.arange(n, dtype=np.int64) * S


def at_seconds(*secs):
    return T0 + np.round(np.asarray(secs, dtype=float) * S).astype(np.int64)


def mask(*bits):
    return np.array(bits, dtype=bool)


# ---------------------------------------------------------------- missing, range, sentinels

def test_missing_is_nan_only():
    x = np.array([1.0, np.nan, np.inf, 0.0])
    assert_array_equal(qc.flag_missing(x), mask(0, 1, 0, 0))   # inf is a value (out of range)


def test_range_is_inclusive_and_flags_inf_but_not_nan():
    x = np.array([-1, 0, 500, 4000, 4001, np.nan, np.inf, -np.inf])
    want = mask(1, 0, 0, 0, 1, 0, 1, 1)   # bounds themselves are valid; NaN is missing, not out of range
    assert_array_equal(qc.flag_range(x, 0, 4000), want)


def test_range_with_an_open_side():
    x = np.array([-1e9, 0, 4001])
    assert_array_equal(qc.flag_range(x, None, 4000), mask(0, 0, 1))
    assert_array_equal(qc.flag_range(x, 0, None), mask(1, 0, 0))


def test_sentinels_are_exact_values():
    x = np.array([4095, 4094, 1023, -4096, 65535, np.nan, 4095.5])
    assert_array_equal(qc.flag_sentinels(x, [-4096, 1023, 4095, 65535]), mask(1, 0, 1, 1, 1, 0, 0))
    assert_array_equal(qc.flag_sentinels(x, []), mask(0, 0, 0, 0, 0, 0, 0))


# ---------------------------------------------------------------- spikes

def spikes(x, window=11, threshold_mad=None, threshold_abs=50, max_length=3, context_window=None,
           direction="both"):
    x = np.asarray(x, dtype=float)
    return qc.flag_spikes(every_second(len(x)), x, window, threshold_mad, threshold_abs, max_length,
                          context_window, direction)


def test_a_single_sample_spike_is_flagged():
    x = [100] * 7 + [450] + [100] * 7        # +350 for one sample, back to 100 at once
    want = [0] * 7 + [1] + [0] * 7
    assert_array_equal(spikes(x), mask(*want))


def test_a_closure_overshoot_is_physical_when_the_direction_says_so():
    # 100 (open) → 400 (closed) that stays. The first closed sample overshoots to 520: it is
    # above both neighbours (100 and 400) by 120 > 50. For Hall counts (higher = more closed)
    # a move toward closed is physical (direction "down"): it does not come back to 100, kept.
    # With direction "both" it is a one-sample excursion beyond both neighbours: flagged.
    x = [100] * 8 + [520] + [400] * 12
    assert_array_equal(spikes(x, direction="down"), np.zeros(21, dtype=bool))
    assert np.flatnonzero(spikes(x, direction="both")).tolist() == [8]


def test_ramp_samples_are_never_spikes_but_a_glitch_at_the_edge_is():
    # a 4-sample ramp 100 → 400: every ramp sample lies between its neighbours
    ramp = [100] * 10 + [160, 220, 280, 340] + [400] * 10
    assert not spikes(ramp).any()
    # the first ramp sample replaced by a glitch beyond the open level (20 < 100 − 50):
    # below both neighbours (100 and 220) by 80 > 50 → flagged, the ramp is not
    glitch = [100] * 10 + [20, 220, 280, 340] + [400] * 10
    assert np.flatnonzero(spikes(glitch, direction="down")).tolist() == [10]
    # a fast adduction: one sample toward closed (up in counts) recovering slowly is real
    adduction = [100] * 10 + [300, 260, 220, 180, 140] + [100] * 10
    assert not spikes(adduction, direction="down").any()


def test_direction_up_or_down_flags_one_side_only():
    x = [100] * 7 + [450] + [100] * 7 + [-250] + [100] * 7     # +350 at 7, −350 at 15
    assert np.flatnonzero(spikes(x, direction="both")).tolist() == [7, 15]
    # the other side too, because both come straight back to 100 (|x_b − x_a| = 0 ≤ 3 sigma)
    assert np.flatnonzero(spikes(x, direction="up")).tolist() == [7, 15]
    # a drop that recovers slowly (an adduction) is kept when up is the glitch side
    slow = [100] * 7 + [-250, -150, -50, 50] + [100] * 7
    assert np.flatnonzero(spikes(slow, direction="up")).tolist() == []
    assert np.flatnonzero(spikes(slow, direction="both")).tolist() == [7]


def test_first_and_last_sample_of_a_day_are_judged_with_the_neighbouring_days():
    day = tidy.frame(ts=pd.date_range("2026-01-20", periods=10, freq="1s", tz="UTC"), device_id="d",
                     domain="bio_signal", sensor="m0", value=[30.0] + [300.0] * 9, quality_flag=0)
    prev = tidy.frame(ts=pd.date_range("2026-01-19T23:59:55Z", periods=5, freq="1s"), device_id="d",
                      domain="bio_signal", sensor="m0", value=[300.0] * 5, quality_flag=0)
    params = {"rules": {"bio_signal": {"spike": {"window": 5, "threshold_mad": None, "threshold_abs": 50,
                                                 "direction": "down"}}}}
    alone, _ = qc.clean_frame(day, params, "d")
    assert alone["quality_flag"].tolist() == [0] * 10            # one neighbour: cannot tell
    both, counts = qc.clean_frame(day, params, "d", previous=prev)
    assert both["quality_flag"].tolist() == [2] + [0] * 9      # 30 below 300 and 300: a spike
    assert counts["rows_in"] == counts["rows_out"] == 10       # the edge rows are not returned


def test_the_last_open_sample_before_a_closure_is_not_a_spike_after_a_micro_closure():
    # open 100 (0–39), micro-closure 250 (40–53), open 100 (54–68), closed 400 (69–108).
    # With 31 samples, sample 68's window holds 100, 250 and 400 levels: its median is 250,
    # its MAD 0, so T = 50 and it is an outlier; its neighbour 67 is not, because the MAD
    # there is inflated (T ≈ 1334). The series does not return (100 → 400): judged by the
    # run's own T (50), not by the inflated T of sample 67, so nothing is flagged.
    x = [100] * 40 + [250] * 14 + [100] * 15 + [400] * 40
    assert_array_equal(spikes(x, window=31, threshold_mad=6), np.zeros(109, dtype=bool))


def test_a_micro_closure_longer_than_max_length_is_not_a_spike():
    # +150 for 5 samples in an 11-sample window: all 5 are outliers of the median (100)
    # and they return, but 5 > max_length = 3: a real event, not a spike.
    x = [100] * 8 + [250] * 5 + [100] * 8
    assert_array_equal(spikes(x), np.zeros(21, dtype=bool))


def test_max_length_decides_between_two_and_four_samples():
    two = [100] * 8 + [450, 460] + [100] * 8          # 2 ≤ 3: spike
    four = [100] * 8 + [450, 460, 455, 450] + [100] * 8   # 4 > 3: an event
    assert_array_equal(spikes(two), mask(*([0] * 8 + [1, 1] + [0] * 8)))
    assert_array_equal(spikes(four), np.zeros(20, dtype=bool))


def test_a_run_touching_the_series_edge_is_not_flagged():
    # it has one neighbour: the first sample could be the end of a closure
    x = [450] + [100] * 10
    assert_array_equal(spikes(x), np.zeros(11, dtype=bool))


def test_a_window_as_a_duration_equals_the_same_number_of_samples_at_1_hz():
    x = np.array([100] * 7 + [450] + [100] * 7, dtype=float)
    assert_array_equal(spikes(x, window=pd.Timedelta("11s")), spikes(x, window=11))


def test_mad_threshold_scales_with_the_noise():
    # noise of ±2 counts: the median |first difference| is about 2, so sigma ≈ 1.4826 × 2 / √2
    # ≈ 2.1 and T = 6 × sigma ≈ 12.6 counts: +40 (sample 5) is a spike, +6 (sample 12) is not.
    noise = np.array([0, 2, -1, 1, -2, 0, 1, -1, 2, -2, 0, 1, -1, 2, 0, -2, 1], dtype=float)
    x = 100 + noise
    x[5] += 40     # 140
    x[12] += 6     # 105
    got = spikes(x, window=7, threshold_mad=6, threshold_abs=None)
    assert_array_equal(np.flatnonzero(got), [5])


def test_a_brief_reopening_between_two_micro_closures_is_not_a_spike_with_a_context():
    # open (100) for 40 s, closed (250) 20 s, open again for 2 s, closed 20 s, open 40 s.
    # In the 11 s window the 2 open samples are outliers that return: a spike. The 121 s
    # context median is the open level (100): they are at home there, not a spike. A real
    # spike (+350 at sample 100) is far from both references and stays flagged.
    x = [100] * 40 + [250] * 20 + [100, 100] + [250] * 20 + [100] * 40
    x[100] = 450
    assert np.flatnonzero(spikes(x)).tolist() == [60, 61, 100]
    assert np.flatnonzero(spikes(x, context_window=121)).tolist() == [100]


def test_a_spike_inside_a_micro_closure_is_found_with_a_context():
    # a +350 glitch on the 10th sample of a 20 s micro-closure: far from the local median
    # (250) and from the context median (100)
    x = [100] * 40 + [250] * 20 + [100] * 40
    x[50] = 600
    assert np.flatnonzero(spikes(x, context_window=121)).tolist() == [50]


def test_nan_values_are_skipped_not_flagged():
    x = [100] * 5 + [np.nan, 450, np.nan] + [100] * 5
    want = [0] * 5 + [0, 1, 0] + [0] * 5
    assert_array_equal(spikes(x), mask(*want))


def test_spikes_of_tiny_series():
    assert_array_equal(spikes([]), np.zeros(0, dtype=bool))
    assert_array_equal(spikes([450.0]), mask(0))
    assert_array_equal(spikes([np.nan, np.nan, np.nan]), mask(0, 0, 0))


# ---------------------------------------------------------------- flat lines

def test_flat_line_needs_the_duration():
    x = [5, 5, 5, 5, 5, 7, 6, 8]     # 5 for 5 samples at 1 s: N·p = 5 s (t = 0…4 s)
    assert_array_equal(qc.flag_flat_lines(every_second(8), np.array(x, float), 0, pd.Timedelta("5s")),
                       mask(1, 1, 1, 1, 1, 0, 0, 0))
    assert_array_equal(qc.flag_flat_lines(every_second(8), np.array(x, float), 0, pd.Timedelta("6s")),
                       np.zeros(8, dtype=bool))


def test_a_stuck_stretch_of_n_samples_lasts_n_times_the_period():
    # exactly 1,800 equal samples at 1 Hz span 1,799 s but last 30 min (SaQC counts so)
    x = np.concatenate([[1.0, 2.0], np.full(1800, 7.0), [3.0, 4.0]])
    got = qc.flag_flat_lines(every_second(len(x)), x, 0, pd.Timedelta("30min"))
    assert got.sum() == 1800 and got[2:1802].all()
    x29 = np.concatenate([[1.0], np.full(1799, 7.0), [3.0]])      # 1,799 samples: 29 min 59 s
    assert not qc.flag_flat_lines(every_second(len(x29)), x29, 0, pd.Timedelta("30min")).any()


def test_flat_line_tolerance_is_max_minus_min():
    x = np.array([10, 10.5, 10, 10.5, 10, 13])   # spread 0.5 over 4 s
    assert_array_equal(qc.flag_flat_lines(every_second(6), x, 0.5, pd.Timedelta("4s")),
                       mask(1, 1, 1, 1, 1, 0))
    assert_array_equal(qc.flag_flat_lines(every_second(6), x, 0.4, pd.Timedelta("4s")),
                       np.zeros(6, dtype=bool))


def test_flat_line_first_sample_found_with_irregular_timestamps():
    # stretch 1…4 (value 5) spans 5 − 1 = 4 s ≥ 3.2 s; sample 1 must be flagged although
    # no sample lies exactly 3.2 s after it (a regression: it used to be missed)
    ts = at_seconds(0, 1, 1.5, 3, 5)
    x = np.array([9, 5, 5, 5, 5], dtype=float)
    assert_array_equal(qc.flag_flat_lines(ts, x, 0, pd.Timedelta("3.2s")), mask(0, 1, 1, 1, 1))


def test_flat_line_ignores_nan():
    x = np.array([5, np.nan, 5, 5, 5, 6])      # NaN neither breaks nor joins the stretch
    assert_array_equal(qc.flag_flat_lines(every_second(6), x, 0, pd.Timedelta("4s")),
                       mask(1, 0, 1, 1, 1, 0))


def test_flat_line_of_tiny_series():
    assert_array_equal(qc.flag_flat_lines(every_second(0), np.array([]), 0, pd.Timedelta("1s")),
                       np.zeros(0, dtype=bool))
    assert_array_equal(qc.flag_flat_lines(every_second(1), np.array([5.0]), 0, pd.Timedelta("1s")),
                       mask(0))


# ---------------------------------------------------------------- exclusions

def test_exclusion_window_includes_both_ends():
    ts = every_second(6)
    assert_array_equal(qc.flag_exclusions(ts, [(T0 + 2 * S, T0 + 4 * S)]), mask(0, 0, 1, 1, 1, 0))
    assert_array_equal(qc.flag_exclusions(ts, []), np.zeros(6, dtype=bool))


def test_exclusion_windows_match_device_and_full_sensor_name():
    params = {"exclusions": [
        {"device": "valve01", "sensors": "m1", "start": "2026-01-20T00:00:02Z",
         "end": "2026-01-20T00:00:04Z", "reason": "cleaning"},
        {"device": "*", "sensors": "outdoor_.*", "start": "2026-01-20", "end": "2026-01-20",
         "reason": "probe out of water all day"}]}
    win = (T0 + 2 * S, T0 + 4 * S)
    day = (T0, T0 + 86400 * S - 1000)      # a bare date as end: to the day's last µs
    assert qc.exclusion_windows(params, "valve01", "m1") == [win]
    assert qc.exclusion_windows(params, "valve01", "m11") == []    # full match: m1 is not m11
    assert qc.exclusion_windows(params, "valve02", "m1") == []
    assert qc.exclusion_windows(params, "valve02", "outdoor_temp") == [day]


# ---------------------------------------------------------------- the whole partition

RULES = {
    "rules": {
        "bio_signal": {"range": [0, 4000], "sentinels": [4095],
                       "spike": {"window": 11, "threshold_mad": None, "threshold_abs": 50, "max_length": 3},
                       "flat": {"tolerance": 0, "min_duration": "10s"}},
    },
    "sensors": {"m1": {"range": [0, 300], "spike": None}},
    "exclusions": [{"device": "valve01", "sensors": "m0", "start": "2026-01-20T00:00:14Z",
                    "end": "2026-01-20T00:00:16Z", "reason": "cleaning"}],
}


def tidy_series(sensor, values, domain="bio_signal", device="valve01", flag=0):
    ts = pd.to_datetime(every_second(len(values)), utc=True)
    return tidy.frame(ts=pd.Series(ts), device_id=device, domain=domain, sensor=sensor,
                      value=values, quality_flag=flag)


def test_clean_frame_flags_by_precedence_and_never_changes_values():
    m0 = [100.0] * 5 + [450, 100, 101, 100, 4095, 100, 102, 100, 99, 450, 4095, 100, 101, 100, np.nan]
    m0_want = [0] * 5 + [2, 0, 0, 0, 3, 0, 0, 0, 0, 6, 6, 6, 0, 0, 1]
    #        sample 5: +350 and back → spike (2); 9: sentinel 4095 → 3;
    #        14…16 (00:00:14–00:00:16, ends included): the exclusion window → 6, even the
    #        spike (14) and the sentinel (15): exclusion has the highest precedence; 19: NaN → 1
    m1 = [100.0, 101, 100, 101, 100, 250, 100, 101, 100, 101, 350, 100, 101, 100]
    m1_want = [0] * 10 + [3, 0, 0, 0]
    #        m1's override: range [0, 300] → 350 is out of range (3); its spike test is off,
    #        so the +150 excursion at sample 5 (a spike for the domain's rule) stays 0
    temp = [12.5, 12.5]      # domain "environment" has no rule: only NaN would be flagged
    df = pd.concat([tidy_series("m0", m0), tidy_series("m1", m1),
                    tidy_series("outdoor_temp", temp, domain="environment")], ignore_index=True)
    out, counts = qc.clean_frame(df, RULES, "valve01")
    assert_array_equal(out["quality_flag"].to_numpy(), np.array(m0_want + m1_want + [0, 0], dtype=np.uint8))
    assert_array_equal(out["value"].to_numpy(), df["value"].to_numpy())      # NaN stays NaN too
    assert out["ts"].equals(df["ts"]) and out["sensor"].astype(str).tolist() == df["sensor"].astype(str).tolist()
    assert counts["rows_in"] == counts["rows_out"] == 36 and counts["rejected"] == {}
    assert counts["flags"] == {"OK": 29, "MISSING": 1, "SPIKE": 1, "OUT_OF_RANGE": 2, "FLAT_LINE": 0,
                               "INTERPOLATED": 0, "EXCLUDED": 3, "TIME_ORDER": 0}
    # what each test matched before precedence: 4095 is both a sentinel and > 4000 (range
    # counts both 4095s and m1's 350); excluded samples are not tested for spikes (they
    # are not usable), so 14 counts as excluded only
    assert counts["tests"] == {"missing": 1, "range": 3, "sentinel": 2, "spike": 1, "flat": 0, "excluded": 3}
    assert counts["sensors_without_rules"] == ["outdoor_temp"]


def test_out_of_range_values_do_not_break_a_flat_line():
    # flagged values are left out of the flat-line test like NaN: 7 at t = 0…13 s except
    # the sentinel at 5 s is a 13 s stretch ≥ 10 s → flat (4); the sentinel keeps its 3
    x = [7.0] * 5 + [4095] + [7.0] * 8
    out, _ = qc.clean_frame(tidy_series("m2", x), RULES, "valve01")
    assert out["quality_flag"].tolist() == [4] * 5 + [3] + [4] * 8


def test_flat_line_in_a_partition_and_input_flags_kept():
    x = [7.0] * 12 + [8, 9]          # 7 for t = 0…11 s: 11 s ≥ 10 s → flat (4)
    df = tidy_series("m2", x, flag=[0] * 12 + [6, 0])   # sample 12 came excluded: kept
    out, counts = qc.clean_frame(df, RULES, "valve01")
    assert out["quality_flag"].tolist() == [4] * 12 + [6, 0]


def test_clean_frame_of_empty_single_and_all_flagged_partitions():
    out, counts = qc.clean_frame(tidy.empty(), RULES, "valve01")
    assert len(out) == 0 and counts["rows_in"] == 0 and counts["flags"]["OK"] == 0
    out, _ = qc.clean_frame(tidy_series("m0", [450.0]), RULES, "valve01")
    assert out["quality_flag"].tolist() == [0]                # one value: nothing to compare with
    out, _ = qc.clean_frame(tidy_series("m0", [4095.0] * 5), RULES, "valve01")
    assert out["quality_flag"].tolist() == [3] * 5             # all sentinels: no spike/flat on them
    out, _ = qc.clean_frame(tidy_series("m0", [np.nan] * 3), RULES, "valve01")
    assert out["quality_flag"].tolist() == [1] * 3


def test_sensor_override_merges_spike_keys_over_the_domain():
    params = {"rules": {"bio_signal": {"spike": {"window": "31s", "threshold_abs": 50}}},
              "sensors": {"m3": {"spike": {"threshold_abs": 80}}, "m4": {"spike": None}}}
    m3 = qc.resolve_rule(params, "bio_signal", "m3")
    assert m3["spike"] == {"window": "31s", "context_window": None, "threshold_mad": 6, "threshold_abs": 80,
                           "max_length": 3, "direction": "both"}
    assert m3["range"] is None and m3["sentinels"] == [] and m3["flat"] is None
    assert qc.resolve_rule(params, "bio_signal", "m4")["spike"] is None
    assert qc.resolve_rule(params, "environment", "outdoor_temp") is None


def test_clean_frame_is_idempotent():
    x = [100.0] * 7 + [450] + [100] * 7
    once, _ = qc.clean_frame(tidy_series("m0", x), RULES, "valve01")
    twice, _ = qc.clean_frame(once, RULES, "valve01")
    assert twice.equals(once)


# ---------------------------------------------------------------- config and step

BASE = {"exposure": "X", "input_stage": "20_split", "output_stage": "30_clean"}


def load(tmp_path, **params):
    path = tmp_path / "configs" / "X" / "30_clean.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**BASE, **params}))
    return load_step_config("30_clean.py", "configs/X/30_clean.json", tmp_path)


SRC = "configs/X/30_clean.json"


@pytest.mark.parametrize("params, message", [
    ({"rules": {"bio_signal": {"spike": {"window": "31 parsecs"}}}},
     f"{SRC}: $.rules.bio_signal.spike.window: '31 parsecs' is not allowed; allowed: an odd number of "
     "samples >= 3, or a positive duration with a unit such as '10s', '5min', '2h', '1D'"),
    ({"rules": {"bio_signal": {"spike": {"window": 4}}}},
     f"{SRC}: $.rules.bio_signal.spike.window: 4 is not allowed; allowed: an odd number of "
     "samples >= 3, or a positive duration with a unit such as '10s', '5min', '2h', '1D'"),
    ({"sensors": {"m2": {"spike": {"context_window": "5 minutes later"}}}},
     f"{SRC}: $.sensors.m2.spike.context_window: '5 minutes later' is not allowed; allowed: an odd number of "
     "samples >= 3, or a positive duration with a unit such as '10s', '5min', '2h', '1D'"),
    ({"rules": {"bio_signal": {"spike": {"threshold_mad": None}}}},
     f"{SRC}: $.rules.bio_signal.spike: threshold_mad and threshold_abs are both null; "
     "allowed: at least one threshold"),
    ({"rules": {"bio_signal": {"range": [10, 0]}}},
     f"{SRC}: $.rules.bio_signal.range: [10, 0] is not allowed; allowed: [min, max] with min <= max "
     "(null for an open side)"),
    ({"sensors": {"m5": {"flat": {"min_duration": "30"}}}},
     f"{SRC}: $.sensors.m5.flat.min_duration: '30' is not allowed; allowed: a positive duration "
     "with a unit such as '10s', '5min', '2h', '1D'"),
    ({"rules": {"bio_signal": {"spike": {"threshhold_mad": 6}}}},
     f"{SRC}: $.rules.bio_signal.spike.threshhold_mad: unknown key 'threshhold_mad'; allowed keys: "
     "context_window, direction, max_length, threshold_abs, threshold_mad, window"),
    ({"exclusions": [{"device": "valve01", "sensors": "m[0-3", "start": "2026-01-20", "end": "2026-01-21"}]},
     f"{SRC}: $.exclusions[0].sensors: 'm[0-3' is not a regular expression (unterminated character "
     "set at position 1); allowed: a Python regular expression such as 'm[0-3]'"),
    ({"exclusions": [{"device": "valve01", "start": "2026-01-21", "end": "2026-01-20T12:00:00Z"}]},
     f"{SRC}: $.exclusions[0]: start '2026-01-21' is after end '2026-01-20T12:00:00Z'; allowed: start <= end"),
    ({"exclusions": [{"device": "valve01", "start": "{NOW-2d}", "end": "2026-01-20"}]},
     f"{SRC}: $.exclusions[0].start: '{{NOW-2d}}' is not allowed; allowed: YYYY-MM-DDTHH:MM:SSZ or "
     "YYYY-MM-DD (UTC)"),
    ({"exclusions": [{"device": "valve01", "start": "2026-01-20", "end": "2026-02-30"}]},
     f"{SRC}: $.exclusions[0].end: '2026-02-30' is not allowed; allowed: YYYY-MM-DDTHH:MM:SSZ or "
     "YYYY-MM-DD (UTC)"),
])
def test_config_errors_are_one_exact_line(tmp_path, params, message):
    with pytest.raises(UserError) as exc:
        load(tmp_path, **params)
    assert str(exc.value) == message


def test_the_template_config_is_valid_and_the_step_runs_it(tmp_path):
    from pyjama.config import REPO

    text = (REPO / "configs" / "_template" / "30_clean.json").read_text().replace("{{EXPOSURE}}", "X")
    st = load(tmp_path, **{k: v for k, v in json.loads(text).items() if k not in BASE})
    # the template's direction is down (Hall counts: a lone drop toward open is a glitch)
    # +350 back at once: a glitch; −260: a glitch; +350 recovering slowly: an adduction, kept
    x = [300.0] * 20 + [650] + [300] * 20 + [40] + [300] * 20 + [650, 600, 550, 500, 450, 400] + [300] * 20
    tables, counts = get_step("30_clean.py").compute({"data": tidy_series("m4", x)}, st, "valve01", "2026-01-20")
    assert np.flatnonzero(tables["data"]["quality_flag"].to_numpy()).tolist() == [20, 41]
    assert counts["flags"]["SPIKE"] == 2


def test_a_level_shift_of_a_logger_sampling_once_a_minute():
    # one sample a minute (each minute's median is the sample itself): 2 h at 300, then +80
    # for 2 h; the shift is the first sample at the new level. Hourly samples (24 minutes
    # with data, fewer than two 30 min segments) can show no shift, however large the jump.
    t = every_second(4 * 3600)[::60]
    x = np.where(np.arange(len(t)) < 120, 300.0, 380.0) + np.tile([-1.0, 0.0, 1.0], 80)
    assert qc.detect_level_shifts(t, x, 40, "30min") == [(int(t[120]), pytest.approx(80.0))]
    hourly = every_second(24 * 3600)[::3600]
    assert qc.detect_level_shifts(hourly, np.where(np.arange(24) < 12, 300.0, 900.0), 40, "30min") == []


def test_a_level_shift_is_reported_with_time_and_size_and_a_closure_is_not():
    # 3 h at 300 counts (noise ±3), then +80 for 3 h: a magnet that moved
    t = every_second(6 * 3600)
    rng = np.random.default_rng(0)
    x = 300 + rng.integers(-3, 4, len(t)).astype(float)
    x[3 * 3600:] += 80
    (at, size), = qc.detect_level_shifts(t, x, 40, "30min")
    assert at == t[3 * 3600] and abs(size - 80) <= 2
    # a 40-min closure (+400) that reopens to the level before: not a shift
    y = 300 + rng.integers(-3, 4, len(t)).astype(float)
    y[7200:7200 + 2400] += 400
    assert qc.detect_level_shifts(t, y, 40, "30min") == []
    # through the step: the ledger lists it and a warning names device, sensor, time, size
    df = tidy_series("m0", x)
    _, counts = qc.clean_frame(df, {"rules": {"bio_signal": {"shift": {"min_size": 40}}}}, "valve01")
    assert counts["level_shifts"] == [{"sensor": "m0", "ts": "2026-01-20T03:00:00Z", "size": counts[
        "level_shifts"][0]["size"]}]
    assert counts["warnings"][0].startswith("valve01/m0: level shift of +8")


# ---------------------------------------------------------------- neighbouring days in the workflow

def _set_m0(path, line_index, value):
    """Rewrite m0 on one line of a generated raw file (key:value format)."""
    import re

    lines = path.read_text().splitlines()
    lines[line_index] = re.sub(r"m0:\d+", f"m0:{value}", lines[line_index])
    path.write_text("\n".join(lines) + "\n")


def _m0_flags(root, day):
    df = pd.read_parquet(root / f"data/T/30_clean/device_id=valve01/day={day}/part.parquet")
    return df[df["sensor"] == "m0"].sort_values("ts")["quality_flag"].tolist()


@pytest.mark.slow
def test_the_30_job_reads_the_neighbouring_days_and_a_new_day_reruns_only_the_day_before(tmp_path):
    """Raw files of 2026-01-20..22 at 0.05 Hz (m0 ≈ 350 counts open). On 2026-01-21 the
    first sample (00:00:00) and the last (23:59:40) read 53 / 55 counts: a drop toward open,
    the glitch side of the template ("down"), each with ONE neighbour inside its day."""
    from tests.test_status_agreement import agree
    from tests.wf import make_project, planned_jobs, snakemake

    make_project(tmp_path, days=3, steps=("10_parser", "20_split", "30_clean"), defects=False)
    raw = tmp_path / "data/T/00_raw"
    held = tmp_path / "T_valve01_2026-01-22.csv"
    (raw / held.name).rename(held)                   # day 3 arrives later
    _set_m0(raw / "T_valve01_2026-01-21.csv", 0, 53)
    _set_m0(raw / "T_valve01_2026-01-21.csv", -1, 55)
    snakemake(tmp_path)
    flags = _m0_flags(tmp_path, "2026-01-21")
    assert len(flags) == 4320
    assert flags[0] == 2       # judged with 2026-01-20's last minutes: a spike
    assert flags[-1] == 0      # no 2026-01-22 yet: one neighbour, cannot tell
    inner = [i for i, f in enumerate(flags) if f][1:]   # (the generator's own brief closures)
    first_day = (tmp_path / "data/T/30_clean/device_id=valve01/day=2026-01-20/part.parquet").read_bytes()

    held.rename(raw / held.name)                     # the next day arrives
    agree(tmp_path)                                  # drawer.py status == --dry-run, job for job
    assert planned_jobs(tmp_path) == {"s10_parser": 1, "s20_split": 1, "s30_clean": 2, "all": 1}
    snakemake(tmp_path)
    flags = _m0_flags(tmp_path, "2026-01-21")
    assert flags[0] == 2 and flags[-1] == 2                      # now both edges ...
    assert [i for i, f in enumerate(flags) if f][1:-1] == inner   # ... and nothing else changed
    # 2026-01-20 did not re-run (its neighbour 2026-01-21 did not change)
    assert (tmp_path / "data/T/30_clean/device_id=valve01/day=2026-01-20/part.parquet").read_bytes() == first_day
    assert planned_jobs(tmp_path) == {}              # a second run does nothing
    agree(tmp_path)


# ---------------------------------------------------------------- a slow logger's day: series tested together
#
# clean_frame tests the small series of one rule together (qc.Series: laid end to end,
# windows kept inside each); every series must get exactly the flags it gets alone.

H = 3600 * S


def hourly(sensor, values, domain="bio_signal", hours=None, start=T0):
    hours = np.arange(len(values)) if hours is None else np.asarray(hours)
    ts = pd.Series(pd.to_datetime(start + hours * H, utc=True))
    return tidy.frame(ts=ts, device_id="valve01", domain=domain, sensor=sensor, value=values, quality_flag=0)


def test_series_laid_end_to_end_keep_their_windows_inside():
    # two series of 3 and 2 samples at 0, 1, 2 s and 0, 1 s: a centred window of 3 s
    # (±1.5 s) or of 3 samples reaches the neighbouring samples, never the other series
    ts = at_seconds(0, 1, 2, 0, 1)
    both = qc.Series(ts, [3, 2])
    for window in (pd.Timedelta("3s"), 3):
        lo, hi = qc._centred_bounds(both, window)
        assert lo.tolist() == [0, 0, 1, 3, 3] and hi.tolist() == [2, 3, 3, 5, 5]
        # alone: the same bounds, the second's 3 rows earlier
        assert [b.tolist() for b in qc.centred_bounds(ts[:3], window)] == [[0, 0, 1], [2, 3, 3]]
        assert [b.tolist() for b in qc.centred_bounds(ts[3:], window)] == [[0, 0], [2, 2]]
    # the rows kept of each series; one left with fewer than min_length rows is dropped
    rows, kept = both.keep(mask(1, 0, 1, 1, 0), min_length=2)
    assert rows.tolist() == [0, 2] and kept.single and kept.ts.tolist() == [ts[0], ts[2]]
    rows, kept = both.keep(mask(1, 0, 1, 1, 1), min_length=2)
    assert rows.tolist() == [0, 2, 3, 4] and kept.lengths.tolist() == [2, 2]
    with pytest.raises(ValueError, match="one int64 axis"):      # then each is tested alone
        qc.Series(np.array([0, 2**61, 0, 2**61]), [2, 2]).key(0)


def test_median_steps_are_numpys_truncated():
    #   steps 10, 20, 1 s → 10 s; 3, 1 → 2; 3, 2 → 2.5 → 2 (int(np.median(...)) truncates)
    assert qc._median_step(at_seconds(0, 10, 30, 31)) == 10 * S
    assert qc._median_step(np.array([0, 3, 4])) == 2
    assert qc._median_step(np.array([0, 3, 5])) == 2
    assert qc._median_step(np.array([7])) == 0
    series = qc.Series(np.array([0, 10, 30, 31, 0, 3, 4, 0, 3, 5]), [4, 3, 3])
    assert qc._series_median_step(series).tolist() == [10, 2, 2]
    rng = np.random.default_rng(3)
    for n in (2, 3, 10, 64, 65, 500):           # sorted in Python up to 64 samples, np.median above
        for _ in range(20):
            ts = np.sort(rng.integers(0, 10**17, n))       # beyond 2**53: float rounding alike
            assert qc._median_step(ts) == int(np.median(np.diff(ts)))
    lengths = rng.integers(2, 40, 30)
    ts = np.concatenate([np.sort(rng.integers(0, 10**17, k)) for k in lengths])
    want = [int(np.median(np.diff(p))) for p in np.split(ts, np.cumsum(lengths)[:-1])]
    assert qc._series_median_step(qc.Series(ts, lengths)).tolist() == want


def test_noise_and_flat_lines_of_series_laid_end_to_end_stay_their_own():
    # noise: a's last difference (10 → 10) is a lone 0, counted; b starts with a repeat
    # (5, 5: 0, 0), a run of its own that must not make a's 0 part of a stuck stretch
    a, b = [0.0, 1, 3, 6, 10, 10], [5.0, 5, 7, 9, 11, 13]
    ts = T0 + np.r_[np.arange(6), np.arange(6)] * S
    got = qc._noise_scale(qc.Series(ts, [6, 6]), np.array(a + b), pd.Timedelta("3s"))
    #   a: median of 1 1 2 3 4 0 = 1.5; b: two repeats of six, fewer than 5 live: all, 2
    assert_allclose(got, qc.MAD_TO_SIGMA / np.sqrt(2) * np.r_[[1.5] * 6, [2.0] * 6])
    assert_array_equal(got[:6], qc.noise_scale(ts[:6], np.array(a), pd.Timedelta("3s")))
    assert_array_equal(got[6:], qc.noise_scale(ts[6:], np.array(b), pd.Timedelta("3s")))
    # flat lines: the float tolerance is each series' own (1e-9 × its largest |x|): c's
    # 5e-4 spread is not flat at tolerance 0 beside d's values of 1e6 (d's margin: 1e-3)
    c, d = [1.0, 1.0005, 1.0, 1.0005], [1e6, 1e6 + 1, 1e6, 1e6 + 1]
    ts = T0 + np.r_[np.arange(4), np.arange(4)] * S
    got = qc._flag_flat_lines(qc.Series(ts, [4, 4]), np.array(c + d), 0, pd.Timedelta("3s"))
    assert not got.any()
    assert qc.flag_flat_lines(ts[:4], np.array(c) * 1e-6, 0, pd.Timedelta("3s")).all()   # 5e-10 ≤ 1e-9


def test_the_neighbouring_days_rows_within_reach_take_part():
    # a flat line of 7 h (tolerance 0) on hourly samples: 6 h from first to last sample. The
    # reach into a neighbouring day is capped at 6 h, both ends included: m0's 0 h is flat
    # with the previous day's 100 from −6 h (−7 h reads 300), its 23 h with the next day's
    # 200 up to 29 h; m1's 23 h has the next day's 201 for 5 h only: not flat
    rules = {"rules": {"bio_signal": {"flat": {"tolerance": 0, "min_duration": "7h"}}}}
    x = 100 + np.arange(24.0) * 3
    x[0], x[23] = 100, 200
    day = tidy.concat([hourly("m0", x), hourly("m1", x + 1)])
    prev = tidy.concat([hourly("m0", [300.0] + [100] * 6, hours=np.arange(-7, 0)),
                        hourly("m1", [101.0] * 6, hours=np.arange(-6, 0))])
    nxt = tidy.concat([hourly("m0", [200.0] * 6 + [50], hours=np.arange(24, 31)),
                       hourly("m1", [201.0] * 5, hours=np.arange(24, 29))])
    out, counts = qc.clean_frame(day, rules, "valve01", previous=prev, next=nxt)
    assert out["quality_flag"].tolist() == [4] + [0] * 22 + [4] + [4] + [0] * 23
    assert counts["tests"]["flat"] == 3          # the neighbouring days' rows are not counted


def random_series(rng, dense: bool):
    """(ts, values) of one series: hourly / minutely / 10 s with jitter (sparse, 1..80
    samples) or 1 Hz (dense, a few thousand); gaps, repeated stamps, NaN, flat runs, spikes."""
    n = int(rng.integers(2000, 5000)) if dense else int(rng.integers(1, 80))
    period = 1 if dense else int(rng.choice([10, 60, 3600]))
    ts = T0 + (np.arange(n) * period * S + rng.integers(0, period * S // 10 + 1, n))
    ts = np.sort(ts)
    if n > 4 and rng.random() < 0.3:
        dup = np.flatnonzero(rng.random(n - 1) < 0.05) + 1
        ts[dup] = ts[dup - 1]                                  # repeated stamps
    if n > 4 and rng.random() < 0.3:
        keep = np.ones(n, dtype=bool)
        a = int(rng.integers(0, n - 2))
        keep[a:a + int(rng.integers(1, n // 2 + 1))] = False   # a gap
        ts = ts[keep]
        n = len(ts)
    x = np.round(400 + rng.normal(0, rng.choice([0.5, 5, 25]), n))
    for _ in range(int(rng.integers(0, 4))):
        a = int(rng.integers(0, n))
        x[a:a + int(rng.integers(2, max(3, n // 3)))] = x[a]           # flat run
    for _ in range(int(rng.integers(0, 5))):
        a = int(rng.integers(0, n))
        x[a:a + int(rng.integers(1, 5))] += rng.choice([-1, 1]) * rng.choice([40, 300])   # spike
    x[rng.random(n) < 0.05] = np.nan
    return ts.astype(np.int64), x


SPIKE_ARGS = [(pd.Timedelta("31s"), 6.0, 50, 3, pd.Timedelta("5min"), "down"),
              (pd.Timedelta("3h"), None, 30, 2, None, "both"),
              (11, 6.0, None, 1, 31, "up"),
              (3, 3.5, 1.0, 4, pd.Timedelta("6h"), "down"),
              (pd.Timedelta("5min"), 6.0, 1.0, 3, None, "both")]
FLAT_ARGS = [(0, pd.Timedelta("30min")), (1.5, pd.Timedelta("3h")), (0, pd.Timedelta("1s")),
             (0.5, pd.Timedelta("6h"))]


@pytest.mark.parametrize("seed", range(6))
def test_series_tested_together_get_the_flags_of_each_alone(seed):
    rng = np.random.default_rng(seed)
    series = [random_series(rng, dense=seed >= 4 and k < 2) for k in range(int(rng.integers(2, 14)))]
    lengths = [len(t) for t, _ in series]
    ts = np.concatenate([t for t, _ in series])
    x = np.concatenate([v for _, v in series])
    together = qc.Series(ts, lengths)
    for args in SPIKE_ARGS:
        want = np.concatenate([qc.flag_spikes(t, v, *args) for t, v in series])
        assert_array_equal(qc._flag_spikes(together, x, *args), want)
    for args in FLAT_ARGS:
        want = np.concatenate([qc.flag_flat_lines(t, v, *args) for t, v in series])
        assert_array_equal(qc._flag_flat_lines(together, x, *args), want)
    ok = ~np.isnan(x)                   # the noise scale of series of 2 samples or more, NaN left out
    rows, usable = together.keep(ok, min_length=2)
    alone = [qc.noise_scale(t[~np.isnan(v)], v[~np.isnan(v)], pd.Timedelta("31s"))
             for t, v in series if np.count_nonzero(~np.isnan(v)) >= 2]
    assert_array_equal(qc._noise_scale(usable, x[rows], pd.Timedelta("31s")), np.concatenate(alone))


def random_day(rng, n_series: int, dense: bool, with_inf: bool):
    """A day of ``n_series`` bio_signal series and one environment series, with the
    neighbouring days' last / first 6 h: tidy frames (day, previous, next)."""
    def frame(lo_h, hi_h, names):
        parts = []
        for dom, s in names:
            t, v = random_series(rng, dense and s == "m0")
            t = T0 + lo_h * H + (t - T0) % ((hi_h - lo_h) * H)
            order = np.argsort(t, kind="stable")
            t, v = t[order], v[order]
            if dom == "environment":
                v = np.round(12 + (v - 400) / 50, 2)
            v[rng.random(len(v)) < 0.02] = 4095 if dom == "bio_signal" else 85
            if with_inf:
                v[rng.random(len(v)) < 0.02] = np.inf
            f = np.where(rng.random(len(v)) < 0.03, 7, 0).astype(np.uint8)
            parts.append(tidy.frame(ts=pd.Series(pd.to_datetime(t // 1000 * 1000, utc=True)), device_id="valve01",
                                    domain=dom, sensor=s, value=v, quality_flag=f))
        return tidy.concat(parts)

    names = [("bio_signal", f"m{k}") for k in range(n_series)] + [("environment", "outdoor_temp")]
    return (frame(0, 24, names), frame(-6, 0, names[:-1]) if rng.random() < 0.8 else None,
            frame(24, 30, names[1:]) if rng.random() < 0.8 else None)


DAY_RULES = {"rules": {
    "bio_signal": {"range": [0, 4000], "sentinels": [4095],
                   "spike": {"window": "31s", "context_window": "5min", "threshold_mad": 6, "threshold_abs": 50,
                             "max_length": 3, "direction": "down"},
                   "flat": {"tolerance": 0, "min_duration": "30min"}, "shift": {"min_size": 40, "min_segment": "30min"}},
    "environment": {"range": [-5, 40], "sentinels": [-127, 85],
                    "spike": {"window": "5min", "threshold_mad": 6, "threshold_abs": 1.0},
                    "flat": {"tolerance": 0, "min_duration": "6h"}}},
    "sensors": {"m1": {"spike": {"window": "3h", "context_window": None, "max_length": 1}},
                "m2": {"range": None}},          # m2: inf stays usable (a series with inf goes alone)
    "exclusions": [{"device": "valve01", "sensors": "m[3-4]", "start": "2026-01-20T05:00:00Z",
                    "end": "2026-01-20T09:30:00Z"}]}


@pytest.mark.parametrize("seed", range(8))
def test_clean_frame_flags_a_day_of_series_together_as_each_alone(seed, monkeypatch):
    rng = np.random.default_rng(100 + seed)
    day, prev, nxt = random_day(rng, int(rng.integers(4, 13)), dense=seed >= 6, with_inf=seed % 2 == 1)
    calls = []
    alone_spikes = qc.flag_spikes
    monkeypatch.setattr(qc, "flag_spikes", lambda *a, **k: calls.append(1) or alone_spikes(*a, **k))
    got, got_counts = qc.clean_frame(day, DAY_RULES, "valve01", previous=prev, next=nxt)
    together = len(calls)
    monkeypatch.setattr(qc, "BATCH_SERIES_ROWS", 0)          # every series alone
    want, want_counts = qc.clean_frame(day, DAY_RULES, "valve01", previous=prev, next=nxt)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got_counts == want_counts
    assert together < len(calls) - together                  # m0, m3, ... were tested together
    assert got_counts["tests"]["spike"] + got_counts["tests"]["flat"] > 0


HOURLY_RULES = {"rules": {"bio_signal": {
    "range": [0, 4000], "sentinels": [4095],
    "spike": {"window": "3h", "threshold_mad": None, "threshold_abs": 50, "max_length": 1},
    "flat": {"tolerance": 0, "min_duration": "4h"}}}}


def test_an_hourly_day_of_two_series_is_tested_together(monkeypatch):
    #            hour: 0    1    2    3    4    5    6     7    8    9
    m0 = [100.0, 101, 100, 450, 100, 101, 100, 102, 101, 100]
    m0_want = [0, 0, 0, 2, 0, 0, 0, 0, 0, 0]
    #   hour 3: +350 above both neighbours (100, 100) > 50 → spike
    m1 = [200.0, 200, 200, 200, 210, 205, 4095, 206, 205, 204]
    m1_want = [4, 4, 4, 4, 0, 0, 3, 0, 0, 0]
    #   hours 0–3: 4 equal samples, 3 h + the 1 h period ≥ 4 h → flat; hour 6: sentinel (3);
    #   hour 4 (210) is 5 above max(200, 205): no spike
    day = tidy.concat([hourly("m0", m0), hourly("m1", m1), hourly("outdoor_temp", [9.5] * 3, "environment")])

    def alone(*args, **kwargs):
        raise AssertionError("m0 and m1 have one rule: tested together, not alone")

    monkeypatch.setattr(qc, "flag_spikes", alone)
    monkeypatch.setattr(qc, "flag_flat_lines", alone)
    out, counts = qc.clean_frame(day, HOURLY_RULES, "valve01")
    assert out["quality_flag"].tolist() == m0_want + m1_want + [0, 0, 0]
    assert counts["tests"] == {"missing": 0, "range": 1, "sentinel": 1, "spike": 1, "flat": 4, "excluded": 0}
    assert counts["sensors_without_rules"] == ["outdoor_temp"]


def test_a_series_with_inf_is_tested_alone(monkeypatch):
    # without a range, inf stays usable; pandas' rolling median skips it, bottleneck's does
    # not, and which one a batch takes depends on the batch: m0 goes alone, m1 and m2 together
    rules = {"rules": {"bio_signal": {"spike": HOURLY_RULES["rules"]["bio_signal"]["spike"]}}}
    m0 = [100.0, 101, np.inf, 100, 450, 100, 101]
    day = tidy.concat([hourly("m0", m0), hourly("m1", [100.0, 101, 100, 450, 100, 101, 100]),
                       hourly("m2", [100.0, 101, 100, 102, 100, 101, 100])])
    seen = []
    alone_spikes = qc.flag_spikes
    monkeypatch.setattr(qc, "flag_spikes", lambda ts, x, *a: seen.append(x.tolist()) or alone_spikes(ts, x, *a))
    out, _ = qc.clean_frame(day, rules, "valve01")
    assert seen == [m0]
    #   m0 hour 2: inf is above both neighbours (101, 100) by more than 50; hour 3: 100 is
    #   below both (inf, 450) by more than 50; hour 4: 450 is above both (100, 100): spikes
    assert out["quality_flag"].tolist() == [0, 0, 2, 2, 2, 0, 0] + [0, 0, 0, 2, 0, 0, 0] + [0] * 7


def test_a_day_with_fewer_samples_than_two_segments_has_no_level_shift():
    # one sample a minute, +100 from minute 30 on; min_segment 30 min: 60 minutes are needed
    x = np.r_[np.full(30, 300.0), np.full(30, 400.0)]
    ts = T0 + np.arange(60) * 60 * S
    assert qc.detect_level_shifts(ts, x, 40, "30min") == [(int(ts[30]), 100.0)]
    assert qc.detect_level_shifts(ts[1:], x[1:], 40, "30min") == []       # 59 samples


def test_the_config_memo_follows_a_changed_config_and_raises_each_day():
    day = hourly("m0", [100.0, 4500, 100])
    params = {"rules": {"bio_signal": {"range": [0, 4000]}}}
    assert qc.clean_frame(day, params, "valve01")[0]["quality_flag"].tolist() == [0, 3, 0]
    params["rules"]["bio_signal"]["range"] = [0, 5000]       # the same dict, changed
    assert qc.clean_frame(day, params, "valve01")[0]["quality_flag"].tolist() == [0, 0, 0]
    params["sensors"] = {"m0": {"spike": {"threshold_mad": None, "threshold_abs": None}}}
    for _ in range(2):                                       # an error is not remembered as a rule
        with pytest.raises(UserError, match=r"\$\.sensors\.m0\.spike: threshold_mad and threshold_abs"):
            qc.clean_frame(day, params, "valve01")


def test_flag_lookups_equal_np_isin():
    from pyjama import flags as fl

    codes = np.arange(256, dtype=np.uint8)
    assert_array_equal(qc._unusable_codes()[codes], np.isin(codes, sorted(int(f) for f in fl.UNUSABLE)))
    x = np.array([0.0, -0.0, 4095, 4095.5, np.nan, np.inf, -np.inf, -4096, 1e300, 65535])
    for sentinels in ([0], [-0.0, 4095], [np.nan, np.inf], [-4096, 1023, 4095, 65535],
                      list(range(-5, 20)) + [65535]):                      # > 8: np.isin itself
        assert_array_equal(qc.flag_sentinels(x, sentinels), np.isin(x, np.asarray(sentinels, dtype=float)))


def test_an_edge_from_arrow_equals_the_edge_of_its_tidy_frame():
    import pyarrow as pa

    from pyjama.steps.clean import edge_of_arrow

    rng = np.random.default_rng(5)
    for trial in range(30):
        n = int(rng.integers(1, 200))
        table = pa.table({
            "ts": pa.array(np.sort(T0 // 1000 + rng.integers(0, 6 * 3600 * 10**6, n))[rng.permutation(n)],
                           tidy.TS_TYPE),
            # dictionaries in no order, with unused names, a sensor name in two domains
            "domain": pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 2, n), pa.int32()),
                                                     pa.array(["environment", "bio_signal"])),
            "sensor": pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 4, n), pa.int32()),
                                                     pa.array(["m1", "unused", "m0", "outdoor_temp"])),
            "value": pa.array(rng.normal(size=n)),
            "quality_flag": pa.array(rng.integers(0, 8, n).astype(np.uint8))}, schema=tidy.FILE_SCHEMA)
        got = edge_of_arrow(table)
        want = qc.Edge.of_frame(tidy.from_arrow(table, "valve01"))
        assert_array_equal(got.ts_ns, want.ts_ns)
        assert_array_equal(got.values, want.values)
        assert_array_equal(got.flags, want.flags)
        assert list(got.rows) == list(want.rows)
        for s in want.rows:
            assert_array_equal(got.rows[s], want.rows[s])
    assert edge_of_arrow(pa.concat_tables([table, table])) is None       # two chunks: read as a frame
    assert len(edge_of_arrow(table.slice(0, 0))) == 0


def test_a_days_rows_cut_from_the_whole_month_equal_read_tidy(tmp_path):
    from pyjama import io
    from pyjama.steps import clean

    days = [T0 + k * 24 * H for k in range(3)]
    month = tidy.concat([hourly(s, np.arange(24.0) + k, start=d) for k, d in enumerate(days) for s in ("m1", "m0")])
    month["quality_flag"] = (np.arange(len(month)) % 8).astype(np.uint8)
    path = tmp_path / "device_id=valve01" / "month=2026-01" / "part.parquet"
    path.parent.mkdir(parents=True)
    io.write_tidy(path, month, {})
    for day in ("2026-01-20", "2026-01-21", "2026-01-22", "2026-01-25"):     # the last: no rows
        got, want = clean.read_day_rows(path, "valve01", day), io.read_tidy(path, "valve01", day)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        for c in ("device_id", "domain", "sensor"):
            assert got[c].cat.categories.tolist() == want[c].cat.categories.tolist()
            assert got[c].cat.categories.dtype == want[c].cat.categories.dtype
    # the neighbouring days' edges cut from the same arrays equal the edges of the rows read
    from pyjama.timewindow import day_bounds

    for day in ("2026-01-20", "2026-01-21", "2026-01-22"):
        start, end = day_bounds(day)
        for side, lo, hi in (("previous", start - pd.Timedelta("6h"), start), ("next", end, end + pd.Timedelta("6h"))):
            got = clean.edge_array_reader(side, "6h")(path, "valve01", day)
            want = qc.Edge.of_frame(tidy.from_arrow(io.read_day(path, day, lo, hi), "valve01"))
            assert len(got) == len(want) and (len(want) == 6 * 2 or day != "2026-01-21")
            for a, b in ((got.ts_ns, want.ts_ns), (got.values, want.values), (got.flags, want.flags)):
                assert_array_equal(a, b)
            assert list(got.rows) == list(want.rows)
            for s in want.rows:
                assert_array_equal(got.rows[s], want.rows[s])
    assert clean.read_day_rows(path, "valve01", "2026-01-21")["value"].tolist()[:2] == [1.0, 2.0]
    io.write_tidy(path, month.assign(value=month["value"] + 100), {})       # the file rewritten: read again
    assert clean.read_day_rows(path, "valve01", "2026-01-21")["value"].tolist()[:2] == [101.0, 102.0]


def test_a_flag_code_outside_the_enum_comes_out_ok():
    # flags.combine ranks a code it does not know below OK: the first test applied (NaN →
    # 1, to every row) has always turned it into 0, rule or no rule
    df = tidy.concat([hourly("m0", [100.0, 101, 100]), hourly("battery", [3.7, 3.7], "power")])
    df["quality_flag"] = np.array([9, 0, 200, 9, 5], dtype=np.uint8)
    out, counts = qc.clean_frame(df, HOURLY_RULES, "valve01")
    assert out["quality_flag"].tolist() == [0, 0, 0, 0, 5]


def test_sensor_groups_are_each_series_rows_in_time_order():
    # tidy.sensor_groups (and tidy.series_rows under it, on the codes): the series in
    # (domain, sensor) category order, each its rows in time order (equal times: file
    # order); a sensor name in two domains is two series
    rng = np.random.default_rng(9)
    for trial in range(20):
        n = int(rng.integers(1, 300))
        df = tidy.frame(ts=pd.Series(pd.to_datetime(T0 + rng.integers(0, 50, n) * S, utc=True)), device_id="valve01",
                        domain=rng.choice(["bio_signal", "environment"], n), sensor=rng.choice(["m0", "m1", "m10"], n),
                        value=rng.normal(size=n))
        got = tidy.sensor_groups(df)
        ts = df["ts"].to_numpy()
        want = []
        for d in df["domain"].cat.categories:
            for s_ in df["sensor"].cat.categories:
                rows = np.flatnonzero((df["domain"] == d).to_numpy() & (df["sensor"] == s_).to_numpy())
                if len(rows):
                    want.append((d, s_, rows[np.argsort(ts[rows], kind="stable")]))
        assert [(d, s_) for d, s_, _ in got] == [(d, s_) for d, s_, _ in want]
        for (_, _, a), (_, _, b) in zip(got, want):
            assert_array_equal(a, b)


def test_series_rows_of_rows_already_in_blocks_equal_the_sort():
    # tidy._block_order: rows in runs of one key each, times in order within a run (a stage
    # from 20 on) → the lexsort's positions without sorting; anything else → None (sort)
    from pyjama.tidy import _block_order

    rng = np.random.default_rng(14)
    taken = 0
    for trial in range(300):
        k = int(rng.integers(1, 6))
        keys = rng.permutation(k * 3)[:k]               # the runs in any key order
        runs = []
        for key in keys:
            n = int(rng.integers(1, 40))
            runs.append((np.full(n, key), np.sort(rng.integers(0, 20, n))))   # equal times too
        key = np.concatenate([r[0] for r in runs]).astype(np.int64)
        ts = np.concatenate([r[1] for r in runs]).astype(np.int64)
        if trial % 3 == 1 and len(ts) > 2:            # a time going back inside a run
            i = int(rng.integers(1, len(ts)))
            ts[i] = ts[i - 1] - 1 if key[i] == key[i - 1] else ts[i]
        if trial % 3 == 2 and k > 1:                  # a key back in a second run
            key = np.concatenate([key, key[:1]])
            ts = np.concatenate([ts, [0]])
        want = np.lexsort((ts, key))
        got = _block_order(ts, key)
        if got is not None:
            taken += 1
            assert_array_equal(got, want)
        else:
            unsorted = any(key[i] == key[i - 1] and ts[i] < ts[i - 1] for i in range(1, len(ts)))
            starts = [0] + [i for i in range(1, len(key)) if key[i] != key[i - 1]]
            assert unsorted or len(set(key[starts])) < len(starts)
        names = [f"s{i}" for i in range(16)]
        a = tidy.series_rows(ts, np.zeros_like(key), key, ["d"], names)
        b = [(d, s_, i) for d, s_, i in a]
        order = np.lexsort((ts, key))
        cuts = np.flatnonzero(np.diff(key[order])) + 1
        assert [(s_, list(i)) for _, s_, i in b] == [(names[key[i[0]]], list(i)) for i in np.split(order, cuts)]
    assert taken > 80          # the block path is taken (118 of 300 here)
