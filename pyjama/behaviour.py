"""Valvometry behaviour metrics (step 60): pure functions, no I/O.

The input is the normalised opening of each animal on a regular grid (``x`` in [0, 1],
1 = open, 0 = closed; step 50). Each rule below is a function on dense arrays of shape
``(animals, samples of the day)`` in which unusable samples are NaN: a sample is usable when
its ``quality_flag`` is OK (0) or INTERPOLATED (5) and its value is finite. Short gaps were
already filled by 40 resample (flag 5); whatever is still missing here is a real gap.

Conventions used by every function:

- ``period`` [s] is the grid step (``sample_period``); a run of ``n`` samples lasts
  ``n * period`` [s]; an event's ``end`` is exclusive (time of its last sample + period).
- state codes: 1 open, 0 closed, -1 unknown (missing sample, or undecided because the
  value sits in the hysteresis band right after a gap or the day's first sample).
- nothing crosses a gap or a day edge: runs are cut there, and events touching a cut are
  marked (``cut_start`` / ``cut_end``).

:func:`compute_behaviour` runs them all on a tidy partition and returns the tables the step
writes.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from . import tidy
from .errors import UserError
from .flags import Flag

DAY_US = 86_400_000_000
OPEN, CLOSED, UNKNOWN = 1, 0, -1
USABLE_FLAGS = (int(Flag.OK), int(Flag.INTERPOLATED))

EVENT_KINDS = ("closure", "micro_closure", "sync_closure")


def _usable_flag(flags: np.ndarray) -> np.ndarray:
    """``np.isin(flags, USABLE_FLAGS)`` (OK or INTERPOLATED) without isin's fixed cost."""
    return (flags == USABLE_FLAGS[0]) | (flags == USABLE_FLAGS[1])


# ---------------------------------------------------------------- runs on dense 2-D arrays

def _runs(codes: np.ndarray):
    """Runs of equal values along axis 1 of a 2-D array, never crossing rows.

    Returns (flat_start, row, start, length, value) arrays, one entry per run, in
    row-major order; the runs tile the flattened array.
    """
    n_rows, n_cols = codes.shape
    flat = codes.ravel()
    change = np.ones(flat.size, dtype=bool)
    if flat.size:
        change[1:] = flat[1:] != flat[:-1]
        change[::n_cols] = True
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, flat.size))
    n_cols = max(n_cols, 1)
    return starts, starts // n_cols, starts % n_cols, lengths, flat[starts]


def _per_run(ufunc, values: np.ndarray, flat_starts: np.ndarray) -> np.ndarray:
    """``ufunc.reduceat`` over each run (the runs tile ``values``); NaN-aware for fmin/fmax."""
    if not len(flat_starts):
        return np.zeros(0)
    return ufunc.reduceat(values.ravel(), flat_starts)


def classify_opening(x: np.ndarray, closed_below: float, open_above: float) -> np.ndarray:
    """Per sample: 1 if x >= open_above, 0 if x <= closed_below, -2 in the band, -1 if NaN.

    ``x`` [opening fraction, 1 = open]; thresholds in the same unit. The band
    ``closed_below < x < open_above`` is the hysteresis band.
    """
    code = np.full(x.shape, -2, dtype=np.int8)
    with np.errstate(invalid="ignore"):
        code[x >= open_above] = OPEN
        code[x <= closed_below] = CLOSED
    code[np.isnan(x)] = UNKNOWN
    return code


def apply_hysteresis(code: np.ndarray) -> np.ndarray:
    """State with hysteresis: s[i] = code[i] outside the band, s[i-1] inside the band.

    A sample in the band keeps the state of the last decisive sample (x >= open_above or
    x <= closed_below) of the same animal; a missing sample (code -1) is unknown and
    resets that memory, so the first samples after a gap (or at the day's first sample)
    that sit in the band are unknown. Returns int8 codes 1 / 0 / -1.
    """
    n_rows, n_cols = code.shape
    flat = code.ravel()
    pos = np.arange(flat.size)
    decisive = flat >= 0
    reset = flat == UNKNOWN
    reset[::max(n_cols, 1)] = True
    last_dec = np.maximum.accumulate(np.where(decisive, pos, -1)) if flat.size else pos
    last_reset = np.maximum.accumulate(np.where(reset, pos, -1)) if flat.size else pos
    known = (last_dec >= last_reset) & (last_dec >= 0)
    state = np.where(known, flat[np.maximum(last_dec, 0)], UNKNOWN).astype(np.int8)
    return state.reshape(code.shape)


def enforce_min_duration(state: np.ndarray, min_duration_s: float, period: float) -> np.ndarray:
    """Debounce: a state run shorter than ``min_duration_s`` [s] takes the state around it.

    A known run of n samples with ``n * period < min_duration_s`` is replaced by the state
    of the last run that lasted long enough before it (the state had not really changed);
    when there is none since the last gap or the day's start, by the next long run before
    the next gap; when there is none either, it is kept. Unknown runs are kept. So noise
    that crosses a threshold for less than ``min_duration_s`` makes no state change.
    """
    if state.size == 0 or min_duration_s <= 0:
        return state.copy()
    _, row, start, length, value = _runs(state)
    n = len(value)
    idx = np.arange(n)
    known = value != UNKNOWN
    long_ = known & (length * period >= min_duration_s - 1e-9)
    reset = (value == UNKNOWN) | (start == 0)
    last_long = np.maximum.accumulate(np.where(long_, idx, -1))
    last_reset = np.maximum.accumulate(np.where(reset, idx, -1))
    ok_prev = (last_long >= last_reset) & (last_long >= 0)
    big = n + 1
    next_long = np.minimum.accumulate(np.where(long_, idx, big)[::-1])[::-1]
    reset_after = np.append(np.where(reset, idx, big)[1:], big)
    next_reset = np.minimum.accumulate(reset_after[::-1])[::-1]
    ok_next = next_long < next_reset
    new = np.where(ok_prev, value[np.clip(last_long, 0, n - 1)],
                   np.where(ok_next, value[np.clip(next_long, 0, n - 1)], value))
    new = np.where(long_ | ~known, value, new).astype(np.int8)
    return np.repeat(new, length).reshape(state.shape)


def trailing_max(x: np.ndarray, window_s: float, period: float) -> np.ndarray:
    """Max of the usable x over (t - window_s, t] [opening fraction]; NaN samples skipped."""
    n = max(int(round(window_s / period)), 1)
    if x.size == 0:
        return x.copy()
    return pd.DataFrame(x.T).rolling(n, min_periods=1).max().to_numpy().T


def trailing_reference(x: np.ndarray, window_s: float, period: float) -> np.ndarray:
    """Reference open level r(t) = median of the usable x over [t - window_s, t - period]
    [opening fraction]: the level the animal held in the window BEFORE the sample (the
    sample itself and what follows do not move it). NaN samples are skipped; r is NaN when
    the window holds no usable sample. A median, not a max: the max of a noisy open level
    sits about 3 noise sd above it, so every ordinary noise sample would look like a drop.
    """
    n = max(int(round(window_s / period)), 1)
    if x.size == 0:
        return x.copy()
    med = _rolling_median_few(x, n)
    if med is None:
        med = _rolling_median_many(x, n)
    if med is None:
        return pd.DataFrame(x.T).rolling(n, min_periods=1).median().shift(1).to_numpy().T
    out = np.full(x.shape, np.nan)
    out[:, 1:] = med[:, :-1]                  # .shift(1): the window before the sample
    return out


def _rolling_median_many(x: np.ndarray, n: int):
    """``pd.DataFrame(x.T).rolling(n, min_periods=1).median().T`` by bottleneck's moving
    median (a 1 Hz day: ~4 × less CPU), or None when x holds ±inf or a -0.0 (then pandas).
    The same values bit for bit: both take the middle value of the window's usable samples,
    or the sum of the two middle ones halved (tests/test_behaviour.py compares them); with
    ±inf the two differ (pandas' sliding sums), with -0.0 the sign is each one's own."""
    if not x.shape[1] or np.isinf(x).any() or ((x == 0) & np.signbit(x)).any():
        return None
    import bottleneck as bn

    return bn.move_median(x, window=min(n, x.shape[1]), min_count=1, axis=1)


def _rolling_median_few(x: np.ndarray, n: int):
    """``pd.DataFrame(x.T).rolling(n, min_periods=1).median().T`` computed in numpy when no
    window of ``n`` samples holds more than 3 usable (non-NaN) ones — a slow logger's day on
    a fine grid — else None (the caller asks pandas).

    Exact, not an approximation: pandas' median of k values is the middle one (k odd) or
    (upper + lower) / 2 (k even); with at most 3 values that is ``a``, ``(a + b) / 2``, or
    ``max(min(a, b), min(max(a, b), c))``, each a value of the window or one sum and one
    halving, as pandas does. A window holding a -0.0 also returns None: -0.0 == 0.0, and
    which of the two a sorted window yields is pandas' own business."""
    rows, cols = x.shape
    valid = ~np.isnan(x)
    if (valid & (x == 0) & np.signbit(x)).any():
        return None
    c = np.zeros((rows, cols + 1), np.int64)
    np.cumsum(valid, axis=1, out=c[:, 1:])
    lo = np.maximum(np.arange(1, cols + 1) - n, 0)
    cnt = c[:, 1:] - c[:, lo]                  # usable samples in (t - n, t]
    if cnt.size and int(cnt.max()) > 3:
        return None
    cnt = cnt.ravel()
    flat = x.ravel()
    vals = flat[valid.ravel()]                 # the usable values, row-major
    last = np.cumsum(valid.ravel()) - 1        # index in vals of the last usable sample <= t
    med = np.full(flat.size, np.nan)
    # a window never crosses a row, so its cnt values are vals[last - cnt + 1 .. last]
    one = cnt == 1
    med[one] = vals[last[one]]
    two = np.flatnonzero(cnt == 2)
    if len(two):
        a, b = vals[last[two]], vals[last[two] - 1]
        med[two] = (a + b) / 2
    three = np.flatnonzero(cnt == 3)
    if len(three):
        a, b, c3 = vals[last[three]], vals[last[three] - 1], vals[last[three] - 2]
        med[three] = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c3))
    return med.reshape(rows, cols)


def noise_sigma(x: np.ndarray, flags: np.ndarray, state=None) -> np.ndarray:
    """Per animal: robust noise sd of the opening [opening fraction] from first differences,

        d_k = x_k+1 - x_k over consecutive MEASURED samples (flag 0, finite; interpolated
              samples are skipped, they carry no noise) in the OPEN state (``state``)
        sigma = 1.4826 * median(|d - median(d)|) / sqrt(2)

    (the MAD of differences: a slow drift or a few level changes do not inflate it). At the
    open level, because a micro-closure is a drop from it, and the noise of the opening is
    not the same at both ends: x = counts^(-1/3) is about 3.4 times steeper at the open end
    of a Hall sensor than at the closed end, so an animal closed most of the day would get
    the closed level's small sd, and a noise floor a third of what its open samples need.
    With fewer than 10 open measured samples (or no ``state``), all measured samples; NaN
    when an animal has fewer than 10 measured samples.
    """
    out = np.full(x.shape[0], np.nan)
    measured_all = (flags == int(Flag.OK)) & np.isfinite(x)
    for r in np.flatnonzero(measured_all.sum(axis=1) >= 10):    # fewer: NaN whatever the state
        measured = measured_all[r]
        v = x[r][measured & (state[r] == OPEN)] if state is not None else np.zeros(0)
        if len(v) < 10:
            v = x[r][measured]
        if len(v) >= 10:
            d = np.diff(v)
            out[r] = 1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0)
    return out


def compute_velocity(x: np.ndarray, window_s: float, period: float) -> np.ndarray:
    """Velocity v(t) = (x(t + W/2) - x(t - W/2)) / W  [opening fraction / s], W = window_s.

    This is the mean of the sample-to-sample slopes over the window, i.e. the slope
    smoothed by a moving average of width W. Positive = opening, negative = closing.
    NaN when any sample of [t - W/2, t + W/2] is NaN, and within W/2 of the day's edges.
    """
    h = int(round(window_s / (2 * period)))
    v = np.full(x.shape, np.nan)
    n_cols = x.shape[1] if x.ndim == 2 else 0
    if n_cols <= 2 * h or h < 1:
        return v
    bad = np.cumsum(np.isnan(x), axis=1)
    bad = np.concatenate([np.zeros((x.shape[0], 1)), bad], axis=1)   # bad[:, k] = NaNs in x[:, :k]
    n_bad = bad[:, 2 * h + 1:] - bad[:, :-2 * h - 1]                 # NaNs in x[:, i-h .. i+h]
    with np.errstate(invalid="ignore"):
        slope = (x[:, 2 * h:] - x[:, :-2 * h]) / (2 * h * period)
    v[:, h:-h] = np.where(n_bad == 0, slope, np.nan)
    return v


# ---------------------------------------------------------------- events

def find_closures(state: np.ndarray, x: np.ndarray, reference: np.ndarray, period: float) -> pd.DataFrame:
    """Closures = runs of the closed state (after hysteresis and minimum duration).

    Per closure: ``row`` (animal), ``start_slot``, ``n`` samples, ``duration_s = n * period``
    [s], ``depth = r(start) - min(x over the closure)`` [opening fraction] where r is the
    reference open level before the sample (:func:`trailing_reference`: the pre-closure open
    level), and ``cut_start`` / ``cut_end`` true when the sample before / after is unknown
    or outside the day (the true start / end was not observed).
    """
    return pd.DataFrame(_closures(state, x, reference, period))


def _closures(state, x, reference, period) -> dict:
    """:func:`find_closures` as a dict of its columns (numpy arrays, same order)."""
    flat_start, row, start, length, value = _runs(state)
    n_cols = state.shape[1] if state.ndim == 2 else 0
    sel = value == CLOSED
    prev_val = np.append(UNKNOWN, value[:-1])[sel]
    next_val = np.append(value[1:], UNKNOWN)[sel]
    last = start + length
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mins = _per_run(np.fmin, x, flat_start)[sel]
    return {
        "row": row[sel], "start_slot": start[sel], "n": length[sel],
        "duration_s": length[sel] * period,
        "depth": reference.ravel()[flat_start[sel]] - mins if sel.any() else np.zeros(0),
        "cut_start": (start[sel] == 0) | (prev_val == UNKNOWN),
        "cut_end": (last[sel] == n_cols) | (next_val == UNKNOWN),
    }


def find_micro_closures(state: np.ndarray, x: np.ndarray, reference: np.ndarray, period: float,
                        min_drop: float, max_duration_s: float, sigma=None, noise_factor: float = 0.0,
                        min_duration_s: float = 0.0, measured=None, min_samples: int = 1,
                        release: float = 1.0) -> pd.DataFrame:
    """Micro-closures = short partial drops from the open level, well above the noise.

    Per animal, the drop threshold is ``D = max(min_drop, noise_factor * sigma)`` [opening
    fraction] (``sigma``: :func:`noise_sigma`, per animal). A sample is *dipped* when the
    state is open and ``r - x >= D``, r being the reference open level before it
    (:func:`trailing_reference`); it is *back* when open and ``r - x < release * D``
    (``release`` [share of D]: a hysteresis band, FIELD.md; 1 = none). A micro-closure
    starts at a dipped sample and goes on until the first sample back (samples in the band
    between keep it going: a recovery hovering at D is one event, not two); its n samples
    run from its first to its last dipped sample (the time it spent >= D below), with

        min_duration_s <= n * period <= max_duration_s      [s]
        and >= min_samples MEASURED dipped samples in it (``measured``: flag 0, a sample the
            logger took; the grid cells 40_resample interpolated between two raw samples
            carry no observation of their own)

    and the sample before it and the sample after it back (usable, open): it returns to
    the open level, so a drop that turns into a closure, or is cut by a gap or the day edge,
    is not one. ``depth = max(r - x)`` over the run.
    """
    return pd.DataFrame(_micro_closures(state, x, reference, period, min_drop, max_duration_s, sigma,
                                        noise_factor, min_duration_s, measured, min_samples, release))


def _micro_closures(state, x, reference, period, min_drop, max_duration_s, sigma=None, noise_factor=0.0,
                    min_duration_s=0.0, measured=None, min_samples=1, release=1.0) -> dict:
    """:func:`find_micro_closures` as a dict of its columns (numpy arrays, same order)."""
    n_rows = state.shape[0] if state.ndim == 2 else 0
    thr = np.full(n_rows, float(min_drop))
    if sigma is not None and noise_factor:
        sig = np.asarray(sigma, dtype=float)
        thr = np.where(np.isfinite(sig), np.maximum(thr, noise_factor * sig), thr)
    with np.errstate(invalid="ignore"):
        drop = reference - x
        open_ok = (state == OPEN) & ~np.isnan(x)
        dipped = open_ok & (drop >= thr[:, None] - 1e-12)
        back = open_ok & (drop < release * thr[:, None] - 1e-12)    # returned to the open level
    # hysteresis: a sample between release x D and D keeps the side of the last sample that
    # was dipped or back (a slow recovery hovering at D is one micro-closure, not two);
    # not open / missing resets (a band sample after it is undecided)
    code = np.full(dipped.shape, -2, dtype=np.int8)
    code[dipped] = 1
    code[back] = 0
    code[~open_ok] = UNKNOWN
    inside = apply_hysteresis(code) if code.size else code
    flat_start, row, start, span, value = _runs((inside == 1).astype(np.int8))
    n_cols = state.shape[1] if state.ndim == 2 else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        depth = _per_run(np.fmax, drop, flat_start)
    # its duration: from the first to the last dipped sample (the band samples of the tail,
    # before it is back, extend the event but not its time below D)
    pos = np.arange(dipped.size).reshape(dipped.shape) if dipped.size else np.zeros(dipped.shape, int)
    last = _per_run(np.maximum, np.where(dipped, pos, -1), flat_start).astype(np.int64)
    length = np.where(value == 1, last - flat_start + 1, span)
    sel = ((value == 1) & (length * period <= max_duration_s + 1e-9)
           & (length * period >= min_duration_s - 1e-9) & (start > 0) & (start + span < n_cols))
    if measured is not None and min_samples > 1 and len(flat_start):
        seen = np.asarray(measured, dtype=bool) & dipped
        n_meas = np.add.reduceat(seen.astype(np.int64).ravel(), flat_start)
        sel &= n_meas >= int(min_samples)
    row, start, length, span, depth = row[sel], start[sel], length[sel], span[sel], depth[sel]
    ok = (inside[row, start - 1] == 0) & (inside[row, np.minimum(start + span, n_cols - 1)] == 0)
    row, start, length, depth = row[ok], start[ok], length[ok], depth[ok]
    return {"row": row, "start_slot": start, "n": length, "duration_s": length * period,
            "depth": depth, "cut_start": np.zeros(len(row), bool), "cut_end": np.zeros(len(row), bool)}


def find_sync_closures(starts_s: np.ndarray, animal: np.ndarray, n_active: int, window_s: float,
                       min_share: float, min_animals: int) -> list:
    """Synchronised closures: closures of active animals starting within ``window_s`` [s].

    ``starts_s`` are closure start times [s since the day start] (closures whose start was
    not observed are left out by the caller), ``animal`` the animal index of each. Scanning
    in time order, the first start t0 such that the distinct animals starting a closure in
    [t0, t0 + window_s) number k with ``k >= min_animals`` and ``k / n_active >= min_share``
    makes one event; the scan resumes after t0 + window_s (events do not overlap).
    Returns (list of (i0, i1) index ranges into the time-sorted arrays, the sort order).
    """
    order = np.lexsort((animal, starts_s))
    t, a = starts_s[order], animal[order]
    out, i, m = [], 0, len(t)
    if n_active <= 0:
        return out, order
    while i < m:
        j = int(np.searchsorted(t, t[i] + window_s - 1e-9, side="left"))
        k = len(np.unique(a[i:j]))
        if k >= min_animals and k / n_active >= min_share - 1e-12:
            out.append((i, j))
            i = j
        else:
            i += 1
    return out, order


# ---------------------------------------------------------------- the whole partition

@dataclass
class BehaviourResult:
    data: pd.DataFrame          # tidy: input rows + <sensor>__state + <sensor>__velocity
    events: pd.DataFrame
    daily: pd.DataFrame
    device_daily: pd.DataFrame
    counts: dict


TS = pa.timestamp("us", tz="UTC")

EVENTS_SCHEMA = pa.schema([
    ("kind", pa.string()), ("sensor", pa.string()), ("start", TS), ("end", TS),
    ("duration_s", pa.float64()), ("depth", pa.float64()), ("cut_start", pa.bool_()),
    ("cut_end", pa.bool_()), ("n_animals", pa.int32()), ("share_active", pa.float64()),
    ("animals", pa.string()),
])
DAILY_SCHEMA = pa.schema([
    ("sensor", pa.string()), ("samples_expected", pa.int64()), ("samples_usable", pa.int64()),
    ("share_open", pa.float64()), ("share_closed", pa.float64()), ("share_unknown", pa.float64()),
    ("share_missing", pa.float64()), ("closures", pa.int64()), ("closure_mean_duration_s", pa.float64()),
    ("micro_closures", pa.int64()), ("velocity_abs_mean", pa.float64()),
    ("velocity_abs_p99", pa.float64()), ("range", pa.float64()), ("active", pa.bool_()),
    ("noise_sd", pa.float64()), ("status", pa.string()),
])
# 60_daily ``status`` of an animal (closures and micro-closures are counted only when "ok";
# otherwise they, share_open/closed/unknown are null): see :func:`animal_status`.
STATUSES = ("ok", "no_data", "too_few_samples", "span_unknown", "flat")
DEVICE_DAILY_SCHEMA = pa.schema([
    ("animals", pa.int32()), ("active_animals", pa.int32()), ("samples_expected", pa.int64()),
    ("samples_recorded", pa.int64()), ("samples_usable", pa.int64()),
    ("completeness_pct", pa.float64()), ("usable_pct", pa.float64()), ("closures", pa.int64()),
    ("micro_closures", pa.int64()), ("sync_closures", pa.int64()),
])

# the column lists are the schemas' names: one place for both
EVENT_COLUMNS = EVENTS_SCHEMA.names
DAILY_COLUMNS = DAILY_SCHEMA.names
DEVICE_DAILY_COLUMNS = DEVICE_DAILY_SCHEMA.names


def select_sensors(df: pd.DataFrame, domain: str, pattern: str) -> list:
    """Sorted names of the sensors of ``domain`` whose name matches ``pattern`` (re.search)."""
    rx = re.compile(pattern)
    if not len(df):
        return []
    t = _Columns(df)
    return _select_sensors(t, _equals(t.domain, domain), rx)


def _select_sensors(t: "_Columns", domain_mask: np.ndarray, rx) -> list:
    """:func:`select_sensors` on the columns read once: the sensor names of the rows in
    ``domain_mask`` (a row without a sensor counts as ``"nan"``, as ``str(NaN)``), matched."""
    codes = np.unique(t.sensor.codes[domain_mask])
    cats = t.sensor.categories.tolist()     # one conversion, not one per name
    names = [str(cats[c]) for c in codes if c >= 0] + (["nan"] if len(codes) and codes[0] < 0 else [])
    return sorted(s for s in names if rx.search(s))


class ArrowDay:
    """A day's rows as read from a partition file (an arrow table with ``tidy.FILE_SCHEMA``)
    and its device: ``tidy.from_arrow(table, device_id)`` left unbuilt. The step's readers
    give this; :func:`compute_behaviour` reads its columns straight from arrow, and
    :meth:`frame` builds the tidy frame for whoever needs one."""
    __slots__ = ("table", "device_id")

    def __init__(self, table: pa.Table, device_id: str):
        self.table, self.device_id = table, device_id

    def __len__(self) -> int:
        return self.table.num_rows

    def frame(self) -> pd.DataFrame:
        return tidy.from_arrow(self.table, self.device_id)


def _columns_and_frame(df):
    """(:class:`_Columns`, the conformed tidy frame or None) of a tidy frame or an
    :class:`ArrowDay`; None when the frame was not needed (read from arrow directly)."""
    if isinstance(df, ArrowDay):
        t = _Columns.from_arrow(df.table, df.device_id)
        if t is not None:
            return t, None
        df = df.frame()
    df = tidy.conform(df) if len(df) else tidy.empty()
    return _Columns(df), df


_ARROW_CATEGORIES: dict = {}


def _arrow_categorical(col: pa.ChunkedArray):
    """``col.to_pandas().array`` (a dictionary column → pandas Categorical) when every chunk
    has the same dictionary and no null: its categories are pyarrow's own conversion of
    that dictionary (kept per dictionary), its codes the indices. Else None."""
    chunks = col.chunks
    if not chunks or col.null_count:
        return None
    dictionary = chunks[0].dictionary
    if any(not c.dictionary.equals(dictionary) for c in chunks[1:]):
        return None
    key = tuple(dictionary.to_pylist())
    dtype = _ARROW_CATEGORIES.get(key)
    if dtype is None:
        if len(set(key)) != len(key):
            return None
        dtype = pa.DictionaryArray.from_arrays(pa.array([], chunks[0].indices.type), dictionary).to_pandas().dtype
        if len(_ARROW_CATEGORIES) > 256:
            _ARROW_CATEGORIES.clear()
        _ARROW_CATEGORIES[key] = dtype
    codes = np.concatenate([c.indices.to_numpy() for c in chunks]) if len(chunks) > 1 else \
        chunks[0].indices.to_numpy()
    return pd.Categorical.from_codes(codes, dtype=dtype)


_DEVICE_DTYPES: dict = {}


class _Columns:
    """The columns of a tidy frame, each read once: ``ts_us`` (int64 µs since the epoch),
    ``device_id`` / ``domain`` / ``sensor`` (pandas Categoricals), ``value`` (float64),
    ``flag`` (uint8). A slow logger's day has a few hundred rows: a pandas column access
    costs more than the numpy work on it."""
    __slots__ = ("n", "ts_us", "device_id", "domain", "sensor", "value", "flag")

    def __init__(self, df: pd.DataFrame):
        self.n = len(df)
        self.ts_us = tidy.ts_us(df["ts"])
        self.device_id = df["device_id"].array
        self.domain = df["domain"].array
        self.sensor = df["sensor"].array
        self.value = df["value"].to_numpy(dtype=float)
        self.flag = df["quality_flag"].to_numpy(dtype=np.uint8)

    @classmethod
    def from_arrow(cls, table: pa.Table, device_id: str):
        """The columns of ``tidy.from_arrow(table, device_id)``, read from arrow without
        building the frame; None when the table is not plainly that (no row, another
        schema, a null, dictionaries that differ between chunks): build the frame then."""
        if not table.num_rows or not table.schema.equals(tidy.FILE_SCHEMA, check_metadata=False):
            return None
        if any(table.column(c).null_count for c in ("ts", "value", "quality_flag")):
            return None
        domain, sensor = _arrow_categorical(table.column("domain")), _arrow_categorical(table.column("sensor"))
        if domain is None or sensor is None:
            return None
        t = cls.__new__(cls)
        t.n = table.num_rows
        t.ts_us = table.column("ts").cast(pa.int64()).to_numpy()
        dev = _DEVICE_DTYPES.get(device_id)
        if dev is None:     # as tidy.from_arrow: one category, the device id, object dtype
            dev = pd.Categorical.from_codes(np.zeros(0, np.int8), categories=pd.Index([device_id], dtype=object)).dtype
            _DEVICE_DTYPES[device_id] = dev
        t.device_id = pd.Categorical.from_codes(np.zeros(t.n, dtype=np.int8), dtype=dev)
        t.domain, t.sensor = domain, sensor
        t.value = table.column("value").to_numpy().astype(float, copy=False)
        t.flag = table.column("quality_flag").to_numpy().astype(np.uint8, copy=False)
        return t


def _equals(cat: pd.Categorical, value) -> np.ndarray:
    """``(pd.Series(cat) == value).to_numpy()`` on the codes (a missing value is never equal)."""
    hit = [i for i, c in enumerate(cat.categories.tolist()) if c == value]
    return cat.codes == hit[0] if hit else np.zeros(len(cat), bool)


_DAY_START: dict = {}


def _day_start_us(day: str) -> int:
    """µs since the epoch of ``day``'s UTC midnight (a job asks for the same few days often)."""
    us = _DAY_START.get(day)
    if us is None:
        us = pd.Timestamp(day, tz="UTC").value // 1000
        if len(_DAY_START) > 4096:
            _DAY_START.clear()
        _DAY_START[day] = us
    return us


def _us_to_ts(us: np.ndarray) -> pd.Series:
    return pd.Series(np.asarray(us, dtype=np.int64).astype("datetime64[us]")).dt.tz_localize("UTC")


def to_grid(df: pd.DataFrame, domain: str, sensors: list, day: str, period_us: int):
    """Dense arrays of the selected sensors on the day's grid.

    Returns (x, flags, present, slot, row, mask): ``x`` (animals, samples of the day) is NaN
    where unusable, ``flags`` holds each sample's flag (MISSING where no row), ``present``
    says whether a row exists; ``slot`` and ``row`` place each selected input row (``mask``)
    on the grid. Raises UserError when a sample is off the grid or duplicated.
    """
    t = _Columns(df)
    slot, rows, mask = _grid_place(t, _equals(t.domain, domain) if t.n else np.zeros(0, bool),
                                   sensors, day, period_us)
    x, flags, present = _grid_fill(t, slot, rows, mask, len(sensors), DAY_US // period_us, day)
    return x, flags, present, slot, rows, mask


def _grid_place(t: "_Columns", domain_mask, sensors: list, day: str, period_us: int):
    """(slot, row, mask) of :func:`to_grid`: where each selected row goes; the off-grid error."""
    n_slots = DAY_US // period_us
    day_start = _day_start_us(day)
    code_of = {s: i for i, s in enumerate(sensors)}
    cats = [str(c) for c in t.sensor.categories.tolist()]
    row_of_cat = np.array([code_of.get(c, -1) for c in cats] + [-1], dtype=np.int64)
    row_all = row_of_cat[t.sensor.codes]        # code -1 (NaN) maps to the last: -1
    mask = (row_all >= 0) & domain_mask if t.n else np.zeros(0, bool)
    rows = row_all[mask]
    ts_us = t.ts_us[mask] - day_start
    slot, rem = np.divmod(ts_us, period_us)
    bad = (rem != 0) | (slot < 0) | (slot >= n_slots)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        first = pd.Timestamp(int(ts_us[i] + day_start), unit="us", tz="UTC")
        raise UserError(f"{int(bad.sum())} samples of {sensors[rows[i]]} are not on the "
                        f"{period_us / 1e6:g} s grid of day {day} (first: "
                        f"{first.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}); 60_behaviour needs "
                        "the regular grid of 40_resample ($.sample_period)")
    return slot, rows, mask


def _grid_fill(t: "_Columns", col, rows, mask, n_rows: int, n_cols: int, day: str):
    """(x, flags, present) of :func:`to_grid` on a grid of ``n_cols`` columns, the selected
    rows at (``rows``, ``col``); the duplicate error."""
    x = np.full((n_rows, n_cols), np.nan)
    flags = np.full((n_rows, n_cols), int(Flag.MISSING), dtype=np.uint8)
    present = np.zeros((n_rows, n_cols), dtype=bool)
    present[rows, col] = True
    if int(present.sum()) != len(rows):
        raise UserError(f"duplicate timestamps in day {day}; 60_behaviour needs one sample per "
                        "sensor and grid time (run 20_split / 40_resample first)")
    val = t.value[mask]
    flg = t.flag[mask]
    usable = _usable_flag(flg) & np.isfinite(val)
    x[rows, col] = np.where(usable, val, np.nan)
    flags[rows, col] = flg
    return x, flags, present


# How much of each neighbouring day the 60 job reads (its last / first hour): the velocity
# window reaches W/2 across midnight, so windows up to 2 h are whole there.
NEIGHBOUR_EDGE = "1h"


def edge_grid(frame, domain: str, sensors: list, day: str, period_us: int, side: str, h: int):
    """(x, flags) of shape (animals, h): the ``h`` grid samples of a neighbouring day next to
    ``day`` — side "previous": the last h slots before ``day``'s midnight, "next": the first
    h slots after its end. NaN / MISSING where the neighbour has no usable sample (or no
    frame); samples off the grid are ignored (they are that day's own concern)."""
    x = np.full((len(sensors), h), np.nan)
    flags = np.full((len(sensors), h), int(Flag.MISSING), dtype=np.uint8)
    if frame is None or not len(frame) or h < 1 or not sensors:
        return x, flags
    t = _columns_and_frame(frame)[0]
    day_start = _day_start_us(day)
    base = day_start - h * period_us if side == "previous" else day_start + DAY_US
    code_of = {s_: i for i, s_ in enumerate(sensors)}
    # categorical (tidy.conform): map the categories, not the rows
    of_cat = np.array([code_of.get(str(c), -1) for c in t.sensor.categories.tolist()] + [-1], dtype=np.int64)
    rows = of_cat[t.sensor.codes]
    keep = (rows >= 0) & _equals(t.domain, domain)
    slot, rem = np.divmod(t.ts_us - base, period_us)
    keep &= (rem == 0) & (slot >= 0) & (slot < h)
    val = t.value[keep]
    flg = t.flag[keep]
    r, c = rows[keep], slot[keep]
    x[r, c] = np.where(_usable_flag(flg) & np.isfinite(val), val, np.nan)
    flags[r, c] = flg
    return x, flags


_DURATIONS: dict = {}


def read_durations(p: dict, source: str) -> dict:
    """The config's durations in seconds, checked: ``{"period", "min_duration", "reference",
    "micro_max", "velocity", "sync"}``. Raises a one-line UserError naming the JSON path.

    A month's job asks 31 times for the same config: what a set of duration texts gave once
    is kept (a text that fails is never kept, so its error is raised every time)."""
    try:
        key = (p["sample_period"], p["state"]["min_duration"], p["reference_window"],
               p["micro_closure"]["max_duration"], p["micro_closure"]["min_duration"],
               p["active"]["min_usable"], p["velocity"]["window"], p["sync"]["window"])
        hash(key)
    except (KeyError, TypeError):
        key = None
    if key is not None and key in _DURATIONS:
        return dict(_DURATIONS[key])
    out = _read_durations(p, source)
    if key is not None:
        if len(_DURATIONS) > 256:
            _DURATIONS.clear()
        _DURATIONS[key] = dict(out)
    return out


def _read_durations(p: dict, source: str) -> dict:
    from .timewindow import parse_duration

    def sec(path, text, allow_zero=False):
        return parse_duration(text, f"{source}: {path}", allow_zero).total_seconds()

    period = sec("$.sample_period", p["sample_period"])
    period_us = round(period * 1e6)
    if period_us <= 0 or DAY_US % period_us:
        raise UserError(f"{source}: $.sample_period: {p['sample_period']!r} is not allowed; allowed: a "
                        "period that divides 24 h exactly (e.g. '100ms', '1s', '5s', '10s')")
    out = {"period": period,
           "min_duration": sec("$.state.min_duration", p["state"]["min_duration"], allow_zero=True),
           "reference": sec("$.reference_window", p["reference_window"]),
           "micro_max": sec("$.micro_closure.max_duration", p["micro_closure"]["max_duration"]),
           "micro_min": sec("$.micro_closure.min_duration", p["micro_closure"]["min_duration"],
                            allow_zero=True),
           "min_usable": sec("$.active.min_usable", p["active"]["min_usable"], allow_zero=True),
           "velocity": sec("$.velocity.window", p["velocity"]["window"]),
           "sync": sec("$.sync.window", p["sync"]["window"])}
    half = out["velocity"] / (2 * period)
    if abs(half - round(half)) > 1e-9 or round(half) < 1:
        w = p["velocity"]["window"]
        raise UserError(f"{source}: $.velocity.window: {w!r} is not allowed; allowed: an even multiple "
                        f"of $.sample_period ({p['sample_period']!r}), e.g. '{2 * period:g}s' or "
                        f"'{4 * period:g}s'")
    return out


def animal_status(x, flags, present, sensors, p, dur, period, day, device, rng=None):
    """Per animal: is its normalised opening fit for counting events? Returns (status array,
    one-line warnings naming device, sensor and the figure).

    In order (the first that applies):

    * ``span_unknown``: no usable sample and at least half of the samples that have a value
      (flag not 1) carry flag 3 — 50_normalise had no scale for it (a fit span below the declared minimum: the
      animal did not close during the fit period, or its fit is missing);
    * ``no_data``: no usable sample;
    * ``too_few_samples``: usable samples last less than ``$.active.min_usable``
      (n_usable * period < min_usable);
    * ``flat``: max - min of the usable opening < ``$.active.min_range`` (a stuck sensor, a
      lost magnet, a dead or inactive animal: FIELD.md sets such animals aside);
    * ``ok``.
    """
    n = len(sensors)
    status = np.full(n, "ok", dtype=object)
    warn = []
    usable = ~np.isnan(x)
    n_use = usable.sum(axis=1) if n else np.zeros(0, int)
    n_rec = present.sum(axis=1) if n else np.zeros(0, int)
    n_f3 = (present & (flags == int(Flag.OUT_OF_RANGE))).sum(axis=1) if n else np.zeros(0, int)
    n_rec = (present & (flags != int(Flag.MISSING))).sum(axis=1) if n else np.zeros(0, int)
    if rng is None:         # max - min of the usable opening (compute_behaviour has it already)
        rng = _opening_range(x)
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


def _opening_range(x: np.ndarray) -> np.ndarray:
    """Per animal: max - min of the usable opening (NaN when it has none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(x, axis=1) - np.nanmin(x, axis=1) if x.size else np.zeros(0)


def sparse_columns(present: np.ndarray, keep_gap: int) -> np.ndarray | None:
    """The grid columns the sparse path computes on, or None when it saves nothing.

    A column where no animal has a row (no sample, no flag) is the same empty column
    wherever it is; every rule of this module looks at most ``keep_gap - 1`` columns away
    (the reference window, the velocity window), runs never cross an empty column, and the
    daily counts skip them. So a run of more than ``keep_gap`` empty columns computes
    exactly as its first ``keep_gap`` columns: they are kept, the rest dropped. A slow
    logger's day (24 samples on 86,400 one-second slots) then computes on a few thousand
    columns; a full day keeps every column."""
    n_cols = present.shape[1]
    occupied = np.flatnonzero(present.any(axis=0))
    if len(occupied) == n_cols:           # no empty column
        return None
    # column i is kept when i - (the last occupied column <= i, or -1) - 1 < keep_gap: each
    # occupied column s (and a virtual one at -1) keeps s .. s + keep_gap, up to the next one
    s = np.concatenate([[-1], occupied])
    lo = np.maximum(s, 0)
    hi = np.minimum(np.minimum(s + keep_gap + 1, np.append(occupied, n_cols)), n_cols)
    lo, hi = lo[hi > lo], hi[hi > lo]
    width = hi - lo
    start = np.cumsum(width) - width      # where each stretch begins in the output
    return np.arange(int(width.sum()), dtype=np.int64) + np.repeat(lo - start, width)


def compute_behaviour(df: pd.DataFrame, day: str, p: dict, previous: pd.DataFrame | None = None,
                      next: pd.DataFrame | None = None, sparse: bool | None = None) -> BehaviourResult:
    """All of step 60 on one (device, day) tidy partition. ``p`` is the validated config.

    ``previous`` / ``next``: optional tidy rows of the neighbouring days' edges (same
    device, same input stage). Only the velocity reads them — its window of W/2 on each
    side reaches across midnight, so v is defined at 00:00 and at the day's last samples
    when the neighbour exists; every other metric stays within the day.

    ``sparse``: compute on the grid without its long empty stretches
    (:func:`sparse_columns`; the same results, value for value): None (default) when that
    drops more than half the day's columns, True whenever it drops any, False never.

    The work is numpy on arrays read once from the frame (:class:`_Columns`); the pandas
    frames are built once, at the end: a slow logger's day (24 rows a sensor) is then
    not priced by pandas' fixed cost per call. ``df`` (and ``previous`` / ``next``) may be
    an :class:`ArrowDay`, what the step reads: the same result as its frame."""
    data_in = df
    t, df = _columns_and_frame(df)
    dur = read_durations(p, "config")
    period = dur["period"]
    period_us = int(round(period * 1e6))
    n_slots = DAY_US // period_us
    domain_mask = _equals(t.domain, p["domain"]) if t.n else np.zeros(0, bool)
    sensors = _select_sensors(t, domain_mask, re.compile(p["sensors"])) if t.n else []
    slot, rows, mask = _grid_place(t, domain_mask, sensors, day, period_us)
    h = round(dur["velocity"] / (2 * period))
    cols = None
    if sparse is not False:
        keep_gap = max(int(round(dur["reference"] / period)), 1) + 2 * h + 2
        occupied = np.zeros((1, n_slots), dtype=bool)     # the columns where some animal has a row
        occupied[0, slot] = True
        cols = sparse_columns(occupied, keep_gap)
        if cols is not None and sparse is None and 2 * len(cols) > n_slots:
            cols = None
    if cols is not None:        # the grid's columns, a slot's column: cols[c] = its slot of the day
        grid_slot = np.searchsorted(cols, slot)
    else:
        cols, grid_slot = np.arange(n_slots), slot
    n_grid = len(cols)
    # the grid of the kept columns directly (the whole day's grid, then its kept columns:
    # the same arrays; every row sits in an occupied column, which is always kept)
    x, flags, present = _grid_fill(t, grid_slot, rows, mask, len(sensors), n_grid, day)
    x_prev, f_prev = edge_grid(previous, p["domain"], sensors, day, period_us, "previous", h)
    x_next, f_next = edge_grid(next, p["domain"], sensors, day, period_us, "next", h)
    # every rule works on each animal on its own; one without a usable sample has an unknown
    # state, no velocity (its window holds its own NaN sample), no noise sd and no event:
    # the rules run on the others only (a day whose openings 50 could not scale, often)
    live = np.flatnonzero(~np.isnan(x).all(axis=1)) if x.size else np.arange(len(sensors))
    if len(live) == len(sensors):
        state, velocity, sigma, closures, micro = _animal_rules(x, flags, x_prev, x_next, p, dur)
    else:
        state = np.full(x.shape, UNKNOWN, dtype=np.int8)
        velocity = np.full(x.shape, np.nan)
        sigma = np.full(len(sensors), np.nan)
        state[live], velocity[live], sigma[live], closures, micro = _animal_rules(
            x[live], flags[live], x_prev[live], x_next[live], p, dur)
        closures["row"], micro["row"] = live[closures["row"]], live[micro["row"]]
    rng = _opening_range(x)
    status, warn = animal_status(x, flags, present, sensors, p, dur, period, day,
                                 str(t.device_id[0]) if t.n else "?", rng=rng)
    counted = status == "ok"
    # an animal without a trustworthy opening (see animal_status) gets no events
    closures = _take(closures, counted[closures["row"]]) if len(closures["row"]) else closures
    micro = _take(micro, counted[micro["row"]]) if len(micro["row"]) else micro

    # ---- daily summary per animal
    usable = ~np.isnan(x)
    n_usable_row = usable.sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        speed = np.abs(velocity)
        v_mean = np.nanmean(speed, axis=1) if x.size else np.zeros(0)
        v_p99 = _nanpercentile_rows(speed, 99) if x.size else np.zeros(0)
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
        "samples_usable": n_usable_row.astype(np.int64),
        "share_open": np.where(counted, n_open / n_slots, np.nan),
        "share_closed": np.where(counted, n_closed / n_slots, np.nan),
        "share_unknown": np.where(counted, (n_slots - n_open - n_closed) / n_slots, np.nan),
        "share_missing": (n_slots - n_usable_row) / n_slots,
        "closures": pd.arrays.IntegerArray(np.where(counted, n_cl, 0).astype(np.int64), ~counted),
        "closure_mean_duration_s": np.where(counted, mean_cl, np.nan).astype(float),
        "micro_closures": pd.arrays.IntegerArray(np.where(counted, n_mc, 0).astype(np.int64), ~counted),
        "velocity_abs_mean": np.asarray(v_mean, float),
        "velocity_abs_p99": np.asarray(v_p99, float),
        "range": np.asarray(rng, float),
        "active": np.asarray(active, bool),
        "noise_sd": np.asarray(sigma, float),
        "status": np.asarray(status, dtype=object),
    }, columns=DAILY_COLUMNS)

    # ---- events table (per-animal) + synchronised closures (per device)
    day_us = _day_start_us(day)
    sy = p["sync"]
    n_active = int(active.sum())
    syncs = []
    cand = ~closures["cut_start"] & active[closures["row"]] if len(closures["row"]) else np.zeros(0, bool)
    if cand.any():
        slots = cols[closures["start_slot"][cand].astype(np.int64)]
        starts_s = slots * period
        cand_row = closures["row"][cand]
        groups, order = find_sync_closures(starts_s, cand_row, n_active, dur["sync"],
                                           sy["min_share"], sy["min_animals"])
        t_sorted, a_sorted, slot_sorted = starts_s[order], cand_row[order], slots[order]
        for i0, i1 in groups:
            who = sorted({sensors[r] for r in a_sorted[i0:i1]})
            syncs.append((day_us + int(slot_sorted[i0]) * period_us, day_us + int(slot_sorted[i1 - 1]) * period_us,
                          float(t_sorted[i1 - 1] - t_sorted[i0]), len(who), len(who) / n_active, ",".join(who)))
    events = _events_frame(closures, micro, syncs, sensors, cols, day_us, period_us)

    # ---- per device and day
    expected = len(sensors) * n_slots
    recorded = int((present & (flags != int(Flag.MISSING)) & (flags != int(Flag.INTERPOLATED))).sum())
    n_usable = int(n_usable_row.sum())
    n_closures, n_micro = len(closures["row"]), len(micro["row"])
    device_daily = pd.DataFrame({
        "animals": [len(sensors)], "active_animals": [n_active], "samples_expected": [expected],
        "samples_recorded": [recorded], "samples_usable": [n_usable],
        "completeness_pct": [100.0 * recorded / expected if expected else np.nan],
        "usable_pct": [100.0 * n_usable / expected if expected else np.nan],
        "closures": [n_closures], "micro_closures": [n_micro], "sync_closures": [len(syncs)],
    }, columns=DEVICE_DAILY_COLUMNS)

    # ---- derived per-sample series back into the tidy table
    if mask.any():
        data = _with_derived_series(t, mask, rows, grid_slot, state, velocity, flags, dur["velocity"],
                                    period, edge_flags=(f_prev, f_next))
    else:
        data = _sorted_tidy(df if df is not None else _columns_and_frame(data_in.frame())[1])
    counts = {"rows_in": t.n, "rows_out": t.n, "rejected": {},
              "rows_added": int(len(data) - t.n), "animals": len(sensors),
              "active_animals": n_active, "warnings": warn,
              "status": {k: int((status == k).sum()) for k in STATUSES if (status == k).any()},
              "events": {"closure": n_closures, "micro_closure": n_micro, "sync_closure": len(syncs)}}
    return BehaviourResult(data, events, daily, device_daily, counts)


def _animal_rules(x, flags, x_prev, x_next, p: dict, dur: dict):
    """(state, velocity, noise sd, closures, micro-closures) of the animals of ``x`` (rows),
    each computed on its own row: state with hysteresis and minimum duration, velocity
    over the neighbouring days' edges ``x_prev`` / ``x_next``, the events as column dicts."""
    period = dur["period"]
    h = x_prev.shape[1]
    sp, mp = p["state"], p["micro_closure"]
    raw_state = apply_hysteresis(classify_opening(x, sp["closed_below"], sp["open_above"]))
    state = enforce_min_duration(raw_state, dur["min_duration"], period)
    reference = trailing_reference(x, dur["reference"], period)
    velocity = compute_velocity(np.concatenate([x_prev, x, x_next], axis=1), dur["velocity"],
                                period)[:, h:h + x.shape[1]]
    sigma = noise_sigma(x, flags, state)
    closures = _closures(state, x, reference, period)
    micro = _micro_closures(state, x, reference, period, mp["min_drop"], dur["micro_max"],
                            sigma, mp["noise_factor"], dur["micro_min"],
                            measured=(flags == int(Flag.OK)) & ~np.isnan(x),
                            min_samples=int(mp.get("min_samples", 1)),
                            release=float(mp.get("release", 1.0)))
    return state, velocity, sigma, closures, micro


def _take(columns: dict, keep: np.ndarray) -> dict:
    """The rows ``keep`` (boolean) of a dict of equally long columns."""
    return {k: v[keep] for k, v in columns.items()}


def _nanpercentile_rows(a: np.ndarray, q: float) -> np.ndarray:
    """``np.nanpercentile(a, q, axis=1)``, asked only for the rows that hold a number (numpy
    computes each row on its own, so the others are NaN either way, without its cost)."""
    some = ~np.isnan(a).all(axis=1)
    out = np.full(a.shape[0], np.nan)
    if some.any():
        out[some] = np.nanpercentile(a[some], q, axis=1)
    return out


def _ts_column(us: np.ndarray) -> pd.arrays.DatetimeArray:
    """int64 µs since the epoch → a datetime64[us, UTC] array (what :func:`_us_to_ts` holds)."""
    return pd.array(np.asarray(us, dtype=np.int64).view("datetime64[us]")).tz_localize("UTC")


_EMPTY_EVENTS: list = []


def _events_frame(closures: dict, micro: dict, syncs: list, sensors: list, cols, day_us: int,
                  period_us: int) -> pd.DataFrame:
    """The events table: closures, micro-closures (one row each, ``sensor`` its animal) and
    synchronised closures (``syncs``: (start µs, end µs, duration, animals, share, names)),
    sorted by kind, sensor (a sync has none: first) and start, stably; a closure's or
    micro-closure's samples are consecutive slots of the day (``cols[start_slot]`` on)."""
    n_c, n_m, n_s = len(closures["row"]), len(micro["row"]), len(syncs)
    if not n_c + n_m + n_s:
        if not _EMPTY_EVENTS:
            _EMPTY_EVENTS.append(_finish_events(_empty_events()))
        return _EMPTY_EVENTS[0].copy()
    start_slot = np.concatenate([cols[ev["start_slot"].astype(np.int64)] for ev in (closures, micro)])
    n = np.concatenate([closures["n"], micro["n"]]).astype(np.int64)
    rows = np.concatenate([closures["row"], micro["row"]]).astype(np.int64)
    names = [sensors[r] for r in rows]
    sync_cols = list(zip(*syncs)) if n_s else [(), (), (), (), (), ()]
    start = np.concatenate([day_us + start_slot * period_us, np.asarray(sync_cols[0], np.int64)])
    end = np.concatenate([day_us + (start_slot + n) * period_us, np.asarray(sync_cols[1], np.int64)])
    kind = ["closure"] * n_c + ["micro_closure"] * n_m + ["sync_closure"] * n_s
    sensor = names + [None] * n_s
    # the order of the old sort_values(["kind" rank, sensor or "", start], kind="stable")
    key = sorted(set(names) | ({""} if n_s else set()))
    rank_of = {s: i for i, s in enumerate(key)}
    sensor_rank = np.array([rank_of[s] for s in names] + [rank_of.get("", 0)] * n_s, dtype=np.int64)
    kind_rank = np.repeat(np.arange(3), [n_c, n_m, n_s])
    order = np.lexsort((start, sensor_rank, kind_rank))
    obj = np.empty(len(kind), dtype=object)

    def pick(values, dtype):
        obj[:] = values
        return pd.Series(obj[order], dtype=dtype)

    out = pd.DataFrame({
        "kind": pick(kind, "str"),
        # a sync closure has no sensor: the column then holds None (object), else names (str)
        "sensor": pick(sensor, object if n_s else "str"),
        "start": _ts_column(start[order]), "end": _ts_column(end[order]),
        "duration_s": np.concatenate([closures["duration_s"], micro["duration_s"],
                                      np.asarray(sync_cols[2], float)]).astype(float)[order],
        "depth": np.concatenate([closures["depth"], micro["depth"], np.full(n_s, np.nan)]).astype(float)[order],
        "cut_start": np.concatenate([closures["cut_start"], micro["cut_start"], np.zeros(n_s, bool)])
                       .astype(bool)[order],
        "cut_end": np.concatenate([closures["cut_end"], micro["cut_end"], np.zeros(n_s, bool)])
                     .astype(bool)[order],
        "n_animals": np.concatenate([np.ones(n_c + n_m, np.int64), np.asarray(sync_cols[3], np.int64)])[order],
        "share_active": np.concatenate([np.full(n_c + n_m, np.nan), np.asarray(sync_cols[4], float)])[order],
        "animals": pick(names + list(sync_cols[5]), "str"),
    }, columns=EVENT_COLUMNS)
    return out


def _finish_events(events: pd.DataFrame) -> pd.DataFrame:
    """The events table's dtypes and order (kind, sensor, start; stable)."""
    events = events.astype({"duration_s": float, "depth": float, "share_active": float,
                            "n_animals": np.int64, "cut_start": bool, "cut_end": bool})
    events["_k"] = events["kind"].map({k: i for i, k in enumerate(EVENT_KINDS)})
    events["_s"] = events["sensor"].fillna("")
    events = events.sort_values(["_k", "_s", "start"], kind="stable").drop(columns=["_k", "_s"])
    return events.reset_index(drop=True)


_CATEGORIES: dict = {}


def _union_sorted(dtype: pd.CategoricalDtype, suffixes: tuple):
    """What ``union_categoricals([c + s for s in suffixes], sort_categories=True)`` makes of
    categoricals ``c`` of ``dtype`` (``s`` None: the names as they are; else each category
    renamed ``f"{name}{s}"``): (its dtype, the new code of each old code per suffix, as an
    array (len(suffixes), categories + 1) whose last column maps the missing code -1 to -1).
    It depends only on the categories, which a job's days share: computed once per set."""
    cats = dtype.categories
    key = (tuple(cats.tolist()), str(cats.dtype), dtype.ordered, suffixes)
    hit = _CATEGORIES.get(key)
    if hit is None:
        from pandas.api.types import union_categoricals

        k = len(cats)
        base = pd.Categorical.from_codes(np.arange(k), dtype=dtype)
        parts = [base if s is None else base.rename_categories(lambda c, s=s: f"{c}{s}") for s in suffixes]
        u = union_categoricals(parts, sort_categories=True)
        codes = np.full((len(suffixes), k + 1), -1, dtype=np.int64)
        codes[:, :k] = np.asarray(u.codes, dtype=np.int64).reshape(len(suffixes), k)
        names = np.asarray([str(c) for c in u.categories], dtype=object)
        rank = np.argsort(np.argsort(names, kind="stable"))      # as _sorted_tidy ranks them
        hit = (u.dtype, codes, rank)
        if len(_CATEGORIES) > 256:
            _CATEGORIES.clear()
        _CATEGORIES[key] = hit
    return hit


def _with_derived_series(t: "_Columns", mask, rows, slot, state, velocity, flags, window_s, period,
                         edge_flags=None) -> pd.DataFrame:
    """Input rows + ``<sensor>__state`` (1 open, 0 closed, NaN flag 1 unknown) and
    ``<sensor>__velocity`` [opening fraction / s] (NaN flag 1 where undefined), one row per
    input row of each selected sensor (``mask``: at least one row), same ts. A defined value
    gets flag 5 when it rests on an interpolated sample (state: its own sample; velocity: any
    sample of its window, also one of the neighbouring days' ``edge_flags`` (previous, next),
    each (animals, h)), else 0. Sorted by (sensor, ts); the rows gathered in their final
    order and the frame built once, from the columns read once."""
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

    # the input rows, then the selected rows as <sensor>__state, then as <sensor>__velocity;
    # categories: the sorted union of the three (pandas' union_categoricals, as before)
    sen_dtype, sen_map, rank = _union_sorted(t.sensor.dtype, (None, "__state", "__velocity"))
    sen_codes = np.asarray(t.sensor.codes, dtype=np.int64)
    pieces = _derived_pieces(sen_codes, t.ts_us, mask, sen_map, rank)
    if pieces is None:                  # rows not in blocks: gather them in their final order
        sub = sen_codes[mask]
        order = tidy.key_time_order(np.concatenate([t.ts_us, t.ts_us[mask], t.ts_us[mask]]),
                                    rank[np.concatenate([sen_map[0][sen_codes], sen_map[1][sub],
                                                         sen_map[2][sub]])])

        def arrange(whole, selected):   # a column of the input rows and of the selected ones
            parts = (whole, whole[mask], whole[mask]) if selected is None else (whole, *selected)
            return np.concatenate(parts)[order]
        sensor = arrange(sen_map[0][sen_codes], (sen_map[1][sub], sen_map[2][sub]))
    else:                               # each output sensor one slice of the input: copied once
        def arrange(whole, selected):
            if selected is None:        # the input row's value, also for its state and velocity
                return np.concatenate([whole[a:b] for _, a, b, _, _ in pieces])
            parts = (whole, *selected)
            return np.concatenate([parts[k][a:b] if k == 0 else parts[k][sa:sa + b - a]
                                   for k, a, b, sa, _ in pieces])
        sensor = np.repeat([code for *_, code in pieces], [b - a for _, a, b, _, _ in pieces])

    def repeated(cat):                  # a column the derived rows copy from their input row
        dtype, m, _ = _union_sorted(cat.dtype, (None, None, None))
        return pd.Categorical.from_codes(arrange(m[0][np.asarray(cat.codes, dtype=np.int64)], None),
                                         dtype=dtype)

    return pd.DataFrame({
        "ts": _ts_column(arrange(t.ts_us, None)),
        "device_id": repeated(t.device_id), "domain": repeated(t.domain),
        "sensor": pd.Categorical.from_codes(sensor, dtype=sen_dtype),
        "value": arrange(t.value, (st, vel)),
        "quality_flag": arrange(t.flag, (flag_of(st, interp[rows, slot]), flag_of(vel, near[rows, slot]))),
    }, copy=False)      # the arrays are this frame's own (pandas would copy them: ~5-25 ms a 1 Hz day)


def _derived_pieces(codes, ts_us, mask, sen_map, rank):
    """The rows of :func:`_with_derived_series` in their final (sensor name, ts) order as
    slices, when the input is in blocks (each sensor one run of rows, its times ascending,
    ``mask`` all or none of a run; a stage written by 20 on). Each output sensor is
    one slice, so this is the stable sort's order without sorting. None when the input is
    not so, or two output names would share a code (then sort).

    Each piece is (part, start, stop, selected_start, code): part 0 the input rows
    ``[start, stop)``; parts 1 and 2 (state, velocity) the same rows, which are the selected
    rows from ``selected_start`` on; in the order of the output sensor names' ranks."""
    n = len(codes)
    if not n or (codes < 0).any():
        return None
    starts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    lo, hi = np.concatenate(([0], starts)), np.concatenate((starts, [n]))
    run_code = codes[lo]
    if len(np.unique(run_code)) != len(run_code):
        return None                                   # a sensor in two runs
    step = np.diff(ts_us)
    step[starts - 1] = 0                              # a run's first time may be below the last one's
    if (step < 0).any():
        return None
    c = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
    chosen = c[hi] - c[lo]
    if ((chosen != 0) & (chosen != hi - lo)).any():
        return None                                   # a run partly selected
    pieces = [(part, int(a), int(b), int(c[a]), int(sen_map[part][k]))
              for part in (0, 1, 2) for a, b, k, m in zip(lo, hi, run_code, chosen) if part == 0 or m]
    ranks = [int(rank[code]) for *_, code in pieces]
    if len(set(ranks)) != len(ranks):
        return None
    return [pieces[i] for i in np.argsort(ranks, kind="stable")]


def _sorted_tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Sort a tidy frame by (sensor name, ts), stably, without string comparisons per row."""
    df = tidy.conform(df)
    if not len(df):
        return df
    cats = df["sensor"].cat.categories
    rank = np.argsort(np.argsort(np.asarray([str(c) for c in cats], dtype=object), kind="stable"))
    order = tidy.key_time_order(tidy.ts_us(df["ts"]), rank[df["sensor"].cat.codes.to_numpy()])
    return df.iloc[order].reset_index(drop=True)


def _empty_events() -> pd.DataFrame:
    return pd.DataFrame({"kind": pd.Series([], dtype=object), "sensor": pd.Series([], dtype=object),
                         "start": pd.Series([], dtype="datetime64[us, UTC]"),
                         "end": pd.Series([], dtype="datetime64[us, UTC]"),
                         "duration_s": pd.Series([], dtype=float), "depth": pd.Series([], dtype=float),
                         "cut_start": pd.Series([], dtype=bool), "cut_end": pd.Series([], dtype=bool),
                         "n_animals": pd.Series([], dtype=np.int64),
                         "share_active": pd.Series([], dtype=float),
                         "animals": pd.Series([], dtype=object)}, columns=EVENT_COLUMNS)
