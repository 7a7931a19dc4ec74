"""Window statistics (step 70): pure functions, no I/O.

One (device, UTC day) tidy partition → for each window length w, one tidy frame with, for
every aggregated sensor s and every window [t0, t0 + w) of the day, rows
``s__mean``, ``s__min``, ``s__max``, ``s__std``, ``s__count``, ``s__share_flagged`` at
``ts = t0`` (the window start).

Rules:

- windows are aligned to UTC midnight: t0 = day_start + k * w, k = 0 .. 86400 / w - 1; w must
  divide 24 h, so windows are also aligned to the UTC epoch and the last window ends exactly
  at the next midnight: no window crosses a day edge;
- a sample is *valid* when its flag is OK (0) or INTERPOLATED (5) and its value is finite;
  mean, min, max, std and count use the valid samples only;
- ``share_flagged`` = (samples whose flag is not 0 nor 5) / (samples in the window) [0..1];
  on a grid of period f (``grid``: the 40_resample grid of the sensor, explicit) it is
  (flagged rows + grid cells of the window without a row) / (grid cells of the window): a
  grid time without a row is missing (40's sparse storage), so the share is the same on a
  sparse grid as on the dense one, and 1.0 (count 0) for a window inside a long gap;
- ``std`` is the population standard deviation sqrt(sum((x - mean)^2) / n) over the n valid
  samples (0 for a single value: the window is the whole population, nothing is estimated);
- a window with no valid sample keeps its rows: mean/min/max/std are NaN with flag 1 (MISSING),
  count is 0 (flag 0); ``share_flagged`` is NaN with flag 1 only when the window holds no
  sample at all and (on a grid) no grid cell.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import tidy
from .errors import UserError
from .flags import Flag

DAY_S = 86_400
STATS = ("mean", "min", "max", "std", "count", "share_flagged")
USABLE_FLAGS = (int(Flag.OK), int(Flag.INTERPOLATED))
WINDOW_RE = re.compile(r"^([1-9][0-9]*)(s|min|h)$")
_UNIT_S = {"s": 1, "min": 60, "h": 3600}


def window_seconds(label: str) -> int:
    """``"10s"`` → 10, ``"5min"`` → 300, ``"1h"`` → 3600 [s]. ValueError when malformed."""
    m = WINDOW_RE.match(str(label))
    if not m:
        raise ValueError(f"bad window {label!r}")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def select_rows(df: pd.DataFrame, day, pattern: str):
    """Which rows are aggregated: sensor matches ``pattern`` (re.search) and ts is in the day
    (``day``: a YYYY-MM-DD, or a list of them: in one of those days).

    Returns (mask, rejected) with rejected = {reason: rows} for the ledger.
    """
    rx = re.compile(pattern)
    if not len(df):
        return np.zeros(0, bool), {}
    cats = df["sensor"].cat.categories
    keep_cat = np.array([bool(rx.search(str(c))) for c in cats] + [False])
    by_sensor = keep_cat[df["sensor"].cat.codes.to_numpy()]
    ts = pd.DatetimeIndex(df["ts"]).as_unit("us").asi8
    in_day = _day_of_rows(ts, _days_us([day] if isinstance(day, str) else day)) >= 0
    rejected = {"not aggregated: sensor not matched by $.sensors": int((~by_sensor).sum()),
                "not aggregated: ts outside the partition day": int((by_sensor & ~in_day).sum())}
    return by_sensor & in_day, rejected


@dataclass
class Moments:
    """Per (sensor, window) sums from which every statistic follows; arrays (sensors, windows).

    ``n_rows`` samples, ``n_flagged`` samples with a flag not in {0, 5}, ``count`` valid
    samples, ``total`` = sum(x), ``m2`` = sum((x - mean)^2), ``lo`` / ``hi`` = min / max
    (NaN when count is 0), over the valid samples.
    """

    window_s: int
    n_rows: np.ndarray
    n_flagged: np.ndarray
    count: np.ndarray
    total: np.ndarray
    m2: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def _days_us(days) -> np.ndarray:
    """UTC midnights [µs] of the days (YYYY-MM-DD, ascending)."""
    return np.array([pd.Timestamp(d, tz="UTC").value // 1000 for d in days], dtype=np.int64)


def _day_of_rows(ts_us: np.ndarray, days_us: np.ndarray) -> np.ndarray:
    """Row → position of its day in ``days_us``, −1 for a row in none of them. Days one
    after the other (a day's job, a period without holes) by arithmetic, else by search."""
    day_us = DAY_S * 1_000_000
    if len(days_us) and (np.diff(days_us) == day_us).all():
        pos = (ts_us - days_us[0]) // day_us
        return np.where((pos >= 0) & (pos < len(days_us)), pos, -1)
    pos = np.searchsorted(days_us, ts_us, side="right") - 1
    inside = (pos >= 0) & (ts_us < days_us[np.maximum(pos, 0)] + DAY_S * 1_000_000)
    return np.where(inside, pos, -1)


@dataclass
class Prepared:
    """The rows of one partition as arrays, computed once for all windows. The windows of
    several days (a week's or a month's partition, ``days_us``) lie end to end: window k of
    day i is slot i · (86400 / w) + k, so a period is aggregated in one pass, each day
    exactly as alone (no window crosses midnight)."""

    device: str
    pair_domain: list
    pair_sensor: list
    pair: np.ndarray        # row → (domain, sensor) pair index
    ts_us: np.ndarray
    x: np.ndarray
    usable_flag: np.ndarray
    valid: np.ndarray
    days_us: np.ndarray             # the days' midnights [µs], ascending (one day: one)
    row_day: np.ndarray             # row → its day's position in days_us

    @property
    def n_days(self) -> int:
        return len(self.days_us)


def prepare_rows(df: pd.DataFrame, day) -> Prepared:
    """Arrays of ``df`` (one device and day, tidy; or ``day`` a list of days and ``df`` their
    rows, in day order) for :func:`moments_from_rows`."""
    d_codes = df["domain"].cat.codes.to_numpy().astype(np.int64)
    s_codes = df["sensor"].cat.codes.to_numpy().astype(np.int64)
    n_s = len(df["sensor"].cat.categories) + 1
    key = d_codes * n_s + s_codes
    seen = np.zeros(int(key.max()) + 1 if len(key) else 1, dtype=bool)
    seen[key] = True
    pair_key = np.flatnonzero(seen)                  # sorted distinct keys, O(n) (no sort)
    x = df["value"].to_numpy(dtype=float)
    usable_flag = np.isin(df["quality_flag"].to_numpy(dtype=np.uint8), USABLE_FLAGS)
    days_us = _days_us([day] if isinstance(day, str) else day)
    ts_us = pd.DatetimeIndex(df["ts"]).as_unit("us").asi8
    return Prepared(
        device=str(df["device_id"].iloc[0]) if len(df) else "",
        pair_domain=[str(df["domain"].cat.categories[k // n_s]) for k in pair_key],
        pair_sensor=[str(df["sensor"].cat.categories[k % n_s]) for k in pair_key],
        pair=(np.cumsum(seen) - 1)[key], ts_us=ts_us,
        x=x, usable_flag=usable_flag, valid=usable_flag & np.isfinite(x),
        days_us=days_us, row_day=_day_of_rows(ts_us, days_us))


def moments_from_rows(prep: Prepared, window_s: int) -> Moments:
    """Window sums straight from the samples: one bincount per sum, no loop over windows."""
    per_day = DAY_S // window_s
    n_pairs, n_slots = len(prep.pair_sensor), per_day * prep.n_days
    G = n_pairs * n_slots
    sums = _cell_sums(prep, _window_keys(prep, window_s, n_slots), G)
    return Moments(window_s, *(a.reshape(n_pairs, n_slots) for a in sums))


def _window_keys(prep: Prepared, window_s: int, n_slots: int) -> np.ndarray:
    """Row → pair · n_slots + its window's slot (the days' windows end to end)."""
    if len(prep.ts_us) and prep.row_day.min() < 0:
        raise ValueError("rows outside the partition day (select them with select_rows first)")
    per_day = DAY_S // window_s
    slot = prep.row_day * per_day + (prep.ts_us - prep.days_us[prep.row_day]) // (window_s * 1_000_000)
    return prep.pair.astype(np.int64) * n_slots + slot


def _cell_sums(prep: Prepared, cell: np.ndarray, size: int) -> tuple:
    """(n_rows, n_flagged, count, total, m2, lo, hi) per cell of ``size`` cells, the rows
    given by their cell index ``cell``: one bincount per sum, in row order (the valid rows
    stably sorted by cell first when they are not), no loop over cells."""
    n_rows = np.bincount(cell, minlength=size)
    n_flagged = np.bincount(cell[~prep.usable_flag], minlength=size)
    gv, xv = cell[prep.valid], prep.x[prep.valid]
    if len(gv) > 1 and np.any(gv[1:] < gv[:-1]):
        order = np.argsort(gv, kind="stable")
        gv, xv = gv[order], xv[order]
    count = np.bincount(gv, minlength=size)
    total = np.bincount(gv, weights=xv, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    m2 = np.bincount(gv, weights=(xv - mean[gv]) ** 2, minlength=size)   # two-pass: no cancellation
    lo, hi = _extremes(gv, xv, size)
    return n_rows, n_flagged, count, total, m2, lo, hi


def _extremes(gv: np.ndarray, xv: np.ndarray, size: int):
    """(min, max) per cell of the sorted cell indices ``gv`` of values ``xv``; NaN where none."""
    lo = np.full(size, np.nan)
    hi = np.full(size, np.nan)
    if len(gv):
        starts = np.flatnonzero(np.r_[True, gv[1:] != gv[:-1]])
        lo[gv[starts]] = np.minimum.reduceat(xv, starts)
        hi[gv[starts]] = np.maximum.reduceat(xv, starts)
    return lo, hi


def coarsen_moments(m: Moments, window_s: int) -> Moments:
    """Sums of a window that is a multiple of ``m.window_s``, from the finer windows' sums.

    Counts, sums, min and max add up; m2 combines exactly (Chan et al.):
    m2 = sum_i (m2_i + n_i * (mean_i - mean)^2) over the r = window_s / m.window_s parts.
    """
    r = window_s // m.window_s
    P, S = m.count.shape

    def parts(a):
        return a.reshape(P, S // r, r)

    count = parts(m.count).sum(-1)
    total = parts(m.total).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_f = parts(m.total / m.count)
        mean_c = total / count
        spread = np.where(parts(m.count) > 0, parts(m.count) * (mean_f - mean_c[..., None]) ** 2, 0.0)
    m2 = (parts(m.m2) + spread).sum(-1)
    return Moments(window_s, parts(m.n_rows).sum(-1), parts(m.n_flagged).sum(-1), count, total, m2,
                   np.fmin.reduce(parts(m.lo), axis=-1), np.fmax.reduce(parts(m.hi), axis=-1))


# ---------------------------------------------------------------- sparse days: occupied windows only

# A partition whose rows are fewer than 1/SPARSE_SHARE of its finest windows' cells (series ×
# days × 86400 / w; a slow logger: 24 rows a day in 8,640 windows of 10 s) and that writes
# only the windows holding a row (fill_day false) keeps the sums of its occupied windows
# only (:class:`SparseMoments`), instead of dense arrays of every window. Same values, bit for
# bit: the same bincounts in the same row order, and each coarse window summed by the same
# numpy reduction over the same r finer windows (the empty ones as zeros), as the dense path.
SPARSE_SHARE = 8


@dataclass
class SparseMoments:
    """:class:`Moments` of the occupied windows only: one entry per ``key`` = pair ·
    ``n_slots`` + slot (ascending), ``n_slots`` windows per pair (all days end to end)."""

    window_s: int
    n_slots: int
    key: np.ndarray
    n_rows: np.ndarray
    n_flagged: np.ndarray
    count: np.ndarray
    total: np.ndarray
    m2: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def is_sparse(n_rows: int, n_series: int, n_days: int, finest_s: int, fill_day: bool) -> bool:
    """Whether a partition takes the occupied-windows path (see :data:`SPARSE_SHARE`)."""
    return not fill_day and n_rows * SPARSE_SHARE < n_series * n_days * (DAY_S // finest_s)


def sparse_moments_from_rows(prep: Prepared, window_s: int) -> SparseMoments:
    """:func:`moments_from_rows` for the occupied windows only (the same sums, in the same
    order, over the occupied cells' ranks)."""
    n_slots = DAY_S // window_s * prep.n_days
    g = _window_keys(prep, window_s, n_slots)
    key, inv = np.unique(g, return_inverse=True)
    return SparseMoments(window_s, n_slots, key, *_cell_sums(prep, inv, len(key)))


def sparse_coarsen_moments(m: SparseMoments, window_s: int) -> SparseMoments:
    """:func:`coarsen_moments` for the occupied windows only: each coarse window that holds
    a finer one gets the r = window_s / m.window_s finer windows as one row (empty ones as
    the dense arrays hold them: 0, or NaN for min/max and the mean), summed by the same
    reduction as the dense path's (r, contiguous, last axis)."""
    r = window_s // m.window_s
    ck = m.key // r                       # pair · (n_slots / r) + slot // r
    new = np.r_[True, ck[1:] != ck[:-1]] if len(ck) else np.zeros(0, bool)
    row, col = np.cumsum(new) - 1, m.key % r
    c = int(new.sum())

    def parts(a, fill):
        out = np.full((c, r), fill, dtype=a.dtype)
        out[row, col] = a
        return out

    count = parts(m.count, 0).sum(-1)
    total = parts(m.total, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_f = parts(m.total / m.count, np.nan)
        mean_c = total / count
        n_f = parts(m.count, 0)
        spread = np.where(n_f > 0, n_f * (mean_f - mean_c[..., None]) ** 2, 0.0)
    m2 = (parts(m.m2, 0.0) + spread).sum(-1)
    return SparseMoments(window_s, m.n_slots // r, ck[new], parts(m.n_rows, 0).sum(-1),
                         parts(m.n_flagged, 0).sum(-1), count, total, m2,
                         np.fmin.reduce(parts(m.lo, np.nan), axis=-1),
                         np.fmax.reduce(parts(m.hi, np.nan), axis=-1))


def grid_cells(periods_us, window_s: int) -> np.ndarray:
    """Grid cells (times D + k·f) in each window [t0, t0 + w) of the day, per sensor:
    ceil((t0 + w) / f) − ceil(t0 / f), t0 = k·w; ``periods_us`` in µs, None: no grid (−1).
    Array (sensors, windows)."""
    n_slots = DAY_S // window_s
    w = window_s * 1_000_000
    t0 = np.arange(n_slots + 1, dtype=np.int64) * w
    out = np.full((len(periods_us), n_slots), -1, dtype=np.int64)
    for i, f in enumerate(periods_us):
        if f:
            c = -(-t0 // int(f))
            out[i] = c[1:] - c[:-1]
    return out


def frame_from_moments(m, prep: Prepared, stats=STATS, fill_day: bool = True,
                       cells: np.ndarray | None = None) -> pd.DataFrame:
    """The tidy rows ``<sensor>__<stat>`` (ts = window start) of window sums ``m``
    (:class:`Moments`, or :class:`SparseMoments` with ``fill_day`` false).

    mean = total / count, std = sqrt(m2 / count), share_flagged = n_flagged / n_rows (on a
    grid: ``cells`` from :func:`grid_cells`, the cells without a row count as flagged); NaN +
    flag 1 where undefined (see the module docstring). Sorted by (sensor, ts).
    """
    n_pairs = len(prep.pair_sensor)
    # the windows written per series p: slots[p], found at take[p] in the (flat) sums
    if isinstance(m, SparseMoments):
        if fill_day:
            raise ValueError("sparse moments hold the occupied windows only; fill_day needs them all")
        n_slots = m.n_slots
        pair_of, slot_of = np.divmod(m.key, n_slots)
        bounds = np.searchsorted(pair_of, np.arange(n_pairs + 1))
        take = [np.arange(bounds[p], bounds[p + 1]) for p in range(n_pairs)]
        slots = [slot_of[t] for t in take]
        per_day = n_slots // prep.n_days
        if cells is not None:
            cells = cells[pair_of, slot_of % per_day]
    else:
        n_slots = m.count.shape[1]
        per_day = n_slots // prep.n_days
        # all of the day, or (fill_day false) the windows that hold a row — gathered per series,
        # so a sparse day never builds the whole day's cells (several days: each day's windows
        # of the series that have a row that day)
        if fill_day:
            has_day = m.n_rows.reshape(n_pairs, prep.n_days, per_day).sum(-1) > 0
            slots = [(np.flatnonzero(has_day[p])[:, None] * per_day + np.arange(per_day)).ravel()
                     for p in range(n_pairs)]
        else:
            slots = [np.flatnonzero(m.n_rows[p] > 0) for p in range(n_pairs)]
        take = [p * n_slots + slots[p] for p in range(n_pairs)]
        if cells is not None:
            cells = np.tile(cells, (1, prep.n_days)).ravel()    # every day has the same grid cells
        m = Moments(m.window_s, *(a.ravel() for a in (m.n_rows, m.n_flagged, m.count, m.total, m.m2,
                                                       m.lo, m.hi)))
    # on a known grid (cells >= 0) the share counts the grid cells without a row as missing
    flagged, samples = m.n_flagged, m.n_rows
    if cells is not None:
        on_grid = cells >= 0
        flagged = np.where(on_grid, m.n_flagged + np.maximum(cells - m.n_rows, 0), m.n_flagged)
        samples = np.where(on_grid, np.maximum(cells, m.n_rows), m.n_rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {"mean": m.total / m.count, "min": m.lo, "max": m.hi, "std": np.sqrt(m.m2 / m.count),
                  "count": m.count.astype(float), "share_flagged": flagged / samples}
    empty = m.count == 0
    missing = {"mean": empty, "min": empty, "max": empty, "std": empty,
               "count": np.zeros_like(empty), "share_flagged": samples == 0}
    blocks = sorted((f"{prep.pair_sensor[p]}__{s}", prep.pair_domain[p], p, s)
                    for p in range(n_pairs) for s in stats)
    if not blocks:
        return tidy.empty()
    val = np.concatenate([values[s][take[p]] for _, _, p, s in blocks])
    miss = np.concatenate([missing[s][take[p]] for _, _, p, s in blocks])
    val = np.where(miss, np.nan, val)
    names = sorted({b[0] for b in blocks})
    domains = sorted(set(prep.pair_domain))
    sizes = [len(slots[p]) for _, _, p, _ in blocks]
    name_code = np.repeat([names.index(b[0]) for b in blocks], sizes)
    dom_code = np.repeat([domains.index(b[1]) for b in blocks], sizes)
    slot = np.concatenate([slots[p] for _, _, p, _ in blocks])
    start_us = prep.days_us[slot // per_day] + (slot % per_day) * (m.window_s * 1_000_000)
    if prep.n_days > 1:
        # day by day, each day's rows as alone: sorted by (sensor, ts) within the day
        order = np.argsort(slot // per_day, kind="stable")
        val, miss, name_code, dom_code, start_us = (a[order] for a in (val, miss, name_code, dom_code, start_us))
    out = pd.DataFrame({
        "ts": pd.Series(start_us.astype("datetime64[us]")).dt.tz_localize("UTC"),
        "device_id": pd.Categorical.from_codes(np.zeros(len(val), np.int8),
                                               categories=pd.Index([prep.device], dtype=object)),
        "domain": pd.Categorical.from_codes(dom_code, categories=pd.Index(domains, dtype=object)),
        "sensor": pd.Categorical.from_codes(name_code, categories=pd.Index(names, dtype=object)),
        "value": val,
        "quality_flag": np.where(miss, int(Flag.MISSING), int(Flag.OK)).astype(np.uint8),
    }, copy=False)      # the arrays are this frame's own
    return tidy.conform(out)


def aggregate_window(df: pd.DataFrame, day: str, window_s: int, stats=STATS,
                     fill_day: bool = True) -> pd.DataFrame:
    """Statistics of every sensor of ``df`` over the ``window_s`` [s] windows of ``day``.

    ``df`` holds rows of one device and day only (see :func:`select_rows`). Returns a tidy
    frame sorted by (sensor, ts): sensor ``<sensor>__<stat>``, ts = window start, domain of
    the source sensor. With ``fill_day`` every window of the day is written for each sensor
    (NaN + flag 1 where empty); without, only windows holding at least one input row.
    """
    if DAY_S % window_s:
        raise ValueError(f"window {window_s} s does not divide 24 h")
    if not len(df):
        return tidy.empty()
    prep = prepare_rows(df, day)
    return frame_from_moments(moments_from_rows(prep, window_s), prep, stats, fill_day)


# A period's days are aggregated in blocks whose finest windows hold at most this many
# cells (series × days × 86400 / w): one pass per block, so memory stays that of a day or
# two. Measured on a slow logger's month (25 series, 10 s windows, fresh process): one pass
# over all 31 days 846 MB peak and 2.7 CPU-s, day by day 230 MB and 2.0 CPU-s, blocks of
# 500,000 cells (2 days) 246 MB and 1.4 CPU-s, 2,000,000 (9 days) 425 MB and 1.7 CPU-s
BLOCK_CELLS = 500_000


def aggregate_partition(df: pd.DataFrame, day, windows: dict, stats=STATS, sensors: str = ".*",
                        fill_day: bool = True, grid=None):
    """All windows of one partition. ``windows`` maps a label (``"10s"``) to its length [s].
    ``grid``: (domain, sensor) → the sensor's grid period [µs] or None (no grid: the share
    is over the rows present); see the module docstring. ``day``: the partition's day, or
    the list of days of a week's or a month's partition (``df``: their rows in day order):
    a pass per block of days (:data:`BLOCK_CELLS`), or one pass over the occupied windows of
    a sparse period (:data:`SPARSE_SHARE`), each day's rows exactly as that day alone gives
    them, the days in order, the counts summed (tests compare both).

    Returns (frames by label, ledger counts): rows_in = input rows = rows aggregated + rows
    not aggregated (by reason); ``rows_written`` gives the output rows per window.
    """
    df = tidy.conform(df) if len(df) else tidy.empty()
    mask, rejected = select_rows(df, day, sensors)
    sel = (df if mask.all() else df.loc[mask]).reset_index(drop=True)     # all rows: no copy
    days = [day] if isinstance(day, str) else list(day)
    series = len(tidy.remove_unused(sel["sensor"]).cat.categories) if len(sel) else 0
    finest = min(windows.values())
    sparse = is_sparse(len(sel), series, len(days), finest, fill_day)
    if not len(sel):
        frames = {label: tidy.empty() for label in windows}
    elif isinstance(day, str) or sparse:        # a sparse period: one pass, its size is its rows'
        frames = _aggregate_days(sel, day if isinstance(day, str) else days, windows, stats, fill_day,
                                 grid, sparse)
    else:
        blocks = [_aggregate_days(part, block, windows, stats, fill_day, grid, False)
                  for part, block in _day_blocks(sel, days, finest, series)]
        frames = {label: tidy.concat([b[label] for b in blocks]) for label in windows}
    counts = {"rows_in": len(df), "rows_out": int(mask.sum()), "rejected": rejected,
              "rows_written": {label: int(len(f)) for label, f in frames.items()},
              "samples_flagged": int((~np.isin(sel["quality_flag"].to_numpy(), USABLE_FLAGS)).sum())}
    return frames, counts


def _day_blocks(sel: pd.DataFrame, days: list, finest_s: int, series: int):
    """(rows, days) of consecutive blocks of ``days`` whose finest windows hold at most
    :data:`BLOCK_CELLS` cells (``series`` series); ``sel``'s rows are in day order."""
    per_block = max(1, BLOCK_CELLS // (max(1, series) * (DAY_S // finest_s)))
    ts_us = pd.DatetimeIndex(sel["ts"]).as_unit("us").asi8
    row_day = _day_of_rows(ts_us, _days_us(days))
    for first in range(0, len(days), per_block):
        lo, hi = np.searchsorted(row_day, [first, first + per_block])
        if hi > lo:
            yield sel.iloc[lo:hi].reset_index(drop=True), days[first:first + per_block]


def _aggregate_days(sel: pd.DataFrame, day, windows: dict, stats, fill_day: bool, grid,
                    sparse: bool) -> dict:
    """Frames by label of the selected rows ``sel`` of ``day`` (a day or a list of days);
    ``sparse``: the occupied windows only (:data:`SPARSE_SHARE`)."""
    sel = sel.copy(deep=False)
    sel["sensor"] = tidy.remove_unused(sel["sensor"])
    sel["domain"] = tidy.remove_unused(sel["domain"])
    prep = prepare_rows(sel, day)
    from_rows, coarsen = ((sparse_moments_from_rows, sparse_coarsen_moments) if sparse
                          else (moments_from_rows, coarsen_moments))
    done = {}                       # window length → (Sparse)Moments
    for w in sorted(set(windows.values())):
        finer = [v for v in done if w % v == 0]
        # a window that is a multiple of one already computed is summed from it
        done[w] = coarsen(done[max(finer)], w) if finer else from_rows(prep, w)
    periods = [grid(d, s) if grid else None for d, s in zip(prep.pair_domain, prep.pair_sensor)]
    frames = {}
    for label, w in windows.items():
        cells = grid_cells(periods, w) if any(periods) else None
        frames[label] = frame_from_moments(done[w], prep, stats, fill_day, cells)
    return frames


def day_window_seconds(label: str, where: str) -> int:
    """A window label → seconds, refused (one line at ``where``) unless it divides 24 h, so
    windows never cross midnight. Used by step 70 and step 81."""
    w = window_seconds(label)
    if DAY_S % w:
        raise UserError(f"{where}: {label!r} is not allowed; allowed: a window that "
                        "divides 24 h exactly (e.g. 10s, 60s, 5min, 15min, 1h, 24h)")
    return w


def check_windows(labels, source: str) -> dict:
    """Config check: labels → seconds; each divides 24 h; no two labels of one length."""
    out, seen = {}, {}
    for i, label in enumerate(labels):
        w = day_window_seconds(label, f"{source}: $.windows[{i}]")
        if w in seen:
            raise UserError(f"{source}: $.windows[{i}]: {label!r} is not allowed; allowed: a length not "
                            f"already listed ({seen[w]!r} is the same window)")
        seen[w] = label
        out[label] = w
    return out
