"""Step 70 aggregate: window statistics aligned to UTC, never crossing a day edge; flagged
samples excluded from the statistics but counted in share_flagged; empty windows kept as
NaN with flag 1."""
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from pyjama import io, tidy
from pyjama.aggregate import aggregate_partition, aggregate_window
from pyjama.pipeline import load_step_config
from pyjama.errors import UserError

DAY = "2026-01-20"
N = np.nan
BASE = {"exposure": "T", "input_stage": "60_behaviour", "output_stage": "70_aggregated"}


def series(values, start, sensor="m3__cbrt_inv__norm", flags=None, period=1, domain="bio_signal"):
    values = np.asarray(values, dtype=float)
    ts = pd.date_range(start, periods=len(values), freq=f"{period}s")
    if flags is None:
        flags = np.where(np.isnan(values), 1, 0)
    return tidy.frame(ts=ts, device_id="d", domain=domain, sensor=sensor, value=values, quality_flag=flags)


def stats_of(out, sensor="m3__cbrt_inv__norm"):
    """{stat: (values, flags)} of one source sensor in an aggregated frame."""
    res = {}
    for name in sorted(set(out["sensor"].astype(str))):
        if name.startswith(sensor + "__"):
            d = out[out["sensor"] == name]
            res[name[len(sensor) + 2:]] = (d["value"].to_numpy(), d["quality_flag"].to_numpy())
    return res


def agg(df, window_s, fill_day=False, **kw):
    return aggregate_window(tidy.conform(df), DAY, window_s, fill_day=fill_day, **kw)


def test_flagged_values_are_excluded_but_counted_in_share_flagged():
    # one 10 s window: 1, 2, 100 (spike, flag 2), 3, NaN (missing, flag 1), 4 (interpolated, 5)
    df = series([1, 2, 100, 3, N, 4], "2026-01-20T12:00:00Z", flags=[0, 0, 2, 0, 1, 5])
    s = stats_of(agg(df, 10))
    # valid = 1, 2, 3, 4 (flag 5 is valid); flagged = the spike and the missing sample
    assert_allclose([s[k][0][0] for k in ("mean", "min", "max", "std", "count", "share_flagged")],
                    [2.5, 1, 4, np.sqrt(1.25), 4, 2 / 6])     # population std of 1..4
    assert all(s[k][1][0] == 0 for k in s)
    out = agg(df, 10)
    assert list(out["ts"].unique()) == [pd.Timestamp("2026-01-20T12:00:00Z")]   # ts = window start


def test_all_nan_window_is_kept_as_nan_flag_1():
    # window 12:00:00 holds only missing samples; window 12:00:10 holds a value
    df = series([N] * 10 + [0.5], "2026-01-20T12:00:00Z")
    s = stats_of(agg(df, 10))
    for k in ("mean", "min", "max", "std"):
        assert_array_equal(s[k][0], [N, 0.5 if k != "std" else 0.0])
        assert_array_equal(s[k][1], [1, 0])                       # flag 1 says: no valid value
    assert_array_equal(s["count"][0], [0, 1]) and assert_array_equal(s["count"][1], [0, 0])
    assert_array_equal(s["share_flagged"][0], [1.0, 0.0])          # all 10 samples flagged


def test_window_at_23_59_50_ends_at_the_day_edge():
    # 23:59:45 .. 2026-01-21T00:00:04: the partition of the 20th holds the first 15 samples
    # (a stray next-day row would not be aggregated here, and is counted in the ledger)
    df = series(np.arange(20.0), "2026-01-20T23:59:45Z")
    frames, counts = aggregate_partition(df, DAY, {"10s": 10}, sensors=".*", fill_day=False)
    out = frames["10s"]
    s = stats_of(out)
    assert sorted(out["ts"].unique()) == [pd.Timestamp("2026-01-20T23:59:40Z"),
                                          pd.Timestamp("2026-01-20T23:59:50Z")]
    assert_array_equal(s["count"][0], [5, 10])     # 23:59:45-49, then 23:59:50-59 (10 s, full)
    assert_array_equal(s["max"][0], [4, 14])       # the last window stops at 23:59:59
    assert counts["rejected"] == {"not aggregated: sensor not matched by $.sensors": 0,
                                  "not aggregated: ts outside the partition day": 5}
    assert counts["rows_in"] == 20 and counts["rows_out"] == 15


def test_fill_day_writes_every_window_of_the_day():
    df = series([0.5], "2026-01-20T12:00:05Z")
    out = agg(df, 3600, fill_day=True, stats=("mean",))
    assert len(out) == 24                                    # 24 one-hour windows
    assert out["ts"].iloc[0] == pd.Timestamp("2026-01-20T00:00:00Z")
    assert out["ts"].iloc[-1] == pd.Timestamp("2026-01-20T23:00:00Z")
    assert_array_equal(out["quality_flag"], [1] * 12 + [0] + [1] * 11)   # only 12:00 has data


def test_windows_align_to_utc():
    # 00:59:59 belongs to the 00:00 hour, 01:00:00 to the 01:00 hour; 00:04:59 / 00:05:00 to 5 min
    df = pd.concat([series([1.0], "2026-01-20T00:59:59Z"), series([3.0], "2026-01-20T01:00:00Z"),
                    series([5.0], "2026-01-20T00:04:59Z"), series([7.0], "2026-01-20T00:05:00Z")],
                   ignore_index=True)
    h = stats_of(agg(df, 3600, stats=("mean",)))["mean"][0]
    assert_allclose(h, [(1 + 5 + 7) / 3, 3.0])
    m = agg(df, 300, stats=("count",))
    assert list(m["ts"].dt.strftime("%H:%M")) == ["00:00", "00:05", "00:55", "01:00"]
    assert_array_equal(m["value"], [1, 1, 1, 1])


def test_names_and_order():
    df = pd.concat([series([1.0], "2026-01-20T00:00:00Z", sensor="m3__cbrt_inv__norm"),
                    series([2.0], "2026-01-20T00:00:00Z", sensor="outdoor_temp", domain="environment")],
                   ignore_index=True)
    out = agg(df, 10)
    assert list(out["sensor"].astype(str)) == [
        "m3__cbrt_inv__norm__count", "m3__cbrt_inv__norm__max", "m3__cbrt_inv__norm__mean",
        "m3__cbrt_inv__norm__min", "m3__cbrt_inv__norm__share_flagged", "m3__cbrt_inv__norm__std",
        "outdoor_temp__count", "outdoor_temp__max", "outdoor_temp__mean", "outdoor_temp__min",
        "outdoor_temp__share_flagged", "outdoor_temp__std"]
    assert set(out.loc[out["sensor"].astype(str).str.startswith("outdoor"), "domain"]) == {"environment"}


def test_sensor_regex_and_ledger():
    df = pd.concat([series([1.0, 2.0], "2026-01-20T00:00:00Z", sensor="m0__norm"),
                    series([9.0], "2026-01-20T00:00:00Z", sensor="m0")], ignore_index=True)
    frames, counts = aggregate_partition(df, DAY, {"60s": 60}, stats=("mean",), sensors="__norm$",
                                         fill_day=False)
    assert list(frames["60s"]["sensor"].astype(str)) == ["m0__norm__mean"]
    assert (counts["rows_in"], counts["rows_out"]) == (3, 2)
    assert counts["rejected"]["not aggregated: sensor not matched by $.sensors"] == 1
    assert counts["rows_written"] == {"60s": 1}


def test_empty_single_and_all_flagged_inputs():
    frames, counts = aggregate_partition(tidy.empty(), DAY, {"10s": 10})
    assert len(frames["10s"]) == 0 and counts["rows_in"] == 0
    s = stats_of(agg(series([0.7], "2026-01-20T06:00:00Z"), 60))
    assert_allclose([s[k][0][0] for k in ("mean", "min", "max", "std", "count", "share_flagged")],
                    [0.7, 0.7, 0.7, 0.0, 1, 0.0])
    s = stats_of(agg(series([0.7, 0.8], "2026-01-20T06:00:00Z", flags=[3, 6]), 60))
    assert np.isnan(s["mean"][0][0]) and s["mean"][1][0] == 1       # no valid value: NaN, flag 1
    assert (s["count"][0][0], s["share_flagged"][0][0]) == (0, 1.0)


# ---------------------------------------------------------------- config

def config(tmp_path, **over):
    raw = dict(BASE, **over)
    (tmp_path / "c.json").write_text(json.dumps(raw))
    return load_step_config("70_aggregate.py", "c.json", tmp_path)


@pytest.mark.parametrize("over, message", [
    ({"windows": ["7min"]},
     "c.json: $.windows[0]: '7min' is not allowed; allowed: a window that divides 24 h exactly "
     "(e.g. 10s, 60s, 5min, 15min, 1h, 24h)"),
    ({"windows": ["60s", "1min"]},
     "c.json: $.windows[1]: '1min' is not allowed; allowed: a length not already listed ('60s' is the same window)"),
    ({"windows": ["10 s"]},
     'c.json: $.windows[0]: "10 s" is not allowed; allowed: a window length such as 10s, 60s, 5min, 1h'),
    ({"stats": ["median"]},
     'c.json: $.stats[0]: "median" is not allowed; allowed: "mean", "min", "max", "std", "count", "share_flagged"'),
    ({"sensors": "("},
     "c.json: $.sensors: '(' is not a regular expression (missing ), unterminated subpattern at position 0); "
     "allowed: a Python regular expression such as '__norm$'"),
    ({"window": ["10s"]},
     "c.json: $.window: unknown key 'window'; allowed keys: comment, exposure, fill_day, input_stage, "
     "output_stage, sensors, stats, windows"),
])
def test_config_errors(tmp_path, over, message):
    with pytest.raises(UserError) as e:
        config(tmp_path, **over)
    assert str(e.value) == message


def test_one_stage_per_window(tmp_path):
    from pyjama.config import REPO
    from pyjama.steps import get_step

    text = (REPO / "configs" / "_template" / "70_aggregate.json").read_text().replace("{{EXPOSURE}}", "T")
    (tmp_path / "t.json").write_text(text)
    st = load_step_config("70_aggregate.py", "t.json", tmp_path)
    assert get_step("70_aggregate.py").output_stages(st) == {
        "data": "70_aggregated/window=10s", "window_60s": "70_aggregated/window=60s",
        "window_5min": "70_aggregated/window=5min", "window_1h": "70_aggregated/window=1h"}


def test_run_partition_writes_one_hive_dataset_with_a_window_column(tmp_path):
    from pyjama.runner import run_partition
    from pyjama.steps import get_step

    st = config(tmp_path, windows=["60s", "1h"], stats=["mean", "count"])
    io.write_tidy(tmp_path / io.partition_file("T", "60_behaviour", "d", DAY),
                  series([0.25, 0.75], "2026-01-20T00:00:00Z"), {})
    step = get_step("70_aggregate.py")
    # a project of this one step: no 40_resample upstream (grid periods and key: none)
    project = SimpleNamespace(root=tmp_path, pipeline=SimpleNamespace(producer_of=lambda stage: None))
    entry = run_partition(step, project, st, "d", DAY)
    assert entry["rows_written"] == {"60s": 2 * 1440, "1h": 2 * 24}
    main = tmp_path / "data/T/70_aggregated/window=60s/device_id=d/day=2026-01-20/part.parquet"
    assert io.read_ledger(main) == entry        # the ledger is in the first window's footer
    t = ds.dataset(tmp_path / "data/T/70_aggregated", partitioning="hive").to_table(
        filter=(ds.field("sensor") == "m3__cbrt_inv__norm__mean")).to_pandas()
    first = t.sort_values(["window", "ts"]).groupby("window", observed=True).first()
    assert_allclose(first["value"], [0.5, 0.5])          # both windows see (0.25 + 0.75) / 2
    assert sorted(first.index.astype(str)) == ["1h", "60s"]
    assert set(t["device_id"].astype(str)) == {"d"} and set(t["day"].astype(str)) == {DAY}


def test_coarse_windows_summed_from_fine_ones_equal_direct_computation():
    # 1 h and 5 min are computed from the 60 s sums (Chan's m2 combination); the result must be
    # the one computed from the samples directly
    rng = np.random.default_rng(7)
    n = 7200
    x = 300 + rng.normal(0, 1, n)                    # a large offset: catches cancellation
    flags = rng.choice([0, 0, 0, 0, 2, 5, 1], size=n)
    x[flags == 1] = np.nan
    df = series(x, "2026-01-20T05:00:00Z", flags=flags)
    frames, _ = aggregate_partition(df, DAY, {"60s": 60, "5min": 300, "1h": 3600}, fill_day=False)
    for label, w in (("5min", 300), ("1h", 3600)):
        direct = agg(df, w)
        got = frames[label]
        assert_array_equal(got["sensor"].astype(str), direct["sensor"].astype(str))
        assert_array_equal(got["quality_flag"], direct["quality_flag"])
        assert_allclose(got["value"], direct["value"], rtol=1e-12, atol=1e-12)


def test_share_flagged_counts_the_grid_cells_of_the_40_config_upstream(tmp_path):
    """Acceptance D2: 70 reads each series' grid period from the 40_resample config upstream
    in the plan (40 → 50 → 60 → 70); a series <s>__<suffix> has the grid of s, by its
    domain or $.sensors. On it, a window with 5 rows of 60 grid cells, 1 of them flagged, has
    share_flagged (1 + 55) / 60; a window with no row: 1.0, count 0. Without a 40 upstream
    the share is over the rows present (1 / 5)."""
    from pyjama.manage import create
    from pyjama.project import Project
    from pyjama.steps.aggregate import grid_periods

    create("T", tmp_path)
    c40 = tmp_path / "configs/T/40_resample.json"
    cfg = json.loads(c40.read_text())
    cfg["sensors"] = {"m3": {"freq": "2s"}}
    c40.write_text(json.dumps(cfg))
    project = Project.load(tmp_path / "configs/T/pipeline.json", tmp_path)
    st = project.pipeline.step_named("70_aggregate")
    grid = grid_periods(project.pipeline, st)
    assert grid("bio_signal", "m0__cbrt_inv__norm") == 1_000_000          # domain bio_signal: 1s
    assert grid("environment", "outdoor_temp") == 10_000_000             # domain environment: 10s
    assert grid("bio_signal", "m3__cbrt_inv__norm") == 2_000_000          # $.sensors.m3: 2s

    df = series([1.0, 2.0, 3.0, 4.0, 5.0], f"{DAY}T00:00:00Z", sensor="m0__norm", flags=[0, 0, 2, 0, 0])
    frames, _ = aggregate_partition(df, DAY, {"60s": 60}, grid=grid)
    f = frames["60s"]
    share = f[f["sensor"] == "m0__norm__share_flagged"]
    count = f[f["sensor"] == "m0__norm__count"]
    assert_allclose(share["value"].to_numpy()[:2], [(1 + 55) / 60, 1.0])
    assert share["quality_flag"].tolist()[:2] == [0, 0] and count["value"].tolist()[:2] == [4.0, 0.0]
    assert grid_periods(SimpleNamespace(producer_of=lambda stage: None), {"input_stage": "60_behaviour"}) is None
    frames, _ = aggregate_partition(df, DAY, {"60s": 60})
    f = frames["60s"]
    share = f[f["sensor"] == "m0__norm__share_flagged"]
    assert share["value"].tolist()[0] == 1 / 5 and np.isnan(share["value"].tolist()[1])


# ---------------------------------------------------------------- a week or a month in one pass

def _plain(df):
    """A tidy frame with its categories as text (frames of different days have different
    category lists; the rows are what is compared)."""
    out = df.copy()
    for c in ("device_id", "domain", "sensor"):
        out[c] = out[c].astype(str)
    return out.reset_index(drop=True)


def _random_day(rng, day, sensors):
    n = int(rng.integers(8, 80))
    t0 = pd.Timestamp(day, tz="UTC").value // 1000
    us = np.sort(np.r_[0, 86_400 * 10**6 - 1, rng.integers(0, 86_400 * 10**6, n - 2)])  # both day edges
    names = rng.choice(sensors, n)
    values = rng.normal(100, 30, n)
    values[rng.random(n) < 0.1] = np.nan
    return tidy.frame(ts=pd.to_datetime(t0 + us, unit="us", utc=True), device_id="valve01",
                      domain=["environment" if s == "outdoor_temp" else "bio_signal" for s in names],
                      sensor=names, value=values, quality_flag=rng.choice([0, 0, 0, 1, 2, 5], n))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("grid", [None, "bio 1 s"])
@pytest.mark.parametrize("fill_day,days_per_block", [(f, b) for f in (False, True) for b in (None, 1, 2, "sparse")
                                                     if not (f and b == "sparse")])
def test_a_period_in_one_pass_equals_its_days_one_by_one(seed, fill_day, grid, days_per_block, monkeypatch):
    """The dense block passes (1, 2 or all days a block) and, without fill_day, the one pass
    over the occupied windows give each day's rows exactly as that day alone."""
    from pyjama import aggregate
    from pyjama.io import merge_counts

    if days_per_block != "sparse":      # the dense path, also for these sparse days
        monkeypatch.setattr(aggregate, "SPARSE_SHARE", 10**9)
    if days_per_block in (1, 2):        # 3 series aggregated, 10 s windows: 3 × 8,640 cells a day
        monkeypatch.setattr(aggregate, "BLOCK_CELLS", days_per_block * 3 * 8_640)
    passes = []
    real = aggregate._aggregate_days
    monkeypatch.setattr(aggregate, "_aggregate_days", lambda sel, day, *a: passes.append(day) or real(sel, day, *a))

    rng = np.random.default_rng(seed)
    # a gap (02-01 has no data), a day without one series, an unmatched series (m2)
    days = ["2026-01-30", "2026-01-31", "2026-02-02"]
    every = ["m0__norm", "m1__norm", "outdoor_temp", "m2"]
    frames = [_random_day(rng, d, every if i != 1 else ["m0__norm", "m2"]) for i, d in enumerate(days)]
    windows = {"10s": 10, "60s": 60, "5min": 300, "1h": 3600}
    periods = None if grid is None else (lambda d, s: 1_000_000 if d == "bio_signal" else None)
    kw = dict(stats=("mean", "min", "max", "std", "count", "share_flagged"), sensors="__norm$|^outdoor_temp$",
              fill_day=fill_day, grid=periods)
    one_by_one = [aggregate_partition(f, d, windows, **kw) for f, d in zip(frames, days)]
    passes.clear()
    whole, counts = aggregate_partition(tidy.concat(frames), days, windows, **kw)
    assert passes == {None: [days], 1: [[d] for d in days], 2: [days[:2], days[2:]],
                      "sparse": [days]}[days_per_block]
    for label in windows:
        want = pd.concat([_plain(out[label]) for out, _ in one_by_one], ignore_index=True)
        pd.testing.assert_frame_equal(_plain(whole[label]), want, check_exact=True, obj=label)
    assert counts == merge_counts([c for _, c in one_by_one])
    assert counts["rejected"]["not aggregated: sensor not matched by $.sensors"] > 0
    n_1h = len(whole["1h"])
    if fill_day:       # each day's series that have a row that day, every hour of it
        assert n_1h == 24 * 6 * (3 + 1 + 3)
    else:
        assert 0 < n_1h < 24 * 6 * 7


def test_a_period_keeps_each_day_in_its_own_windows():
    """Spelled out: two samples of one series, 23:59:59 on the 20th and 00:00:00 on the 22nd
    (the 21st absent): one 1 h window each, at its own day's 23:00 and 00:00."""
    df = tidy.concat([series([1.0], "2026-01-20T23:59:59Z", sensor="m0__norm"),
                      series([3.0], "2026-01-22T00:00:00Z", sensor="m0__norm")])
    out, counts = aggregate_partition(df, ["2026-01-20", "2026-01-22"], {"1h": 3600}, stats=("mean", "count"),
                                      sensors="__norm$", fill_day=False)
    got = _plain(out["1h"])
    assert got["ts"].astype(str).tolist() == ["2026-01-20 23:00:00+00:00", "2026-01-20 23:00:00+00:00",
                                              "2026-01-22 00:00:00+00:00", "2026-01-22 00:00:00+00:00"]
    assert got["sensor"].tolist() == ["m0__norm__count", "m0__norm__mean"] * 2
    assert got["value"].tolist() == [1.0, 1.0, 1.0, 3.0]
    assert counts["rows_in"] == 2 and counts["rows_written"] == {"1h": 4}
    with pytest.raises(ValueError, match="outside the partition day"):
        from pyjama.aggregate import moments_from_rows, prepare_rows
        moments_from_rows(prepare_rows(tidy.conform(df), ["2026-01-20"]), 3600)


# ---------------------------------------------------------------- the occupied windows only

def _rows_at(rng, day, sensors, per_day, span_s=86_400):
    """``per_day`` samples a series, at random instants of the first ``span_s`` seconds of
    ``day`` (both edges of the day for a whole day), values far from 0 (sums round)."""
    t0 = pd.Timestamp(day, tz="UTC").value // 1000
    parts = []
    for s in sensors:
        us = np.sort(rng.integers(0, span_s * 10**6, per_day))
        if span_s == 86_400:
            us[0], us[-1] = 0, 86_400 * 10**6 - 1
        x = 300 + rng.normal(0, 1, per_day) * rng.choice([1e-3, 1, 1e3])
        x[rng.random(per_day) < 0.05] = np.nan
        parts.append(tidy.frame(ts=pd.to_datetime(t0 + us, unit="us", utc=True), device_id="valve01",
                                domain="environment" if s == "outdoor_temp" else "bio_signal", sensor=s,
                                value=x, quality_flag=rng.choice([0, 0, 0, 0, 1, 2, 5], per_day)))
    return tidy.concat(parts).sort_values(["sensor", "ts"], kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rate", ["hourly", "minutes", "seconds"])
@pytest.mark.parametrize("windows", [{"10s": 10, "60s": 60, "5min": 300, "1h": 3600, "24h": 86_400},
                                     {"10s": 10, "1h": 3600}, {"1min": 60, "15min": 900}])
@pytest.mark.parametrize("grid", [None, "bio 1 s"])
def test_the_occupied_windows_path_equals_the_dense_path(seed, rate, windows, grid, monkeypatch):
    """Bit for bit, values and flags: each coarse window sums r finer ones (r = 6, 5, 12, 24
    here, and 360 from 10 s to 1 h: numpy's pairwise sum, with and without a remainder of 8,
    and past its 128-element block), on hourly, minute and dense second data, NaN and
    flags 0-5 included, a day without data and a day missing a series."""
    from pyjama import aggregate

    rng = np.random.default_rng(seed)
    days = ["2026-03-30", "2026-03-31", "2026-04-02"]
    per_day, span = {"hourly": (24, 86_400), "minutes": (1_440, 86_400), "seconds": (7_200, 3 * 3600)}[rate]
    frames = [_rows_at(rng, d, ["m0__norm", "outdoor_temp"] if i != 1 else ["m0__norm"], per_day, span)
              for i, d in enumerate(days)]
    df = tidy.concat(frames)
    periods = None if grid is None else (lambda d, s: 1_000_000 if d == "bio_signal" else None)
    kw = dict(sensors="__norm$|^outdoor_temp$", fill_day=False, grid=periods)
    used = []
    real = aggregate.sparse_moments_from_rows
    monkeypatch.setattr(aggregate, "sparse_moments_from_rows", lambda *a: used.append(1) or real(*a))
    monkeypatch.setattr(aggregate, "SPARSE_SHARE", 10**9)          # dense, whatever the rows
    dense = [aggregate_partition(df, days, windows, **kw), aggregate_partition(frames[0], days[0], windows, **kw)]
    assert not used
    monkeypatch.setattr(aggregate, "SPARSE_SHARE", 0)              # occupied windows, whatever the rows
    sparse = [aggregate_partition(df, days, windows, **kw), aggregate_partition(frames[0], days[0], windows, **kw)]
    assert len(used) == 2
    for (want, want_counts), (got, got_counts) in zip(dense, sparse):
        assert got_counts == want_counts
        for label in windows:
            pd.testing.assert_frame_equal(_plain(got[label]), _plain(want[label]), check_exact=True, obj=label)
            assert len(got[label])


def test_the_occupied_windows_path_spelled_out():
    """Three rows of one series on one day, 10 s and 1 h windows: 00:00:01 (1.0), 00:00:05
    (NaN, flag 1), 00:59:59 (4.0, flag 2: not valid, counted as flagged); sparse (3 rows ≪
    8,640 windows): the 10 s windows 00:00:00 and 00:59:50 only, the hour 00:00 only."""
    from pyjama import aggregate

    df = series([1.0, np.nan, 4.0], "2026-01-20T00:00:01Z", sensor="m0__norm", flags=[0, 1, 2])
    df["ts"] = pd.to_datetime(["2026-01-20T00:00:01Z", "2026-01-20T00:00:05Z", "2026-01-20T00:59:59Z"], utc=True)
    assert aggregate.is_sparse(3, 1, 1, 10, False) and not aggregate.is_sparse(3, 1, 1, 10, True)
    out, counts = aggregate_partition(df, DAY, {"10s": 10, "1h": 3600}, stats=("mean", "count", "share_flagged"),
                                      sensors="__norm$", fill_day=False)
    ten, hour = _plain(out["10s"]), _plain(out["1h"])
    assert ten["ts"].astype(str).tolist() == ["2026-01-20 00:00:00+00:00", "2026-01-20 00:59:50+00:00"] * 3
    assert ten["sensor"].tolist() == ["m0__norm__count"] * 2 + ["m0__norm__mean"] * 2 + ["m0__norm__share_flagged"] * 2
    assert_allclose(ten["value"], [1.0, 0.0, 1.0, np.nan, 0.5, 1.0])
    assert ten["quality_flag"].tolist() == [0, 0, 0, 1, 0, 0]
    assert hour["value"].tolist()[:2] == [1.0, 1.0] and hour["value"].tolist()[2] == 2 / 3
    assert counts["rows_written"] == {"10s": 6, "1h": 3}
    with pytest.raises(ValueError, match="fill_day needs them all"):
        prep = aggregate.prepare_rows(tidy.conform(df), DAY)
        aggregate.frame_from_moments(aggregate.sparse_moments_from_rows(prep, 10), prep, fill_day=True)


def test_day_of_rows_by_arithmetic_equals_the_search():
    """Days one after the other take the arithmetic path; days with a hole the search; both
    give each row its day's position or -1 (before, after, in the hole, at midnights)."""
    from pyjama.aggregate import _day_of_rows, _days_us

    rng = np.random.default_rng(2)
    day_us = 86_400_000_000
    for days in (["2026-01-20"], ["2026-01-30", "2026-01-31", "2026-02-01"], ["2026-01-20", "2026-01-22"]):
        d = _days_us(days)
        ts = np.concatenate([rng.integers(d[0] - 2 * day_us, d[-1] + 2 * day_us, 5000),
                             d, d - 1, d + day_us, d + day_us - 1]).astype(np.int64)
        want = np.full(len(ts), -1)
        for i, d0 in enumerate(d):
            want[(ts >= d0) & (ts < d0 + day_us)] = i
        assert_array_equal(_day_of_rows(ts, d), want)
    d = _days_us(["2026-01-20", "2026-01-22"])
    assert _day_of_rows(np.array([d[0] + day_us + 5]), d).tolist() == [-1]      # the hole
