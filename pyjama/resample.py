"""Step 40_resample: each (device, sensor) onto a regular grid covering the whole UTC day.

Pure functions; :mod:`pyjama.steps.resample` is the thin shell. The grid of day D at
frequency f has the cells k = 0 … N−1, N = 1 day / f; cell k is the interval
[D + k·f, D + (k+1)·f) and its row carries ts = D + k·f (left label). So at 1 s the grid
of day D runs from 00:00:00 to 23:59:59.

Per cell (docs/steps/clean-resample.md states it with examples):

* usable samples (flag not in :data:`pyjama.flags.UNUSABLE`, value finite) → their
  reduction (mean | median | first | last), flag 0;
* else flagged samples (2 spike, 3 out of range, 4 flat line, 6 excluded) → NaN, keeping
  the flag of highest precedence; they are never used to compute or to fill;
* else (no sample, or only NaN samples) → a hole: filled (flag 5) when the stretch of
  cells without a usable value around it is at most ``max_gap`` long and has a usable
  cell on both sides within the day; otherwise NaN, flag 1 — the whole stretch, from its
  first missing cell to its last (never "the first N seconds of a long gap").

Storage (``sparse_after``, :func:`stored_cells`): a run of more than ``sparse_after`` of
consecutive missing cells (flag 1) is written as its first and its last cell only; the
cells between are not written. So a grid time without a row lies inside such a run and is
missing (1), and the ledger counts those cells (``cells_not_stored``) beside the cells
expected (``cells_expected`` = rows written + cells not stored). ``null`` writes every cell.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import flags as fl
from .errors import UserError

NS_PER_DAY = 86_400 * 10**9
MIN_FREQ = pd.Timedelta("10ms")
REDUCE_METHODS = ("mean", "median", "first", "last")
FILL_METHODS = ("linear", "nearest", "previous", "none")

# rank of each flag code in flags.PRECEDENCE (0 = wins); codes not listed rank last
_RANK = np.full(256, len(fl.PRECEDENCE), dtype=np.int64)
for _i, _f in enumerate(fl.PRECEDENCE):
    _RANK[int(_f)] = _i
_BY_RANK = np.array([int(f) for f in fl.PRECEDENCE] + [int(fl.Flag.OK)], dtype=np.uint8)
_UNUSABLE = np.array(sorted(int(f) for f in fl.UNUSABLE), dtype=np.uint8)

# ledger words (rows in + created = rows out + combined + rejected)
COMBINED = "combined into grid cells"          # samples folded into a cell with others: not lost
FLAGGED_UNUSED = "flagged value left out (its cell has usable values)"
NAN_IN = "missing value (NaN) in input"
OUTSIDE = "outside the partition's UTC day"
CREATED_FILLED = "grid cell without a usable sample, filled (5)"
CREATED_MISSING = "grid cell without a sample, missing (1)"
_TOTALS = ("out", "merged", "flagged_unused", "nan_in", "outside", "filled", "missing", "flagged",
           "expected", "not_stored")


def assign_cells(ts_ns: np.ndarray, day_start_ns: int, freq_ns: int) -> np.ndarray:
    """Grid cell of each sample: k = floor((t − D) / f)  [t, D in ns; f in ns]."""
    return (np.asarray(ts_ns, dtype=np.int64) - int(day_start_ns)) // int(freq_ns)


def reduce_cells(cells: np.ndarray, values: np.ndarray, n_cells: int, method: str) -> np.ndarray:
    """Reduce the usable samples of each cell to one value (NaN where a cell has none).

    ``cells``/``values`` hold usable samples only, in time order; ``method``: mean
    (arithmetic mean [unit]), median, first (earliest sample), last (latest sample).
    """
    out = np.full(n_cells, np.nan)
    if not len(cells):
        return out
    if method == "mean":
        n = np.bincount(cells, minlength=n_cells)
        s = np.bincount(cells, weights=values, minlength=n_cells)
        has = n > 0
        out[has] = s[has] / n[has]
    elif method == "median":
        med = pd.Series(values).groupby(cells, sort=True).median()
        out[med.index.to_numpy()] = med.to_numpy()
    elif method == "first":
        uniq, first = np.unique(cells, return_index=True)
        out[uniq] = values[first]
    elif method == "last":
        uniq, first_rev = np.unique(cells[::-1], return_index=True)
        out[uniq] = values[::-1][first_rev]
    else:
        raise ValueError(f"unknown reduce method {method!r}")
    return out


def fill_gaps(values: np.ndarray, fillable: np.ndarray, max_gap_cells: int, method: str):
    """Fill short holes of a grid from the usable cells around them.

    ``values``: one value per cell, NaN where the cell has no usable value; ``fillable``:
    cells that may be filled (holes; flagged cells are not). A stretch of cells without a
    usable value, between usable cells a and b (a < k < b), is short when

        b − a − 1 ≤ max_gap_cells        (and a, b both exist within the day)

    and its fillable cells get, by ``method``:

        linear    v_a + (v_b − v_a) · (k − a) / (b − a)
        nearest   v_a if k − a ≤ b − k else v_b
        previous  v_a
        none      nothing is filled

    Returns (filled values, mask of the cells filled).
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    usable = ~np.isnan(values)
    filled = np.zeros(n, dtype=bool)
    if method == "none" or max_gap_cells <= 0 or n == 0 or not usable.any():
        return values.copy(), filled
    k = np.arange(n)
    prev = np.maximum.accumulate(np.where(usable, k, -1))
    nxt = np.minimum.accumulate(np.where(usable, k, n)[::-1])[::-1]
    short = (prev >= 0) & (nxt < n) & (nxt - prev - 1 <= max_gap_cells)
    filled = fillable & ~usable & short
    a, b = prev[filled], nxt[filled]
    kk = k[filled]
    if method == "linear":
        w = (kk - a) / (b - a)
        new = values[a] + (values[b] - values[a]) * w
    elif method == "nearest":
        new = np.where(kk - a <= b - kk, values[a], values[b])
    elif method == "previous":
        new = values[a]
    else:
        raise ValueError(f"unknown fill method {method!r}")
    out = values.copy()
    out[filled] = new
    return out, filled


def resample_sensor(ts_ns: np.ndarray, values: np.ndarray, qflags: np.ndarray, day_start_ns: int,
                    freq_ns: int, reduce: str = "mean", fill: str = "linear", max_gap_ns: int = 0):
    """One sensor of one day → its grid (values, flags) and its ledger counts.

    ``ts_ns`` sorted ascending [ns since epoch]; ``values`` [unit]; ``qflags`` uint8.
    Returns (grid values, grid flags, counts) with counts: out (cells holding a row that
    came from samples), merged, flagged_unused, nan_in, outside, filled, missing,
    flagged (cells kept NaN with a flag of 2/3/4/6).
    """
    n_cells = NS_PER_DAY // int(freq_ns)
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    x = np.asarray(values, dtype=np.float64)
    f = np.asarray(qflags, dtype=np.uint8)
    cells = assign_cells(ts_ns, day_start_ns, freq_ns)
    inside = (cells >= 0) & (cells < n_cells)
    outside = int((~inside).sum())
    cells, x, f = cells[inside], x[inside], f[inside]

    unusable = np.isin(f, _UNUSABLE)
    is_nan = np.isnan(x) | (f == fl.Flag.MISSING)
    usable = ~unusable & ~is_nan
    blocked = unusable & ~is_nan        # a value, flagged 2/3/4/6: never used
    n_use = np.bincount(cells[usable], minlength=n_cells)
    n_blk = np.bincount(cells[blocked], minlength=n_cells)

    grid = reduce_cells(cells[usable], x[usable], n_cells, reduce)
    gflag = np.full(n_cells, np.uint8(fl.Flag.OK))
    # a usable cell keeps a non-OK usable flag (e.g. 5 from an earlier resampling)
    if np.any(f[usable] != fl.Flag.OK):
        rank = np.full(n_cells, len(fl.PRECEDENCE), dtype=np.int64)
        np.minimum.at(rank, cells[usable], _RANK[f[usable]])
        gflag = np.where(n_use > 0, _BY_RANK[rank], gflag).astype(np.uint8)
    flagged_cell = (n_use == 0) & (n_blk > 0)
    if flagged_cell.any():
        rank = np.full(n_cells, len(fl.PRECEDENCE), dtype=np.int64)
        np.minimum.at(rank, cells[blocked], _RANK[f[blocked]])
        gflag = np.where(flagged_cell, _BY_RANK[rank], gflag).astype(np.uint8)
    hole = (n_use == 0) & (n_blk == 0)
    max_gap_cells = int(max_gap_ns) // int(freq_ns)
    grid, filled = fill_gaps(grid, hole, max_gap_cells, fill)
    gflag[filled] = fl.Flag.INTERPOLATED
    missing = hole & ~filled
    gflag[missing] = fl.Flag.MISSING

    out = int(((n_use > 0) | (n_blk > 0)).sum())
    counts = {
        "out": out,
        "merged": int(np.maximum(n_use - 1, 0).sum() + np.where(flagged_cell, n_blk - 1, 0).sum()),
        "flagged_unused": int(n_blk[n_use > 0].sum()),
        "nan_in": int((~usable & ~blocked).sum()),
        "outside": outside,
        "filled": int(filled.sum()),
        "missing": int(missing.sum()),
        "flagged": int(flagged_cell.sum()),
    }
    return grid, gflag, counts


def stored_cells(gflag: np.ndarray, sparse_after_cells: int | None) -> np.ndarray:
    """Which cells of a grid are written. Every cell, except the inner cells of each run of
    more than ``sparse_after_cells`` consecutive missing cells (flag 1): such a run is
    written as its first and its last cell. ``None`` = every cell.

    ``gflag``: the flags of one sensor's grid (uint8). Returns a bool mask, True = written.
    """
    gflag = np.asarray(gflag, dtype=np.uint8)
    n = len(gflag)
    keep = np.ones(n, dtype=bool)
    if sparse_after_cells is None or n == 0:
        return keep
    miss = (gflag == int(fl.Flag.MISSING)).astype(np.int8)
    edge = np.diff(np.concatenate(([0], miss, [0])))
    starts, ends = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)    # [start, end)
    long = ((ends - starts) > int(sparse_after_cells)) & ((ends - starts) > 2)
    inner = np.zeros(n + 1, dtype=np.int64)
    np.add.at(inner, starts[long] + 1, 1)           # from the run's second cell …
    np.add.at(inner, ends[long] - 1, -1)            # … to the one before its last
    keep &= np.cumsum(inner[:n]) == 0
    return keep


# ---------------------------------------------------------------- the config → the grid

def resolve_grid(params: dict, domain: str, sensor: str) -> dict:
    """The grid rule of one sensor: defaults ← (domains[domain] or default_rule) ← sensors[sensor]."""
    from .qc import schema_defaults

    rule = schema_defaults("40_resample", "grid")
    domains = params.get("domains", {})
    base = domains[domain] if domain in domains else params.get("default_rule", {})
    rule.update(base or {})
    rule.update(params.get("sensors", {}).get(sensor) or {})
    return rule


def check_grid(rule: dict, where: str) -> None:
    """Semantic checks of one grid rule (freq divides a day; durations parse)."""
    from .timewindow import parse_duration

    if "freq" in rule:
        allowed = (f"a duration from {MIN_FREQ.total_seconds() * 1000:g}ms to 1D that divides a "
                   "day exactly, such as '100ms', '1s', '10s', '1min'")
        try:
            freq = parse_duration(rule["freq"], f"{where}.freq")
        except UserError:
            raise UserError(f"{where}.freq: {rule['freq']!r} is not allowed; allowed: {allowed}") from None
        if freq < MIN_FREQ or freq > pd.Timedelta("1D") or NS_PER_DAY % freq.value:
            raise UserError(f"{where}.freq: {rule['freq']!r} is not allowed; allowed: {allowed}")
    if "max_gap" in rule:
        parse_duration(rule["max_gap"], f"{where}.max_gap", allow_zero=True)
    if rule.get("sparse_after") is not None:
        parse_duration(rule["sparse_after"], f"{where}.sparse_after", allow_zero=True)


def sparse_after_cells(rule: dict, freq_ns: int) -> int | None:
    """``sparse_after`` of a grid rule in cells (runs longer than this many cells are
    stored as their two ends), or None (every cell stored). A run of L cells is longer
    than ``sparse_after`` when L · freq > sparse_after, i.e. L > floor(sparse_after / freq)."""
    if rule.get("sparse_after") is None:
        return None
    return int(pd.Timedelta(rule["sparse_after"]).value) // int(freq_ns)


def resample_frame(df: pd.DataFrame, params: dict, day: str):
    """Pure core of 40_resample: one (device, day) tidy frame → its grids, and the ledger.

    Every (domain, sensor) present in ``df`` gets the grid of the whole UTC day ``day``
    at its rule's frequency (:func:`resolve_grid`); the cells written are those of
    :func:`stored_cells` (every cell unless the rule sets ``sparse_after``). Output sorted
    by (sensor, ts).

    Ledger (rows_in + created = rows_out + combined + rejected, :func:`pyjama.io.ledger_entry`):
    rows_in = input rows; rows_out = grid rows written (what the next step reads in);
    combined = samples folded into a cell that another sample already stands for (a
    coarser grid, or several flagged samples of a flagged cell); created = grid cells
    written with no usable or flagged sample (filled 5, or missing 1); rejected = input
    rows not used (flagged values beside usable ones, NaN, outside the day). Extra keys:
    rows_from_samples (cells holding a usable or flagged value), filled, missing (cells
    missing, written or not), flagged (cells kept NaN with flag 2/3/4/6), cells_expected
    (cells of the day's grids) = rows_out + cells_not_stored (missing cells inside a run
    longer than sparse_after, not written), flags (output flags by name).
    """
    from . import tidy

    df = tidy.conform(df)
    day_start = int(pd.Timestamp(day, tz="UTC").value)
    totals = dict.fromkeys(_TOTALS, 0)
    parts = []
    if len(df):
        ts_ns = df["ts"].to_numpy(dtype="datetime64[us]").astype(np.int64) * 1000
        values = df["value"].to_numpy()
        qf = df["quality_flag"].to_numpy()
        for domain, sensor, idx in tidy.sensor_groups(df):
            rule = resolve_grid(params, domain, sensor)
            freq = pd.Timedelta(rule["freq"]).value
            grid, gflag, c = resample_sensor(ts_ns[idx], values[idx], qf[idx], day_start, freq,
                                             rule["reduce"], rule["fill"],
                                             pd.Timedelta(rule["max_gap"]).value)
            keep = stored_cells(gflag, sparse_after_cells(rule, freq))
            c["expected"], c["not_stored"] = len(grid), int(len(grid) - keep.sum())
            for k in totals:
                totals[k] += c[k]
            cell = np.flatnonzero(keep)
            ts = (day_start // 1000 + cell * (freq // 1000)).astype("datetime64[us]")
            parts.append(pd.DataFrame({
                "ts": pd.DatetimeIndex(ts).tz_localize("UTC"), "device_id": df["device_id"].iat[idx[0]],
                "domain": domain, "sensor": sensor, "value": grid[keep], "quality_flag": gflag[keep]}))
    if parts:
        out = pd.concat(parts, ignore_index=True).sort_values(["sensor", "ts"], kind="stable")
        out = tidy.conform(out)
    else:
        out = tidy.empty()
    counts = {
        "rows_in": len(df), "rows_out": len(out),
        "combined": {COMBINED: totals["merged"]},
        "created": {CREATED_FILLED: totals["filled"], CREATED_MISSING: totals["missing"] - totals["not_stored"]},
        "rejected": {FLAGGED_UNUSED: totals["flagged_unused"], NAN_IN: totals["nan_in"],
                     OUTSIDE: totals["outside"]},
        "rows_from_samples": totals["out"], "filled": totals["filled"], "missing": totals["missing"],
        "flagged": totals["flagged"], "cells_expected": totals["expected"],
        "cells_not_stored": totals["not_stored"], "flags": fl.counts(out["quality_flag"].to_numpy()),
    }
    return out, counts
