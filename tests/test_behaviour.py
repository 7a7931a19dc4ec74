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


# ---------------------------------------------------------------- the fast day: same rows as before
#
# compute_behaviour reads a day's columns once, computes in numpy and builds each frame once
# (a slow logger's day: 24 rows an hour-spaced sensor cost ~25 ms of pandas overhead before).
# The tests below pin the pieces on hand-made inputs, and compare the whole with the
# implementation it replaced (kept here, below: _ref_*, the code of 8b14dc0 without its
# docstrings; the kernels it shares with today's module are imported).

import re  # noqa: E402
import warnings  # noqa: E402

from pyjama.behaviour import (DAILY_COLUMNS, DAY_US, DEVICE_DAILY_COLUMNS, EVENT_COLUMNS,  # noqa: E402
                              CLOSED, EVENT_KINDS, OPEN, STATUSES, UNKNOWN, USABLE_FLAGS, ArrowDay,
                              BehaviourResult,
                              find_closures, find_micro_closures, find_sync_closures, read_durations,
                              sparse_columns, trailing_reference)
from pyjama.flags import Flag  # noqa: E402


def test_trailing_reference_of_a_sparse_window_is_pandas_median_of_its_1_2_or_3_values():
    # window 3 samples, before the sample: r[t] = median of the usable x in [t-3, t-1]
    x = np.array([[0.2, N, N, 0.6, 0.3, N, N, N, 0.9, 0.5, 0.1, N]])
    want = [N,              # nothing before
            0.2, 0.2, 0.2,  # {0.2}
            0.6,            # {0.6} (0.2 left the window)
            0.45,           # {0.6, 0.3}: (0.6 + 0.3) / 2
            0.45, 0.3,      # {0.6, 0.3}, then {0.3}
            N,              # t=8: window 5..7 empty
            0.9, 0.7,       # {0.9}, {0.9, 0.5}
            0.5]            # {0.9, 0.5, 0.1}: the middle one
    assert_allclose(trailing_reference(x, 3, 1.0), np.array([want]), rtol=0, atol=1e-15)
    from pyjama import behaviour

    assert behaviour._rolling_median_few(x, 3) is not None          # the numpy path ran
    dense = np.arange(10.0)[None, :]                               # 4 values in a window: pandas
    assert behaviour._rolling_median_few(dense, 4) is None
    assert_array_equal(trailing_reference(dense, 4, 1.0), _ref_trailing_reference(dense, 4, 1.0))
    assert behaviour._rolling_median_few(np.array([[-0.0, 1.0]]), 3) is None   # -0.0: pandas decides
    assert behaviour._rolling_median_many(dense, 4) is not None   # dense: bottleneck's moving median
    assert behaviour._rolling_median_many(np.array([[-0.0, 1.0]]), 3) is None
    assert behaviour._rolling_median_many(np.array([[np.inf, 1.0]]), 3) is None   # ±inf: pandas


@pytest.mark.parametrize("seed", range(4))
def test_trailing_reference_of_dense_windows_equals_pandas_bit_for_bit(seed):
    # a 1 Hz day: many usable samples per window (bottleneck's moving median), even and odd
    # counts, windows longer than the day, ties, NaN holes; ±inf falls back to pandas
    rng = np.random.default_rng(100 + seed)
    for k in range(40):
        rows, cols, n = int(rng.integers(1, 4)), int(rng.integers(2, 900)), int(rng.integers(2, 1200))
        x = np.round(rng.normal(0.5, 0.3, (rows, cols)), int(rng.integers(1, 17)))
        x[rng.random((rows, cols)) < rng.choice([0.0, 0.05, 0.4])] = np.nan
        if k % 10 == 9:
            x[0, cols // 2] = np.inf
        got, want = trailing_reference(x, n, 1.0), _ref_trailing_reference(x, n, 1.0)
        assert_array_equal(got.view(np.int64), want.view(np.int64))


@pytest.mark.parametrize("seed", range(6))
def test_trailing_reference_equals_pandas_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        rows, cols, n = int(rng.integers(1, 5)), int(rng.integers(1, 300)), int(rng.integers(1, 40))
        x = np.full((rows, cols), np.nan)
        on = rng.random((rows, cols)) < rng.choice([0.01, 0.03, 0.08, 0.5])
        x[on] = np.round(rng.normal(0.5, 0.3, on.sum()), int(rng.integers(1, 17)))   # ties, too
        got, want = trailing_reference(x, n, 1.0), _ref_trailing_reference(x, n, 1.0)
        assert_array_equal(got.view(np.int64), want.view(np.int64))


def test_noise_sigma_needs_10_measured_samples_and_equals_the_previous_rule():
    from pyjama.behaviour import noise_sigma

    x = np.array([[0.80, 0.82, 0.79, 0.81, 0.80, 0.83, 0.78, 0.80, 0.81, 0.79, N, N]])
    flags = np.where(np.isnan(x), 1, 0).astype(np.uint8)
    # d = .02 -.03 .02 -.01 .03 -.05 .02 .01 -.02: median .01; |d - .01| median .02
    assert_allclose(noise_sigma(x, flags), [1.4826 * 0.02 / np.sqrt(2)], rtol=1e-9)
    flags[0, 0] = 5                       # interpolated: 9 measured samples, too few
    assert np.isnan(noise_sigma(x, flags)[0])
    rng = np.random.default_rng(3)
    for _ in range(200):                  # 8 to 12 measured samples, open or not
        x = np.where(rng.random((3, 14)) < 0.8, rng.random((3, 14)), np.nan)
        flags = rng.choice([0, 0, 0, 5], (3, 14)).astype(np.uint8)
        state = rng.choice([OPEN, CLOSED], (3, 14))
        for s in (None, state):
            assert_array_equal(noise_sigma(x, flags, s), _ref_noise_sigma(x, flags, s))


def test_sparse_columns_equals_the_column_by_column_rule():
    rng = np.random.default_rng(5)
    for _ in range(3000):
        present = rng.random((int(rng.integers(0, 4)), int(rng.integers(0, 50)))) < rng.choice([0, 0.03, 0.2, 1])
        keep_gap = int(rng.integers(1, 9))
        got, want = sparse_columns(present, keep_gap), _ref_sparse_columns(present, keep_gap)
        assert (got is None) == (want is None)
        if want is not None:
            assert got.dtype == want.dtype and got.tolist() == want.tolist()


def test_read_durations_keeps_what_a_set_of_texts_gave_but_never_an_error(tmp_path):
    p = config(tmp_path).params
    first = read_durations(p, "config")
    again = read_durations(p, "config")
    assert again == first and again is not first
    again["period"] = 99.0                       # the caller's copy: the kept one is unchanged
    assert read_durations(p, "config")["period"] == 1.0
    assert read_durations({**p, "sample_period": "2s"}, "config")["period"] == 2.0
    bad = {**p, "sample_period": "7s"}           # does not divide 24 h
    for _ in range(2):
        with pytest.raises(UserError, match=r"c\.json: \$\.sample_period: '7s' is not allowed"):
            read_durations(bad, "c.json")


def test_events_table_dtypes_and_order_with_and_without_sync_closures(tmp_path):
    # two animals closing at 12:00:10 (a sync closure), one dip of m0 at 12:00:40;
    # without sync: sensor is str; with: object, None for the sync row
    x = np.full(80, 0.8)
    x[10:20] = 0.02
    x[40:43] = 0.6
    df = tidy.concat([series(x), series(np.roll(x, 1), sensor="m1__norm")])
    sync = {"window": "60s", "min_share": 0.5, "min_animals": 2}
    with_sync = run(tmp_path, df, sync=sync)
    ev = with_sync.events
    assert ev["kind"].tolist() == ["closure", "closure", "micro_closure", "micro_closure", "sync_closure"]
    assert ev["sensor"].tolist() == ["m0__norm", "m1__norm", "m0__norm", "m1__norm", None]
    assert str(ev["kind"].dtype) == "str" and ev["sensor"].dtype == object and str(ev["animals"].dtype) == "str"
    assert ev["start"].dt.strftime("%H:%M:%S").tolist() == ["12:00:10", "12:00:11", "12:00:40", "12:00:41",
                                                            "12:00:10"]
    assert ev["animals"].iloc[-1] == "m0__norm,m1__norm" and ev["n_animals"].tolist() == [1, 1, 1, 1, 2]
    alone = run(tmp_path, df, sync={**sync, "min_animals": 3})
    assert "sync_closure" not in set(alone.events["kind"]) and str(alone.events["sensor"].dtype) == "str"
    for res, p in ((with_sync, config(tmp_path, sync=sync).params),
                   (alone, config(tmp_path, sync={**sync, "min_animals": 3}).params)):
        _assert_identical(res, _ref_compute_behaviour(df, DAY, p))
    dip = np.full(60, 0.8)
    dip[20:23] = 0.6                                       # a micro-closure and nothing else
    micro_only = run(tmp_path, series(dip))
    assert micro_only.events["kind"].tolist() == ["micro_closure"]
    assert str(micro_only.events["sensor"].dtype) == "str"
    _assert_identical(micro_only, _ref_compute_behaviour(series(dip), DAY, config(tmp_path).params))


def _assert_identical(new, old):
    """Frames equal value for value (floats bit for bit), dtypes and categories (their order
    and dtype) included; ledger counts equal."""
    for k in ("data", "events", "daily", "device_daily"):
        a, b = getattr(new, k), getattr(old, k)
        pd.testing.assert_frame_equal(a, b, check_exact=True, check_categorical=True, obj=k)
        for c in a.columns:
            if isinstance(a[c].dtype, pd.CategoricalDtype):
                pd.testing.assert_index_equal(a[c].cat.categories, b[c].cat.categories, exact=True)
            elif a[c].dtype == float:
                assert_array_equal(a[c].to_numpy().view(np.int64), b[c].to_numpy().view(np.int64))
    assert new.counts == old.counts


def _random_day(rng, period, kind, n_animals, day=DAY):
    """A day of ``n_animals`` on the ``period`` [s] grid: "hourly" (a slow logger), "minute",
    "bursty" (stretches of every sample and an hourly background), "random" slots, "dense"
    (every slot); open with noise, closures, dips, NaN, flags 5 / 2 / 3 / 4, a day of flag 3;
    plus an environment sensor; rows shuffled sometimes."""
    day0 = pd.Timestamp(day, tz="UTC")
    n_slots = 86_400 // period
    frames = []
    for a in range(n_animals):
        if kind == "hourly":
            slots = np.arange(0, n_slots, 3600 // period)
        elif kind == "minute":
            slots = np.arange(0, n_slots, max(60 // period, 1))
        elif kind == "bursty":
            parts = [np.arange(0, n_slots, 3600 // period)]
            for _ in range(int(rng.integers(1, 6))):
                b0 = int(rng.integers(0, n_slots))
                parts.append(np.arange(b0, min(b0 + int(rng.integers(5, 900)), n_slots)))
            slots = np.unique(np.concatenate(parts))
        elif kind == "random":
            slots = np.unique(rng.integers(0, n_slots, int(rng.integers(1, 400))))
        else:
            slots = np.arange(n_slots)
        n = len(slots)
        x = np.where(rng.random(n) < 0.7, 0.8 + rng.normal(0, 0.03, n), rng.random(n))
        for c in rng.integers(0, max(n - 40, 1), 3):
            x[c:c + rng.integers(1, 30)] = 0.02 + rng.normal(0, 0.005)
        for c in rng.integers(0, max(n - 10, 1), 4):
            x[c:c + rng.integers(1, 6)] -= 0.3
        x[rng.random(n) < 0.05] = np.nan
        if rng.random() < 0.2:
            x = np.round(x, 1)
        flags = np.where(np.isnan(x), 1, 0)
        flags[rng.random(n) < 0.05] = 5
        bad = rng.random(n) < 0.03
        flags[bad] = rng.choice([2, 3, 4], bad.sum())
        if rng.random() < 0.1:
            flags[:], x[:] = 3, np.nan
        frames.append(tidy.frame(ts=day0 + pd.to_timedelta(slots * period, unit="s"), device_id="d",
                                 domain="bio_signal", sensor=f"m{a}__norm", value=x, quality_flag=flags))
    frames.append(tidy.frame(ts=day0 + pd.to_timedelta(np.arange(0, 86_400, 3600), unit="s"), device_id="d",
                             domain="environment", sensor="temp", value=12.0, quality_flag=0))
    df = tidy.concat(frames)
    if rng.random() < 0.3:
        df = df.sample(frac=1, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)
    return df


FAST_CONFIGS = [
    {},
    {"reference_window": "120s", "sync": {"window": "60s", "min_share": 0.5, "min_animals": 2},
     "micro_closure": {"min_drop": 0.1, "max_duration": "40s", "min_duration": "2s", "min_samples": 2,
                       "release": 0.5, "noise_factor": 4}},
    {"sample_period": "10s", "state": {"closed_below": 0.1, "open_above": 0.2, "min_duration": "0s"},
     "reference_window": "60s", "velocity": {"window": "20s"}, "active": {"min_range": 0.05, "min_usable": "10min"}},
]


@pytest.mark.parametrize("seed", range(4))
def test_fast_day_equals_the_previous_implementation_on_random_days(tmp_path, seed):
    rng = np.random.default_rng(100 + seed)
    kinds = ["hourly", "minute", "bursty", "random", "hourly", "bursty"]
    n_events = 0
    for i, kind in enumerate(kinds):
        over = FAST_CONFIGS[(i + seed) % len(FAST_CONFIGS)]
        p = config(tmp_path, **over).params
        period = int(pd.Timedelta(p["sample_period"]).total_seconds())
        df = _random_day(rng, period, kind, int(rng.integers(1, 6)))
        prev = None
        if rng.random() < 0.7:
            k = int(rng.integers(1, 8))
            prev = tidy.frame(ts=pd.Timestamp(DAY, tz="UTC") - pd.to_timedelta(np.arange(k, 0, -1) * period, unit="s"),
                              device_id="d", domain="bio_signal", sensor="m0__norm", value=rng.random(k),
                              quality_flag=rng.choice([0, 5, 1], k))
        sparse = [None, True, False][i % 3]
        new = compute_behaviour(df, DAY, p, previous=prev, sparse=sparse)
        _assert_identical(new, _ref_compute_behaviour(df, DAY, p, previous=prev, sparse=sparse))
        n_events += len(new.events)
    assert n_events > 50          # the comparison saw events, not only empty tables


def test_fast_day_equals_the_previous_implementation_on_a_dense_day(tmp_path):
    rng = np.random.default_rng(7)
    p = config(tmp_path, **FAST_CONFIGS[2]).params          # 10 s grid: 8,640 slots, every one
    df = _random_day(rng, 10, "dense", 3)
    new = compute_behaviour(df, DAY, p)
    _assert_identical(new, _ref_compute_behaviour(df, DAY, p))
    assert len(new.events) > 10 and len(new.data) == len(df) + 2 * 3 * 8640


def test_fast_day_equals_the_previous_implementation_on_odd_days(tmp_path):
    p = config(tmp_path, **FAST_CONFIGS[1]).params
    rng = np.random.default_rng(11)
    day0 = pd.Timestamp(DAY, tz="UTC")
    env = tidy.frame(ts=day0 + pd.to_timedelta(np.arange(0, 86_400, 3600), unit="s"), device_id="d",
                     domain="environment", sensor="temp", value=1.0)
    odd = _random_day(rng, 1, "hourly", 2)                  # a row without sensor, unused categories
    odd["sensor"] = odd["sensor"].cat.add_categories(["zz__norm", "a_unused"])
    odd.loc[3, "sensor"] = np.nan
    zeros = _random_day(rng, 1, "minute", 2)                # -0.0 openings (pandas' median decides)
    zeros.loc[zeros.index[:50], "value"] = -0.0
    days = [tidy.empty(), env, tidy.frame(ts=[day0], device_id="d", domain="bio_signal", sensor="m0__norm",
                                          value=[0.5]), odd, zeros]
    for df in days:
        _assert_identical(compute_behaviour(df, DAY, p), _ref_compute_behaviour(df, DAY, p))


@pytest.mark.parametrize("seed", range(3))
def test_an_arrow_day_computes_as_its_tidy_frame(tmp_path, seed):
    # the step reads arrow tables (ArrowDay); compute_behaviour reads their columns directly
    rng = np.random.default_rng(200 + seed)
    p = config(tmp_path, **FAST_CONFIGS[1]).params
    df = _random_day(rng, 1, ["hourly", "bursty", "random"][seed], 4)
    table = tidy.to_arrow(df)
    if seed == 2:               # two chunks with the same dictionary
        import pyarrow as pa

        table = pa.concat_tables([table.slice(0, 40), table.slice(40)])
        assert table.column("sensor").num_chunks == 2
    prev = tidy.to_arrow(series([0.7, 0.8], start="2026-01-19T23:59:58Z", flags=[5, 0], sensor="m1__norm"))
    from pyjama import behaviour

    assert behaviour._Columns.from_arrow(table, "d") is not None       # the arrow path, not the frame
    fast = compute_behaviour(ArrowDay(table, "d"), DAY, p, previous=ArrowDay(prev, "d"))
    frame = compute_behaviour(tidy.from_arrow(table, "d"), DAY, p, previous=tidy.from_arrow(prev, "d"))
    _assert_identical(fast, frame)
    _assert_identical(fast, _ref_compute_behaviour(tidy.from_arrow(table, "d"), DAY, p,
                                                   previous=tidy.from_arrow(prev, "d")))


def test_the_step_reads_arrow_days_and_keep_still_sees_the_input_series(tmp_path):
    from pyjama.steps import edge_reader
    from pyjama.steps.behaviour import BehaviourStep, read_day_rows

    df = tidy.concat([series([0.8] * 5, sensor="m0__norm"),
                      series([12.0] * 5, sensor="temp", domain="environment")])
    io.write_table(tmp_path / "day.parquet", tidy.to_arrow(df), {})
    day = read_day_rows(tmp_path / "day.parquet", "d", DAY)
    assert isinstance(day, ArrowDay) and len(day) == 10
    edge = BehaviourStep.readers["previous"](tmp_path / "day.parquet", "d", "2026-01-21")
    assert isinstance(edge, ArrowDay) and len(edge) == 0
    assert len(edge_reader("previous", "13h")(tmp_path / "day.parquet", "d", "2026-01-21")) == 10           # 12:00 is not within the hour before 2026-01-21
    step = BehaviourStep()
    st = SimpleNamespace(params=config(tmp_path).params, get=lambda k, d=None: {"keep": "__norm$"}.get(k, d))
    tables, counts = step.compute({"data": day, "previous": []}, st, "d", DAY)
    tables, counts = step.pass_on(st, {"data": day}, tables, counts)
    assert "temp" not in set(tables["data"]["sensor"])               # an input series keep did not match
    assert counts["rejected"] == {BehaviourStep.KEEP_REASON: 5}



# ---------------------------------------------------------------- the previous implementation (8b14dc0)

def _ref_trailing_reference(x: np.ndarray, window_s: float, period: float) -> np.ndarray:
    n = max(int(round(window_s / period)), 1)
    if x.size == 0:
        return x.copy()
    med = pd.DataFrame(x.T).rolling(n, min_periods=1).median().shift(1).to_numpy().T
    return med


def _ref_noise_sigma(x: np.ndarray, flags: np.ndarray, state=None) -> np.ndarray:
    out = np.full(x.shape[0], np.nan)
    for r in range(x.shape[0]):
        measured = (flags[r] == int(Flag.OK)) & np.isfinite(x[r])
        v = x[r][measured & (state[r] == OPEN)] if state is not None else np.zeros(0)
        if len(v) < 10:
            v = x[r][measured]
        if len(v) >= 10:
            d = np.diff(v)
            out[r] = 1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0)
    return out


def _ref_select_sensors(df: pd.DataFrame, domain: str, pattern: str) -> list:
    rx = re.compile(pattern)
    if not len(df):
        return []
    names = df.loc[(df["domain"] == domain).to_numpy(), "sensor"].unique()
    return sorted(str(s) for s in names if rx.search(str(s)))


def _ref_ts_us(ts: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(ts).as_unit("us").asi8


def _ref_us_to_ts(us: np.ndarray) -> pd.Series:
    return pd.Series(np.asarray(us, dtype=np.int64).astype("datetime64[us]")).dt.tz_localize("UTC")


def _ref_to_grid(df: pd.DataFrame, domain: str, sensors: list, day: str, period_us: int):
    n_slots = DAY_US // period_us
    day_start = pd.Timestamp(day, tz="UTC").value // 1000
    code_of = {s: i for i, s in enumerate(sensors)}
    sensor = df["sensor"]
    cats = [str(c) for c in sensor.cat.categories]
    row_of_cat = np.array([code_of.get(c, -1) for c in cats] + [-1], dtype=np.int64)
    row_all = row_of_cat[sensor.cat.codes.to_numpy()]        # code -1 (NaN) maps to the last: -1
    mask = (row_all >= 0) & (df["domain"] == domain).to_numpy() if len(df) else np.zeros(0, bool)
    rows = row_all[mask]
    ts_us = _ref_ts_us(df["ts"])[mask] - day_start
    slot, rem = np.divmod(ts_us, period_us)
    bad = (rem != 0) | (slot < 0) | (slot >= n_slots)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        first = pd.Timestamp(int(ts_us[i] + day_start), unit="us", tz="UTC")
        raise UserError(f"{int(bad.sum())} samples of {sensors[rows[i]]} are not on the "
                        f"{period_us / 1e6:g} s grid of day {day} (first: "
                        f"{first.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}); 60_behaviour needs "
                        "the regular grid of 40_resample ($.sample_period)")
    x = np.full((len(sensors), n_slots), np.nan)
    flags = np.full((len(sensors), n_slots), int(Flag.MISSING), dtype=np.uint8)
    present = np.zeros((len(sensors), n_slots), dtype=bool)
    present[rows, slot] = True
    if int(present.sum()) != len(rows):
        raise UserError(f"duplicate timestamps in day {day}; 60_behaviour needs one sample per "
                        "sensor and grid time (run 20_split / 40_resample first)")
    val = df["value"].to_numpy(dtype=float)[mask]
    flg = df["quality_flag"].to_numpy(dtype=np.uint8)[mask]
    usable = np.isin(flg, USABLE_FLAGS) & np.isfinite(val)
    x[rows, slot] = np.where(usable, val, np.nan)
    flags[rows, slot] = flg
    return x, flags, present, slot, rows, mask


def _ref_edge_grid(frame, domain: str, sensors: list, day: str, period_us: int, side: str, h: int):
    x = np.full((len(sensors), h), np.nan)
    flags = np.full((len(sensors), h), int(Flag.MISSING), dtype=np.uint8)
    if frame is None or not len(frame) or h < 1 or not sensors:
        return x, flags
    frame = tidy.conform(frame)
    day_start = pd.Timestamp(day, tz="UTC").value // 1000
    base = day_start - h * period_us if side == "previous" else day_start + DAY_US
    code_of = {s_: i for i, s_ in enumerate(sensors)}
    sensor = frame["sensor"]       # categorical (tidy.conform): map the categories, not the rows
    of_cat = np.array([code_of.get(str(c), -1) for c in sensor.cat.categories] + [-1], dtype=np.int64)
    rows = of_cat[sensor.cat.codes.to_numpy()]
    keep = (rows >= 0) & (frame["domain"] == domain).to_numpy()
    slot, rem = np.divmod(_ref_ts_us(frame["ts"]) - base, period_us)
    keep &= (rem == 0) & (slot >= 0) & (slot < h)
    val = frame["value"].to_numpy(dtype=float)[keep]
    flg = frame["quality_flag"].to_numpy(dtype=np.uint8)[keep]
    r, c = rows[keep], slot[keep]
    x[r, c] = np.where(np.isin(flg, USABLE_FLAGS) & np.isfinite(val), val, np.nan)
    flags[r, c] = flg
    return x, flags


def _ref_animal_status(x, flags, present, sensors, p, dur, period, day, device):
    n = len(sensors)
    status = np.full(n, "ok", dtype=object)
    warn = []
    usable = ~np.isnan(x)
    n_use = usable.sum(axis=1) if n else np.zeros(0, int)
    n_rec = present.sum(axis=1) if n else np.zeros(0, int)
    n_f3 = (present & (flags == int(Flag.OUT_OF_RANGE))).sum(axis=1) if n else np.zeros(0, int)
    n_rec = (present & (flags != int(Flag.MISSING))).sum(axis=1) if n else np.zeros(0, int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rng = np.nanmax(x, axis=1) - np.nanmin(x, axis=1) if x.size else np.zeros(0)
    for r, name in enumerate(sensors):
        where = f"{device}/{name} {day}"
        if n_use[r] == 0 and n_rec[r] and n_f3[r] * 2 >= n_rec[r]:
            status[r] = "span_unknown"
            warn.append(f"{where}: span unknown / not closing: {n_f3[r]} of {n_rec[r]} samples have no "
                        "normalised opening (flag 3 from 50_normalise); closures not counted")
        elif n_use[r] == 0:
            status[r] = "no_data"
            warn.append(f"{where}: no usable sample; closures not counted")
        elif n_use[r] * period < dur["min_usable"] - 1e-9:
            status[r] = "too_few_samples"
            warn.append(f"{where}: {n_use[r] * period:g} s of usable samples, below $.active.min_usable "
                        f"{dur['min_usable']:g} s; closures not counted")
        elif rng[r] < p["active"]["min_range"] - 1e-12:
            status[r] = "flat"
            warn.append(f"{where}: flat: opening range {rng[r]:.3g} below $.active.min_range "
                        f"{p['active']['min_range']:g}; closures not counted")
    return status, warn


def _ref_sparse_columns(present: np.ndarray, keep_gap: int) -> np.ndarray | None:
    empty = ~present.any(axis=0)          # no animal: every column is empty
    if not empty.any():
        return None
    idx = np.arange(present.shape[1])
    last_occupied = np.maximum.accumulate(np.where(~empty, idx, -1))
    keep = ~empty | (idx - last_occupied - 1 < keep_gap)
    return np.flatnonzero(keep)


def _ref_compute_behaviour(df: pd.DataFrame, day: str, p: dict, previous: pd.DataFrame | None = None,
                      next: pd.DataFrame | None = None, sparse: bool | None = None) -> BehaviourResult:
    df = tidy.conform(df) if len(df) else tidy.empty()
    dur = read_durations(p, "config")
    period = dur["period"]
    period_us = int(round(period * 1e6))
    n_slots = DAY_US // period_us
    sensors = _ref_select_sensors(df, p["domain"], p["sensors"])
    x, flags, present, slot, rows, mask = _ref_to_grid(df, p["domain"], sensors, day, period_us)
    h = round(dur["velocity"] / (2 * period))
    cols = None
    if sparse is not False:
        keep_gap = max(int(round(dur["reference"] / period)), 1) + 2 * h + 2
        cols = _ref_sparse_columns(present, keep_gap)
        if cols is not None and sparse is None and 2 * len(cols) > n_slots:
            cols = None
    if cols is not None:        # the grid's columns, a slot's column: cols[c] = its slot of the day
        x, flags, present = x[:, cols], flags[:, cols], present[:, cols]
        grid_slot = np.searchsorted(cols, slot)
    else:
        cols, grid_slot = np.arange(n_slots), slot
    n_grid = len(cols)
    sp = p["state"]
    raw_state = apply_hysteresis(classify_opening(x, sp["closed_below"], sp["open_above"]))
    state = enforce_min_duration(raw_state, dur["min_duration"], period)
    reference = _ref_trailing_reference(x, dur["reference"], period)
    x_prev, f_prev = _ref_edge_grid(previous, p["domain"], sensors, day, period_us, "previous", h)
    x_next, f_next = _ref_edge_grid(next, p["domain"], sensors, day, period_us, "next", h)
    velocity = compute_velocity(np.concatenate([x_prev, x, x_next], axis=1), dur["velocity"],
                                period)[:, h:h + n_grid]
    mp = p["micro_closure"]
    sigma = _ref_noise_sigma(x, flags, state)
    status, warn = _ref_animal_status(x, flags, present, sensors, p, dur, period, day,
                                 str(df["device_id"].iloc[0]) if len(df) else "?")
    counted = status == "ok"
    closures = find_closures(state, x, reference, period)
    micro = find_micro_closures(state, x, reference, period, mp["min_drop"], dur["micro_max"],
                                sigma, mp["noise_factor"], dur["micro_min"],
                                measured=(flags == int(Flag.OK)) & ~np.isnan(x),
                                min_samples=int(mp.get("min_samples", 1)),
                                release=float(mp.get("release", 1.0)))
    # an animal without a trustworthy opening (see animal_status) gets no events
    closures = closures[counted[closures["row"].to_numpy()]] if len(closures) else closures
    micro = micro[counted[micro["row"].to_numpy()]] if len(micro) else micro

    # ---- daily summary per animal
    usable = ~np.isnan(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rng = np.nanmax(x, axis=1) - np.nanmin(x, axis=1) if x.size else np.zeros(0)
        speed = np.abs(velocity)
        v_mean = np.nanmean(speed, axis=1) if x.size else np.zeros(0)
        v_p99 = np.nanpercentile(speed, 99, axis=1) if x.size else np.zeros(0)
    active = np.where(np.isnan(rng), False, rng >= p["active"]["min_range"] - 1e-12) & counted
    n_cl = np.bincount(closures["row"], minlength=len(sensors)) if len(sensors) else np.zeros(0, int)
    sum_cl = np.bincount(closures["row"], weights=closures["duration_s"], minlength=len(sensors)) \
        if len(sensors) else np.zeros(0)
    n_mc = np.bincount(micro["row"], minlength=len(sensors)) if len(sensors) else np.zeros(0, int)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_cl = np.where(n_cl > 0, sum_cl / np.maximum(n_cl, 1), np.nan)
    n_open = (state == OPEN).sum(axis=1)
    n_closed = (state == CLOSED).sum(axis=1)
    daily = pd.DataFrame({
        "sensor": sensors,
        "samples_expected": np.full(len(sensors), n_slots, dtype=np.int64),
        "samples_usable": usable.sum(axis=1).astype(np.int64),
        "share_open": np.where(counted, n_open / n_slots, np.nan),
        "share_closed": np.where(counted, n_closed / n_slots, np.nan),
        "share_unknown": np.where(counted, (n_slots - n_open - n_closed) / n_slots, np.nan),
        "share_missing": (n_slots - usable.sum(axis=1)) / n_slots,
        "closures": pd.Series(np.where(counted, n_cl, 0), dtype="Int64").where(counted),
        "closure_mean_duration_s": np.where(counted, mean_cl, np.nan).astype(float),
        "micro_closures": pd.Series(np.where(counted, n_mc, 0), dtype="Int64").where(counted),
        "velocity_abs_mean": np.asarray(v_mean, float),
        "velocity_abs_p99": np.asarray(v_p99, float),
        "range": np.asarray(rng, float),
        "active": np.asarray(active, bool),
        "noise_sd": np.asarray(sigma, float),
        "status": np.asarray(status, dtype=object),
    }, columns=DAILY_COLUMNS)

    # ---- events table (per-animal) + synchronised closures (per device)
    day_us = pd.Timestamp(day, tz="UTC").value // 1000

    def at(slots):
        return _ref_us_to_ts(day_us + np.asarray(slots, dtype=np.int64) * period_us)

    def animal_events(kind, ev):         # an event's samples are consecutive slots of the day
        start_slot = cols[ev["start_slot"].to_numpy(dtype=np.int64)]
        return pd.DataFrame({
            "kind": kind, "sensor": [sensors[r] for r in ev["row"]],
            "start": at(start_slot), "end": at(start_slot + ev["n"].to_numpy(dtype=np.int64)),
            "duration_s": ev["duration_s"].astype(float).to_numpy(),
            "depth": ev["depth"].astype(float).to_numpy(),
            "cut_start": ev["cut_start"].astype(bool).to_numpy(),
            "cut_end": ev["cut_end"].astype(bool).to_numpy(),
            "n_animals": 1, "share_active": np.nan, "animals": [sensors[r] for r in ev["row"]],
        }, columns=EVENT_COLUMNS)

    frames = [animal_events("closure", closures), animal_events("micro_closure", micro)]
    sy = p["sync"]
    cand = closures[(~closures["cut_start"]) & active[closures["row"].to_numpy()]] if len(closures) else closures
    n_active = int(active.sum())
    syncs = []
    if len(cand):
        slots = cols[cand["start_slot"].to_numpy(dtype=np.int64)]
        starts_s = slots * period
        groups, order = find_sync_closures(starts_s, cand["row"].to_numpy(), n_active, dur["sync"],
                                           sy["min_share"], sy["min_animals"])
        t_sorted, a_sorted, slot_sorted = starts_s[order], cand["row"].to_numpy()[order], slots[order]
        for i0, i1 in groups:
            who = sorted({sensors[r] for r in a_sorted[i0:i1]})
            t0, t1 = at([slot_sorted[i0], slot_sorted[i1 - 1]])
            syncs.append({"kind": "sync_closure", "sensor": None, "start": t0, "end": t1,
                          "duration_s": float(t_sorted[i1 - 1] - t_sorted[i0]), "depth": np.nan,
                          "cut_start": False, "cut_end": False, "n_animals": len(who),
                          "share_active": len(who) / n_active, "animals": ",".join(who)})
    if syncs:
        frames.append(pd.DataFrame(syncs, columns=EVENT_COLUMNS))
    frames = [f for f in frames if len(f)]
    events = pd.concat(frames, ignore_index=True) if frames else _ref_empty_events()
    events = events.astype({"duration_s": float, "depth": float, "share_active": float,
                            "n_animals": np.int64, "cut_start": bool, "cut_end": bool})
    events["_k"] = events["kind"].map({k: i for i, k in enumerate(EVENT_KINDS)})
    events["_s"] = events["sensor"].fillna("")
    events = events.sort_values(["_k", "_s", "start"], kind="stable").drop(columns=["_k", "_s"])
    events = events.reset_index(drop=True)

    # ---- per device and day
    expected = len(sensors) * n_slots
    recorded = int((present & ~np.isin(flags, (int(Flag.MISSING), int(Flag.INTERPOLATED)))).sum())
    n_usable = int(usable.sum())
    device_daily = pd.DataFrame([{
        "animals": len(sensors), "active_animals": n_active, "samples_expected": expected,
        "samples_recorded": recorded, "samples_usable": n_usable,
        "completeness_pct": 100.0 * recorded / expected if expected else np.nan,
        "usable_pct": 100.0 * n_usable / expected if expected else np.nan,
        "closures": int(len(closures)), "micro_closures": int(len(micro)), "sync_closures": len(syncs),
    }], columns=DEVICE_DAILY_COLUMNS)

    # ---- derived per-sample series back into the tidy table
    data = _ref_add_derived_series(df, mask, rows, grid_slot, sensors, state, velocity, flags,
                              dur["velocity"], period, edge_flags=(f_prev, f_next))
    counts = {"rows_in": len(df), "rows_out": len(df), "rejected": {},
              "rows_added": int(len(data) - len(df)), "animals": len(sensors),
              "active_animals": n_active, "warnings": warn,
              "status": {k: int((status == k).sum()) for k in STATUSES if (status == k).any()},
              "events": {"closure": int(len(closures)), "micro_closure": int(len(micro)),
                         "sync_closure": len(syncs)}}
    return BehaviourResult(data, events, daily, device_daily, counts)


def _ref_add_derived_series(df, mask, rows, slot, sensors, state, velocity, flags, window_s, period,
                       edge_flags=None):
    from pandas.api.types import union_categoricals

    if not mask.any():
        return _ref_sorted_tidy(tidy.conform(df))
    df = tidy.conform(df)
    sub = df.loc[mask]
    st = state[rows, slot].astype(float)
    st[st == UNKNOWN] = np.nan
    interp = flags == int(Flag.INTERPOLATED)
    h = int(round(window_s / (2 * period)))
    n_an = interp.shape[0]
    pre, post = (np.zeros((n_an, h), bool), np.zeros((n_an, h), bool)) if edge_flags is None else \
        (edge_flags[0] == int(Flag.INTERPOLATED), edge_flags[1] == int(Flag.INTERPOLATED))
    c = np.concatenate([np.zeros((n_an, 1)), np.cumsum(np.concatenate([pre, interp, post], axis=1), axis=1)],
                       axis=1)
    near = (c[:, 2 * h + 1:] - c[:, :-2 * h - 1]) > 0    # an interpolated sample within +-h
    vel = velocity[rows, slot]

    def flag_of(values, interp_mask):
        return np.where(np.isnan(values), int(Flag.MISSING),
                        np.where(interp_mask, int(Flag.INTERPOLATED), int(Flag.OK))).astype(np.uint8)

    frames = (df, sub, sub)

    def stack(name, renames=(None, None, None)):
        cats = [f[name].array if r is None else f[name].array.rename_categories(r)
                for f, r in zip(frames, renames)]
        return union_categoricals(cats, sort_categories=True)

    out = pd.DataFrame({
        "ts": _ref_us_to_ts(np.concatenate([_ref_ts_us(f["ts"]) for f in frames])),
        "device_id": stack("device_id"), "domain": stack("domain"),
        "sensor": stack("sensor", (None, lambda c: f"{c}__state", lambda c: f"{c}__velocity")),
        "value": np.concatenate([df["value"].to_numpy(), st, vel]),
        "quality_flag": np.concatenate([df["quality_flag"].to_numpy(), flag_of(st, interp[rows, slot]),
                                        flag_of(vel, near[rows, slot])]),
    })
    return _ref_sorted_tidy(out)


def _ref_sorted_tidy(df: pd.DataFrame) -> pd.DataFrame:
    df = tidy.conform(df)
    if not len(df):
        return df
    cats = df["sensor"].cat.categories
    rank = np.argsort(np.argsort(np.asarray([str(c) for c in cats], dtype=object), kind="stable"))
    order = np.lexsort((_ref_ts_us(df["ts"]), rank[df["sensor"].cat.codes.to_numpy()]))
    return df.iloc[order].reset_index(drop=True)


def _ref_empty_events() -> pd.DataFrame:
    return pd.DataFrame({"kind": pd.Series([], dtype=object), "sensor": pd.Series([], dtype=object),
                         "start": pd.Series([], dtype="datetime64[us, UTC]"),
                         "end": pd.Series([], dtype="datetime64[us, UTC]"),
                         "duration_s": pd.Series([], dtype=float), "depth": pd.Series([], dtype=float),
                         "cut_start": pd.Series([], dtype=bool), "cut_end": pd.Series([], dtype=bool),
                         "n_animals": pd.Series([], dtype=np.int64),
                         "share_active": pd.Series([], dtype=float),
                         "animals": pd.Series([], dtype=object)}, columns=EVENT_COLUMNS)


def test_derived_pieces_spelled_out():
    """Input sensors b (codes 1, rows 0-1) then a (code 0, rows 2-4), only a selected: the
    output a, a__state, a__velocity, b in name order, each one slice of its part."""
    from pyjama.behaviour import _derived_pieces

    # output categories a, a__state, a__velocity, b, b__state, b__velocity: codes 0..5
    sen_map = np.array([[0, 3, -1], [1, 4, -1], [2, 5, -1]])
    rank = np.arange(6)
    codes, ts = np.array([1, 1, 0, 0, 0]), np.array([5, 6, 1, 2, 2])
    mask = np.array([0, 0, 1, 1, 1], bool)
    assert _derived_pieces(codes, ts, mask, sen_map, rank) == [
        (0, 2, 5, 0, 0), (1, 2, 5, 0, 1), (2, 2, 5, 0, 2), (0, 0, 2, 0, 3)]
    assert _derived_pieces(np.array([1, 0, 1]), np.array([1, 1, 2]), np.ones(3, bool), sen_map, rank) is None
    assert _derived_pieces(codes, np.array([5, 6, 2, 1, 3]), mask, sen_map, rank) is None   # time back
    assert _derived_pieces(codes, ts, np.array([0, 0, 1, 0, 1], bool), sen_map, rank) is None  # part of a
    assert _derived_pieces(np.array([0, -1]), np.array([1, 2]), np.ones(2, bool), sen_map, rank) is None
    clash = np.array([[0, 1, -1], [1, 4, -1], [2, 5, -1]])       # b is named a__state
    assert _derived_pieces(codes, ts, np.ones(5, bool), clash, rank) is None


@pytest.mark.parametrize("seed", range(3))
def test_derived_rows_by_slices_equal_the_sorted_rows(tmp_path, seed, monkeypatch):
    """60's output rows copied as one slice per output sensor are those of the stable sort,
    bit for bit, on random days in blocks (and shuffled ones, which sort), and on a day with
    an input sensor named like a derived one (which sorts)."""
    from pyjama import behaviour

    rng = np.random.default_rng(300 + seed)
    p = config(tmp_path, **FAST_CONFIGS[seed % len(FAST_CONFIGS)]).params
    period = int(pd.Timedelta(p["sample_period"]).total_seconds())
    days = [_random_day(rng, period, kind, int(rng.integers(1, 5))) for kind in ("minute", "bursty", "random")]
    env_first = days[0].sort_values("domain", kind="stable", ascending=False).reset_index(drop=True)
    assert env_first["domain"].iloc[0] == "environment"   # an unselected run before the animals'
    days.append(env_first)
    clash = _random_day(rng, period, "minute", 2)
    clash["sensor"] = clash["sensor"].cat.rename_categories({"temp": "m0__norm__state"})
    days.append(clash)
    used, pieces = [], behaviour._derived_pieces
    monkeypatch.setattr(behaviour, "_derived_pieces", lambda *a: used.append(pieces(*a) is not None) or pieces(*a))
    got = [compute_behaviour(df, DAY, p) for df in days]
    assert True in used and used[-1] is False       # both ways were taken; the clash sorted
    monkeypatch.setattr(behaviour, "_derived_pieces", lambda *a: None)
    for df, new in zip(days, got):
        _assert_identical(new, compute_behaviour(df, DAY, p))
