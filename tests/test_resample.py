"""40_resample: the grid rules as a specification (tiny series, expected grids written beside them).

Most tests use an hourly grid (24 cells a day) so a whole day's grid fits on one line;
the gap tests use the real 1 s grid. Day D = 2026-01-20 (UTC).
"""
import json

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from pyjama import io, resample, tidy
from pyjama.pipeline import load_step_config
from pyjama.errors import UserError
from pyjama.steps import get_step

DAY = "2026-01-20"
D = pd.Timestamp(DAY, tz="UTC").value      # ns
S = 10**9
H = 3600 * S
nan = np.nan


def at(*hhmmss):
    """'01:30' or '23:59:59' (on day D) → ns; '+1 00:00:05' is on day D+1."""
    out = []
    for text in hhmmss:
        extra = 0
        if text.startswith("+1 "):
            extra, text = 86400 * S, text[3:]
        parts = [int(p) for p in text.split(":")] + [0]
        out.append(D + extra + (parts[0] * 3600 + parts[1] * 60 + parts[2]) * S)
    return np.array(out, dtype=np.int64)


def hourly(ts, values, qflags, **kw):
    """The whole hourly grid of day D (every cell written): (values, flags, counts)."""
    rule = {"reduce": "mean", "fill": "linear", "max_gap_ns": 2 * H}
    rule.update(kw)
    cells, grid, flags, c = resample.resample_sensor(np.asarray(ts), np.asarray(values, float),
                                                     np.asarray(qflags, np.uint8), D, H, **rule)
    assert_array_equal(cells, np.arange(24))
    return grid, flags, c


def dense(ts, values, freq=S, day=D, max_gap=10 * S):
    """resample_sensor on a 1 s grid, every cell written: (values, flags, counts)."""
    cells, grid, flags, c = resample.resample_sensor(ts, values, np.zeros(len(values), np.uint8), day, freq,
                                                     "mean", "linear", max_gap)
    assert_array_equal(cells, np.arange(86400 * S // freq))
    return grid, flags, c


def fill_dense(values, fillable, max_gap, method):
    """fill_gaps on a grid given cell by cell (NaN = no usable value; ``fillable`` False on
    a NaN = a flagged cell) → (the grid with its fills, mask of the cells filled)."""
    values = np.asarray(values, float)
    usable = ~np.isnan(values)
    blocked = np.flatnonzero(~usable & ~np.asarray(fillable))
    cells, new = resample.fill_gaps(np.flatnonzero(usable), values[usable], blocked, max_gap, method)
    out = values.copy()
    out[cells] = new
    mask = np.zeros(len(values), bool)
    mask[cells] = True
    return out, mask


# ---------------------------------------------------------------- cells and reductions

def test_cells_are_left_closed_and_labelled_by_their_start():
    ts = np.array([D, D + 999_999_999, D + S, D + 86399 * S + S // 2])
    assert_array_equal(resample.assign_cells(ts, D, S), [0, 0, 1, 86399])


@pytest.mark.parametrize("method, want", [
    ("mean", [3.0, nan, 5.0]),      # (1 + 2 + 6) / 3
    ("median", [2.0, nan, 5.0]),
    ("first", [1.0, nan, 5.0]),     # earliest in time
    ("last", [6.0, nan, 5.0]),      # latest in time
])
def test_several_samples_in_a_cell_are_reduced_by_the_declared_method(method, want):
    cells = np.array([0, 0, 0, 2])
    values = np.array([1.0, 2.0, 6.0, 5.0])
    assert_allclose(resample.reduce_cells(cells, values, 3, method), want)


# ---------------------------------------------------------------- filling

HOLES = np.array([1, nan, nan, 4, nan, nan, nan, nan, 10, nan])
#                    ^2-cell hole^     ^--4-cell hole--^      ^touches the end


@pytest.mark.parametrize("method, max_gap, want", [
    ("linear", 2, [1, 2, 3, 4, nan, nan, nan, nan, 10, nan]),          # 4 cells > 2: left empty
    ("linear", 4, [1, 2, 3, 4, 5.2, 6.4, 7.6, 8.8, 10, nan]),          # 4 + 6·(1…4)/5
    ("nearest", 2, [1, 1, 4, 4, nan, nan, nan, nan, 10, nan]),         # the nearer side
    ("nearest", 4, [1, 1, 4, 4, 4, 4, 10, 10, 10, nan]),               # a tie goes to the earlier one
    ("previous", 2, [1, 1, 1, 4, nan, nan, nan, nan, 10, nan]),
    ("none", 4, list(HOLES)),
    ("linear", 0, list(HOLES)),                                        # max_gap 0: never fill
])
def test_short_holes_are_filled_and_edges_never(method, max_gap, want):
    got, filled = fill_dense(HOLES, np.isnan(HOLES), max_gap, method)
    assert_allclose(got, want)
    assert_array_equal(filled, np.isnan(HOLES) & ~np.isnan(np.asarray(want)))


def test_nearest_breaks_a_tie_towards_the_earlier_value():
    values = np.array([0, nan, nan, nan, 8])
    got, _ = fill_dense(values, np.isnan(values), 3, "nearest")
    assert_allclose(got, [0, 0, 0, 8, 8])      # cell 2 is 2 cells from both: the earlier wins


def test_a_flagged_cell_counts_in_the_gap_but_is_not_filled():
    values = np.array([10, nan, nan, 40])
    fillable = np.array([False, False, True, False])   # cell 1 holds a flagged value
    got, filled = fill_dense(values, fillable, 2, "linear")
    assert_allclose(got, [10, nan, 30, 40])            # 10 + 30·2/3: the spike's value is not used
    assert_array_equal(filled, [False, False, True, False])
    got, _ = fill_dense(values, fillable, 1, "linear")   # 2 cells without a usable value > 1
    assert_allclose(got, [10, nan, nan, 40])


# ---------------------------------------------------------------- one sensor, one day

def test_one_sensor_on_an_hourly_grid():
    ts = at("00:10", "00:40", "01:00", "02:00", "04:00", "04:30", "05:00", "08:00", "09:00", "09:30")
    x = [10, 20, 30, 500, 40, 4095, nan, 50, 60, 70]
    f = [0, 0, 0, 2, 0, 3, 1, 0, 6, 2]
    grid, flags, c = hourly(ts, x, f)
    want_x = [15, 30, nan, 30 + 10 * 2 / 3, 40, nan, nan, nan, 50, nan] + [nan] * 14
    want_f = [0, 0, 2, 5, 0, 1, 1, 1, 0, 6] + [1] * 14
    # 0: mean of 10 and 20. 2: the spike stays NaN with its flag. 3: a hole; cells 2–3 have
    # no usable value (2 h ≤ max_gap 2 h) → filled linearly between 30 (cell 1) and 40
    # (cell 4), the spike's 500 unused. 4: 40 — the 4095 (flag 3) in the same cell is left
    # out. 5–7: only a NaN sample, then nothing: 3 h > 2 h → missing (1), all three.
    # 9: an excluded (6) and a spike (2) sample: NaN, flag 6 wins. 10–23: nothing until the
    # end of the day → missing.
    assert_allclose(grid, want_x)
    assert_array_equal(flags, want_f)
    assert c == {"out": 6, "merged": 2, "flagged_unused": 1, "nan_in": 1, "outside": 0,
                 "filled": 1, "missing": 17, "flagged": 2, "expected": 24, "not_stored": 0}


def test_empty_single_and_all_flagged_sensors():
    grid, flags, c = hourly(at(), [], [])
    assert np.isnan(grid).all() and (flags == 1).all() and len(flags) == 24 and c["out"] == 0
    grid, flags, c = hourly(at("05:30"), [7.0], [0])
    assert_allclose(grid, [nan] * 5 + [7.0] + [nan] * 18)     # one value: nothing to fill from
    assert_array_equal(flags, [1] * 5 + [0] + [1] * 18)
    grid, flags, c = hourly(at("00:00", "01:00", "02:00"), [1, 2, 3], [2, 4, 3])
    assert np.isnan(grid).all()
    assert_array_equal(flags, [2, 4, 3] + [1] * 21)           # flags kept, the rest missing
    assert c["flagged"] == 3 and c["filled"] == 0


def test_a_10s_gap_is_filled_and_a_5min_gap_is_missing_from_its_first_second():
    sec = np.arange(0, 1201)                                    # 00:00:00 … 00:20:00
    keep = ~(((sec >= 60) & (sec < 70)) | ((sec >= 600) & (sec < 900)))
    ts = D + sec[keep] * S
    grid, flags, c = dense(ts, sec[keep].astype(float))
    assert len(grid) == 86400                                   # 00:00:00 … 23:59:59
    assert_array_equal(flags[60:70], [5] * 10)                  # 10 s ≤ max_gap 10 s: filled
    assert_allclose(grid[60:70], np.arange(60, 70))             # linear in time: the ramp itself
    assert_array_equal(flags[600:900], [1] * 300)               # 5 min: missing, ALL of it
    assert np.isnan(grid[600:900]).all()                        # (no "first 10 s filled")
    assert flags[599] == 0 and flags[900] == 0
    assert_array_equal(flags[1201:], [1] * (86400 - 1201))      # nothing after 00:20:00
    assert c["filled"] == 10 and c["missing"] == 300 + 86400 - 1201


def test_a_gap_across_midnight_is_missing_on_both_days():
    # day D: data 23:50:00 … 23:57:59; day D+1: data from 00:00:05. The gap runs from
    # 23:58:00 to 00:00:04: each day's grid holds its part, flagged 1 up to its own edge
    # — even the 5 s at the start of D+1 (the other side of midnight is another partition).
    sec_d = np.arange(85800, 86280)
    _, flags, _ = dense(D + sec_d * S, np.full(480, 3.0))
    assert_array_equal(flags[86280:], [1] * 120)                # 23:58:00 … 23:59:59
    assert_array_equal(flags[85800:86280], [0] * 480)
    d1 = D + 86400 * S
    sec_d1 = np.arange(5, 601)
    _, flags, _ = dense(d1 + sec_d1 * S, np.full(596, 3.0), day=d1)
    assert_array_equal(flags[:6], [1, 1, 1, 1, 1, 0])           # 00:00:00 … 00:00:04 missing


# ---------------------------------------------------------------- the whole partition

PARAMS = {
    "domains": {"bio_signal": {"freq": "1h", "reduce": "mean", "fill": "linear", "max_gap": "1h"},
                "environment": {"freq": "6h", "reduce": "median"}},
    "default_rule": {"freq": "1D"},
    "sensors": {"m1": {"reduce": "last"}},
}


def frame(rows):
    """rows: (sensor, domain, 'HH:MM', value, flag)."""
    return tidy.frame(ts=pd.Series(pd.to_datetime(at(*[r[2] for r in rows]), utc=True)), device_id="valve01",
                      domain=[r[1] for r in rows], sensor=[r[0] for r in rows],
                      value=[r[3] for r in rows], quality_flag=[r[4] for r in rows])


def test_resample_frame_grids_each_sensor_by_its_rule_and_balances_the_ledger():
    df = frame([
        ("m1", "bio_signal", "00:00", 5.0, 0), ("m1", "bio_signal", "00:30", 9.0, 0),   # last → 9
        ("m0", "bio_signal", "00:00", 1.0, 0), ("m0", "bio_signal", "00:30", 3.0, 0),   # mean → 2
        ("m0", "bio_signal", "02:00", 4.0, 0),                                          # 01:00 filled: 3
        ("outdoor_temp", "environment", "01:00", 12.0, 0),
        ("outdoor_temp", "environment", "02:00", 14.0, 0),
        ("outdoor_temp", "environment", "03:00", 19.0, 0),                              # median 14
        ("battery", "power", "07:00", 3.7, 0),                                          # default_rule: 1D
    ])
    out, counts = resample.resample_frame(df, PARAMS, DAY)
    by = {s: g for s, g in out.groupby("sensor", observed=True)}
    assert [len(by[s]) for s in ("battery", "m0", "m1", "outdoor_temp")] == [1, 24, 24, 4]
    assert out["sensor"].astype(str).tolist() == ["battery"] + ["m0"] * 24 + ["m1"] * 24 + ["outdoor_temp"] * 4
    assert_allclose(by["m0"]["value"].to_numpy()[:4], [2, 3, 4, nan])
    assert by["m0"]["quality_flag"].tolist()[:4] == [0, 5, 0, 1]
    assert_allclose(by["m1"]["value"].to_numpy()[:2], [9, nan])
    assert_allclose(by["outdoor_temp"]["value"].to_numpy(), [14, nan, nan, nan])
    assert by["outdoor_temp"]["ts"].dt.strftime("%H:%M").tolist() == ["00:00", "06:00", "12:00", "18:00"]
    assert by["battery"]["value"].tolist() == [3.7] and by["battery"]["domain"].astype(str).tolist() == ["power"]
    assert counts["rows_in"] == 9 and counts["rows_from_samples"] == 5
    # a coarser grid combines samples into cells: not rejected (issue 12)
    assert counts["combined"] == {resample.COMBINED: 4}
    assert counts["rejected"] == {resample.FLAGGED_UNUSED: 0, resample.NAN_IN: 0, resample.OUTSIDE: 0}
    # rows out = the grid rows written; the cells made without a sample are counted as created
    assert counts["rows_out"] == len(out) == 53 == counts["rows_from_samples"] + counts["filled"] + counts["missing"]
    assert counts["created"] == {resample.CREATED_FILLED: 1, resample.CREATED_MISSING: 47}
    assert counts["filled"] == 1 and counts["flags"]["INTERPOLATED"] == 1
    io.ledger_entry("40_resample.py", f"valve01/{DAY}", **counts)   # balances, or raises


def test_resample_frame_of_an_empty_partition():
    out, counts = resample.resample_frame(tidy.empty(), PARAMS, DAY)
    assert len(out) == 0 and list(out.columns) == tidy.COLUMNS
    assert counts["rows_in"] == counts["rows_out"] == 0
    io.ledger_entry("40_resample.py", f"valve01/{DAY}", **counts)


def test_a_sample_outside_the_day_is_set_aside_by_the_ledger():
    df = frame([("m0", "bio_signal", "05:00", 1.0, 0), ("m0", "bio_signal", "+1 00:00:05", 2.0, 0)])
    out, counts = resample.resample_frame(df, PARAMS, DAY)
    assert len(out) == 24 and counts["rejected"][resample.OUTSIDE] == 1
    io.ledger_entry("40_resample.py", f"valve01/{DAY}", **counts)


def test_resampling_is_deterministic():
    df = frame([("m0", "bio_signal", "00:00", 1.0, 0), ("m1", "bio_signal", "03:00", 3.0, 2)])
    a, _ = resample.resample_frame(df, PARAMS, DAY)
    b, _ = resample.resample_frame(df.iloc[::-1].reset_index(drop=True), PARAMS, DAY)
    assert a.equals(b)                                            # input order does not matter


# ---------------------------------------------------------------- config and step

BASE = {"exposure": "X", "input_stage": "30_clean", "output_stage": "40_resampled"}
SRC = "configs/X/40_resample.json"
FREQ_ALLOWED = "a duration from 10ms to 1D that divides a day exactly, such as '100ms', '1s', '10s', '1min'"


def load(tmp_path, **params):
    path = tmp_path / "configs" / "X" / "40_resample.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**BASE, **params}))
    return load_step_config("40_resample.py", "configs/X/40_resample.json", tmp_path)


@pytest.mark.parametrize("params, message", [
    ({"domains": {"bio_signal": {"freq": "7s"}}},
     f"{SRC}: $.domains.bio_signal.freq: '7s' is not allowed; allowed: {FREQ_ALLOWED}"),
    ({"sensors": {"m0": {"freq": "1ms"}}},
     f"{SRC}: $.sensors.m0.freq: '1ms' is not allowed; allowed: {FREQ_ALLOWED}"),
    ({"default_rule": {"freq": "1"}},
     f"{SRC}: $.default_rule.freq: '1' is not allowed; allowed: {FREQ_ALLOWED}"),
    ({"domains": {"environment": {"max_gap": "ten seconds"}}},
     f"{SRC}: $.domains.environment.max_gap: 'ten seconds' is not allowed; allowed: a non-negative "
     "duration with a unit such as '10s', '5min', '2h', '1D'"),
    ({"domains": {"bio_signal": {"sparse_after": "long"}}},
     (f"{SRC}: $.domains.bio_signal.sparse_after: 'long' is not allowed; allowed: a non-negative "
      "duration with a unit such as '10s', '5min', '2h', '1D'")),
    ({"domains": {"bio_signal": {"reduce": "max"}}},
     f'{SRC}: $.domains.bio_signal.reduce: "max" is not allowed; allowed: "mean", "median", "first", "last"'),
    ({"domains": {"bio_signal": {"fill": "ffill"}}},
     f'{SRC}: $.domains.bio_signal.fill: "ffill" is not allowed; allowed: "linear", "nearest", "previous", "none"'),
    ({"grid": {}},
     f"{SRC}: $.grid: unknown key 'grid'; allowed keys: comment, default_rule, domains, exposure, "
     "input_stage, output_stage, sensors"),
])
def test_config_errors_are_one_exact_line(tmp_path, params, message):
    with pytest.raises(UserError) as exc:
        load(tmp_path, **params)
    assert str(exc.value) == message


def test_the_template_config_is_valid_and_the_step_runs_it(tmp_path):
    from pyjama.config import REPO

    text = (REPO / "configs" / "_template" / "40_resample.json").read_text().replace("{{EXPOSURE}}", "X")
    st = load(tmp_path, **{k: v for k, v in json.loads(text).items() if k not in BASE})
    df = frame([("m0", "bio_signal", "00:00:00", 1.0, 0), ("m0", "bio_signal", "00:00:10", 11.0, 0),
                ("outdoor_temp", "environment", "00:00:05", 12.0, 0)])
    tables, counts = get_step("40_resample.py").compute({"data": df}, st, "valve01", DAY)
    out = tables["data"]
    m0 = out[out["sensor"] == "m0"]
    assert counts["cells_expected"] == 86400 + 8640                # bio 1 s, environment 10 s
    assert_allclose(m0["value"].to_numpy()[:11], np.arange(1.0, 12.0))   # 9 s hole ≤ 10 s: linear
    assert counts["filled"] == 9
    # the rest of the day is one missing run > sparse_after (10 min): its two ends are written
    assert m0["ts"].dt.strftime("%H:%M:%S").tolist()[10:] == ["00:00:10", "00:00:11", "23:59:59"]
    assert m0["quality_flag"].tolist()[11:] == [1, 1] and len(out) == 13 + 3
    assert counts["cells_not_stored"] == (86400 - 13) + (8640 - 3)


def test_ledger_rows_out_are_the_next_steps_rows_in_and_downsampling_is_not_a_reject():
    """1 Hz temperature onto a 10 s grid: 10 samples per cell are combined, nothing is
    rejected, and the ledger's rows out are the rows 50_transform reads in."""
    rows = [("outdoor_temp", "environment", f"00:00:{s:02d}", 10.0 + s, 0) for s in range(20)]
    df = frame(rows)
    params = {"default_rule": {"freq": "10s", "reduce": "mean", "fill": "none", "max_gap": "0s"}}
    out, counts = resample.resample_frame(df, params, DAY)
    entry = io.ledger_entry("40_resample.py", f"valve01/{DAY}", **counts)
    assert entry["rejected"] == {}
    assert entry["combined"] == {resample.COMBINED: 18}               # 2 cells of 10 samples
    assert entry["created"] == {resample.CREATED_MISSING: 8640 - 2}
    assert entry["rows_out"] == len(out) == 8640
    assert_allclose(out["value"].to_numpy()[:3], [14.5, 24.5, nan])
    from pyjama.transform import transform_frame

    nxt, _ = transform_frame(out, [])                                    # what step 50 reads in
    assert len(nxt) == entry["rows_out"]


def test_ledger_entry_balances_created_and_combined_rows():
    io.ledger_entry("s", "p", rows_in=10, rows_out=5, combined={"c": 6}, created={"g": 1})
    with pytest.raises(AssertionError, match="does not balance"):
        io.ledger_entry("s", "p", rows_in=10, rows_out=5, combined={"c": 6})


# ---------------------------------------------------------------- sparse storage (sparse_after)

def test_a_missing_run_longer_than_sparse_after_is_stored_as_its_two_ends():
    taken = np.array([0, 5, 8])         # cells with a row from samples or a fill; 12 cells a day
    #  cells:  0  1  2  3  4  5  6  7  8  9 10 11
    #          x [run of 4 ]  x [ 2 ] x [3: to the end]
    written, not_stored = resample.missing_cells(taken, 12, 2)
    assert written.tolist() == [1, 4, 6, 7, 9, 11] and not_stored == 3      # runs > 2 cells: ends only
    assert resample.missing_cells(taken, 12, None)[0].tolist() == [1, 2, 3, 4, 6, 7, 9, 10, 11]
    written, not_stored = resample.missing_cells(taken, 12, 3)
    assert written.tolist() == [1, 4, 6, 7, 9, 10, 11] and not_stored == 2
    # 0: every run of 3 or more is cut to its ends; runs of 1 or 2 cells have no inner cell
    written, not_stored = resample.missing_cells(np.array([1, 4]), 8, 0)
    assert written.tolist() == [0, 2, 3, 5, 7] and not_stored == 1
    assert resample.missing_cells(np.arange(6), 6, 0)[0].tolist() == []     # nothing missing
    assert resample.missing_cells(np.array([], np.int64), 86400, 600)[0].tolist() == [0, 86399]


def test_a_sparse_grid_is_the_dense_grid_without_the_inner_cells_of_long_missing_runs():
    """Property (seeded random days, 1 min grid): the cells a sparse grid writes carry the
    dense grid's values and flags, and every cell left out is missing in the dense grid."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        n = int(rng.integers(0, 300))
        ts = np.sort(D + rng.integers(0, 86400, n) * S + rng.integers(0, S, n))
        x = rng.normal(10, 1, n)
        x[rng.random(n) < 0.05] = np.nan
        f = rng.choice(np.array([0, 0, 0, 0, 2, 3, 5], np.uint8), n)
        args = (ts, x, f, D, 60 * S, "mean", "linear", int(rng.integers(0, 10)) * 60 * S)
        dc, dv, df_, dcount = resample.resample_sensor(*args)
        sp = int(rng.integers(0, 30))
        sc, sv, sf, scount = resample.resample_sensor(*args, sparse_after_cells=sp)
        assert_array_equal(dc, np.arange(1440))
        assert_allclose(sv, dv[sc]) and assert_array_equal(sf, df_[sc])
        left_out = np.setdiff1d(dc, sc)
        assert (df_[left_out] == 1).all() and len(left_out) == scount["not_stored"]
        assert {k: v for k, v in scount.items() if k != "not_stored"} == \
            {k: v for k, v in dcount.items() if k != "not_stored"}


def test_sparse_after_in_cells_is_floor_of_the_duration_over_freq():
    assert resample.sparse_after_cells({"sparse_after": "10min"}, S) == 600
    assert resample.sparse_after_cells({"sparse_after": "25s"}, 10 * S) == 2    # 3 cells = 30 s > 25 s
    assert resample.sparse_after_cells({"sparse_after": None}, S) is None
    assert resample.sparse_after_cells({}, S) is None


SPARSE = {"domains": {"bio_signal": {"freq": "1h", "reduce": "mean", "fill": "linear", "max_gap": "1h",
                                     "sparse_after": "2h"}}}


def test_a_sparse_day_writes_the_samples_and_the_ends_of_each_long_gap():
    df = frame([("m0", "bio_signal", "03:00", 1.0, 0), ("m0", "bio_signal", "05:00", 3.0, 0),
                ("m0", "bio_signal", "06:00", 9.0, 2), ("m0", "bio_signal", "10:00", 4.0, 0)])
    out, counts = resample.resample_frame(df, SPARSE, DAY)
    rows = [(t.strftime("%H:%M"), v, f) for t, v, f in zip(out["ts"], out["value"], out["quality_flag"])]
    got = [(t, None if np.isnan(v) else v, f) for t, v, f in rows]
    assert got == [
        ("00:00", None, 1), ("02:00", None, 1),    # 00–02: 3 missing cells (3 h > 2 h): the two ends
        ("03:00", 1.0, 0), ("04:00", 2.0, 5),      # 04: a 1 h hole ≤ max_gap 1 h: filled
        ("05:00", 3.0, 0), ("06:00", None, 2),     # the spike stays a row (NaN, flag 2)
        ("07:00", None, 1), ("09:00", None, 1),    # 06–09 (4 h) not filled; 07–09 missing: the ends
        ("10:00", 4.0, 0),
        ("11:00", None, 1), ("23:00", None, 1),    # 11–23: 13 missing cells: the two ends
    ]
    assert counts["cells_expected"] == 24 and counts["cells_not_stored"] == 1 + 1 + 11
    assert counts["rows_out"] == len(out) == 11 == 24 - 13
    assert counts["missing"] == 3 + 3 + 13                 # every missing cell, stored or not
    assert counts["created"] == {resample.CREATED_FILLED: 1, resample.CREATED_MISSING: 6}
    # flags count the grid's cells (a share of them is a share of the day, sparse or dense)
    assert {k: v for k, v in counts["flags"].items() if v} == {"OK": 3, "MISSING": 19, "SPIKE": 1,
                                                               "INTERPOLATED": 1}
    io.ledger_entry("40_resample.py", f"valve01/{DAY}", **counts)   # balances, or raises


def _template_params(tmp_path, name, **over):
    from pyjama.config import REPO

    raw = json.loads((REPO / f"configs/_template/{name}.json").read_text().replace("{{EXPOSURE}}", "X"))
    raw.update(over)
    path = tmp_path / f"configs/X/{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw))
    return load_step_config(f"{name}.py", f"configs/X/{name}.json", tmp_path).params


def _sparse_and_dense_grids():
    """One Hall channel m0 and its opening m0__norm on the template's 1 s grid: 5 min of
    data from 12:00 (a 1 min closure, a 5 s hole), nothing until 13:00, 2 min more."""
    sec = np.r_[np.arange(43200, 43500), np.arange(46800, 46920)]
    sec = sec[(sec < 43380) | (sec >= 43385)]                   # 12:03:00–12:03:04: filled
    x = np.where((sec >= 43260) & (sec < 43320), 0.05, 0.9) + 0.01 * np.sin(sec)
    rows = [("m0__norm", "bio_signal", f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}", v, 0)
            for s, v in zip(sec, x)]
    rows += [("m0", "bio_signal", r[2], 700 - 500 * r[3], 0) for r in rows]
    df = frame(rows)
    rule = {"freq": "1s", "reduce": "mean", "fill": "linear", "max_gap": "10s"}
    dense, dc = resample.resample_frame(df, {"default_rule": {**rule, "sparse_after": None}}, DAY)
    sparse, sc = resample.resample_frame(df, {"default_rule": {**rule, "sparse_after": "10min"}}, DAY)
    return dense, sparse, dc, sc


def _on(rows, keys):
    """The rows of ``rows`` at the (sensor, ts) of ``keys``, in the order of ``keys``."""
    k = pd.MultiIndex.from_arrays([keys["sensor"].astype(str), keys["ts"]])
    r = rows.set_index([rows["sensor"].astype(str), rows["ts"]])
    return r.loc[k].reset_index(drop=True)


def test_steps_50_60_70_compute_the_same_on_a_sparse_grid(tmp_path):
    """The cells a sparse grid writes carry the same values and flags as the dense grid's,
    and 50, 60 and 70 give the same results on them: 60 puts every grid time without a row
    back as missing (1), 70's statistics use valid samples only, and 70's share_flagged
    counts the grid cells of the window (the 1 s grid, told explicitly: ``grid``), a grid
    time without a row as missing. Before: 12:00 gave 3300/3600 dense, 2/302 sparse, and a
    window inside the gap NaN sparse."""
    from pyjama.aggregate import aggregate_partition
    from pyjama.behaviour import compute_behaviour
    from pyjama.transform import transform_frame

    dense, sparse, dc, sc = _sparse_and_dense_grids()
    assert dc["cells_expected"] == sc["cells_expected"] == 2 * 86400
    # rows: 12:00:00–12:04:59 and 13:00:00–13:01:59, and the ends of the 3 missing runs
    assert len(sparse) == 2 * (300 + 120 + 2 * 3) and sc["cells_not_stored"] == 2 * 86400 - len(sparse)
    cols = ["ts", "sensor", "value", "quality_flag"]
    pd.testing.assert_frame_equal(_on(dense, sparse)[cols], sparse.reset_index(drop=True)[cols])
    assert dc["filled"] == sc["filled"] == 2 * 5 and dc["missing"] == sc["missing"]

    # 50_transform: row by row, so the sparse rows are the dense rows at the same cells
    t_rules = _template_params(tmp_path, "50_transform")["transforms"]
    t_dense, _ = transform_frame(dense, t_rules)
    t_sparse, _ = transform_frame(sparse, t_rules)
    pd.testing.assert_frame_equal(_on(t_dense, t_sparse)[cols], t_sparse.reset_index(drop=True)[cols])

    # 60_behaviour: the same states, events and daily tables
    p = _template_params(tmp_path, "60_behaviour", active={"min_range": 0.1, "min_usable": "0s"})
    b_dense, b_sparse = compute_behaviour(dense, DAY, p), compute_behaviour(sparse, DAY, p)
    assert len(b_dense.events) >= 1                                   # the 1 min closure
    pd.testing.assert_frame_equal(b_dense.events, b_sparse.events)
    pd.testing.assert_frame_equal(b_dense.daily, b_sparse.daily)
    pd.testing.assert_frame_equal(b_dense.device_daily, b_sparse.device_daily)
    assert b_sparse.daily["samples_expected"].tolist() == [86400]     # completeness stays explicit
    pd.testing.assert_frame_equal(_on(b_dense.data, b_sparse.data)[cols], b_sparse.data[cols])

    # 70_aggregate (fill_day: every window of the day, both ways), on the 1 s grid of 40
    windows = {"60s": 60, "1h": 3600}

    def one_second(domain, sensor):
        return 1_000_000

    a_dense, _ = aggregate_partition(b_dense.data, DAY, windows, sensors="^m0__norm$", fill_day=True,
                                     grid=one_second)
    a_sparse, _ = aggregate_partition(b_sparse.data, DAY, windows, sensors="^m0__norm$", fill_day=True,
                                      grid=one_second)
    for label, w in windows.items():
        d, s = a_dense[label], a_sparse[label]
        assert len(d) == len(s) == 6 * 86400 // w
        pd.testing.assert_frame_equal(d, s)
    hourly = {name: pd.Series(f["value"].to_numpy(), index=f["ts"].dt.hour.to_numpy())
              for name, f in a_sparse["1h"].groupby(a_sparse["1h"]["sensor"].astype(str), observed=True)}
    share, count = hourly["m0__norm__share_flagged"], hourly["m0__norm__count"]
    assert share[0] == share[1] == share[23] == 1.0 and count[1] == 0   # inside the gap: 1.0, count 0
    # 12:00: 300 s of data (5 s of it filled, flag 5: usable), 55 min missing; 13:00: 120 s
    assert_allclose([share[12], share[13]], [3300 / 3600, 3480 / 3600])
    assert count[12] == 300 and count[13] == 120
    # without the grid the share is over the rows present (the old rule, kept for no grid)
    old, _ = aggregate_partition(b_sparse.data, DAY, {"1h": 3600}, sensors="^m0__norm$", fill_day=True)
    o = old["1h"][old["1h"]["sensor"] == "m0__norm__share_flagged"]["value"].to_numpy()
    assert_allclose(o[12], 2 / 302) and np.isnan(o[1])


# ---------------------------------------------------------------- a week's or a month's days at once
# 40_resample computes a period's days in one call (whole_period): each day from its own
# rows, the result what the days one by one give as the runner joins them (arrow tables
# concatenated, dictionaries unified: categories in order of first appearance; counts
# merged). The tests join the day-by-day results with the runner's own functions.

def day_by_day(path, params, days):
    """What the runner writes for a period's job computed day by day: (arrow table, counts)."""
    from pyjama.io import merge_counts
    from pyjama.runner import _concat_days

    parts = [resample.resample_frame(tidy.from_arrow(io.read_day(path, d), "valve01"), params, d) for d in days]
    return (_concat_days([(d, tidy.to_arrow(out)) for d, (out, _) in zip(days, parts)], False),
            merge_counts([c for _, c in parts]))


def in_one_call(path, params, days):
    """What it writes with whole_period: the period's rows read as the runner reads them."""
    import pyarrow as pa

    table = pa.concat_tables([io.read_day(path, d) for d in days]).unify_dictionaries()
    out, counts = resample.resample_frame(tidy.from_arrow(table, "valve01"), params, days)
    return tidy.to_arrow(out), counts


def month_file(tmp_path, df):
    path = tmp_path / "device_id=valve01" / "month=2026-01" / "part.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_tidy(path, df, {})
    return path


def test_a_period_in_one_call_is_its_days_one_after_the_other(tmp_path):
    # day D: m1 and outdoor_temp; D+1: m0 and m1, each day its own grids (hourly, bio_signal;
    # 6-hourly, environment): a grid never crosses midnight
    df = frame([("m1", "bio_signal", "05:00", 1.0, 0), ("outdoor_temp", "environment", "01:00", 12.0, 0),
                ("m0", "bio_signal", "+1 00:00", 3.0, 0),         # midnight: the first of D+1
                ("m0", "bio_signal", "+1 02:00", 2.0, 0), ("m0", "bio_signal", "+1 07:00", 4.0, 0),
                ("m1", "bio_signal", "+1 23:30", 8.0, 2)])
    days = [DAY, "2026-01-21"]
    params = {"domains": {**SPARSE["domains"], "environment": {"freq": "6h", "reduce": "median"}}}
    path = month_file(tmp_path, df)
    table, counts = in_one_call(path, params, days)
    want, want_counts = day_by_day(path, params, days)
    assert io.content_digest(table) == io.content_digest(want) and counts == want_counts
    got = tidy.from_arrow(table, "valve01")
    # categories in order of first appearance: D's sorted names, then D+1's new one
    assert list(got["sensor"].cat.categories) == ["m1", "outdoor_temp", "m0"]
    assert list(got["domain"].cat.categories) == ["bio_signal", "environment"]
    rows = [(t.strftime("%d %H:%M"), s, None if np.isnan(v) else v, f)
            for t, s, v, f in zip(got["ts"], got["sensor"], got["value"], got["quality_flag"])]
    assert rows == [
        ("20 00:00", "m1", None, 1), ("20 04:00", "m1", None, 1), ("20 05:00", "m1", 1.0, 0),
        ("20 06:00", "m1", None, 1), ("20 23:00", "m1", None, 1),
        ("20 00:00", "outdoor_temp", 12.0, 0), ("20 06:00", "outdoor_temp", None, 1),   # 6 h cells,
        ("20 12:00", "outdoor_temp", None, 1), ("20 18:00", "outdoor_temp", None, 1),   # all written
        ("21 00:00", "m0", 3.0, 0), ("21 01:00", "m0", 2.5, 5), ("21 02:00", "m0", 2.0, 0),
        ("21 03:00", "m0", None, 1), ("21 06:00", "m0", None, 1), ("21 07:00", "m0", 4.0, 0),
        ("21 08:00", "m0", None, 1), ("21 23:00", "m0", None, 1),
        ("21 00:00", "m1", None, 1), ("21 22:00", "m1", None, 1), ("21 23:00", "m1", None, 2),
    ]
    assert counts["rows_in"] == 6 and counts["rows_out"] == 20 and counts["cells_expected"] == 24 + 4 + 2 * 24
    assert counts["cells_not_stored"] == 76 - 20 and counts["flags"]["SPIKE"] == 1
    io.ledger_entry("40_resample.py", "valve01/2026-01", **counts)


def random_period(rng, dense: bool):
    """A few days of a device: each day its own sensors (one joins late, one is missing on
    some days, a name in two domains), random flags, NaN, several samples per cell, a
    day without rows."""
    days = [f"2026-01-{d:02d}" for d in range(20, 24 if dense else 27)]
    step = "1s" if dense else "1h"
    n = 4 * 3600 if dense else 24
    frames = []
    for k, d in enumerate(days):
        if k == 2:
            continue                                            # no row that day
        t = pd.date_range(f"{d}T{'06' if dense else '00'}:00:00Z", periods=n, freq=step)
        t = t + pd.to_timedelta(rng.integers(0, 900 if dense else 3000, n), unit="ms" if dense else "s")
        names = [("bio_signal", f"m{i}") for i in range(3)] + [("environment", "outdoor_temp"),
                                                               ("environment", "m1")]
        if k >= 3:
            names.append(("bio_signal", "m9"))                  # joins late
        for dom, sen in names:
            if rng.random() < 0.2:
                continue                                        # missing that day
            keep = rng.random(n) < (0.9 if dense else 0.7)
            x = rng.normal(100, 5, n)
            x[rng.random(n) < 0.05] = nan
            f = rng.choice(np.array([0, 0, 0, 0, 1, 2, 3, 4, 5, 6], np.uint8), n)
            frames.append(tidy.frame(ts=t[keep], device_id="valve01", domain=dom, sensor=sen,
                                     value=x[keep], quality_flag=f[keep]))
    df = pd.concat(frames, ignore_index=True)
    df = df.iloc[rng.permutation(len(df))]                  # any order within the file
    df = df.iloc[np.argsort(df["ts"].dt.floor("D").to_numpy(), kind="stable")]   # days in order
    return tidy.conform(df.reset_index(drop=True)), days


@pytest.mark.parametrize("dense", [False, True])
def test_a_period_in_one_call_equals_its_days_one_by_one(tmp_path, dense):
    rng = np.random.default_rng(40 + dense)
    rules = [{"freq": "1h", "reduce": "mean", "fill": "linear", "max_gap": "2h", "sparse_after": "3h"},
             {"freq": "10min", "reduce": "median", "fill": "nearest", "max_gap": "30min", "sparse_after": None},
             {"freq": "1s", "reduce": "first", "fill": "previous", "max_gap": "10s", "sparse_after": "10min"},
             {"freq": "10s", "reduce": "last", "fill": "linear", "max_gap": "1min", "sparse_after": "10min"}]
    for trial in range(3):
        df, days = random_period(rng, dense)
        params = {"domains": {"bio_signal": rules[(trial + 2 * dense) % 4],
                              "environment": rules[(trial + 1) % 4]},
                  "sensors": {"m2": rules[(trial + 3) % 4]}}
        path = month_file(tmp_path / str(trial), df)
        table, counts = in_one_call(path, params, days)
        want, want_counts = day_by_day(path, params, days)
        assert table.num_rows == want.num_rows > 0
        assert io.content_digest(table) == io.content_digest(want)
        assert counts == want_counts
        io.ledger_entry("40_resample.py", "valve01/2026-01", **counts)


def test_the_step_computes_a_period_in_one_call():
    assert get_step("40_resample.py").whole_period is True
    with pytest.raises(ValueError, match="rows outside the days"):
        resample.resample_frame(frame([("m0", "bio_signal", "05:00", 1.0, 0)]), SPARSE, ["2026-01-21", "2026-01-22"])


def test_the_unusable_lookup_is_the_unusable_flags():
    codes = np.arange(256, dtype=np.uint8)
    assert_array_equal(resample._IS_UNUSABLE[codes], np.isin(codes, [1, 2, 3, 4, 6, 7]))   # not 0, 5
