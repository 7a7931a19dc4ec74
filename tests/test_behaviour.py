"""Step 60 behaviour: state with hysteresis, closures, micro-closures, velocity, daily and
device summaries, synchronised closures — on tiny hand-made series of normalised opening
(1 = open, 0 = closed). Default config: closed <= 0.1, open >= 0.2, min state 5 s, 1 s grid,
reference window 30 s, micro-closure drop >= 0.1 for <= 10 s, velocity window 4 s,
active range >= 0.1, sync = >= 50 % of active animals (and >= 2) within 60 s.
"""
import copy
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from pyjama import io, tidy
from pyjama.behaviour import (apply_hysteresis, classify_opening, compute_behaviour,
                              compute_velocity, enforce_min_duration)
from pyjama.pipeline import load_step_config
from pyjama.errors import UserError

DAY = "2026-01-20"
NOON = "2026-01-20T12:00:00Z"
N = np.nan
# tiny series: the usable-time floor of 60_daily status (default 1 h) is off here, and
# micro-closures keep the pre-issue-10 rule (single samples, no noise floor) unless a test says
BASE = {"exposure": "T", "input_stage": "50_normalised", "output_stage": "60_behaviour",
        "active": {"min_range": 0.1, "min_usable": "0s"},
        "micro_closure": {"min_drop": 0.1, "max_duration": "10s", "min_duration": "0s", "min_samples": 1,
                          "noise_factor": 0}}


def config(tmp_path, **over):
    """A validated config (defaults + ``over``, nested dicts merged), loaded like the CLI does."""
    raw = copy.deepcopy(BASE)
    for k, v in over.items():
        raw[k] = v
    (tmp_path / "c.json").write_text(json.dumps(raw))
    return load_step_config("60_behaviour.py", "c.json", tmp_path)


def series(values, start=NOON, sensor="m0__norm", flags=None, period=1, domain="bio_signal"):
    """One sensor on a regular grid; flag 1 (missing) where the value is NaN unless given."""
    values = np.asarray(values, dtype=float)
    ts = pd.date_range(start, periods=len(values), freq=f"{period}s")
    if flags is None:
        flags = np.where(np.isnan(values), 1, 0)
    return tidy.frame(ts=ts, device_id="d", domain=domain, sensor=sensor, value=values,
                      quality_flag=flags)


def run(tmp_path, df, **over):
    return compute_behaviour(df, DAY, config(tmp_path, **over).params)


def derived(res, name):
    d = res.data[res.data["sensor"] == name]
    return d["value"].to_numpy(), d["quality_flag"].to_numpy()


# ---------------------------------------------------------------- the state rules

def test_hysteresis_band_keeps_the_previous_state_and_a_gap_resets_it():
    x = np.array([[0.5, 0.15, 0.05, 0.15, 0.15, 0.25, N, 0.15, 0.05]])
    code = classify_opening(x, 0.1, 0.2)
    #                    open band closed band band open gap band closed
    assert_array_equal(code, [[1, -2, 0, -2, -2, 1, -1, -2, 0]])
    state = apply_hysteresis(code)
    # band samples inherit the last decisive state; after the gap the band is undecided (-1)
    assert_array_equal(state, [[1, 1, 0, 0, 0, 1, -1, -1, 0]])


def test_day_starts_undecided_in_the_band():
    assert_array_equal(apply_hysteresis(classify_opening(np.array([[0.15, 0.15, 0.3]]), 0.1, 0.2)),
                       [[-1, -1, 1]])          # nothing decisive yet → unknown, not open


def test_min_duration_absorbs_short_runs_into_the_surrounding_state():
    s = np.array([[1] * 6 + [0] * 2 + [1] * 6 + [0] * 6]).astype(np.int8)
    # the 2 s closed run is noise (< 5 s): it becomes open; the 6 s closed run stays
    assert_array_equal(enforce_min_duration(s, 5, 1.0), [[1] * 14 + [0] * 6])
    # a short run right after the day start takes the state of the next long run
    s = np.array([[0, 0, 1, 1, 1, 1, 1]], dtype=np.int8)
    assert_array_equal(enforce_min_duration(s, 5, 1.0), [[1] * 7])
    # unknown samples are never filled, and a short run between two gaps is kept as is
    s = np.array([[1] * 6 + [-1] + [0, 0] + [-1]], dtype=np.int8)
    assert_array_equal(enforce_min_duration(s, 5, 1.0), s)


def test_noise_crossing_a_single_threshold_makes_no_event(tmp_path):
    # open at 0.3, noise dips to 0.15-0.18: below open_above (0.2) but never <= closed_below
    # (0.1): the hysteresis band keeps the animal open
    res = run(tmp_path, series([0.3, 0.15, 0.3, 0.18, 0.3, 0.15, 0.16, 0.3, 0.3, 0.3]))
    st, _ = derived(res, "m0__norm__state")
    assert_array_equal(st, [1] * 10)
    assert len(res.events[res.events["kind"] == "closure"]) == 0
    # a dip below closed_below for 2 s (< min_duration 5 s) is no closure either
    res = run(tmp_path, series([0.3] * 6 + [0.05, 0.05] + [0.3] * 6))
    st, _ = derived(res, "m0__norm__state")
    assert_array_equal(st, [1] * 14)
    assert res.counts["events"]["closure"] == 0


def test_closure_with_hysteresis(tmp_path):
    x = [0.8] * 10 + [0.15] + [0.05] * 8 + [0.15] + [0.8] * 10
    #    open        band: still open   closed    band: still closed   open
    res = run(tmp_path, series(x))
    st, fl = derived(res, "m0__norm__state")
    assert_array_equal(st, [1] * 11 + [0] * 9 + [1] * 10)
    assert_array_equal(fl, [0] * 30)
    ev = res.events
    assert len(ev) == 1
    e = ev.iloc[0]
    assert (e["kind"], e["sensor"]) == ("closure", "m0__norm")
    assert e["start"] == pd.Timestamp("2026-01-20T12:00:11Z")   # first closed sample (0.05)
    assert e["end"] == pd.Timestamp("2026-01-20T12:00:20Z")     # exclusive: back open at :20
    assert_allclose([e["duration_s"], e["depth"]], [9.0, 0.75])  # 9 samples; 0.8 - 0.05
    assert not e["cut_start"] and not e["cut_end"]
    d = res.daily.iloc[0]
    assert (d["closures"], d["closure_mean_duration_s"], d["micro_closures"]) == (1, 9.0, 0)


def test_closure_cut_by_a_gap_and_by_the_day_edge(tmp_path):
    # day starts closed (00:00:00), 6 s closed, then a missing sample, 6 s closed, open
    x = [0.05] * 6 + [N] + [0.05] * 6 + [0.8] * 6
    res = run(tmp_path, series(x, start="2026-01-20T00:00:00Z"))
    st, fl = derived(res, "m0__norm__state")
    assert_array_equal(st, [0] * 6 + [N] + [0] * 6 + [1] * 6)
    assert_array_equal(fl, [0] * 6 + [1] + [0] * 12)            # unknown state → NaN, flag 1
    ev = res.events[["start", "duration_s", "cut_start", "cut_end"]]
    # the gap cuts the closure in two, both marked; the first also starts at the day edge
    assert ev.to_dict("list") == {
        "start": [pd.Timestamp("2026-01-20T00:00:00Z"), pd.Timestamp("2026-01-20T00:00:07Z")],
        "duration_s": [6.0, 6.0], "cut_start": [True, True], "cut_end": [True, False]}


def test_micro_closure(tmp_path):
    x = ([0.8] * 10 + [0.65] * 3 + [0.8] * 10     # drop 0.15 for 3 s → micro-closure
         + [0.75] * 3 + [0.8] * 10                # drop 0.05 < 0.1 → nothing
         + [0.6] * 12 + [0.8] * 10)               # drop 0.2 but 12 s > 10 s → nothing
    res = run(tmp_path, series(x))
    ev = res.events
    assert list(ev["kind"]) == ["micro_closure"]
    e = ev.iloc[0]
    assert e["start"] == pd.Timestamp("2026-01-20T12:00:10Z")
    assert_allclose([e["duration_s"], e["depth"]], [3.0, 0.15])
    assert res.daily.iloc[0]["micro_closures"] == 1


def test_a_short_full_closure_counts_as_micro_closure(tmp_path):
    # closed for 3 s < min_duration 5 s: no state change, but a 0.75 drop for 3 s
    res = run(tmp_path, series([0.8] * 10 + [0.05] * 3 + [0.8] * 10))
    assert list(res.events["kind"]) == ["micro_closure"]
    assert_allclose(res.events["depth"], [0.75])


def test_velocity_is_the_slope_over_the_window(tmp_path):
    # ramp 0.0 → 1.0 by 0.1 per s; W = 4 s: v(t) = (x(t+2) - x(t-2)) / 4 = 0.1 /s;
    # undefined within 2 s of the series' ends (neighbours missing) and of the NaN at t=6
    x = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, N, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]
    res = run(tmp_path, series(x))
    v, fl = derived(res, "m0__norm__velocity")
    assert_allclose(v, [N, N, 0.1, 0.1, N, N, N, N, N, 0.1, 0.1, 0.1, N, N], atol=1e-12)
    assert_array_equal(fl, np.where(np.isnan(v), 1, 0))
    assert_allclose(compute_velocity(np.array([[0.0, 0.5, 1.0, 0.5, 0.0]]), 2, 1.0),
                    [[N, 0.5, 0.0, -0.5, N]])                  # closing is negative
    d = res.daily.iloc[0]
    assert_allclose([d["velocity_abs_mean"], d["velocity_abs_p99"]], [0.1, 0.1])


def test_velocity_across_midnight_reads_the_neighbouring_days_edges(tmp_path):
    # a ramp of +0.1 per s through midnight, W = 4 s: v = 0.1 /s at 00:00:00 and 00:00:01 when
    # 2026-01-19's last two samples are given, NaN without them; the day's last samples
    # (23:59:58, 23:59:59) likewise need 2026-01-21's first two
    day = series([0.2, 0.3, 0.4, 0.5], start="2026-01-20T00:00:00Z")
    late = series([0.5, 0.6, 0.7, 0.8], start="2026-01-20T23:59:56Z")
    prev = series([0.0, 0.1], start="2026-01-19T23:59:58Z")
    nxt = series([0.9, 1.0], start="2026-01-21T00:00:00Z")
    p = config(tmp_path).params
    alone = compute_behaviour(tidy.concat([day, late]), DAY, p)
    both = compute_behaviour(tidy.concat([day, late]), DAY, p, previous=prev, next=nxt)
    v0, _ = derived(alone, "m0__norm__velocity")
    v, fl = derived(both, "m0__norm__velocity")
    #           00:00:00 :01  :02  :03   23:59:56 :57  :58  :59
    # (00:00:02 and 23:59:57 need 00:00:04 / 23:59:55, which this tiny day lacks)
    assert_allclose(v0, [N] * 8)
    assert_allclose(v, [0.1, 0.1, N, N, N, N, 0.1, 0.1], atol=1e-12)
    assert_array_equal(fl, [0, 0, 1, 1, 1, 1, 0, 0])
    # only the velocity reads the neighbours: the rest of the day is the same
    assert both.events.equals(alone.events)
    assert_array_equal(derived(both, "m0__norm__state")[0], derived(alone, "m0__norm__state")[0])
    # a neighbour's interpolated sample inside the window makes flag 5
    prev5 = series([0.0, 0.1], start="2026-01-19T23:59:58Z", flags=[5, 0])
    _, fl5 = derived(compute_behaviour(tidy.concat([day, late]), DAY, p, previous=prev5), "m0__norm__velocity")
    assert fl5[:2].tolist() == [5, 0]      # 00:00:00's window holds 23:59:58 (filled); 00:00:01's does not


def test_velocity_rests_on_interpolated_samples_flag_5(tmp_path):
    x = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    flags = [0, 0, 0, 0, 0, 0, 0, 5, 0]      # t=7 was filled by 40 resample
    res = run(tmp_path, series(x, flags=flags))
    v, fl = derived(res, "m0__norm__velocity")
    assert_array_equal(fl, [1, 1, 0, 0, 0, 5, 5, 1, 1])   # windows of t=5,6 include t=7
    st, sfl = derived(res, "m0__norm__state")
    # 0.0 and 0.1 are closed (<= 0.1) but only for 2 s after the series starts (< 5 s):
    # they take the next long state, open; the state of t=7 rests on a filled sample
    assert_array_equal(st, [1] * 9)
    assert_array_equal(sfl, [0, 0, 0, 0, 0, 0, 0, 5, 0])


# ---------------------------------------------------------------- summaries

def test_daily_shares_on_an_hourly_grid(tmp_path):
    # sample_period = 1 h: a day is 24 samples. 10 h open, 8 h closed, 6 h missing.
    x = [0.8] * 10 + [0.05] * 8 + [N] * 6
    res = run(tmp_path, series(x, start="2026-01-20T00:00:00Z", period=3600), sample_period="1h",
              velocity={"window": "2h"})
    d = res.daily.iloc[0]
    assert_allclose([d["share_open"], d["share_closed"], d["share_unknown"], d["share_missing"]],
                    [10 / 24, 8 / 24, 6 / 24, 6 / 24])
    assert (d["samples_expected"], d["samples_usable"]) == (24, 18)
    assert (d["closures"], d["closure_mean_duration_s"]) == (1, 8 * 3600.0)
    assert_allclose(d["range"], 0.75)
    assert bool(d["active"])
    assert res.events.iloc[0]["cut_end"]            # the closure ends in the gap: not observed


def test_completeness_per_device_and_day(tmp_path):
    # hourly grid: 24 expected samples; 18 rows: 12 recorded (flag 0), 3 filled (flag 5),
    # 3 missing rows (flag 1); 6 hours have no row at all
    x = [0.5] * 12 + [0.5] * 3 + [N] * 3
    flags = [0] * 12 + [5] * 3 + [1] * 3
    res = run(tmp_path, series(x, start="2026-01-20T00:00:00Z", flags=flags, period=3600),
              sample_period="1h", velocity={"window": "2h"})
    dd = res.device_daily.iloc[0]
    assert (dd["animals"], dd["samples_expected"], dd["samples_recorded"], dd["samples_usable"]) == (1, 24, 12, 15)
    assert_allclose([dd["completeness_pct"], dd["usable_pct"]], [50.0, 62.5])   # 12/24, 15/24


def test_inactive_animal_is_marked_not_dropped(tmp_path):
    # m1 barely moves (range 0.02 < 0.1): inactive, but its rows, state and summary remain
    df = pd.concat([series([0.8] * 10 + [0.05] * 8 + [0.8] * 10, sensor="m0__norm"),
                    series([0.50, 0.51, 0.52] * 9 + [0.5], sensor="m1__norm")], ignore_index=True)
    res = run(tmp_path, df)
    assert list(res.daily["sensor"]) == ["m0__norm", "m1__norm"]
    assert list(res.daily["active"]) == [True, False]
    assert_allclose(res.daily["range"], [0.75, 0.02])
    assert (res.data["sensor"] == "m1__norm__state").sum() == 28
    assert res.device_daily.iloc[0]["active_animals"] == 1


def closing(sensor, at_s):
    """An animal open at 0.8 from 12:00:00 that closes (0.05, 20 s) at 12:00:00 + at_s."""
    x = [0.8] * at_s + [0.05] * 20 + [0.8] * 20
    return series(x, sensor=sensor)


def test_synchronised_closures_two_of_three_within_the_window(tmp_path):
    # a closes at +10 s, b at +40 s (30 s later: inside 60 s), c at +600 s
    df = pd.concat([closing("a__norm", 10), closing("b__norm", 40), closing("c__norm", 600)],
                   ignore_index=True)
    res = run(tmp_path, df)
    sync = res.events[res.events["kind"] == "sync_closure"]
    assert len(sync) == 1                       # 2 of 3 active = 0.67 >= 0.5
    e = sync.iloc[0]
    assert e["start"] == pd.Timestamp("2026-01-20T12:00:10Z")
    assert e["end"] == pd.Timestamp("2026-01-20T12:00:40Z")   # last participating start
    assert (e["n_animals"], e["animals"], e["sensor"]) == (2, "a__norm,b__norm", None)
    assert_allclose([e["share_active"], e["duration_s"]], [2 / 3, 30.0])
    assert res.device_daily.iloc[0]["sync_closures"] == 1


def test_spread_out_closures_are_not_synchronised(tmp_path):
    # starts 5 min apart: never 2 animals within 60 s
    df = pd.concat([closing("a__norm", 10), closing("b__norm", 310), closing("c__norm", 610)],
                   ignore_index=True)
    res = run(tmp_path, df)
    assert res.counts["events"] == {"closure": 3, "micro_closure": 0, "sync_closure": 0}


def test_sync_share_counts_active_animals_only(tmp_path):
    # 2 closing animals + 2 inactive ones: share = 2 / 2 active, sync; with min_share 0.75
    # and the inactive ones counted it would be 2/4 — they are not counted
    flat = [0.5] * 70
    df = pd.concat([closing("a__norm", 10), closing("b__norm", 20), series(flat, sensor="c__norm"),
                    series(flat, sensor="d__norm")], ignore_index=True)
    res = run(tmp_path, df, sync={"window": "60s", "min_share": 0.75, "min_animals": 2})
    sync = res.events[res.events["kind"] == "sync_closure"]
    assert_allclose(sync["share_active"], [1.0])


# ---------------------------------------------------------------- edge inputs

def test_other_rows_pass_through_unchanged_and_the_ledger_balances(tmp_path):
    df = pd.concat([series([0.8, 0.8], sensor="m0__cbrt_inv__norm"),
                    series([310.0, 300.0], sensor="m0"),
                    series([18.9, 19.0], sensor="outdoor_temp", domain="environment")], ignore_index=True)
    res = run(tmp_path, df)
    names = sorted(set(res.data["sensor"].astype(str)))
    assert names == ["m0", "m0__cbrt_inv__norm", "m0__cbrt_inv__norm__state",
                     "m0__cbrt_inv__norm__velocity", "outdoor_temp"]
    back = res.data[res.data["sensor"].isin(["m0", "m0__cbrt_inv__norm", "outdoor_temp"])]

    def plain(frame):
        frame = frame.astype({"sensor": str, "domain": str, "device_id": str})
        return frame.sort_values(["sensor", "ts"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(plain(back), plain(df))
    assert res.counts["rows_in"] == res.counts["rows_out"] == 6 and res.counts["rows_added"] == 4


def test_empty_input(tmp_path):
    res = run(tmp_path, tidy.empty())
    assert len(res.data) == 0 and len(res.events) == 0 and len(res.daily) == 0
    dd = res.device_daily.iloc[0]
    assert dd["animals"] == 0 and np.isnan(dd["completeness_pct"])


def test_single_value(tmp_path):
    res = run(tmp_path, series([0.8]))
    st, sfl = derived(res, "m0__norm__state")
    v, vfl = derived(res, "m0__norm__velocity")
    assert_array_equal([st[0], sfl[0], vfl[0]], [1, 0, 1]) and np.isnan(v[0])
    d = res.daily.iloc[0]
    assert d["range"] == 0.0 and not d["active"] and np.isnan(d["velocity_abs_mean"])


def test_all_flagged_input(tmp_path):
    # every sample a spike (flag 2): nothing usable → state unknown, no events, inactive
    res = run(tmp_path, series([0.8, 0.05, 0.8], flags=[2, 2, 2]))
    st, sfl = derived(res, "m0__norm__state")
    assert np.isnan(st).all() and (sfl == 1).all()
    d = res.daily.iloc[0]
    assert (d["samples_usable"], d["active"], d["status"]) == (0, False, "no_data")
    assert np.isnan(d["share_unknown"]) and pd.isna(d["closures"])     # not a number that looks like science
    assert np.isnan(d["range"]) and len(res.events) == 0
    assert res.device_daily.iloc[0]["samples_recorded"] == 3      # recorded, though unusable


def test_samples_off_the_grid_are_an_error(tmp_path):
    df = series([0.8, 0.8], start="2026-01-20T12:00:00.500Z")
    with pytest.raises(UserError) as e:
        run(tmp_path, df)
    assert str(e.value) == ("2 samples of m0__norm are not on the 1 s grid of day 2026-01-20 (first: "
                            "2026-01-20T12:00:00.500000Z); 60_behaviour needs the regular grid of "
                            "40_resample ($.sample_period)")


# ---------------------------------------------------------------- config errors

@pytest.mark.parametrize("over, message", [
    ({"state": {"closed_below": 0.2, "open_above": 0.2, "min_duration": "5s"}},
     "c.json: $.state.open_above: 0.2 is not allowed; allowed: a number above $.state.closed_below (0.2)"),
    ({"velocity": {"window": "3s"}},
     "c.json: $.velocity.window: '3s' is not allowed; allowed: an even multiple of $.sample_period ('1s'), e.g. '2s' or '4s'"),
    ({"sample_period": "7s"},
     "c.json: $.sample_period: '7s' is not allowed; allowed: a period that divides 24 h exactly (e.g. '100ms', '1s', '5s', '10s')"),
    ({"reference_window": "30"},
     "c.json: $.reference_window: '30' is not allowed; allowed: a positive duration with a unit such as '10s', '5min', '2h', '1D'"),
    ({"state": {"min_duration": "-5s"}},
     "c.json: $.state.min_duration: '-5s' is not allowed; allowed: a non-negative duration with a unit such as '10s', '5min', '2h', '1D'"),
    ({"sensors": "m[0-"},
     "c.json: $.sensors: 'm[0-' is not a regular expression (unterminated character set at position 1); "
     "allowed: a Python regular expression such as '__norm$'"),
    ({"state": {"open": 0.2}},
     "c.json: $.state.open: unknown key 'open'; allowed keys: closed_below, min_duration, open_above"),
    ({"daily_stage": "60_events"},
     "c.json: $.daily_stage: '60_events' is not allowed; allowed: a stage other than $.events_stage"),
    ({"sync": {"min_share": 1.5}},
     "c.json: $.sync.min_share: 1.5 is out of range; allowed: <= 1"),
])
def test_config_errors(tmp_path, over, message):
    with pytest.raises(UserError) as e:
        config(tmp_path, **over)
    assert str(e.value) == message


def test_template_config_is_valid_and_declares_the_stages(tmp_path):
    from pyjama.config import REPO
    from pyjama.steps import get_step

    text = (REPO / "configs" / "_template" / "60_behaviour.json").read_text().replace("{{EXPOSURE}}", "T")
    (tmp_path / "c.json").write_text(text)
    st = load_step_config("60_behaviour.py", "c.json", tmp_path)
    assert get_step("60_behaviour.py").output_stages(st) == {
        "data": "60_behaviour", "events": "60_events", "daily": "60_daily",
        "device_daily": "60_device_daily"}


# ---------------------------------------------------------------- the step's files

def test_run_partition_writes_four_tables_deterministically(tmp_path):
    from pyjama.runner import run_partition
    from pyjama.steps import get_step

    st = config(tmp_path)
    src = tmp_path / io.partition_file("T", "50_normalised", "d", DAY)
    io.write_tidy(src, closing("m0__norm", 10), {})
    step = get_step("60_behaviour.py")
    # the plan knows one partition (no neighbouring day: no edge input)
    project = SimpleNamespace(root=tmp_path, partitions=lambda stages=None: [("d", DAY)])
    assert step.input_files(project, st, "d", DAY) == {
        "data": "data/T/50_normalised/device_id=d/day=2026-01-20/part.parquet", "previous": []}
    entry = run_partition(step, project, st, "d", DAY)
    assert (entry["rows_in"], entry["rows_out"], entry["rows_added"]) == (50, 50, 100)
    outs = step.output_files(st, "d", DAY)
    first = {k: (tmp_path / p).read_bytes() for k, p in outs.items()}
    run_partition(step, project, st, "d", DAY)
    assert first == {k: (tmp_path / p).read_bytes() for k, p in outs.items()}   # same bytes
    ev = pq.read_table(tmp_path / outs["events"])
    assert ev.column_names == ["kind", "sensor", "start", "end", "duration_s", "depth", "cut_start",
                               "cut_end", "n_animals", "share_active", "animals"]
    assert ev.column("kind").to_pylist() == ["closure"]
    assert pq.read_table(tmp_path / outs["daily"]).column("sensor").to_pylist() == ["m0__norm"]
    assert pq.read_table(tmp_path / outs["device_daily"]).num_rows == 1
    assert io.read_meta(tmp_path / outs["events"])["pyjama.step"] == "60_behaviour.py"


# ---------------------------------------------------------------- issue 10: noise, status

def test_micro_closure_needs_a_drop_above_the_noise_and_a_minimum_duration(tmp_path):
    # open at 0.8 with ±0.04 noise (sigma from first differences ~0.05): D = max(0.1, 4 × sigma)
    rng = np.random.default_rng(1)
    x = 0.8 + rng.normal(0, 0.04, 3600)
    x[1000:1004] -= 0.5            # a 4-s drop of 0.5 (10 sigma): counted
    x[2000:2001] -= 0.5            # a 1-s drop: shorter than min_duration 2 s, not counted
    x[3000:3004] -= 0.15           # 0.15 < D ≈ 0.2: noise-level, not counted
    mc = {"min_drop": 0.1, "max_duration": "40s", "min_duration": "2s", "noise_factor": 4}
    res = run(tmp_path, series(np.clip(x, 0, 1)), micro_closure=mc)
    ev = res.events[res.events["kind"] == "micro_closure"]
    assert [(int((t - pd.Timestamp(NOON)).total_seconds())) for t in ev["start"]] == [1000]
    assert 0.035 < res.daily.iloc[0]["noise_sd"] < 0.06
    # the same series with the pre-issue-10 rule (no floor, single samples): noise counts
    old = {"min_drop": 0.1, "max_duration": "40s", "min_duration": "0s", "min_samples": 1, "noise_factor": 0}
    assert (run(tmp_path, series(np.clip(x, 0, 1)), micro_closure=old).events["kind"] == "micro_closure").sum() > 3


def test_micro_closure_needs_two_measured_samples_below_the_threshold(tmp_path):
    # a 0.1 Hz logger on the 1 s grid: a measured sample (flag 0) every 10 s, the cells
    # between interpolated by 40 (flag 5). Open 0.8; at 12:01:40 one measured sample at 0.3
    # (the cells from 12:01:31 to 12:01:49 are interpolated toward it: 12 of them >= 0.1
    # below 0.8, 12 s "long"), back at 0.8 at 12:01:50: ONE sample saw the drop. At 12:03:20
    # and 12:03:30 two measured samples at 0.5 (0.3 below): two samples saw it.
    n = 600
    x = np.full(n, 0.8)
    flags = np.full(n, 5)
    flags[::10] = 0
    for k in (100, 200, 210):
        x[k] = 0.3 if k == 100 else 0.5
    x = np.interp(np.arange(n), np.arange(0, n, 10), x[::10])     # 40's linear fill
    mc = {"min_drop": 0.1, "max_duration": "40s", "min_duration": "2s", "min_samples": 2, "release": 1.0,
          "noise_factor": 0}
    res = run(tmp_path, series(x, flags=flags), micro_closure=mc, reference_window="120s")
    ev = res.events[res.events["kind"] == "micro_closure"]
    # the one-sample drop is not one; the two-sample drop is, reference r = 0.8 (the median of
    # the 120 s before), from the first cell >= 0.1 below it (12:03:14: 0.8 - 0.03 x 4 = 0.68)
    # to the last (12:03:36: 0.5 + 0.03 x 6 = 0.68): 23 cells
    assert [(str(e["start"].time()), e["duration_s"]) for _, e in ev.iterrows()] == [("12:03:14", 23.0)]
    # min_samples 1 (the duration alone): both are counted
    res = run(tmp_path, series(x, flags=flags), micro_closure={**mc, "min_samples": 1}, reference_window="120s")
    assert (res.events["kind"] == "micro_closure").sum() == 2


def test_micro_closure_ends_when_back_within_half_the_threshold(tmp_path):
    # open 0.8, D = 0.1 (no noise floor). A drop to 0.6 at 12:00:10 for 2 s, then a slow
    # recovery hovering at the threshold: 0.71 (drop 0.09, in the band 0.05..0.1), 0.69
    # (dipped again), 0.72, then 0.78 (drop 0.02 < 0.05: back) at 12:00:15.
    x = [0.8] * 10 + [0.6, 0.6, 0.71, 0.69, 0.72] + [0.78] + [0.8] * 30
    mc = {"min_drop": 0.1, "max_duration": "40s", "min_duration": "2s", "min_samples": 1, "noise_factor": 0}
    # release 0.5: ONE micro-closure, going on until the first sample back (12:00:15); its
    # duration is its time >= D below, from the first to the last dipped sample (0.69 at
    # 12:00:13): 4 s
    ev = run(tmp_path, series(x), micro_closure={**mc, "release": 0.5}).events
    assert [(str(e["start"].time()), e["duration_s"]) for _, e in ev.iterrows()] == [("12:00:10", 4.0)]
    # release 1 (no band): it ends at 0.71, and the 1-s dip at 0.69 is too short: 2 s only
    ev = run(tmp_path, series(x), micro_closure={**mc, "release": 1.0}).events
    assert [(str(e["start"].time()), e["duration_s"]) for _, e in ev.iterrows()] == [("12:00:10", 2.0)]


def test_daily_status_too_few_samples_flat_and_span_unknown(tmp_path):
    day = pd.date_range(DAY, periods=86400, freq="1s", tz="UTC")
    good = np.where((np.arange(86400) // 3600) % 6 == 0, 0.05, 0.9)      # closes 1 h in 6
    short = np.full(86400, np.nan)
    short[:600] = 0.9                                                     # 10 min of data
    flat = np.full(86400, 0.5)
    unknown = np.full(86400, np.nan)                                      # normalise: flag 3
    lost = np.full(86400, np.nan)                                         # every sample missing (1)
    frames = [tidy.frame(ts=day, device_id="d", domain="bio_signal", sensor=f"m{i}__norm", value=v,
                         quality_flag=f)
              for i, (v, f) in enumerate([(good, 0), (short, np.where(np.isnan(short), 1, 0)), (flat, 0),
                                          (unknown, 3), (lost, 1)])]
    res = compute_behaviour(tidy.concat(frames), DAY, config(tmp_path, active={"min_range": 0.1,
                                                                             "min_usable": "1h"}).params)
    d = res.daily.set_index("sensor")
    assert d["status"].tolist() == ["ok", "too_few_samples", "flat", "span_unknown", "no_data"]
    assert d.loc["m0__norm", "closures"] == 4
    assert d.iloc[1:]["closures"].isna().all() and d.iloc[1:]["share_closed"].isna().all()
    assert set(res.events["sensor"].dropna()) <= {"m0__norm"}
    w = res.counts["warnings"]
    assert w[0] == ("d/m1__norm 2026-01-20: 600 s of usable samples, below $.active.min_usable 3600 s; "
                    "closures not counted")
    assert w[1] == "d/m2__norm 2026-01-20: flat: opening range 0 below $.active.min_range 0.1; closures not counted"
    assert w[2] == ("d/m3__norm 2026-01-20: span unknown / not closing: 86400 of 86400 samples have no "
                    "normalised opening (flag 3 from 50_normalise); closures not counted")
    assert w[3] == "d/m4__norm 2026-01-20: no usable sample; closures not counted"
    assert len(w) == 4                                     # one line each, none for the ok animal
    assert res.counts["status"] == {"ok": 1, "no_data": 1, "too_few_samples": 1, "span_unknown": 1, "flat": 1}


def test_a_fit_file_below_the_declared_span_is_one_warning_and_span_unknown_in_60_daily(tmp_path, capsys):
    """Bad input through 50 → 60 as the jobs run them: a fit file made when $.min_range was
    0.0001 holds m1 with a span of 0.0005; the config now declares 0.002. m0 (span 0.01) is
    fine. Neither step crashes; 50 says it in one line per partition, 60_daily says
    span_unknown with null counts."""
    from pyjama.steps import get_step

    day = pd.date_range(DAY, periods=7200, freq="1s", tz="UTC")
    i = np.arange(7200)
    m0 = np.where((i >= 3000) & (i < 3600), 0.10, 0.11)           # closes 10 min: span 0.01
    m1 = 0.1 + 0.0005 * (i % 600) / 600                             # a sliver of a span
    df = tidy.concat([tidy.frame(ts=day, device_id="valve01", domain="bio_signal", sensor=s, value=v,
                                 quality_flag=0) for s, v in (("m0__cbrt_inv", m0), ("m1__cbrt_inv", m1))])
    (tmp_path / "n.json").write_text(json.dumps({"exposure": "T", "input_stage": "50_transformed",
                                                 "output_stage": "50_normalised", "min_range": 0.002}))
    st50 = load_step_config("50_normalise.py", "n.json", tmp_path)
    entry = {"fit_from": DAY, "fit_to": DAY, "direction": "up", "closures_seen": None}
    fit = {"device_id": "valve01", "period": {"complete": True},
           "fit_config": {k: st50.params.get(k) for k in ("method", "sensors", "p_low", "p_high", "fit",
                                                          "direction", "closure_evidence")},
           "sensors": {"m0__cbrt_inv": {**entry, "low": 0.10, "high": 0.11, "range": 0.01},
                       "m1__cbrt_inv": {**entry, "low": 0.1, "high": 0.1005, "range": 0.0005}}}
    out, counts = get_step("50_normalise.py").compute({"data": df, "params": fit}, st50, "valve01", DAY)
    line = ("valve01/m1__cbrt_inv: span unknown / not closing: fitted span 0.0005 is below the required "
            "0.002 ($.min_range 0.002) in the fit period 2026-01-20..2026-01-20; its opening is not "
            "normalised (NaN, flag 3) and its closures are not counted")
    assert counts["warnings"] == [line]
    assert capsys.readouterr().err == f"warning: {line}\n"
    st60 = config(tmp_path, active={"min_range": 0.1, "min_usable": "1h"})
    tables, bcounts = get_step("60_behaviour.py").compute({"data": out["data"], "previous": []}, st60,
                                                         "valve01", DAY)
    d = tables["daily"].set_index("sensor")
    assert d["status"].to_dict() == {"m0__cbrt_inv__norm": "ok", "m1__cbrt_inv__norm": "span_unknown"}
    assert d.loc["m0__cbrt_inv__norm", "closures"] == 1
    assert pd.isna(d.loc["m1__cbrt_inv__norm", "closures"]) and pd.isna(d.loc["m1__cbrt_inv__norm", "share_open"])
    assert bcounts["warnings"] == [("valve01/m1__cbrt_inv__norm 2026-01-20: span unknown / not closing: 7200 of "
                                    "7200 samples have no normalised opening (flag 3 from 50_normalise); "
                                    "closures not counted")]
    assert capsys.readouterr().err.count("\n") == 1                 # one line from 60 too


def test_noise_sd_is_that_of_the_open_level(tmp_path):
    # 2 h at 1 s: closed (0.05, noise sd 0.01) for the first 80 min, open (0.85, noise sd
    # 0.05: x^(-1/3) of Hall counts is steeper at the open end) for the last 40 min. The
    # micro-closure floor is about drops from the open level: sd 0.05 (from the open samples
    # alone), not ~0.01 (the median of all differences, most of them closed)
    rng = np.random.default_rng(3)
    n, k = 7200, 4800
    x = np.r_[0.05 + rng.normal(0, 0.01, k), 0.85 + rng.normal(0, 0.05, n - k)]
    x[6000:6003] -= 0.15        # 3 open samples 0.15 below: 3 sd, below the floor 4 x 0.05
    res = run(tmp_path, series(np.clip(x, 0, 1)),
              micro_closure={"min_drop": 0.1, "max_duration": "40s", "min_duration": "2s", "noise_factor": 4})
    assert 0.045 < res.daily.iloc[0]["noise_sd"] < 0.055
    # all measured samples alike (the rule before): sd ~0.012, floor 0.1, and open noise
    # pairs 0.1 below the reference make micro-closures
    from pyjama.behaviour import noise_sigma

    assert 0.009 < noise_sigma(np.clip(x, 0, 1)[None, :], np.zeros((1, n), np.uint8))[0] < 0.015
    assert (res.events["kind"] == "micro_closure").sum() == 0


# ---------------------------------------------------------------- the sparse path equals the full grid

def _bursty_day(rng, n_animals=3, start="2026-01-20T00:00:00Z"):
    """Stretches of 1 s samples at the day's edges and in between, separated by gaps short and
    long (a slow logger's hour, a dead hour), with closures, dips, flagged and filled samples."""
    frames = []
    day0 = pd.Timestamp(start)
    # burst starts [s of the day]: midnight, just after, a late burst touching 23:59:59
    bursts = [(0, 400), (430, 300), (5000, 900), (5950, 60), (40000, 2000), (86400 - 700, 700)]
    for a in range(n_animals):
        for b0, n in bursts:
            x = 0.8 + rng.normal(0, 0.01, n)
            for c in rng.integers(0, max(n - 40, 1), 3):         # closures of 5..30 s
                x[c:c + rng.integers(5, 30)] = 0.02 + rng.normal(0, 0.005)
            for c in rng.integers(0, max(n - 10, 1), 4):         # dips of 2..6 s
                x[c:c + rng.integers(2, 6)] -= 0.3
            x[rng.random(n) < 0.05] = np.nan
            flags = np.where(np.isnan(x), 1, 0)
            flags[rng.random(n) < 0.05] = 5
            bad = rng.random(n) < 0.02
            flags[bad] = rng.choice([2, 3, 4], bad.sum())
            ts = day0 + pd.to_timedelta(b0 + np.arange(n), unit="s")
            frames.append(tidy.frame(ts=ts, device_id="d", domain="bio_signal", sensor=f"m{a}__norm",
                                     value=x, quality_flag=flags))
    frames.append(tidy.frame(ts=day0 + pd.to_timedelta(np.arange(0, 86400, 600), unit="s"), device_id="d",
                             domain="environment", sensor="temp", value=12.0, quality_flag=0))
    return tidy.concat(frames)


def _assert_same(a, b):
    pd.testing.assert_frame_equal(a.data, b.data)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.daily, b.daily)
    pd.testing.assert_frame_equal(a.device_daily, b.device_daily)
    assert a.counts == b.counts


@pytest.fixture
def grid_widths(monkeypatch):
    """The number of grid columns each compute_behaviour call's sparse path kept (None: the
    whole day), so a test knows the sparse path really ran."""
    from pyjama import behaviour

    seen, real = [], behaviour.sparse_columns

    def spy(present, keep_gap):
        cols = real(present, keep_gap)
        seen.append(None if cols is None else len(cols))
        return cols

    monkeypatch.setattr(behaviour, "sparse_columns", spy)
    return seen


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sparse_path_equals_the_full_grid(tmp_path, seed, grid_widths):
    rng = np.random.default_rng(seed)
    df = _bursty_day(rng)
    prev = series([0.7, 0.8], start="2026-01-19T23:59:58Z", flags=[5, 0])
    nxt = series([0.8, 0.9], start="2026-01-21T00:00:00Z")
    p = config(tmp_path, sync={"window": "60s", "min_share": 0.5, "min_animals": 2},
               micro_closure={"min_drop": 0.1, "max_duration": "40s", "min_duration": "2s",
                              "min_samples": 2, "release": 0.5, "noise_factor": 4}).params
    full = compute_behaviour(df, DAY, p, previous=prev, next=nxt, sparse=False)
    fast = compute_behaviour(df, DAY, p, previous=prev, next=nxt, sparse=True)
    assert len(full.events) > 10 and (full.events["kind"] == "micro_closure").any()
    assert grid_widths[-1] < 86_400 / 2        # the sparse path ran on a fraction of the day
    _assert_same(full, fast)


def test_sparse_columns_keep_every_occupied_column_and_the_start_of_each_long_gap():
    from pyjama.behaviour import sparse_columns

    present = np.zeros((2, 20), bool)
    present[0, [3, 4, 15]] = True
    present[1, [19]] = True
    # keep_gap 3: 0-2 (a gap of 3: whole), 3-4, 5-7 of the gap 5-14, 15, 16-18 of 16-18, 19
    assert sparse_columns(present, 3).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 15, 16, 17, 18, 19]
    assert sparse_columns(np.ones((1, 5), bool), 3) is None


def test_a_slow_loggers_day_computes_sparse_and_equals_the_full_grid(tmp_path, grid_widths):
    # one sample an hour on the 1 s grid (a slow logger's day after 40_resample): 24 rows;
    # by default (sparse=None) the day computes on 24 × (1 + 36) columns (the schema's
    # defaults: 30 s reference + 4 s velocity + 2), a full day of rows on the whole grid
    x = np.where(np.arange(24) % 6 == 5, 0.05, 0.8)
    df = series(x, start="2026-01-20T00:00:00Z", period=3600)
    p = config(tmp_path).params
    _assert_same(compute_behaviour(df, DAY, p, sparse=False), compute_behaviour(df, DAY, p))
    assert grid_widths == [24 * 37]
    compute_behaviour(series(np.full(86_400, 0.8), start="2026-01-20T00:00:00Z"), DAY, p)
    assert grid_widths[-1] is None
