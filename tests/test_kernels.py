"""Issue 14's array kernels equal the implementations they replace.

Each faster kernel is compared with the code it replaced (kept as the reference in
tests/qc_reference.py, or pandas itself): on tiny spelled-out inputs with the expected
values written beside them (NaN placement and series edges included), and on a generated
1 Hz day (jittered times, gaps, NaN, stuck stretches, spikes, neighbouring-day edges).
"""
import functools
import re

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_array_equal

from pyjama import qc, tidy
from tests import qc_reference as ref

NAN = np.nan
T0 = pd.Timestamp("2026-01-21T00:00:00Z").value
S = 10**9


@pytest.fixture(params=["passes", "gathered", "pandas"])
def path(request, monkeypatch):
    """Every code path of qc.rolling_stat's median on the same input: fixed-width bottleneck
    passes for every width, gathered windows for every row, pandas' skiplist for every row."""
    plan = {"passes": lambda widths, counts, n, **_: widths, "gathered": lambda widths, counts, n, **_: widths[:0],
            "pandas": lambda widths, counts, n, **_: None}[request.param]
    monkeypatch.setattr(qc, "_median_plan", plan)
    return request.param


def test_the_median_plan_takes_passes_for_shared_widths_and_pandas_when_cheaper():
    n = 86400
    #   one width for nearly every row, a few edge widths: one pass, the edges gathered
    assert qc._median_plan(np.array([61, 90, 121]), np.array([60, 60, n - 120]), n).tolist() == [121]
    #   31-sample windows of irregular times, ten widths of 10 % each: ten passes cost more
    #   than pandas' skiplist over all rows
    assert qc._median_plan(np.arange(26, 36), np.full(10, n // 10), n) is None
    assert qc._median_plan(np.zeros(0, int), np.zeros(0, int), n).tolist() == []
    #   a few rows of 301-sample windows asked: gathering them beats pandas over all n rows
    assert qc._median_plan(np.array([301]), np.array([200]), n) is None
    assert qc._median_plan(np.array([301]), np.array([200]), n, pandas_rows=n).tolist() == []


def pandas_rolling(x, start, end, stat):
    r = pd.Series(np.asarray(x, dtype=float)).rolling(ref._Bounds(start, end), min_periods=1)
    return getattr(r, stat)().to_numpy()


# ---------------------------------------------------------------- rolling_stat, spelled out

X = [1.0, NAN, 3.0, 2.0, 5.0, NAN, NAN, 4.0, 6.0, NAN]     # one window per value
#         window [start, end)  median  max  min
WINDOWS = [((0, 1), 1.0, 1.0, 1.0),      # one value
           ((0, 2), 1.0, 1.0, 1.0),      # NaN is ignored, not a value
           ((1, 2), NAN, NAN, NAN),      # only NaN: no value
           ((0, 4), 2.0, 3.0, 1.0),      # median of 1, 3, 2
           ((0, 5), 2.5, 5.0, 1.0),      # even count: the mean of the two middle values
           ((2, 6), 3.0, 5.0, 2.0),
           ((5, 7), NAN, NAN, NAN),
           ((3, 8), 4.0, 5.0, 2.0),      # 2, 5, 4
           ((7, 8), 4.0, 4.0, 4.0),      # the last row alone
           ((4, 4), NAN, NAN, NAN)]      # an empty window


@pytest.mark.parametrize("stat,col", [("median", 1), ("max", 2), ("min", 3)])
def test_rolling_stat_spelled_out(path, stat, col):
    start = np.array([w[0][0] for w in WINDOWS])
    end = np.array([w[0][1] for w in WINDOWS])
    want = np.array([w[col] for w in WINDOWS])
    got = qc.rolling_stat(np.array(X), start, end, stat)
    assert_array_equal(got, want)
    if stat == "median":          # pandas' max / min need monotone bounds; these are not
        assert_array_equal(got, pandas_rolling(X, start, end, stat))


@pytest.mark.parametrize("stat", ["median", "max", "min"])
def test_rolling_stat_of_some_rows_only(path, stat):
    start = np.array([w[0][0] for w in WINDOWS])
    end = np.array([w[0][1] for w in WINDOWS])
    rows = np.array([1, 0, 0, 1, 1, 0, 0, 1, 0, 0], dtype=bool)
    full = qc.rolling_stat(np.array(X), start, end, stat)
    got = qc.rolling_stat(np.array(X), start, end, stat, rows=rows)
    assert_array_equal(got[rows], full[rows])
    assert np.isnan(got[~rows]).all()             # the windows not asked for: NaN


def test_rolling_stat_of_nothing_and_an_unknown_statistic():
    assert qc.rolling_stat(np.zeros(0), np.zeros(0, int), np.zeros(0, int), "median").shape == (0,)
    assert qc.rolling_stat(np.zeros(0), np.zeros(0, int), np.zeros(0, int), "max").shape == (0,)
    with pytest.raises(ValueError):
        qc.rolling_stat(np.zeros(1), np.zeros(1, int), np.ones(1, int), "mean")


@pytest.mark.parametrize("stat", ["median", "max", "min"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rolling_stat_equals_pandas_on_random_bounds(path, stat, seed):
    rng = np.random.default_rng(seed)
    n = 3000
    x = np.round(rng.normal(100, 5, n))          # repeated values: ties in the median
    x[rng.random(n) < 0.1] = NAN
    x[500:560] = NAN                             # a stretch without a value
    ts = T0 + np.cumsum(rng.integers(1, 4, n)) * S
    for start, end in (qc.centred_bounds(ts, pd.Timedelta("31s")), qc.centred_bounds(ts, 61),
                       (np.sort(rng.integers(0, n, n)), None)):
        if end is None:                          # arbitrary monotone bounds, widths 0..300
            end = np.minimum(np.maximum.accumulate(start + rng.integers(0, 200, n)), n)
        assert_array_equal(qc.rolling_stat(x, start, end, stat), pandas_rolling(x, start, end, stat))


# ---------------------------------------------------------------- the QC tests, spelled out

def test_noise_scale_spelled_out_equals_the_reference():
    #              differences: 2 2 2 2 0 0 0 2 ...: the stuck stretch (5 equal values) is
    #              left out while it is the minority of the window
    x = np.array([100, 102, 100, 102, 100, 100, 100, 100, 100, 102, 100, 102, 100, 102, 100.0] * 10)
    ts = T0 + np.arange(len(x)) * S
    got = qc.noise_scale(ts, x, 11)
    assert_array_equal(got, ref.noise_scale(ts, x, 11))
    assert got[70] == pytest.approx(qc.MAD_TO_SIGMA * 2 / np.sqrt(2))


def test_spikes_spelled_out_equal_the_reference():
    x = np.array([100.0] * 20 + [300] + [100] * 20 + [NAN] + [100] * 5 + [-200, -200] + [100] * 20 + [20])
    ts = T0 + np.arange(len(x)) * S
    ts[30:] += 90 * S                                           # a gap
    for kw in ({}, {"direction": "down"}, {"direction": "up"}, {"context_window": pd.Timedelta("20s")}):
        got = qc.flag_spikes(ts, x, pd.Timedelta("11s"), 6.0, 50, 3, **kw)
        assert_array_equal(got, ref.flag_spikes(ts, x, pd.Timedelta("11s"), 6.0, 50, 3, **kw))
    got = qc.flag_spikes(ts, x, pd.Timedelta("11s"), 6.0, 50, 3)
    # 20: +200 and back; 47-48: a run of two, −300; the NaN (41) neither flagged nor a
    # break; the last sample (68) has one neighbour: never flagged
    assert np.flatnonzero(got).tolist() == [20, 47, 48]


def test_flat_lines_spelled_out_equal_the_reference():
    #        0..9 moving, 10..24 stuck at 7 (15 s with the period), 25.. moving, NaN inside
    x = np.array([1.0, 2, 3, 4, 5, 6, 5, 4, 3, 2] + [7.0] * 15 + [1, 2, 3, 4] + [7.0, 7, NAN, 7.2, 7.1, 7])
    ts = T0 + np.arange(len(x)) * S
    for tol, dur in ((0, "15s"), (0, "16s"), (0.25, "5s"), (0, "1s")):
        got = qc.flag_flat_lines(ts, x, tol, pd.Timedelta(dur))
        assert_array_equal(got, ref.flag_flat_lines(ts, x, tol, pd.Timedelta(dur)))
    assert np.flatnonzero(qc.flag_flat_lines(ts, x, 0, pd.Timedelta("15s"))).tolist() == list(range(10, 25))
    assert not qc.flag_flat_lines(ts, x, 0, pd.Timedelta("16s")).any()
    #        within 0.25 for 5 s: the stuck run and 29..34 (7, 7, NaN, 7.2, 7.1, 7: NaN ignored)
    assert np.flatnonzero(qc.flag_flat_lines(ts, x, 0.25, pd.Timedelta("5s"))).tolist() == \
        list(range(10, 25)) + [29, 30, 32, 33, 34]


# ---------------------------------------------------------------- a generated day

def generated_day(seed, n=20000, period_s=1.0):
    """A day of one Hall channel: noise, closures (level changes with ramps), spikes, runs,
    stuck stretches, NaN, a long gap and jittered times."""
    rng = np.random.default_rng(seed)
    ts = T0 + (np.arange(n) * period_s * S).astype(np.int64) + rng.integers(0, 50_000_000, n)
    ts[n // 2:] += 600 * S                                     # a 10 min gap
    level = np.where((np.arange(n) // 1500) % 3 == 1, 2600.0, 2000.0)
    x = np.round(level + rng.normal(0, 25, n))
    for i in rng.integers(10, n - 10, 40):                     # spikes of 1..3 samples
        x[i:i + rng.integers(1, 4)] -= rng.choice([400, 900])
    x[3000:5000] = x[3000]                                     # stuck
    x[8000:8006] = x[8000]                                     # short repeats
    x[rng.random(n) < 0.01] = NAN
    x[100:200] = NAN
    return ts, x


@pytest.mark.parametrize("seed", [3, 4])
def test_qc_kernels_equal_the_reference_on_a_generated_day(seed):
    ts, x = generated_day(seed)
    for window in (pd.Timedelta("31s"), pd.Timedelta("5min"), 31):
        assert_array_equal(qc.noise_scale(ts, np.nan_to_num(x, nan=2000.0), window),
                           ref.noise_scale(ts, np.nan_to_num(x, nan=2000.0), window))
    for kw in ({"context_window": pd.Timedelta("5min"), "direction": "down"}, {"direction": "both"},
               {"threshold_mad": None, "context_window": 121, "direction": "up"}):
        args = (ts, x, pd.Timedelta("31s"))
        kw = {"threshold_mad": 6.0, "threshold_abs": 50, "max_length": 3, **kw}
        got = qc.flag_spikes(*args, **kw)
        assert_array_equal(got, ref.flag_spikes(*args, **kw))
        assert got.sum() > 20                                  # the generated spikes are found
    for tol, dur in ((0, "30min"), (0, "6h"), (30, "2min"), (0, "3s")):
        got = qc.flag_flat_lines(ts, x, tol, pd.Timedelta(dur))
        assert_array_equal(got, ref.flag_flat_lines(ts, x, tol, pd.Timedelta(dur)))
    assert qc.flag_flat_lines(ts, x, 0, pd.Timedelta("30min")).sum() > 1800   # the stuck stretch


RULES = {"rules": {
    "bio_signal": {"range": [0, 4000], "sentinels": [4095],
                   "spike": {"window": "31s", "context_window": "5min", "threshold_mad": 6,
                             "threshold_abs": 50, "max_length": 3, "direction": "down"},
                   "flat": {"tolerance": 0, "min_duration": "30min"},
                   "shift": {"min_size": 40, "min_segment": "30min"}},
    "environment": {"range": [-5, 40], "spike": {"window": "5min", "threshold_mad": 6, "threshold_abs": 1.0},
                    "flat": {"tolerance": 0, "min_duration": "6h"}}}}


def frame_of(ts, series: dict, domain="bio_signal"):
    parts = [tidy.frame(ts=pd.to_datetime(ts, utc=True), device_id="valve01", domain=domain, sensor=s,
                        value=v, quality_flag=0) for s, v in series.items()]
    return pd.concat(parts, ignore_index=True)


def test_clean_frame_with_neighbouring_edges_equals_the_reference(monkeypatch):
    ts, x = generated_day(5, n=30000)
    _, y = generated_day(6, n=30000)
    day = pd.concat([frame_of(ts, {"m0": x, "m1": y}),
                     frame_of(ts, {"water_temp": np.round(10 + np.arange(len(ts)) / 1e4, 1)}, "environment")],
                    ignore_index=True)
    edge_ts = ts[:600] - 600 * S - ts[0] + T0 - 1
    prev = frame_of(edge_ts, {"m0": np.r_[x[:599], 200.0], "m1": y[:600]})     # a spike at the edge
    nxt = frame_of(ts[-600:] + (ts[-1] - ts[-601]) + S, {"m0": x[-600:], "m1": y[-600:]})
    got, got_counts = qc.clean_frame(day, RULES, "valve01", previous=prev, next=nxt)
    monkeypatch.setattr(qc, "noise_scale", ref.noise_scale)
    monkeypatch.setattr(qc, "flag_spikes", ref.flag_spikes)
    monkeypatch.setattr(qc, "flag_flat_lines", ref.flag_flat_lines)
    want, want_counts = qc.clean_frame(day, RULES, "valve01", previous=prev, next=nxt)
    pd.testing.assert_frame_equal(got, want)
    assert got_counts == want_counts
    assert got_counts["tests"]["spike"] > 40 and got_counts["tests"]["flat"] > 1800


# ---------------------------------------------------------------- 10_parser's tokenising

def regex_pairs(tokens, psep):
    """The previous split of key:value tokens (one regex per token), the reference."""
    import re

    import pyarrow.compute as pc

    from pyjama.parse import _re_class

    kv = pc.extract_regex(tokens, "^(?P<key>[^" + _re_class(psep) + "]*)" + re.escape(psep) + "(?P<val>.*)$")
    return (pc.struct_field(kv, "key").to_pylist(), pc.struct_field(kv, "val").to_pylist(),
            (~np.asarray(pc.is_valid(kv).to_pylist(), dtype=bool)).tolist())


@pytest.mark.parametrize("psep,tokens,keys,vals", [
    (":", ["m0:12", " m1 : 3.5 ", "m2:", ":7", "m3", "", "a:b:c", "t:2026-01-21T00:00:00Z"],
     ["m0", " m1 ", "m2", "", None, None, "a", "t"],          # no separator: a bad pair
     ["12", " 3.5 ", "", "7", None, None, "b:c", "2026-01-21T00:00:00Z"]),
    ("=", ["m0=1", "m1=", "x"], ["m0", "m1", None], ["1", "", None]),
    ("=>", ["m0=>1", "a=b=>2", "m1=2", "=>3"], ["m0", None, None, ""], ["1", None, None, "3"]),
])
def test_key_value_split_equals_the_regex(psep, tokens, keys, vals):
    import pyarrow as pa

    from pyjama.parse import _split_pairs

    arr = pa.array(tokens, pa.string())
    key, val, bad = _split_pairs(arr, psep)
    assert key.to_pylist() == keys and val.to_pylist() == vals
    assert bad.tolist() == [k is None for k in keys]
    assert (key.to_pylist(), val.to_pylist(), bad.tolist()) == regex_pairs(arr, psep)


def test_numbers_test_nan_and_inf_only_where_no_number():
    import pyarrow as pa

    from pyjama.parse import _to_numbers

    toks = ["12", " -3.5e2 ", "nan", "-NaN", "inf", "+Infinity", "1e309", "x1", "", "NA", None, ".5", "5."]
    num, miss, bad, inf = _to_numbers(pa.array(toks, pa.string()), ["NA", ""])
    assert_array_equal(num, [12, -350, NAN, NAN, np.inf, np.inf, np.inf, NAN, NAN, NAN, NAN, 0.5, 5.0])
    assert miss.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0]
    assert bad.tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]      # nan text is a value, not bad
    assert inf.tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]


def test_numbers_by_the_cast_spelled_out():
    """Every token parses (no regex path): nan(...) is still bad, -nan is the regex path's
    NaN, 1e400 and inf text are infinite, missing tokens are NaN."""
    import pyarrow as pa

    from pyjama import parse

    toks = ["12", " -3.5e2 ", "nan(1)", "-nan", "-inf", "1e400", "", "NA", ".5", "+7"]
    assert parse._cast_numbers is not None
    num, miss, bad, inf = parse._to_numbers(pa.array(toks, pa.string()), ["NA", ""])
    assert_array_equal(num, [12, -350, NAN, NAN, -np.inf, np.inf, NAN, NAN, 0.5, 7.0])
    assert miss.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0]
    assert bad.tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert inf.tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert not np.signbit(num[3])                      # the regex path's NaN, not -nan's


@functools.lru_cache(maxsize=1)
def _number_candidates():
    """(strings, read by arrow's cast, its value): short ones exhaustively, longer at random."""
    import itertools

    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(1)
    short = list("0123456789.eE+-") + ["nan", "inf", "x", "_", " ", "\u0661"]
    cands = {"".join(t) for n in (1, 2, 3) for t in itertools.product(short, repeat=n)}
    longer = list("0123456789.eE+-") + ["nan", "inf", "infinity", "NaN", "Inf", "x", "p", "_", " ",
                                         "(", ")", "d", "f", "i", "n", "a", ",", "0x", "\t", "\u0661"]
    cands |= {"".join(rng.choice(longer, rng.integers(1, 9))) for _ in range(40_000)}
    cands = sorted(cands | {"nan()", "-nan(425E)", "1e400", "-1e400", "9" * 400, "0x10", "1_0", "1d5"})
    read, value = np.zeros(len(cands), bool), np.full(len(cands), np.nan)
    for i, c in enumerate(cands):
        try:
            value[i] = pc.cast(pa.array([c]), pa.float64())[0].as_py()
            read[i] = True
        except pa.ArrowInvalid:
            pass
    return cands, read, value


def test_the_cast_accepts_the_number_regexes_and_only_nan_forms_beyond():
    """What lets _cast_numbers skip the regex: the strings arrow's cast to float64 reads are
    those _NUMBER_RE, _NAN_RE or _INF_RE accept, plus nan(...) forms, which it reads as NaN
    (a pyarrow that reads more, e.g. 1_0 or 0x10, fails here)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pyjama import parse

    cands, read, value = _number_candidates()
    arr = pa.array(cands, pa.string())
    ours = np.zeros(len(cands), bool)
    for rx in (parse._NUMBER_RE, parse._NAN_RE, parse._INF_RE):
        ours |= parse._np_bool(pc.match_substring_regex(arr, rx))
    beyond = [c for c, r, o in zip(cands, read, ours) if r and not o]
    assert not [c for c, r, o in zip(cands, read, ours) if o and not r]
    assert beyond and all(re.fullmatch(r"[-+]?nan\(.*\)", c) for c in beyond)
    assert np.isnan(value[read & ~ours]).all()


@pytest.mark.parametrize("seed", range(3))
def test_numbers_by_the_cast_equal_the_regex_path(seed, monkeypatch):
    """Random batches of number-like tokens (with missing ones, without and with a token the
    cast refuses): the same values bit for bit, the same missing, bad and infinite."""
    import pyarrow as pa

    from pyjama import parse

    rng = np.random.default_rng(seed)
    cands, read, _ = _number_candidates()
    pool = [c for c in cands if len(c) < 6]
    readable = [c for c, r in zip(cands, read) if r and len(c) < 6]
    for trial in range(40):
        src = readable if trial % 4 else pool
        toks = list(rng.choice(src, 500)) + ["NA", "", None][: trial % 4]
        arr = pa.array(toks, pa.string())
        got = parse._to_numbers(arr, ["NA", ""])
        with monkeypatch.context() as m:
            m.setattr(parse, "_cast_numbers", lambda v, missing, missing_np: None)
            want = parse._to_numbers(arr, ["NA", ""])
        assert_array_equal(got[0].view(np.int64), want[0].view(np.int64))
        for g, w in zip(got[1:], want[1:]):
            assert_array_equal(g, w)


def test_key_value_split_equals_the_regex_on_random_tokens():
    import pyarrow as pa

    from pyjama.parse import _split_pairs

    rng = np.random.default_rng(8)
    alphabet = np.array(list("m0:1 .=a-\t"))
    tokens = ["".join(rng.choice(alphabet, rng.integers(0, 8))) for _ in range(3000)]
    for psep in (":", "=", " "):
        key, val, bad = _split_pairs(pa.array(tokens, pa.string()), psep)
        assert (key.to_pylist(), val.to_pylist(), bad.tolist()) == regex_pairs(pa.array(tokens), psep)


def test_parse_of_a_generated_day_equals_the_regex_split(tmp_path, monkeypatch):
    """A generated key:value day with its defects (spikes, sentinels, duplicates, a cut last
    line) plus bad pairs parses to the same rows and rejects with either split."""
    from pyjama import demo, parse
    from pyjama.config import validate

    demo.generate(tmp_path, "T", devices=1, days=1, hz=0.1, seed=3)
    raw = next(tmp_path.glob("T_valve01_*.csv"))
    text = raw.read_bytes() + b"2026-01-20T23:59:59Z;m0:1;m1;m2:nan;m3:inf;:4;m4: 5 \n"
    cfg = validate("10_parser", {"exposure": "T", "input_stage": "00_raw", "output_stage": "10_parsed",
                                 "format": "keyvalue", "device": {"from": "filename", "pattern":
                                 r"^T_(?P<device>[^_]+)_\d{4}-\d{2}-\d{2}\.csv$"}}, "test")
    got = parse.parse_bytes(text, cfg, raw.name)
    monkeypatch.setattr(parse, "_split_pairs", lambda flat, psep: _regex_split(flat, psep))
    want = parse.parse_bytes(text, cfg, raw.name)
    pd.testing.assert_frame_equal(got.rows, want.rows)
    assert got.rejects == want.rejects and got.rejected == want.rejected and len(got.rows) > 8000


def _regex_split(flat, psep):
    import re

    import pyarrow.compute as pc

    from pyjama.parse import _np_bool, _re_class

    kv = pc.extract_regex(flat, "^(?P<key>[^" + _re_class(psep) + "]*)" + re.escape(psep) + "(?P<val>.*)$")
    return pc.struct_field(kv, "key"), pc.struct_field(kv, "val"), ~_np_bool(pc.is_valid(kv))


# ---------------------------------------------------------------- 50_normalise's frame order

def pandas_order(df):
    return df.sort_values(["sensor", "ts"], kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("bad_times", [False, True])
def test_parse_fast_paths_equal_the_general_ones(tmp_path, monkeypatch, bad_times):
    """A generated key:value day with every kind of bad line (CR line ends on some lines, a
    stray CR inside one, control bytes, blanks, spaces and offsets around the time, bad
    times and times without an offset, which only pandas reads, a long line, bad pairs, repeated names, nan(...) and 1e400 values, a cut last
    line) parses to the same rows, rejects and skips with the arrow ISO times and the
    numbers by the cast as through pandas' times and the number regex."""
    from pyjama import demo, parse
    from pyjama.config import validate

    demo.generate(tmp_path, "T", devices=1, days=1, hz=0.05, seed=4)
    raw = next(tmp_path.glob("T_valve01_*.csv"))
    lines = raw.read_text().splitlines()
    rng = np.random.default_rng(4)
    edits = [lambda s: s + "\r", lambda s: s.replace(";m1:", ";m1:1\r2", 1), lambda s: s[:25] + "\x01" + s[25:],
             lambda s: "", lambda s: "  " + s.replace("Z;", "Z ;", 1), lambda s: s.replace("Z;", "+01:00;", 1),
             lambda s: s * 40, lambda s: s.replace(";m1:", ";m1", 1), lambda s: s + ";m0:5",
             lambda s: s.replace(";m2:", ";m2:nan(1);x:", 1), lambda s: s.replace(";m3:", ";m3:1e400;y:", 1)]
    if bad_times:    # a bad time, and one without an offset (only pandas reads it)
        edits += [lambda s: s.replace("2026", "20x6", 1), lambda s: s.replace("Z;", ";", 1)]
    for i in rng.choice(len(lines), 120, replace=False):
        lines[i] = edits[i % len(edits)](lines[i])
    text = ("\n".join(lines) + "\n2026-01-20T23:59:59Z;m0:1;m1:2").encode()
    cfg = validate("10_parser", {"exposure": "T", "input_stage": "00_raw", "output_stage": "10_parsed",
                                 "format": "keyvalue", "max_line_length": 2000, "device": {"from": "filename",
                                 "pattern": r"^T_(?P<device>[^_]+)_\d{4}-\d{2}-\d{2}\.csv$"}}, "test")
    fast, iso = [], parse._iso_utc_arrow
    monkeypatch.setattr(parse, "_iso_utc_arrow", lambda *a: fast.append(iso(*a)) or fast[-1])
    got = [parse.parse_bytes(text, cfg, raw.name, values=v) for v in (True, False)]
    assert [f is not None for f in fast] == [not bad_times] * 2     # the arrow times, unless a bad one
    monkeypatch.setattr(parse, "_iso_utc_arrow", lambda text, ts_cfg, book: None)
    monkeypatch.setattr(parse, "_cast_numbers", lambda v, missing, missing_np: None)
    want = [parse.parse_bytes(text, cfg, raw.name, values=v) for v in (True, False)]
    for g, w in zip(got, want):
        pd.testing.assert_frame_equal(g.rows, w.rows)
        assert (g.rejects, g.rejected, g.skipped, g.lines, g.parsed) == (w.rejects, w.rejected, w.skipped,
                                                                         w.lines, w.parsed)
    kinds = set(got[0].rejected) | set(got[0].skipped)
    assert {parse.R_GARBAGE, parse.R_LONG, parse.R_PAIR, parse.R_REPEATED, parse.R_NUMBER,
            parse.S_BLANK} | ({parse.R_TIMESTAMP} if bad_times else set()) <= kinds, kinds
    assert np.isinf(got[0].rows["value"]).sum() > 0 and len(got[0].rows) > 20_000


def test_control_chars_by_bytes_equal_the_garbage_regex():
    """_has_control_chars answers as _GARBAGE_RE would, for every character up to U+02FF,
    random ones beyond, and a control character on each side of a block's edge."""
    from pyjama import parse

    rng = np.random.default_rng(5)
    chars = [chr(c) for c in range(0x300)] + [chr(int(c)) for c in rng.integers(0x300, 0x10FFFF, 3000)
                                              if not 0xD800 <= c <= 0xDFFF]
    for c in chars:
        assert parse._has_control_chars("ab" + c + "é") == bool(re.search(parse._GARBAGE_RE, c)), hex(ord(c))
    assert not parse._has_control_chars("x" * 40 + "\t\r\n", block=16)
    for at in (15, 16, 17, 47):
        assert parse._has_control_chars("x" * at + "\x7f" + "y" * 20, block=16)


def test_parse_searches_lines_for_garbage_only_when_the_text_has_some(monkeypatch):
    """The same rows and rejects with the per-line search forced, with and without garbage."""
    from pyjama import parse
    from pyjama.config import validate

    cfg = validate("10_parser", {"exposure": "T", "input_stage": "00_raw", "output_stage": "10_parsed",
                                 "format": "keyvalue", "device": {"from": "fixed", "value": "d"}}, "test")
    good = "".join(f"2026-01-20T00:00:{i:02d}Z;m0:{i};t\u00e9:{i}\n" for i in range(50))
    for text in (good, good + "2026-01-20T00:01:00Z;m0:1\x00\n2026-01-20T00:01:01Z;m0:\ufffd\n"):
        got = parse.parse_bytes(text.encode(), cfg, "x.csv")
        with monkeypatch.context() as m:
            m.setattr(parse, "_has_control_chars", lambda text: True)
            want = parse.parse_bytes(text.encode(), cfg, "x.csv")
        pd.testing.assert_frame_equal(got.rows, want.rows)
        assert (got.rejects, got.rejected) == (want.rejects, want.rejected)
    assert set(got.rejected) == {parse.R_GARBAGE, parse.r_decode("utf-8")} and len(got.rows) == 100


def test_sensor_ts_order_spelled_out_equals_pandas():
    from pyjama.normalise import sort_sensor_ts

    t = pd.to_datetime(["2026-01-21T00:00:02Z", "2026-01-21T00:00:01Z", "2026-01-21T00:00:01Z",
                        "2026-01-20T23:59:59Z", "2026-01-21T00:00:00Z"], utc=True)
    df = tidy.frame(ts=t, device_id="v", domain="bio_signal", sensor=["m1", "m0", "m1", "m1", "m0"],
                    value=[1.0, 2.0, 3.0, NAN, 5.0], quality_flag=[0, 1, 2, 3, 0])
    df["sensor"] = df["sensor"].cat.reorder_categories(["m1", "m0"])     # category order, not names
    got = sort_sensor_ts(df)
    #   m1 first (its category comes first), each sensor by time
    assert got["sensor"].astype(str).tolist() == ["m1", "m1", "m1", "m0", "m0"]
    assert_array_equal(got["value"].to_numpy(), [NAN, 3.0, 1.0, 5.0, 2.0])
    assert got["quality_flag"].tolist() == [3, 2, 0, 0, 1]
    pd.testing.assert_frame_equal(got, pandas_order(df))
    ties = pd.concat([df, df.assign(value=df["value"] + 10)], ignore_index=True)   # equal keys
    pd.testing.assert_frame_equal(sort_sensor_ts(ties), pandas_order(ties))
    pd.testing.assert_frame_equal(sort_sensor_ts(df.iloc[:0]), pandas_order(df.iloc[:0]))


@pytest.mark.parametrize("seed", range(3))
def test_key_time_order_equals_lexsort_in_blocks_runs_and_disorder(seed):
    # tidy.key_time_order takes each of its three ways on these (blocks: no sort; a combined
    # key; the lexsort for keys from 2^22 or times spanning 2^40 µs): always np.lexsort's order
    rng = np.random.default_rng(120 + seed)
    for _ in range(30):
        n = int(rng.integers(1, 400))
        key = np.sort(rng.integers(0, 6, n))
        ts = np.concatenate([np.sort(rng.integers(0, 50, int(c))) for c in np.bincount(key)])
        cases = [(ts, key),                                                   # blocks in order
                 (ts[::-1].copy(), key[::-1].copy()),                         # blocks, times reversed
                 (np.r_[ts, ts], np.r_[key, key + 6]),                        # the derived rows after
                 (rng.integers(0, 50, n), rng.integers(0, 6, n)),             # disorder, ties
                 (rng.integers(0, 50, n), rng.integers(0, 6, n) + (1 << 22)),  # keys too large
                 (rng.integers(0, 3, n) << 40, rng.integers(0, 6, n))]        # times too far apart
        for t, k in cases:
            assert_array_equal(tidy.key_time_order(t.astype(np.int64), k.astype(np.int64)),
                               np.lexsort((t, k)))


def test_normalise_frame_on_a_generated_day_equals_the_pandas_sort(monkeypatch):
    from pyjama import normalise
    from tests.test_normalise import normalise_frame_pandas

    ts, x = generated_day(7, n=10000)
    rng = np.random.default_rng(7)
    parts = [frame_of(ts, {f"m{k}": x + k, f"m{k}__cbrt_inv": 1 / np.cbrt(np.abs(x) + 1 + k)}) for k in range(3)]
    df = pd.concat(parts, ignore_index=True).iloc[rng.permutation(6 * len(ts))]     # any row order
    df["quality_flag"] = rng.choice(np.array([0, 0, 0, 2, 4], dtype=np.uint8), len(df))
    params = {"sensors": r"^m\d+__cbrt_inv$", "mode": "add", "suffix": "norm", "clip": True,
              "shift": {"min_size": 0.2, "min_segment": "30min", "action": "flag"}}
    bounds = {f"m{k}__cbrt_inv": {"low": 0.07, "high": 0.08, "direction": "up"} for k in range(3)}
    for mode in ("add", "replace"):
        got = normalise.normalise_frame(df, {**params, "mode": mode}, bounds, "valve01")
        with monkeypatch.context() as m:
            # the per-sensor pandas version normalise_frame replaced, with pandas' own sort
            m.setattr(normalise, "sort_sensor_ts", pandas_order)
            want = normalise_frame_pandas(df, {**params, "mode": mode}, bounds, "valve01")
        pd.testing.assert_frame_equal(got[0], want[0])
        assert got[1] == want[1]


# ---------------------------------------------------------------- 40_resample's grids

def test_sorted_unique_equals_numpy_unique():
    from pyjama.resample import _sorted_unique

    for cells in ([3, 3, 5, 7, 7, 7], [0], [], [5, 2, 2, 9, 0]):      # the last: not in order
        cells = np.array(cells, dtype=np.int64)
        got, want = _sorted_unique(cells), np.unique(cells, return_inverse=True)
        assert_array_equal(got[0], want[0])
        assert_array_equal(got[1], want[1])
    assert _sorted_unique(np.array([3, 3, 5]))[1].tolist() == [0, 0, 1]


def test_grid_frame_order_equals_a_stable_sort_by_sensor_and_time():
    from pyjama.resample import _grid_frame

    us = 1_768_953_600_000_000
    for sen in (["m1", "m0", "water_temp"], ["m1", "m0", "m1"]):       # the second: a name twice
        ts_l = [us + np.array([0, 10, 20]), us + np.array([5, 15]), us + np.array([0, 20, 30])]
        val_l = [np.array([1.0, 2, 3]), np.array([4.0, NAN]), np.array([6.0, 7, 8])]
        flag_l = [np.array([0, 0, 1], np.uint8), np.array([0, 1], np.uint8), np.array([0, 0, 0], np.uint8)]
        dom = ["bio_signal", "bio_signal", "environment"]
        got = _grid_frame("valve01", ts_l, val_l, flag_l, dom, sen)
        rows = pd.concat([tidy.frame(ts=pd.to_datetime(t.astype("datetime64[us]"), utc=True), device_id="valve01",
                                     domain=d, sensor=s, value=v, quality_flag=f)
                          for t, v, f, d, s in zip(ts_l, val_l, flag_l, dom, sen)], ignore_index=True)
        want = rows.sort_values(["sensor", "ts"], kind="stable").reset_index(drop=True)
        assert_array_equal(got["value"].to_numpy(), want["value"].to_numpy())
        assert got["sensor"].astype(str).tolist() == want["sensor"].astype(str).tolist()
        assert got["ts"].tolist() == want["ts"].tolist() and got["domain"].astype(str).tolist() == \
            want["domain"].astype(str).tolist()
    #   the name twice: m0, then m1 of both series merged by time (bio 0 before env 0)
    assert got["value"].tolist()[2:] == [1.0, 6.0, 2.0, 3.0, 7.0, 8.0]


def test_resample_frame_on_a_generated_day_equals_numpys_unique(monkeypatch):
    from pyjama import resample

    ts, x = generated_day(9, n=30000)
    df = pd.concat([frame_of(ts, {"m0": x, "m1": x[::-1].copy()}),
                    frame_of(ts[::7], {"water_temp": np.round(x[::7] / 100, 1)}, "environment")],
                   ignore_index=True)
    df["quality_flag"] = np.random.default_rng(9).choice(np.array([0, 0, 0, 2, 4, 5], np.uint8), len(df))
    params = {"domains": {"bio_signal": {"freq": "1s", "reduce": "mean", "fill": "linear", "max_gap": "5s",
                                         "sparse_after": "1min"},
                          "environment": {"freq": "10s", "reduce": "median"}}}
    got, got_counts = resample.resample_frame(df, params, "2026-01-21")
    monkeypatch.setattr(resample, "_sorted_unique", lambda c: np.unique(c, return_inverse=True))
    want, want_counts = resample.resample_frame(df, params, "2026-01-21")
    pd.testing.assert_frame_equal(got, want)
    pd.testing.assert_frame_equal(got, got.sort_values(["sensor", "ts"], kind="stable").reset_index(drop=True))
    assert got_counts == want_counts and got_counts["filled"] > 0


def _slow_conform(df):
    """tidy.conform before its fast path: every column cast, the index reset."""
    out = df[tidy.COLUMNS]
    out["ts"] = out["ts"].astype("datetime64[us, UTC]")
    for c in ("device_id", "domain", "sensor"):
        out[c] = tidy.as_category(out[c])
    out["value"] = out["value"].astype(np.float64)
    out["quality_flag"] = out["quality_flag"].astype(np.uint8)
    return out.reset_index(drop=True)


def test_conform_of_a_tidy_frame_is_a_copy_equal_to_the_full_casts():
    df = tidy.frame(ts=["2026-01-21T00:00:00Z", "2026-01-21T00:00:01Z", "2026-01-21T00:00:02Z"],
                    device_id="valve01", domain="bio_signal", sensor=["m0", "m1", "m0"],
                    value=[1.0, NAN, 3.0], quality_flag=[0, 2, 0])
    assert tidy._is_tidy(df)
    out = tidy.conform(df)
    pd.testing.assert_frame_equal(out, _slow_conform(df))
    assert out is not df
    out.loc[0, "value"] = 99.0                     # the caller's frame stays as it was
    assert df["value"].tolist()[0] == 1.0
    # a filtered frame (index 1, 2), a reordered one, a float flag: the full path, same result
    part = df.iloc[1:]
    assert not tidy._is_tidy(part)
    pd.testing.assert_frame_equal(tidy.conform(part), _slow_conform(part))
    assert tidy.conform(part).index.tolist() == [0, 1]
    shuffled = df[["value", *[c for c in tidy.COLUMNS if c != "value"]]]
    assert not tidy._is_tidy(shuffled) and tidy.conform(shuffled).columns.tolist() == tidy.COLUMNS
    floats = df.assign(quality_flag=df["quality_flag"].astype(float))
    assert not tidy._is_tidy(floats) and tidy.conform(floats)["quality_flag"].dtype == np.uint8
    ns = df.assign(ts=df["ts"].astype("datetime64[ns, UTC]"))
    assert not tidy._is_tidy(ns) and str(tidy.conform(ns)["ts"].dtype) == "datetime64[us, UTC]"


@pytest.mark.parametrize("seed", range(4))
def test_spikes_from_the_candidate_runs_only_equal_every_row(seed):
    # qc._flag_spikes computes the noise and the context median only for the runs beyond
    # both neighbours by more than threshold_abs (T is never below it): the same flags as
    # computing them for every row, on noisy series with spikes of 1-4 samples either way,
    # stuck stretches, NaN, ±inf, several series, thresholds small and large
    rng = np.random.default_rng(40 + seed)
    hits = 0
    for k in range(60):
        n = int(rng.integers(5, 400))
        x = np.round(1000 + rng.normal(0, rng.choice([0.5, 3, 20]), n), int(rng.integers(0, 2)))
        for _ in range(int(rng.integers(0, 8))):
            i, L = int(rng.integers(0, n)), int(rng.integers(1, 5))
            x[i:i + L] += rng.choice([-1, 1]) * rng.choice([30, 80, 300])
        if k % 4 == 1:
            x[n // 3: n // 3 + 15] = x[n // 3]                  # stuck
        x[rng.random(n) < 0.05] = np.nan
        if k % 9 == 8:
            x[int(rng.integers(0, n))] = np.inf
        ts = T0 + np.cumsum(rng.choice([1, 1, 1, 2, 30], n)) * S
        cut = sorted(set(rng.integers(1, n, int(rng.integers(0, 3))).tolist()))
        series = qc.Series(ts, np.diff([0] + cut + [n]) if cut else None)     # 1 to 3 series end to end
        for thr_abs, ctx, direction in ((50, None, "both"), (0, pd.Timedelta("60s"), "down"),
                                        (5, pd.Timedelta("20s"), "up"), (200, None, "down")):
            args = (pd.Timedelta("11s"), 6.0, thr_abs, 3, ctx, direction)
            got = qc._flag_spikes(series, x, *args)
            want = qc._flag_spikes(series, x, *args, candidates_only=False)
            assert_array_equal(got, want)
            hits += int(want.sum())
    assert hits > 100


def test_centred_bounds_of_a_few_rows_spelled_out():
    # no row asked: nothing searched, ascending bounds of width 1
    none = qc._centred_bounds(qc.Series(T0 + np.arange(4) * S), pd.Timedelta("4s"), np.zeros(4, dtype=bool))
    assert [b.tolist() for b in none] == [[0, 1, 2, 3], [1, 2, 3, 4]]
    # 1 s samples with a 10 s hole after row 5, a 4 s window (±2 s): rows 2 and 6 asked of
    # 20, so only theirs are searched; every row takes the bounds of the asked row at or
    # before it (rows 0-1: row 2's), so both arrays stay ascending
    ts = T0 + np.r_[np.arange(6), np.arange(16, 30)] * S
    rows = np.zeros(20, dtype=bool)
    rows[[2, 6]] = True
    lo, hi = qc._centred_bounds(qc.Series(ts), pd.Timedelta("4s"), rows)
    assert lo.tolist() == [0, 0, 0, 0, 0, 0] + [6] * 14
    assert hi.tolist() == [5, 5, 5, 5, 5, 5] + [9] * 14
    full = qc._centred_bounds(qc.Series(ts), pd.Timedelta("4s"))
    assert (full[0][[2, 6]].tolist(), full[1][[2, 6]].tolist()) == ([0, 6], [5, 9])
    # many rows asked (a fifth): every row searched, as without rows
    many = np.arange(20) % 5 == 0
    assert [b.tolist() for b in qc._centred_bounds(qc.Series(ts), pd.Timedelta("4s"), many)] == \
        [b.tolist() for b in full]


@pytest.mark.parametrize("seed", range(3))
def test_centred_bounds_of_a_few_rows_equal_every_rows_at_those_rows(seed):
    rng = np.random.default_rng(70 + seed)
    for _ in range(40):
        n = int(rng.integers(20, 3000))
        ts = T0 + np.cumsum(rng.choice([1, 1, 1, 2, 60], n)) * S
        cut = sorted(set(rng.integers(1, n, int(rng.integers(0, 4))).tolist()))
        series = qc.Series(ts, np.diff([0] + cut + [n]) if cut else None)
        rows = rng.random(n) < rng.choice([0.002, 0.02, 0.1])
        window = pd.Timedelta(f"{int(rng.integers(1, 400))}s")
        lo, hi = qc._centred_bounds(series, window, rows)
        flo, fhi = qc._centred_bounds(series, window)
        assert_array_equal(lo[rows], flo[rows])
        assert_array_equal(hi[rows], fhi[rows])
        assert (np.diff(lo) >= 0).all() and (np.diff(hi) >= 0).all() and (hi > lo).all()


def test_long_run_of_small_steps_spelled_out():
    one = qc.Series(T0 + np.arange(8) * S)
    x = np.array([0, 0.5, 0, 0.5, 3, 3, 3, 9])
    #   steps 0.5 0.5 0.5 | 2.5 | 0 0 | 6: with a limit of 0.5, rows 0-3 last 3 s
    assert qc._long_run_of_small_steps(x, one, 0.5, 3 * S)
    assert not qc._long_run_of_small_steps(x, one, 0.5, 3 * S + 1)
    assert not qc._long_run_of_small_steps(x, one, 0.49, 3 * S)      # rows 4-6 last 2 s only
    #   a NaN step is not above the limit (an inf − inf spread is then left to the windows)
    assert qc._long_run_of_small_steps(np.array([np.inf, np.inf, 1.0]), qc.Series(T0 + np.arange(3) * S), 0, S)
    #   two series end to end: the run of rows 2-5 crosses from one to the other, so no run
    #   lasts 3 s; per-row limits and durations (each series its own)
    two = qc.Series(T0 + np.r_[np.arange(4), np.arange(4)] * S, [4, 4])
    y = np.array([9, 1, 1, 1, 1, 1, 1, 9.0])
    assert not qc._long_run_of_small_steps(y, two, 0.0, 3 * S)
    assert qc._long_run_of_small_steps(y, two, 0.0, 2 * S)
    assert qc._long_run_of_small_steps(y, two, np.r_[[0.0] * 4, [8.0] * 4], np.r_[[9 * S] * 4, [3 * S] * 4])


@pytest.mark.parametrize("seed", range(3))
def test_flat_lines_without_a_long_run_of_small_steps_equal_the_windows(seed, monkeypatch):
    # qc._flag_flat_lines returns at once when no run of small steps lasts min_duration:
    # the same flags as searching the windows, on series with stuck stretches just shorter
    # and longer than min_duration, steps exactly at the tolerance, NaN, ±inf, 1 to 3
    # series end to end
    rng = np.random.default_rng(90 + seed)
    cases = []
    for k in range(60):
        n = int(rng.integers(5, 500))
        x = np.round(1000 + rng.normal(0, rng.choice([0.3, 2, 20]), n), int(rng.integers(0, 2)))
        if k % 3:
            i, L = int(rng.integers(0, n)), int(rng.integers(5, 40))
            x[i:i + L] = x[i] + (np.arange(len(x[i:i + L])) % 2) * rng.choice([0, 0.5, 1])
        x[rng.random(n) < 0.03] = np.nan
        if k % 11 == 10:
            x[int(rng.integers(0, n))] = rng.choice([np.inf, -np.inf])
        ts = T0 + np.cumsum(rng.choice([1, 1, 1, 2, 30], n)) * S
        cut = sorted(set(rng.integers(1, n, int(rng.integers(0, 3))).tolist()))
        series = qc.Series(ts, np.diff([0] + cut + [n]) if cut else None)
        for tol, dur in ((0, "10s"), (0.5, "20s"), (1, "8s"), (0, "45s"), (30, "1min")):
            cases.append((series, x, tol, pd.Timedelta(dur)))
    got = [qc._flag_flat_lines(*c) for c in cases]
    skipped = sum(not qc._long_run_of_small_steps(*_flat_precheck_args(*c)) for c in cases)
    monkeypatch.setattr(qc, "_long_run_of_small_steps", lambda *a: True)
    want = [qc._flag_flat_lines(*c) for c in cases]
    for g, w in zip(got, want):
        assert_array_equal(g, w)
    assert sum(int(w.sum()) for w in want) > 1000 and 30 < skipped < len(cases) - 30   # both paths


def _flat_precheck_args(series, x, tol, dur):
    """qc._long_run_of_small_steps' arguments as qc._flag_flat_lines passes them."""
    ok, usable = series.keep(~np.isnan(x), min_length=2)
    xs = x[ok]
    if len(ok) < 2:
        return xs, usable, 0.0, 0
    if usable.single:
        period = int(np.median(np.diff(usable.ts)))
        return xs, usable, tol + 1e-9 * max(1.0, float(np.max(np.abs(xs)))), max(dur.value - period, 1)
    period = qc._series_median_step(usable)
    eps = np.repeat(1e-9 * np.maximum(1.0, np.maximum.reduceat(np.abs(xs), usable.first)), usable.lengths)
    return xs, usable, tol + eps, np.repeat(np.maximum(dur.value - period, 1), usable.lengths)


def test_remove_unused_spelled_out():
    col = pd.Series(pd.Categorical(["b", None, "d", "b"], categories=["d", "c", "b", "a"]))
    out = tidy.remove_unused(col)
    assert list(out.cat.categories) == ["d", "b"]                 # the order kept, c and a gone
    assert out.cat.codes.tolist() == [1, -1, 0, 1]                # a missing value stays missing
    full = pd.Series(pd.Categorical(["x", "y"]))
    assert tidy.remove_unused(full) is full                       # nothing unused: the column itself


@pytest.mark.parametrize("seed", range(8))
def test_remove_unused_equals_pandas_on_random_columns(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 9))
    cats = [f"s{i}" for i in rng.permutation(k)]
    codes = rng.integers(-1, k, int(rng.integers(0, 50)))
    col = pd.Series(pd.Categorical.from_codes(codes, categories=cats, ordered=bool(seed % 2)),
                    index=np.arange(len(codes)) * 3, name="sensor")
    pd.testing.assert_series_equal(tidy.remove_unused(col), col.cat.remove_unused_categories())
