"""Quality-control tests of step 30_clean: pure functions, one rule each, flags only.

Every ``flag_*`` function takes numpy arrays of ONE sensor (values in the sensor's unit,
timestamps as int64 nanoseconds since the epoch, sorted ascending) and returns a boolean
mask of the samples the rule flags. None of them changes a value. The step
(:mod:`pyjama.steps.clean`) turns masks into codes of :class:`pyjama.flags.Flag` and
keeps, per sample, the code of highest precedence (:func:`pyjama.flags.combine`).

Rules (docs/steps/clean-resample.md states them with examples):

* :func:`flag_missing`       value is NaN                                    → 1 MISSING
* :func:`flag_range`         x < lo or x > hi, or x = ±inf                   → 3 OUT_OF_RANGE
* :func:`flag_sentinels`     x equals a declared sentinel (e.g. 4095)        → 3 OUT_OF_RANGE
* :func:`flag_spikes`        short excursion from a centred rolling median
                             that returns to its level                       → 2 SPIKE
* :func:`flag_flat_lines`    max − min ≤ tolerance for ≥ min_duration        → 4 FLAT_LINE
* :func:`flag_exclusions`    inside a declared (device, sensors, start, end) → 6 EXCLUDED
"""
from __future__ import annotations

import functools
import re
import threading
from typing import NamedTuple

import numpy as np
import pandas as pd

from .errors import UserError
from .timewindow import iso_seconds

# MAD → standard deviation of a normal distribution: sigma = 1.4826 × MAD.
MAD_TO_SIGMA = 1.4826


class _NoCommonAxis(ValueError):
    """The series cannot share one int64 time axis (:meth:`Series.key`)."""


class Series:
    """K series of one test laid end to end in one array: series k holds rows
    [first_k, first_k + length_k), each sorted by time. A window never reaches into a
    neighbouring series: per row, ``lo`` and ``hi`` are the bounds of its own series
    (scalars 0 and n for one series), and :meth:`key` is a time axis ascending over all
    rows. A slow logger's day is a few dozen samples per series, where every numpy call is
    overhead: its series are tested together (:func:`clean_frame`), each with exactly the
    values it would get alone."""

    __slots__ = ("ts", "lengths", "first", "lo", "hi")

    def __init__(self, ts_ns: np.ndarray, lengths=None):
        self.ts = np.asarray(ts_ns, dtype=np.int64)
        n = len(self.ts)
        if lengths is None or len(lengths) == 1:
            self.lengths = np.array([n], dtype=np.int64)
            self.first = np.zeros(1, dtype=np.int64)
            self.lo, self.hi = 0, n
            return
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if int(self.lengths.sum()) != n:
            raise ValueError(f"Series: lengths add up to {int(self.lengths.sum())}, not the {n} rows")
        stops = np.cumsum(self.lengths)
        self.first = stops - self.lengths
        self.lo = np.repeat(self.first, self.lengths)
        self.hi = np.repeat(stops, self.lengths)

    @property
    def single(self) -> bool:
        return len(self.lengths) == 1

    def key(self, reach_ns: int) -> np.ndarray:
        """An int64 time axis, ascending over all rows, in which a search from a row by at
        most ``reach_ns`` stays inside the row's series: t − t_min + k × (span + reach + 1)
        for series k (one series: the times themselves)."""
        if self.single:
            return self.ts
        t0 = int(self.ts.min())
        step = int(self.ts.max()) - t0 + abs(int(reach_ns)) + 1
        if len(self.lengths) * step >= 1 << 62:
            raise _NoCommonAxis("Series: the series' times and reach do not fit one int64 axis")
        return self.ts - t0 + np.repeat(np.arange(len(self.lengths), dtype=np.int64) * step, self.lengths)

    def keep(self, rows: np.ndarray, min_length: int = 1):
        """(rows, Series) of the rows ``rows`` (a boolean mask) of each series, without the
        series left with fewer than ``min_length`` rows."""
        if self.single:
            at = np.flatnonzero(rows)
            if len(at) < min_length:
                at = at[:0]
            return at, Series(self.ts[at])
        c = np.concatenate(([0], np.cumsum(rows)))
        kept = c[self.first + self.lengths] - c[self.first]
        if min_length > 1:
            rows = rows & np.repeat(kept >= min_length, self.lengths)
            kept = np.where(kept >= min_length, kept, 0)
        at = np.flatnonzero(rows)
        kept = kept[kept > 0]
        return at, Series(self.ts[at], kept if len(kept) > 1 else None)


def centred_bounds(ts_ns: np.ndarray, window) -> tuple:
    """Row bounds [start, end) of the centred window of each sample.

    ``window`` is an odd number of samples (n: the sample, (n−1)/2 before, (n−1)/2 after,
    truncated at the series edges) or a :class:`pandas.Timedelta` W (every sample with
    |t − t_i| ≤ W/2).
    """
    return _centred_bounds(Series(ts_ns), window)


def _centred_bounds(series: Series, window, rows=None) -> tuple:
    """:func:`centred_bounds` of each series of ``series`` (windows end at its edges).
    ``rows`` (a boolean mask): only those rows' windows are used; when they are few (a
    spike test's candidates: a few hundred of a 1 Hz day's 86,400) only their bounds are
    searched, and every other row gets the bounds of the asked row before it (the first
    asked row's before it), so both arrays stay ascending."""
    n = len(series.ts)
    idx = np.arange(n, dtype=np.int64)
    if isinstance(window, (int, np.integer)):
        half = int(window) // 2
        return np.maximum(idx - half, series.lo), np.minimum(idx + half + 1, series.hi)
    half = int(pd.Timedelta(window).value) // 2
    key = series.key(half)
    at = None if rows is None else np.flatnonzero(rows)
    if at is not None and not len(at):
        return idx, idx + 1                 # no row asked: any ascending bounds
    if at is None or len(at) * _FEW_ROWS >= n:
        start = np.searchsorted(key, key - half, side="left")
        end = np.searchsorted(key, key + half, side="right")
        return start.astype(np.int64, copy=False), end.astype(np.int64, copy=False)
    start = np.searchsorted(key, key[at] - half, side="left").astype(np.int64, copy=False)
    end = np.searchsorted(key, key[at] + half, side="right").astype(np.int64, copy=False)
    before = np.maximum(np.cumsum(np.asarray(rows, dtype=bool)) - 1, 0)    # the asked row at or before each row
    return start[before], end[before]


_FEW_ROWS = 8        # asked rows fewer than n / 8: search only theirs (_centred_bounds)


# The median's plan, by cost (ns, measured on this machine with 200,000 jittered samples,
# windows of 31 / 301 / 3001 samples): a fixed-width bottleneck pass costs ~50 per value of
# the series, gathering one row's window ~30 per value of the window + ~1000, pandas'
# skiplist over explicit bounds ~150 + 25·log2(w) per row (235 / 300 / 385 measured). A
# width's rows get a pass when gathering them would cost more; when passes and gathers
# together would cost more than pandas' skiplist, pandas does every row (as before).
_PASS_NS, _GATHER_NS, _GATHER_ROW_NS = 50.0, 30.0, 1000.0
_GATHER_CELLS = 1 << 20      # values gathered at once (8 MB of float64: a 10 Hz day stays in its memory goal)


def rolling_stat(values: np.ndarray, start: np.ndarray, end: np.ndarray, stat: str,
                 rows=None) -> np.ndarray:
    """Statistic of each window of rows [start_i, end_i): out_i = stat(x[start_i:end_i]),
    one window per value (``start``, ``end`` as long as ``values``; ``rows``: a boolean
    mask, only those windows are computed, the others are NaN).

    ``stat`` is "median", "max" or "min"; NaN values are ignored, a window without a value
    gives NaN — exactly what pandas' ``rolling(<these bounds>, min_periods=1).<stat>()``
    gives (tests/test_kernels.py compares them), at a fraction of its cost.

    max / min: a sparse table over the whole series, level by level (the max of the two
    overlapping power-of-two blocks that cover a window), O(n log w) for any bounds.
    median: rows whose window has a width w shared by many rows take their value from one
    bottleneck pass of fixed width w (the window [end−w, end) ending at their last row); the
    other rows (series edges, gaps, irregular sampling) from their gathered windows.
    """
    x = np.asarray(values, dtype=np.float64)
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    width = end - start
    todo = width > 0           # an empty window: NaN
    if rows is not None:
        todo &= np.asarray(rows, dtype=bool)
    if stat in ("max", "min"):
        return _rolling_extreme(x, start, end, todo, np.fmax if stat == "max" else np.fmin)
    if stat != "median":
        raise ValueError(f"rolling_stat: stat {stat!r}; allowed: median, max, min")
    import bottleneck as bn

    out = np.full(len(start), np.nan)
    widths, counts = np.unique(width[todo], return_counts=True)
    # some rows asked: pandas would still compute all n (not with ±inf: pandas reads them
    # as NaN, the other paths as values, and such a series keeps the path it always took)
    subset = rows is not None and not np.isinf(x).any()
    passes = _median_plan(widths, counts, len(x), pandas_rows=len(x) if subset else None)
    if passes is None:
        at = np.flatnonzero(todo)
        out[at] = _pandas_rolling_median(x, start, end)[at]
        return out
    for w in passes:
        at = np.flatnonzero(todo & (width == w))
        out[at] = bn.move_median(x, int(w), min_count=1)[end[at] - 1]
        todo[at] = False
    at = np.flatnonzero(todo)
    if not len(at):
        return out
    wmax = int(width[at].max())
    cols = np.arange(wmax, dtype=np.int64)
    step = max(1, _GATHER_CELLS // wmax)
    for k in range(0, len(at), step):
        r = at[k:k + step]
        pos = np.minimum(start[r, None] + cols, len(x) - 1)
        block = np.where(cols < width[r, None], x[pos], np.nan)
        out[r] = bn.nanmedian(block, axis=1)
    return out


def _median_plan(widths: np.ndarray, counts: np.ndarray, n: int, pandas_rows=None):
    """The window widths that get a bottleneck pass (the other rows are gathered), or None
    when pandas' skiplist is cheaper for all of them (costs: the constants above).
    ``pandas_rows``: how many rows the pandas path would compute (default: the windows
    asked for; when only some rows are asked, pandas still computes all n)."""
    if not len(widths):
        return widths
    gather_ns = counts * (_GATHER_NS * widths + _GATHER_ROW_NS)
    take = gather_ns > _PASS_NS * n
    cost = _PASS_NS * n * take.sum() + gather_ns[~take].sum()
    typical = float(widths[np.searchsorted(np.cumsum(counts), counts.sum() // 2, side="right")])  # median width
    rows = counts.sum() if pandas_rows is None else pandas_rows
    if cost > (150.0 + 25.0 * np.log2(max(typical, 2.0))) * rows:
        return None
    return widths[take]


def _rolling_extreme(x: np.ndarray, start: np.ndarray, end: np.ndarray, todo: np.ndarray, op) -> np.ndarray:
    """max (op = np.fmax) or min (np.fmin) of the windows [start_i, end_i) of the rows
    ``todo`` (width ≥ 1), NaN ignored; the other rows NaN."""
    out = np.full(len(start), np.nan)
    at = np.flatnonzero(todo)
    if not len(at):
        return out
    level = np.frexp((end[at] - start[at]).astype(np.float64))[1] - 1     # floor(log2 width)
    order = np.argsort(level, kind="stable")
    cut = np.concatenate(([0], np.cumsum(np.bincount(level))))
    table = x                    # at level k: table[i] = op(x[i : i + 2**k])
    for k in range(len(cut) - 1):
        if k:
            half = 1 << (k - 1)
            table = op(table[:-half], table[half:])
        r = at[order[cut[k]:cut[k + 1]]]
        if len(r):
            out[r] = op(table[start[r]], table[end[r] - (1 << k)])
    return out


def _pandas_rolling_median(x: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """pandas' rolling median over explicit bounds (its skiplist: any bounds, O(n log w))."""
    from pandas.api.indexers import BaseIndexer

    class Bounds(BaseIndexer):
        def get_window_bounds(self, num_values=0, min_periods=None, center=None, closed=None, step=None):
            return start, end

    return pd.Series(x).rolling(Bounds(), min_periods=1).median().to_numpy()


# ---------------------------------------------------------------- the tests

def flag_missing(values: np.ndarray) -> np.ndarray:
    """Flag samples without a value: x is NaN. → 1 MISSING"""
    return np.isnan(np.asarray(values, dtype=np.float64))


def flag_range(values: np.ndarray, lo=None, hi=None) -> np.ndarray:
    """Flag values outside the gross range: x < lo or x > hi, or x = ±inf. → 3

    values : sensor values [sensor unit]; lo, hi : inclusive valid bounds [sensor unit],
    ``None`` for an open side. NaN is not flagged here (it is missing, not out of range).
    """
    x = np.asarray(values, dtype=np.float64)
    out = np.isinf(x)
    with np.errstate(invalid="ignore"):
        if lo is not None:
            out |= x < lo
        if hi is not None:
            out |= x > hi
    return out


def flag_sentinels(values: np.ndarray, sentinels) -> np.ndarray:
    """Flag logger sentinel / saturation codes: x ∈ sentinels (exact equality). → 3

    values : sensor values [sensor unit]; sentinels : e.g. (−4096, 1023, 4095, 65535) [counts].
    """
    x = np.asarray(values, dtype=np.float64)
    if not len(sentinels):
        return np.zeros(len(x), dtype=bool)
    s = np.asarray(list(sentinels), dtype=np.float64)
    if len(s) > 8:
        return np.isin(x, s)
    out = x == s[0]          # what np.isin does for a few values, without its fixed cost
    for v in s[1:]:
        out |= x == v
    return out


NOISE_MIN_SIDE = 60   # samples on each side of the noise window, at least (see noise_scale)


def noise_scale(ts_ns: np.ndarray, x: np.ndarray, window) -> np.ndarray:
    """Robust local noise sd from first differences [sensor unit]:

        sigma_i = 1.4826 * median(|x_k - x_k-1| : k in the centred window of i) / sqrt(2)

    (the window holds at least :data:`NOISE_MIN_SIDE` = 60 samples on each side: a median
    of 31 differences is too uncertain for a 6-sigma test — measured on generated 5 %-noise
    counts, it read 10.5 where the noise sd was 25, and ordinary noise was flagged; with
    121 differences the estimate is within ~10 %; at 0.1 Hz that is ±10 min. A level
    change — a closure edge — is one or a few large differences in the window, so it does
    not inflate sigma the way it inflates the MAD around a rolling median). Differences
    inside a run of three or more identical values (a stuck stretch: zero differences that
    are not noise) are left out while they are less than half of the window: next to a
    stuck sensor they would pull sigma down and make ordinary noise look like a spike (where
    they are most of it, the noise is below the sensor's resolution and sigma stays ~0)."""
    if len(x) < 2:
        return np.zeros(len(x))
    return _noise_scale(Series(ts_ns), np.asarray(x, dtype=np.float64), window)


def _noise_scale(series: Series, x: np.ndarray, window, rows=None) -> np.ndarray:
    """:func:`noise_scale` of each series of ``series`` (each of 2 rows or more); with
    ``rows`` (a boolean mask) only at those rows, NaN at the others."""
    d = np.abs(np.diff(x))
    d = np.concatenate(([d[0]], d))            # d[k] = |x_k - x_k-1|
    if not series.single:      # the first difference of a series is its second
        d[series.first] = d[series.first + 1]
    zero = d == 0
    after, before = np.concatenate((zero[1:], [False])), np.concatenate(([False], zero[:-1]))
    # no run of repeats across two series (a series' first row has its second row's
    # difference, so its own next row decides; its last row has no next one)
    if not series.single:
        after[series.first + series.lengths - 1] = False
    stuck = zero & (after | before)
    lo, hi = _centred_bounds(series, window, rows)
    idx = np.arange(len(x), dtype=np.int64)
    lo = np.maximum(np.minimum(lo, idx - NOISE_MIN_SIDE), series.lo)
    hi = np.minimum(np.maximum(hi, idx + NOISE_MIN_SIDE + 1), series.hi)
    med = rolling_stat(d, lo, hi, "median", rows=rows)
    if stuck.any():
        live = np.where(stuck, np.nan, d)
        n_live = np.concatenate(([0], np.cumsum(~np.isnan(live))))
        n_live = n_live[hi] - n_live[lo]
        # repeats are the minority: the edge of a stuck stretch, left out; where they are
        # most of the window the noise is below the sensor's resolution (sigma ~ 0)
        use = n_live >= np.maximum(5, 0.5 * (hi - lo))
        # where no repeat is in the window, its live median is the median already taken
        redo = use & (n_live < hi - lo)
        if rows is not None:
            redo &= rows
        med[redo] = np.nan_to_num(rolling_stat(live, lo, hi, "median", rows=redo)[redo])
    return MAD_TO_SIGMA * med / np.sqrt(2.0)


def flag_spikes(ts_ns: np.ndarray, values: np.ndarray, window, threshold_mad=6.0,
                threshold_abs=None, max_length: int = 3, context_window=None,
                direction: str = "both") -> np.ndarray:
    """Flag spikes: runs of 1..max_length samples lying beyond BOTH neighbours.

    With sigma_i the local noise sd (:func:`noise_scale` over the centred ``window``) and

        T_i = max(threshold_mad × sigma_i, threshold_abs)                      [sensor unit]

    a run of consecutive usable samples i = a+1 … b−1 (1 ≤ b−1−a ≤ max_length) between the
    usable samples a and b is a spike, flagged 2, when every sample of the run is beyond the
    envelope of its two neighbours by more than T (T taken at the run's first sample):

        up:   min(x_run) − max(x_a, x_b) > T        down:  min(x_a, x_b) − max(x_run) > T

    ``direction`` names the side on which a lone excursion is physically impossible: "up",
    "down", or "both". On that side the envelope test suffices; on the other (physical)
    side a run is a spike only if it is beyond both neighbours by more than 2T and comes
    straight back, |x_b − x_a| ≤ 3 × sigma. A
    valve closes fast and opens slowly: a lone sample toward OPEN is impossible, one toward
    CLOSED that recovers slowly is a real adduction, kept — one that is back at once is a
    glitch. For Hall counts (higher = more closed) the glitch side is "down"; for a gap in
    mm (higher = more open), "up".
    A ramp sample lies between its neighbours and is never beyond both, so closure edges are
    not flagged, while a glitch replacing the sample at an edge is. With a
    ``context_window`` (centred median M_i over it), each run sample must also satisfy
    |x_i − M_i| > T_i: a brief return to the level the sensor held for most of the last
    minutes is not a spike. The first and last usable samples have one neighbour and are
    never flagged: pass the neighbouring day's edge samples (see :func:`clean_frame`) to
    test them. NaN values are ignored (they neither count nor break a run).

    ts_ns : sample times [ns since epoch, ascending]; values : [sensor unit].
    """
    return _flag_spikes(Series(ts_ns), values, window, threshold_mad, threshold_abs, max_length,
                        context_window, direction)


def _spike_runs(usable: Series, n: int, L: int, idx: np.ndarray) -> np.ndarray:
    """First rows of the runs of L usable samples with a neighbour on each side in their
    series (run = start … start+L−1)."""
    if usable.single:
        return np.arange(1, n - L)
    return np.flatnonzero((idx > usable.lo) & (idx + L < usable.hi))


def _run_envelope(xs: np.ndarray, starts: np.ndarray, L: int) -> tuple:
    """(min, max of each run of L samples from ``starts``, the sample before, the sample
    after)."""
    run = np.stack([xs[starts + k] for k in range(L)])
    return run.min(axis=0), run.max(axis=0), xs[starts - 1], xs[starts + L]


def _spike_candidates(xs: np.ndarray, usable: Series, max_length: int, floor: float):
    """(first rows, every row) of the runs that could be spikes whatever the noise: beyond
    both neighbours by more than ``floor`` (the threshold T is never below it), as boolean
    masks. The noise and the context median are needed there only."""
    n = len(xs)
    idx = np.arange(n, dtype=np.int64)
    first, rows = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for L in range(1, int(max_length) + 1):
        starts = _spike_runs(usable, n, L, idx)
        if not len(starts):
            break
        run_min, run_max, xa, xb = _run_envelope(xs, starts, L)
        with np.errstate(invalid="ignore"):
            beyond = (run_min - np.maximum(xa, xb) > floor) | (np.minimum(xa, xb) - run_max > floor)
        s = starts[beyond]
        first[s] = True
        for k in range(L):
            rows[s + k] = True
    return first, rows


def _flag_spikes(series: Series, values: np.ndarray, window, threshold_mad=6.0, threshold_abs=None,
                 max_length: int = 3, context_window=None, direction: str = "both",
                 candidates_only: bool = True) -> np.ndarray:
    """:func:`flag_spikes` of each series of ``series``. With a threshold_abs ≥ 0 the noise
    scale and the context median are computed only for the runs beyond both neighbours by
    more than threshold_abs (``candidates_only``; T ≥ threshold_abs, so no other run can be
    a spike): on a 1 Hz day a few hundred rows, not 86,400. The flags are the same
    (tests/test_kernels.py compares both ways). A series holding ±inf computes every row."""
    x = np.asarray(values, dtype=np.float64)
    out = np.zeros(len(x), dtype=bool)
    ok, usable = series.keep(~np.isnan(x), min_length=3)
    n = len(ok)
    if n < 3:
        return out
    xs = x[ok]
    first = rows = None
    # (not with ±inf: the median's paths part there, and all rows keep the one they take)
    if candidates_only and threshold_abs is not None and float(threshold_abs) >= 0 and not np.isinf(xs).any():
        first, rows = _spike_candidates(xs, usable, max_length, float(threshold_abs))
        if not first.any():
            return out          # no run is beyond its neighbours by threshold_abs: no spike
    thr = np.full(n, -np.inf)
    sig = _noise_scale(usable, xs, window, rows=rows)     # T of every run sample: the context test
    if threshold_mad is not None:
        thr = np.maximum(thr, threshold_mad * sig)
    if threshold_abs is not None:
        thr = np.maximum(thr, float(threshold_abs))
    far = np.ones(n, dtype=bool)
    if context_window is not None:
        ctx = rolling_stat(xs, *_centred_bounds(usable, context_window, rows), "median", rows=rows)
        with np.errstate(invalid="ignore"):
            far = np.abs(xs - ctx) > thr
    mark = np.zeros(n, dtype=bool)
    idx = np.arange(n, dtype=np.int64)
    for L in range(1, int(max_length) + 1):
        starts = _spike_runs(usable, n, L, idx)
        if not len(starts):
            break
        if first is not None:
            starts = starts[first[starts]]        # the other runs are beyond no threshold
            if not len(starts):
                continue
        run_min, run_max, xa, xb = _run_envelope(xs, starts, L)
        all_far = np.stack([far[starts + k] for k in range(L)]).all(axis=0)
        t = thr[starts]
        up = run_min - np.maximum(xa, xb) > t
        down = np.minimum(xa, xb) - run_max > t
        # the physical side (a real fast closing): only a run that comes straight back, to
        # within 3 noise sd of the level it left (an adduction recovers slowly: it does not)
        with np.errstate(invalid="ignore"):     # inf − inf (a series holding ±inf): not back
            back = np.abs(xb - xa) <= 3.0 * sig[starts]
        if direction == "up":
            hit = up | (back & (np.minimum(xa, xb) - run_max > 2 * t))
        elif direction == "down":
            hit = down | (back & (run_min - np.maximum(xa, xb) > 2 * t))
        else:
            hit = up | down
        hit &= all_far
        hit &= ~np.stack([mark[starts + k] for k in range(L)]).any(axis=0)   # shortest run wins
        for k in range(L):
            mark[starts[hit] + k] = True
    out[ok] = mark
    return out


def flag_flat_lines(ts_ns: np.ndarray, values: np.ndarray, tolerance: float,
                    min_duration) -> np.ndarray:
    """Flag a stuck sensor: samples of a stretch that stays within ``tolerance`` for at
    least ``min_duration``. → 4 FLAT_LINE

    A stretch of consecutive samples i … j is flat when

        max(x_i..x_j) − min(x_i..x_j) ≤ tolerance      [sensor unit]
        t_j − t_i + p ≥ min_duration                   [duration]

    with p the sample period (median step between usable samples): a stretch of N samples
    lasts N·p (SaQC counts it that way), so 1,800 samples at 1 Hz are 30 min.

    and every sample of every flat stretch is flagged. NaN values are ignored; a gap
    in the data does not break a stretch. ts_ns : [ns since epoch, ascending].
    """
    return _flag_flat_lines(Series(ts_ns), values, tolerance, min_duration)


def _flag_flat_lines(series: Series, values: np.ndarray, tolerance: float, min_duration) -> np.ndarray:
    """:func:`flag_flat_lines` of each series of ``series``."""
    x = np.asarray(values, dtype=np.float64)
    out = np.zeros(len(x), dtype=bool)
    ok, usable = series.keep(~np.isnan(x), min_length=2)
    if len(ok) < 2:
        return out
    xs, ts = x[ok], usable.ts
    n = len(xs)
    idx = np.arange(n, dtype=np.int64)
    if usable.single:
        period = int(np.median(np.diff(ts)))
        dur = max(int(pd.Timedelta(min_duration).value) - period, 1)
        eps = 1e-9 * max(1.0, float(np.max(np.abs(xs))))   # float rounding of the spread
    else:          # the same, per series
        period = _series_median_step(usable)
        dur = np.repeat(np.maximum(int(pd.Timedelta(min_duration).value) - period, 1), usable.lengths)
        eps = np.repeat(1e-9 * np.maximum(1.0, np.maximum.reduceat(np.abs(xs), usable.first)), usable.lengths)
    if not _long_run_of_small_steps(xs, usable, tolerance + eps, dur):
        return out
    # Every sample of a long-enough flat stretch lies in one of these two shortest
    # long-enough stretches, which are flat too (a sub-stretch has a smaller range):
    # starting at it (it, …, first e with t_e − t_it ≥ dur) or ending at the end j of
    # the stretch (latest i with t_j − t_i ≥ dur, …, j). So flag both kinds, when flat.
    key = usable.key(np.max(dur))
    first_end = np.searchsorted(key, key + dur, side="left")           # forward, from i
    last_start = np.searchsorted(key, key - dur, side="right") - 1     # backward, to j
    mark = np.zeros(n + 1, dtype=np.int64)
    for lo, hi, has in ((idx, np.minimum(first_end, usable.hi - 1), first_end < usable.hi),
                        (np.maximum(last_start, usable.lo), idx, last_start >= usable.lo)):
        spread = rolling_stat(xs, lo, hi + 1, "max") - rolling_stat(xs, lo, hi + 1, "min")
        flat = has & (spread <= tolerance + eps)
        mark += np.bincount(lo[flat], minlength=n + 1) - np.bincount(hi[flat] + 1, minlength=n + 1)
    out[ok] = np.cumsum(mark[:-1]) > 0
    return out


def _long_run_of_small_steps(xs: np.ndarray, series: Series, limit, dur) -> bool:
    """Whether a run of consecutive rows of one series whose every step |x_k − x_k−1| is
    not above ``limit`` (per row, or one number; a NaN step is not above) lasts ``dur``
    ns or more (per row, or one number). Without one, :func:`_flag_flat_lines` flags
    nothing: a flat stretch's spread max − min bounds each of its steps, in floats too
    (rounding is monotone), so every step of it is within the tolerance, and it lasts dur.
    One pass over the steps instead of four rolling extremes and two window searches on a
    live sensor's day."""
    limit = np.asarray(limit, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        big = np.abs(np.diff(xs)) > (limit[1:] if limit.ndim else limit)
    if not series.single:
        big[series.first[1:] - 1] = True          # no run across two series
    cut = np.flatnonzero(big)
    starts = np.concatenate(([0], cut + 1))
    ends = np.concatenate((cut, [len(xs) - 1]))
    need = np.asarray(dur)
    return bool(np.any(series.ts[ends] - series.ts[starts] >= (need[starts] if need.ndim else need)))


def _series_median_step(series: Series) -> np.ndarray:
    """int(np.median(np.diff(t))) of each series of ``series`` (each of 2 rows or more), at
    once: the middle step, or the mean of the two middle steps, in float64, truncated."""
    steps = np.diff(series.ts)
    inner = np.ones(len(steps), dtype=bool)
    inner[(series.first + series.lengths - 1)[:-1]] = False      # the step from one series to the next
    which = np.repeat(np.arange(len(series.lengths)), series.lengths - 1)
    steps = steps[inner]
    steps = steps[np.lexsort((steps, which))]
    m = series.lengths - 1
    base = np.cumsum(m) - m
    lo, hi = steps[base + (m - 1) // 2], steps[base + m // 2]
    return ((lo.astype(np.float64) + hi.astype(np.float64)) / 2.0).astype(np.int64)


def detect_level_shifts(ts_ns: np.ndarray, values: np.ndarray, min_size: float,
                        min_segment="30min", max_shifts: int = 3) -> list:
    """Step changes of the baseline (a magnet shifted on the shell): a jump that stays.

    On the per-minute medians m_k of the usable samples (noise averaged out), a candidate at
    minute k has jump J_k = median(m_k..m_k+2) − median(m_k−3..m_k−1), and is a shift when

        |J_k| ≥ min_size                                        it is large  [sensor unit]
        ≥ min_segment of data on each side                      it is not a day-edge effect
        < 20 % of the minutes after k are within |J_k|/2 of     it does not come back
          the level before, and < 20 % of the minutes before      (a closure does: the
          k are within |J_k|/2 of the level after                  animal reopens)

    The largest such jump is taken, its instant refined to the sample that best splits the
    two levels, and the search repeats on each side (at most ``max_shifts``). Returns
    [(ts_ns of the first sample at the new level, size = level after − level before)].
    An animal closed from some time to the end of the record looks like a shift: the report
    says what was seen, the user judges (the neighbouring day tells).
    """
    x = np.asarray(values, dtype=np.float64)
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    ok = ~np.isnan(x)
    x, ts = x[ok], ts_ns[ok]
    if len(x) < 10 or min_size is None:
        return []
    seg = max(_whole_minutes(min_segment), 3)
    if len(x) < 2 * seg:
        return []               # fewer samples than two segments' minutes (a slow logger's day)
    minute = (ts - ts[0]) // 60_000_000_000
    new_minute = np.diff(minute) != 0
    if 1 + int(np.count_nonzero(new_minute)) < 2 * seg:
        return []               # fewer minutes with data than two segments: no shift can be found
    if new_minute.all():        # one sample per minute (a slow logger): its median is itself
        mk, mv = minute, x
    else:
        m = pd.Series(x).groupby(minute).median()
        mk, mv = m.index.to_numpy(), m.to_numpy()
    found = []

    # J_k for every k at once: median of the next 3 minutes − median of the previous 3
    s = pd.Series(mv)
    nxt = s[::-1].rolling(3, min_periods=1).median()[::-1].to_numpy()
    prv = np.concatenate(([np.nan], s.rolling(3, min_periods=1).median().to_numpy()[:-1]))
    jumps = nxt - prv
    with np.errstate(invalid="ignore"):
        cand_all = np.flatnonzero(np.abs(jumps) >= min_size)

    def search(lo, hi):
        if len(found) >= max_shifts or hi - lo < 2 * seg:
            return
        best = None
        for k in cand_all[(cand_all >= lo + seg) & (cand_all <= hi - seg)]:
            jump = jumps[k]
            before, after = np.median(mv[lo:k]), np.median(mv[k:hi])
            if abs(after - before) < min_size / 2:
                continue
            back = np.mean(np.abs(mv[k:hi] - before) < abs(jump) / 2)
            ahead = np.mean(np.abs(mv[lo:k] - after) < abs(jump) / 2)
            if back < 0.2 and ahead < 0.2 and (best is None or abs(jump) > abs(best[1])):
                best = (k, jump, before, after)
        if best is None:
            return
        k, _, before, after = best
        # refine: the sample in minutes k-1..k that best splits the two levels
        i0 = int(np.searchsorted(minute, mk[max(k - 1, 0)]))
        i1 = int(np.searchsorted(minute, mk[min(k, len(mk) - 1)], side="right"))
        w = x[i0:i1]
        cost_b = np.concatenate(([0.0], np.cumsum(np.abs(w - before))))
        cost_a = np.concatenate((np.cumsum(np.abs(w - after)[::-1])[::-1], [0.0]))
        j = int(np.argmin(cost_b + cost_a))
        at = min(i0 + j, len(x) - 1)
        found.append((int(ts[at]), float(after - before)))
        search(lo, k)
        search(k, hi)

    search(0, len(mv))
    return sorted(found)


def flag_exclusions(ts_ns: np.ndarray, windows) -> np.ndarray:
    """Flag samples inside declared exclusion windows: start ≤ t ≤ end. → 6 EXCLUDED

    ``windows``: iterable of (start_ns, end_ns) that apply to this sensor (the caller
    matches device and sensor pattern). Both ends are inclusive, like ``--from/--to``.
    """
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    out = np.zeros(len(ts_ns), dtype=bool)
    for start, end in windows:
        out |= (ts_ns >= start) & (ts_ns <= end)
    return out


# ---------------------------------------------------------------- the config → the tests

def schema_defaults(kind: str, name: str) -> dict:
    """Defaults of the ``$defs/<name>`` object of a config schema (one source of truth:
    the loader does not fill defaults inside ``$ref``'d objects, so the code reads them)."""
    from .config import schema

    props = schema(kind)["$defs"][name]["properties"]
    return {k: v["default"] for k, v in props.items()}


def resolve_rule(params: dict, domain: str, sensor: str):
    """The QC rule of one sensor: defaults ← ``rules[domain]`` ← ``sensors[sensor]``.

    ``range``, ``sentinels`` and null replace; ``spike`` / ``flat`` / ``shift`` objects merge key by
    key. Returns None when neither the domain nor the sensor has a rule.
    """
    base = params.get("rules", {}).get(domain)
    over = params.get("sensors", {}).get(sensor)
    if base is None and over is None:
        return None
    rule = schema_defaults("30_clean", "rule")
    for layer in (base or {}, over or {}):
        for key, value in layer.items():
            if key in ("spike", "flat", "shift") and isinstance(value, dict):
                prev = rule[key] if isinstance(rule[key], dict) else {}
                rule[key] = {**prev, **value}
            else:
                rule[key] = value
    for key in ("spike", "flat", "shift"):
        if isinstance(rule[key], dict):
            rule[key] = {**schema_defaults("30_clean", key), **rule[key]}
    return rule


def window_value(window):
    """A spike window from the config: an int (samples) stays, a string → Timedelta."""
    return int(window) if isinstance(window, int) else pd.Timedelta(window)


def parse_instant(text: str, side: str, where: str) -> int:
    """An exclusion bound → ns since the epoch (UTC), with the project's time parser.

    ``side`` "from": a bare date is its first instant; "to": the end of that day.
    ``{NOW}`` is refused: a config must mean the same thing tomorrow.
    """
    from .timewindow import parse_bound

    allowed = "YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD (UTC)"
    if not isinstance(text, str) or text.strip().startswith("{"):
        raise UserError(f"{where}: {text!r} is not allowed; allowed: {allowed}")
    try:
        return int(pd.Timestamp(parse_bound(text, side)).value)
    except UserError:
        raise UserError(f"{where}: {text!r} is not allowed; allowed: {allowed}") from None


def exclusion_windows(params: dict, device: str, sensor: str) -> list:
    """(start_ns, end_ns) of the declared exclusions that apply to (device, sensor)."""
    out = []
    for i, ex in enumerate(params.get("exclusions", [])):
        if ex.get("device", "*") not in ("*", device):
            continue
        if not re.fullmatch(ex.get("sensors", ".*"), sensor):
            continue
        where = f"$.exclusions[{i}]"
        out.append((parse_instant(ex["start"], "from", f"{where}.start"),
                    parse_instant(ex["end"], "to", f"{where}.end")))
    return out


TESTS = ("missing", "range", "sentinel", "spike", "flat", "excluded")

# How much of each neighbouring day the 30 job reads (its last / first hours): enough for
# the longest test of the templates (environment flat line, 6 h).
NEIGHBOUR_EDGE = "6h"


# A series of at most this many samples (its day with its neighbours' edges) is tested
# together with the day's other series of the same rule, at most BATCH_ROWS samples at a
# time (:class:`Series`: each gets the flags it gets alone). A slow logger's day (24
# samples a series) then costs a few hundred numpy calls instead of a few hundred per
# series; a 1 Hz series (86,400 samples) is tested alone, as before.
BATCH_SERIES_ROWS = 20_000
BATCH_ROWS = 100_000
_BATCH_MAX_ABS = 1e300     # no difference of two values overflows to inf


def neighbour_reach_ns(rule: dict, ts_ns: np.ndarray) -> int:
    """How far into a neighbouring day a sensor's tests look [ns]: the longest of 10 min,
    2 × NOISE_MIN_SIDE + 2 sample periods (noise_scale's window), the spike ``window`` and
    ``context_window`` (a count of samples × the median period) and the flat
    ``min_duration``, capped at :data:`NEIGHBOUR_EDGE` (what the job reads)."""
    period = _median_step(ts_ns)
    spans = [600 * 10**9, (2 * NOISE_MIN_SIDE + 2) * period]
    sp, fp = rule.get("spike"), rule.get("flat")
    for w in ((sp["window"], sp["context_window"]) if sp else ()):
        if w is not None:
            spans.append(int(w) * period if isinstance(w, int) else _duration_ns(w))
    if fp:
        spans.append(_duration_ns(fp["min_duration"]))
    return min(max(spans), _duration_ns(NEIGHBOUR_EDGE))


def _median_step(ts_ns: np.ndarray) -> int:
    """int(np.median(np.diff(ts_ns))), 0 for fewer than two samples; a few dozen steps are
    sorted in Python (np.median's fixed cost is most of a slow logger's day). The same
    value: the middle step, or the float64 mean of the two middle steps, truncated."""
    if len(ts_ns) < 2:
        return 0
    if len(ts_ns) > 64:
        return int(np.median(np.diff(ts_ns)))
    steps = sorted(np.diff(ts_ns).tolist())
    m = len(steps)
    return int((float(steps[(m - 1) // 2]) + float(steps[m // 2])) / 2.0)


def _duration_ns(text) -> int:
    """int(pd.Timedelta(text).value), a config's duration strings parsed once."""
    if isinstance(text, str):
        return _duration_ns_of_text(text)
    return int(pd.Timedelta(text).value)


@functools.lru_cache(maxsize=256)
def _duration_ns_of_text(text: str) -> int:
    return int(pd.Timedelta(text).value)


def _whole_minutes(text) -> int:
    """int(pd.Timedelta(text).total_seconds() // 60), a config's strings parsed once."""
    if isinstance(text, str):
        return _whole_minutes_of_text(text)
    return int(pd.Timedelta(text).total_seconds() // 60)


@functools.lru_cache(maxsize=256)
def _whole_minutes_of_text(text: str) -> int:
    return int(pd.Timedelta(text).total_seconds() // 60)


class Edge:
    """A neighbouring day's rows as :func:`clean_frame` uses them: times [ns since epoch],
    values, flags, and per sensor its row positions in time order (what
    :func:`pyjama.tidy.sensor_groups` gives; a sensor name in two domains: the last)."""

    __slots__ = ("ts_ns", "values", "flags", "rows")

    def __init__(self, ts_ns: np.ndarray, values: np.ndarray, flags: np.ndarray, rows: dict):
        self.ts_ns, self.values, self.flags, self.rows = ts_ns, values, flags, rows

    def __len__(self) -> int:
        return len(self.ts_ns)

    @classmethod
    def of_frame(cls, frame: pd.DataFrame) -> "Edge":
        from . import tidy

        e = tidy.conform(frame)
        return cls(tidy.ts_us(e["ts"]) * 1000,
                   e["value"].to_numpy(dtype=float), e["quality_flag"].to_numpy(),
                   {s_: i_ for _, s_, i_ in tidy.sensor_groups(e)})


class _ConfigMemo:
    """What a config gives each day of a job alike, worked out once: each sensor's resolved
    rule, exclusion windows and parsed test arguments. Filled as the days ask, in the order
    they ask (an error is raised where it was, and again the next day)."""

    def __init__(self):
        self.rules, self.windows, self.specs = {}, {}, {}

    def rule(self, params, domain, sensor):
        key = (domain, sensor)
        if key not in self.rules:
            self.rules[key] = resolve_rule(params, domain, sensor)
        return self.rules[key]

    def exclusions(self, params, device, sensor):
        if sensor not in self.windows:
            self.windows[sensor] = exclusion_windows(params, device, sensor)
        return self.windows[sensor]

    def spec(self, domain, sensor, rule):
        """(spike arguments or None, flat arguments or None, batch key) of a sensor."""
        key = (domain, sensor)
        if key not in self.specs:
            spike = flat = None
            if rule["spike"] is not None:
                sp = rule["spike"]
                if sp["threshold_mad"] is None and sp["threshold_abs"] is None:
                    raise UserError(f"$.sensors.{sensor}.spike: threshold_mad and threshold_abs "
                                    "are both null after merging with the domain's rule; "
                                    "allowed: at least one threshold")
                context = None if sp["context_window"] is None else window_value(sp["context_window"])
                spike = (window_value(sp["window"]), sp["threshold_mad"], sp["threshold_abs"],
                         sp["max_length"], context, sp.get("direction", "both"))
            if rule["flat"] is not None:
                flat = (rule["flat"]["tolerance"], pd.Timedelta(rule["flat"]["min_duration"]))
            self.specs[key] = (spike, flat, repr((spike, flat)))
        return self.specs[key]


_MEMOS: dict = {}
_MEMOS_LOCK = threading.Lock()


def _config_memo(params: dict, device: str) -> _ConfigMemo:
    """The memo of (params, device): keyed by the config's text, so a changed dict is a new
    config (a few recent ones are kept)."""
    key = (repr(params), device)
    with _MEMOS_LOCK:               # jobs may run as threads of one process
        memo = _MEMOS.get(key)
        if memo is None:
            memo = _MEMOS[key] = _ConfigMemo()
            while len(_MEMOS) > 8:
                _MEMOS.pop(next(iter(_MEMOS)))
    return memo


@functools.lru_cache(maxsize=1)
def _unusable_codes() -> np.ndarray:
    """A lookup table: code → True when :data:`pyjama.flags.UNUSABLE` holds it (np.isin of
    a uint8 flag array, at a fraction of its cost)."""
    from . import flags as fl

    table = np.zeros(256, dtype=bool)
    table[[int(f) for f in fl.UNUSABLE]] = True
    table.setflags(write=False)
    return table


def clean_frame(df: pd.DataFrame, params: dict, device: str, previous=None, next=None):
    """Pure core of 30_clean: a tidy frame → the same rows with quality flags set.

    Per sensor (rows sorted by time): NaN → 1; range and sentinels → 3; exclusions → 6;
    spikes → 2 and flat lines → 4, both computed only on the samples still usable
    (flag not in :data:`pyjama.flags.UNUSABLE`; spikes are also left out of the flat-line
    test). An input flag is kept unless a new one has higher precedence
    (:func:`pyjama.flags.combine`). ``value`` is never changed, rows keep their order.

    ``previous`` / ``next``: optional tidy frames (or :class:`Edge`) with the last / first
    minutes of the neighbouring days (same device). Their samples take part in the spike
    and flat-line tests as neighbours — so the first and last sample of the day have two
    neighbours and a spike there is found — but only ``df``'s rows are returned and counted.

    Returns (frame, counts) where counts holds the ledger keys: rows_in, rows_out,
    rejected (always empty), flags (stored codes by name), tests (samples each test
    matched, before precedence), sensors_without_rules, level_shifts (list of {sensor, ts,
    size}: step changes of the baseline, :func:`detect_level_shifts`) and warnings.
    """
    from . import flags as fl
    from . import tidy

    df = tidy.conform(df)
    n = len(df)
    edges = [e if isinstance(e, Edge) else Edge.of_frame(e)
             for e in (previous, next) if e is not None and len(e)]
    tests = dict.fromkeys(TESTS, 0)
    unruled, shifts, warns = [], [], []
    qf = df["quality_flag"].to_numpy().copy()
    if n:
        values = df["value"].to_numpy()
        ts_ns = tidy.ts_us(df["ts"]) * 1000
        memo = _config_memo(params, device)
        unusable = _unusable_codes()
        # NaN → 1 for every row at once (this first pass also maps a code outside the enum
        # to OK, as combining each sensor's rows did)
        missing = flag_missing(values)
        tests["missing"] = int(missing.sum())
        qf = fl.combine(qf, np.where(missing, np.uint8(fl.Flag.MISSING), np.uint8(fl.Flag.OK)))

        def apply(rows, mask, code, test):
            # the flagged rows only: combining a code with OK keeps it
            hit = int(np.count_nonzero(mask))
            tests[test] += hit
            if hit:
                at = rows[mask]
                qf[at] = fl.combine(qf[at], np.full(hit, code, dtype=np.uint8))

        # each sensor's rule, exclusions, reach and test arguments (an error of a config is
        # raised at the sensor it was raised at before)
        plans = []
        for domain, sensor, idx in tidy.sensor_groups(df):
            windows = memo.exclusions(params, device, sensor)
            if windows:
                apply(idx, flag_exclusions(ts_ns[idx], windows), fl.Flag.EXCLUDED, "excluded")
            rule = memo.rule(params, domain, sensor)
            if rule is None:
                unruled.append(sensor)
                continue
            t = ts_ns[idx]
            reach = neighbour_reach_ns(rule, t)
            plans.append((sensor, idx, t, rule, windows, reach, memo.spec(domain, sensor, rule),
                          (repr(rule["range"]), repr(rule["sentinels"]))))
        # range and sentinels: the rows of all sensors with the same ones at once
        by_bounds: dict = {}
        for plan in plans:
            by_bounds.setdefault(plan[7], (plan[3], []))[1].append(plan[1])
        for rule, parts in by_bounds.values():
            rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
            x = values[rows]
            if rule["range"] is not None:
                apply(rows, flag_range(x, *rule["range"]), fl.Flag.OUT_OF_RANGE, "range")
            apply(rows, flag_sentinels(x, rule["sentinels"]), fl.Flag.OUT_OF_RANGE, "sentinel")
        usable = np.where(unusable[qf], np.nan, values)
        edge_usable: dict = {}      # (edge, bounds) → the edge's values, NaN where not usable

        def usable_of(k, bounds, rule):
            if (k, bounds) not in edge_usable:
                e = edges[k]
                bad = flag_sentinels(e.values, rule["sentinels"]) | unusable[e.flags]
                if rule["range"] is not None:
                    bad |= flag_range(e.values, *rule["range"])
                edge_usable[k, bounds] = np.where(bad, np.nan, e.values)
            return edge_usable[k, bounds]

        jobs = []
        for sensor, idx, t, rule, windows, reach, spec, bounds in plans:
            # neighbouring days' samples of this sensor, before / after the day, within the
            # reach of its tests; a range / sentinel / exclusion / unusable flag: not usable
            pre, post = [], []
            for k, e in enumerate(edges):
                rows_e = e.rows.get(sensor)
                if rows_e is None or not len(rows_e):
                    continue
                te = e.ts_ns[rows_e]
                if te[-1] < t[0]:
                    side, sel = pre, slice(np.searchsorted(te, t[0] - reach, side="left"), None)
                elif te[0] > t[-1]:
                    side, sel = post, slice(0, np.searchsorted(te, t[-1] + reach, side="right"))
                else:
                    continue
                xv, tv = usable_of(k, bounds, rule)[rows_e[sel]], te[sel]
                if windows:
                    xv = np.where(flag_exclusions(tv, windows), np.nan, xv)
                side.append((xv, tv))
            n_pre = sum(len(p_[0]) for p_ in pre)
            if pre or post:
                ux = np.concatenate([p_[0] for p_ in pre] + [usable[idx]] + [p_[0] for p_ in post])
                ut = np.concatenate([p_[1] for p_ in pre] + [t] + [p_[1] for p_ in post])
            else:
                ux, ut = usable[idx], t
            # with others: sorted times (one edge on each side at most) and values whose
            # medians every path of rolling_stat takes alike (pandas' skips ±inf, bottleneck's
            # does not: the plan, which depends on the batch, must not matter)
            together = len(pre) <= 1 and len(post) <= 1 and not (np.abs(ux) > _BATCH_MAX_ABS).any()
            jobs.append(_Job(sensor, idx, t, rule, ux, ut, n_pre, *spec, together))
        for job, ux in zip(jobs, _spikes_and_flat_lines(jobs, apply)):
            shift = job.rule.get("shift")
            if shift is not None:
                own = ux[job.n_pre:job.n_pre + len(job.rows)]
                sensor = job.sensor
                for at, size in detect_level_shifts(job.t, own, shift["min_size"], shift["min_segment"]):
                    stamp = iso_seconds(pd.Timestamp(at, unit="ns", tz="UTC"))
                    shifts.append({"sensor": sensor, "ts": stamp, "size": round(size, 6)})
                    warns.append(f"{device}/{sensor}: level shift of {size:+.4g} at {stamp} "
                                 "(magnet moved?); a fit across it is wrong after it: declare an "
                                 "exclusion or refit from that day")
    out = df.copy()
    out["quality_flag"] = qf
    counts = {"rows_in": n, "rows_out": n, "rejected": {}, "flags": fl.counts(qf),
              "tests": tests, "sensors_without_rules": sorted(set(unruled)),
              "level_shifts": shifts, "warnings": warns}
    return out, counts


def _spikes_and_flat_lines(jobs: list, apply) -> list:
    """Spike and flat-line tests of each job (a sensor's usable values with its edges):
    flags set through ``apply``; returns each job's values with spikes and flat lines NaN.
    Small series of one spec are tested together (:class:`Series`), the others alone."""
    from . import flags as fl

    out = [None] * len(jobs)
    groups: dict = {}
    for j, job in enumerate(jobs):
        alone = (job.spike is None and job.flat is None) or not job.together or len(job.ux) > BATCH_SERIES_ROWS
        groups.setdefault(("alone", j) if alone else job.key, []).append(j)
    for members in groups.values():
        batches, rows = [[]], 0
        for j in members:
            if rows + len(jobs[j].ux) > BATCH_ROWS and batches[-1]:
                batches.append([])
                rows = 0
            batches[-1].append(j)
            rows += len(jobs[j].ux)
        for batch in batches:
            try:
                done = _spikes_then_flat([jobs[j] for j in batch])
            except _NoCommonAxis:        # times too far apart for one axis: each alone
                done = [_spikes_then_flat([jobs[j]])[0] for j in batch]
            for j, (spikes, flat, ux) in zip(batch, done):
                out[j] = ux
                own = slice(jobs[j].n_pre, jobs[j].n_pre + len(jobs[j].rows))
                if spikes is not None:
                    apply(jobs[j].rows, spikes[own], fl.Flag.SPIKE, "spike")
                if flat is not None:
                    apply(jobs[j].rows, flat[own], fl.Flag.FLAT_LINE, "flat")
    return out


class _Job(NamedTuple):
    """One sensor's spike and flat-line tests in :func:`clean_frame`."""
    sensor: str
    rows: np.ndarray          # its rows in the day's frame, in time order
    t: np.ndarray             # their times [ns]
    rule: dict
    ux: np.ndarray            # usable values with the neighbouring days' edges (NaN: not usable)
    ut: np.ndarray            # their times [ns]
    n_pre: int                # edge samples before the day's
    spike: tuple | None       # flag_spikes' arguments after (ts, values)
    flat: tuple | None        # flag_flat_lines' arguments after (ts, values)
    key: str                  # jobs of one key may be tested together
    together: bool            # may be tested with others (sorted times, finite values)


def _spikes_then_flat(jobs: list) -> list:
    """Per job of one key: (spike mask or None, flat-line mask or None, its values with
    both NaN). One job goes through :func:`flag_spikes` and :func:`flag_flat_lines`
    themselves; several are laid end to end (:class:`Series`)."""
    spike, flat = jobs[0].spike, jobs[0].flat
    if len(jobs) == 1:
        ux, ut = jobs[0].ux, jobs[0].ut
        test_spikes = None if spike is None else (lambda v: flag_spikes(ut, v, *spike))
        test_flat = None if flat is None else (lambda v: flag_flat_lines(ut, v, *flat))
    else:
        ux, ut = np.concatenate([j.ux for j in jobs]), np.concatenate([j.ut for j in jobs])
        series = Series(ut, [len(j.ux) for j in jobs])
        test_spikes = None if spike is None else (lambda v: _flag_spikes(series, v, *spike))
        test_flat = None if flat is None else (lambda v: _flag_flat_lines(series, v, *flat))
    spikes_all = flat_all = None
    if test_spikes is not None:
        spikes_all = test_spikes(ux)
        ux = np.where(spikes_all, np.nan, ux)
    if test_flat is not None:
        flat_all = test_flat(ux)
        ux = np.where(flat_all, np.nan, ux)
    cuts = np.cumsum([len(j.ux) for j in jobs])[:-1]

    def split(a):
        return [None] * len(jobs) if a is None else np.split(a, cuts)

    return list(zip(split(spikes_all), split(flat_all), split(ux)))
