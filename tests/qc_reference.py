"""The pandas implementation of 30_clean's rolling tests, kept verbatim as the reference
the array kernels of :mod:`pyjama.qc` are compared with (tests/test_kernels.py): pandas
``rolling`` over explicit row bounds, as the code stood before issue 14's kernels."""
from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

from pyjama import qc
from pyjama.qc import MAD_TO_SIGMA, NOISE_MIN_SIDE


class _Bounds(BaseIndexer):
    """A rolling window given by explicit [start, end) row bounds (pandas computes the
    statistic in Cython; we only say which rows each window holds)."""

    def __init__(self, start, end):
        super().__init__()
        self.start = np.asarray(start, dtype=np.int64)
        self.end = np.asarray(end, dtype=np.int64)

    def get_window_bounds(self, num_values=0, min_periods=None, center=None, closed=None, step=None):
        return self.start, self.end


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
    d = np.abs(np.diff(x))
    d = np.concatenate(([d[0]], d))            # d[k] = |x_k - x_k-1|
    zero = d == 0
    stuck = zero & (np.concatenate((zero[1:], [False])) | np.concatenate(([False], zero[:-1])))
    lo, hi = qc.centred_bounds(ts_ns, window)
    idx = np.arange(len(x), dtype=np.int64)
    lo = np.maximum(np.minimum(lo, idx - NOISE_MIN_SIDE), 0)
    hi = np.minimum(np.maximum(hi, idx + NOISE_MIN_SIDE + 1), len(x))
    bounds = _Bounds(lo, hi)
    med = pd.Series(d).rolling(bounds, min_periods=1).median().to_numpy()
    if stuck.any():
        live = pd.Series(np.where(stuck, np.nan, d)).rolling(bounds, min_periods=1)
        n_live = live.count().to_numpy()
        # repeats are the minority: the edge of a stuck stretch, left out; where they are
        # most of the window the noise is below the sensor's resolution (sigma ~ 0)
        use = n_live >= np.maximum(5, 0.5 * (hi - lo))
        med = np.where(use, np.nan_to_num(live.median().to_numpy()), med)
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
    x = np.asarray(values, dtype=np.float64)
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    out = np.zeros(len(x), dtype=bool)
    ok = np.flatnonzero(~np.isnan(x))
    n = len(ok)
    if n < 3:
        return out
    xs, ts = x[ok], ts_ns[ok]
    thr = np.full(n, -np.inf)
    sig = noise_scale(ts, xs, window)
    if threshold_mad is not None:
        thr = np.maximum(thr, threshold_mad * sig)
    if threshold_abs is not None:
        thr = np.maximum(thr, float(threshold_abs))
    far = np.ones(n, dtype=bool)
    if context_window is not None:
        ctx = pd.Series(xs).rolling(_Bounds(*qc.centred_bounds(ts, context_window)), min_periods=1).median()
        far = np.abs(xs - ctx.to_numpy()) > thr
    mark = np.zeros(n, dtype=bool)
    for L in range(1, int(max_length) + 1):
        if n < L + 2:
            break
        starts = np.arange(1, n - L)                       # run = starts .. starts+L-1
        run = np.stack([xs[starts + k] for k in range(L)])
        run_min, run_max = run.min(axis=0), run.max(axis=0)
        all_far = np.stack([far[starts + k] for k in range(L)]).all(axis=0)
        xa, xb = xs[starts - 1], xs[starts + L]
        t = thr[starts]
        up = run_min - np.maximum(xa, xb) > t
        down = np.minimum(xa, xb) - run_max > t
        # the physical side (a real fast closing): only a run that comes straight back, to
        # within 3 noise sd of the level it left (an adduction recovers slowly: it does not)
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
    x = np.asarray(values, dtype=np.float64)
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    out = np.zeros(len(x), dtype=bool)
    ok = np.flatnonzero(~np.isnan(x))
    if len(ok) < 2:
        return out
    xs, ts = x[ok], ts_ns[ok]
    period = int(np.median(np.diff(ts)))
    dur = max(int(pd.Timedelta(min_duration).value) - period, 1)
    n = len(xs)
    idx = np.arange(n, dtype=np.int64)
    # Every sample of a long-enough flat stretch lies in one of these two shortest
    # long-enough stretches, which are flat too (a sub-stretch has a smaller range):
    # starting at it (it, …, first e with t_e − t_it ≥ dur) or ending at the end j of
    # the stretch (latest i with t_j − t_i ≥ dur, …, j). So flag both kinds, when flat.
    first_end = np.searchsorted(ts, ts + dur, side="left")           # forward, from i
    last_start = np.searchsorted(ts, ts - dur, side="right") - 1     # backward, to j
    eps = 1e-9 * max(1.0, float(np.max(np.abs(xs))))   # float rounding of the spread
    mark = np.zeros(n + 1, dtype=np.int64)
    for lo, hi, has in ((idx, np.minimum(first_end, n - 1), first_end < n),
                        (np.maximum(last_start, 0), idx, last_start >= 0)):
        bounds = _Bounds(lo, hi + 1)
        s = pd.Series(xs)
        spread = (s.rolling(bounds, min_periods=1).max() - s.rolling(bounds, min_periods=1).min()).to_numpy()
        flat = has & (spread <= tolerance + eps)
        mark += np.bincount(lo[flat], minlength=n + 1) - np.bincount(hi[flat] + 1, minlength=n + 1)
    out[ok] = np.cumsum(mark[:-1]) > 0
    return out
