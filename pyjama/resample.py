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

The grid is computed from the samples, not cell by cell (work ∝ samples + rows written):
the occupied cells are reduced, :func:`fill_gaps` fills the short holes between usable
cells, and the missing cells are the gaps between the cells taken.

Storage (``sparse_after``, :func:`missing_cells`): a run of more than ``sparse_after`` of
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
_IS_UNUSABLE = np.isin(np.arange(256), _UNUSABLE)     # by flag code: np.isin(f, _UNUSABLE) as a lookup

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


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The cells start_i … start_i + length_i − 1 of every range, concatenated."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + (np.arange(total, dtype=np.int64) - offsets)


def fill_gaps(cells: np.ndarray, values: np.ndarray, blocked: np.ndarray, max_gap_cells: int, method: str):
    """Fill the short holes between usable cells.

    ``cells``: the cells holding a usable value (sorted), ``values``: their values;
    ``blocked``: cells holding a flagged value (never filled, but part of a stretch). A
    stretch without a usable value between consecutive usable cells a and b (a < k < b) is
    short when

        b − a − 1 ≤ max_gap_cells        (and a, b both exist within the day)

    and its cells that are not blocked get, by ``method``:

        linear    v_a + (v_b − v_a) · (k − a) / (b − a)
        nearest   v_a if k − a ≤ b − k else v_b
        previous  v_a
        none      nothing is filled

    Returns (filled cells, their values). Work ∝ usable cells + cells filled, not the day.
    """
    cells = np.asarray(cells, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    none = (np.zeros(0, dtype=np.int64), np.zeros(0))
    if method == "none" or max_gap_cells <= 0 or len(cells) < 2:
        return none
    gap = cells[1:] - cells[:-1] - 1
    short = np.flatnonzero((gap >= 1) & (gap <= max_gap_cells))
    if not len(short):
        return none
    n = gap[short]
    k = _ranges(cells[short] + 1, n)
    a = np.repeat(cells[short], n)
    b = np.repeat(cells[short + 1], n)
    va = np.repeat(values[short], n)
    vb = np.repeat(values[short + 1], n)
    if method == "linear":
        new = va + (vb - va) * ((k - a) / (b - a))
    elif method == "nearest":
        new = np.where(k - a <= b - k, va, vb)
    elif method == "previous":
        new = va
    else:
        raise ValueError(f"unknown fill method {method!r}")
    keep = ~np.isin(k, blocked)
    return k[keep], new[keep]


def missing_cells(taken: np.ndarray, n_cells: int, sparse_after_cells: int | None):
    """The missing cells that are written, and how many are not.

    ``taken``: the cells holding a row from samples or from a fill (sorted); every other
    cell of the day's ``n_cells`` is missing. A run of L consecutive missing cells is
    written whole, except when L > ``sparse_after_cells`` (and L > 2): then only its first
    and its last cell. ``None`` writes every missing cell. Returns (cells written, count
    of missing cells not written).
    """
    taken = np.asarray(taken, dtype=np.int64)
    bounds = np.concatenate(([-1], taken, [n_cells]))
    start, end = bounds[:-1] + 1, bounds[1:]                  # runs [start, end)
    length = end - start
    run = length > 0
    start, end, length = start[run], end[run], length[run]
    long = np.zeros(len(length), bool) if sparse_after_cells is None else \
        (length > int(sparse_after_cells)) & (length > 2)
    whole = _ranges(start[~long], length[~long])
    ends = np.concatenate((start[long], end[long] - 1))
    written = np.sort(np.concatenate((whole, ends)))
    return written, int(length.sum()) - len(written)


def _sorted_unique(cells: np.ndarray):
    """``np.unique(cells, return_inverse=True)`` without its sort when ``cells`` is already
    ascending (samples in time order, as the step passes them): the first of each run."""
    if len(cells) and np.any(cells[1:] < cells[:-1]):
        return np.unique(cells, return_inverse=True)
    first = np.ones(len(cells), dtype=bool)
    first[1:] = cells[1:] != cells[:-1]
    return cells[first], np.cumsum(first) - 1


def resample_sensor(ts_ns: np.ndarray, values: np.ndarray, qflags: np.ndarray, day_start_ns: int,
                    freq_ns: int, reduce: str = "mean", fill: str = "linear", max_gap_ns: int = 0,
                    sparse_after_cells: int | None = None):
    """One sensor of one day → the cells of its grid that are written, and the ledger counts.

    ``ts_ns`` sorted ascending [ns since epoch]; ``values`` [unit]; ``qflags`` uint8.
    Returns (cells, values, flags, counts): the written cells in order (every cell of the
    day when ``sparse_after_cells`` is None; else :func:`missing_cells` leaves out the
    inner cells of long missing runs), with counts: out (cells holding a row that came
    from samples), merged, flagged_unused, nan_in, outside, filled, missing (every missing
    cell), flagged (cells kept NaN with a flag of 2/3/4/6), expected (cells of the day),
    not_stored. Work ∝ samples + cells written, not the day's cells.
    """
    n_cells = NS_PER_DAY // int(freq_ns)
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    x = np.asarray(values, dtype=np.float64)
    f = np.asarray(qflags, dtype=np.uint8)
    cells = assign_cells(ts_ns, day_start_ns, freq_ns)
    inside = (cells >= 0) & (cells < n_cells)
    outside = int((~inside).sum())
    cells, x, f = cells[inside], x[inside], f[inside]

    unusable = _IS_UNUSABLE[f]
    is_nan = np.isnan(x) | (f == fl.Flag.MISSING)
    usable = ~unusable & ~is_nan
    blocked = unusable & ~is_nan        # a value, flagged 2/3/4/6: never used
    occupied, inv = _sorted_unique(cells)                    # the cells holding samples
    m = len(occupied)
    n_use = np.bincount(inv[usable], minlength=m)
    n_blk = np.bincount(inv[blocked], minlength=m)

    cval = reduce_cells(inv[usable], x[usable], m, reduce)
    cflag = np.full(m, np.uint8(fl.Flag.OK))
    # a usable cell keeps a non-OK usable flag (e.g. 5 from an earlier resampling)
    if np.any(f[usable] != fl.Flag.OK):
        rank = np.full(m, len(fl.PRECEDENCE), dtype=np.int64)
        np.minimum.at(rank, inv[usable], _RANK[f[usable]])
        cflag = np.where(n_use > 0, _BY_RANK[rank], cflag).astype(np.uint8)
    flagged_cell = (n_use == 0) & (n_blk > 0)
    if flagged_cell.any():
        rank = np.full(m, len(fl.PRECEDENCE), dtype=np.int64)
        np.minimum.at(rank, inv[blocked], _RANK[f[blocked]])
        cflag = np.where(flagged_cell, _BY_RANK[rank], cflag).astype(np.uint8)
    has = n_use > 0
    u_cells, b_cells = occupied[has], occupied[flagged_cell]
    f_cells, f_vals = fill_gaps(u_cells, cval[has], b_cells, int(max_gap_ns) // int(freq_ns), fill)
    taken = np.sort(np.concatenate((u_cells, b_cells, f_cells)))
    m_cells, not_stored = missing_cells(taken, n_cells, sparse_after_cells)

    out_cells = np.concatenate((u_cells, b_cells, f_cells, m_cells))
    out_vals = np.concatenate((cval[has], np.full(len(b_cells), np.nan), f_vals, np.full(len(m_cells), np.nan)))
    out_flags = np.concatenate((cflag[has], cflag[flagged_cell],
                                np.full(len(f_cells), np.uint8(fl.Flag.INTERPOLATED)),
                                np.full(len(m_cells), np.uint8(fl.Flag.MISSING)))).astype(np.uint8)
    order = np.argsort(out_cells, kind="stable")
    counts = {
        "out": int(len(u_cells) + len(b_cells)),
        "merged": int(np.maximum(n_use - 1, 0).sum() + np.where(flagged_cell, n_blk - 1, 0).sum()),
        "flagged_unused": int(n_blk[has].sum()),
        "nan_in": int((~usable & ~blocked).sum()),
        "outside": outside,
        "filled": len(f_cells),
        "missing": int(n_cells - len(taken)),
        "flagged": int(flagged_cell.sum()),
        "expected": int(n_cells),
        "not_stored": not_stored,
    }
    return out_cells[order], out_vals[order], out_flags[order], counts


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


def resample_frame(df: pd.DataFrame, params: dict, day):
    """Pure core of 40_resample: one (device, day) tidy frame → its grids, and the ledger.

    Every (domain, sensor) present in ``df`` gets the grid of the whole UTC day ``day``
    at its rule's frequency (:func:`resolve_grid`); the cells written are those of
    :func:`missing_cells` (every cell unless the rule sets ``sparse_after``). Output sorted
    by (sensor, ts).

    ``day`` may also be the list of days of a week's or a month's job (the step's
    ``whole_period``): ``df`` then holds their rows (each in its UTC day, days in order, as
    :func:`pyjama.io.read_day` reads them), each day is gridded from its own rows exactly as
    alone, and the result is what the days one by one give as the runner joins them: their
    rows one day after the other, the categories in order of first appearance (each day's
    sorted names; what pyarrow's ``unify_dictionaries`` makes of the days' tables), the
    counts summed. One call instead of one per day: a slow logger's day is a few dozen rows
    per series, where the per-day frame, its conversions and its arrow table are most of
    the work.

    Ledger (rows_in + created = rows_out + combined + rejected, :func:`pyjama.io.ledger_entry`):
    rows_in = input rows; rows_out = grid rows written (what the next step reads in);
    combined = samples folded into a cell that another sample already stands for (a
    coarser grid, or several flagged samples of a flagged cell); created = grid cells
    written with no usable or flagged sample (filled 5, or missing 1); rejected = input
    rows not used (flagged values beside usable ones, NaN, outside the day). Extra keys:
    rows_from_samples (cells holding a usable or flagged value), filled, missing (cells
    missing, written or not), flagged (cells kept NaN with flag 2/3/4/6), cells_expected
    (cells of the day's grids) = rows_out + cells_not_stored (missing cells inside a run
    longer than sparse_after, not written), flags (grid cells by flag name; MISSING counts
    the cells not stored too).
    """
    from . import tidy

    df = tidy.conform(df)
    days = list(day) if isinstance(day, (list, tuple)) else [day]
    starts = np.array([int(pd.Timestamp(d, tz="UTC").value) for d in days], dtype=np.int64)
    totals = dict.fromkeys(_TOTALS, 0)
    blocks = []        # per day with rows: its grids' rows in order (_day_rows)
    if len(df):
        ts_ns = tidy.ts_us(df["ts"]) * 1000
        values = df["value"].to_numpy()
        qf = df["quality_flag"].to_numpy()
        series = []
        for domain, sensor, idx in tidy.sensor_groups(df):
            if len(days) == 1:          # a day's partition: all its rows (outside ones counted)
                cuts = np.array([0, len(idx)])
            else:                       # a period's: each day its rows (time order within a series)
                cuts = np.searchsorted(ts_ns[idx], np.append(starts, starts[-1] + NS_PER_DAY))
                if cuts[0] != 0 or cuts[-1] != len(idx):
                    raise ValueError(f"{domain}/{sensor}: rows outside the days {days[0]}..{days[-1]}")
            series.append((domain, sensor, idx, cuts, _grid_of(params, domain, sensor)))
        for k, start in enumerate(starts.tolist()):     # day by day: one day's grids in memory at a time
            day = ([], [], [], [], [])                  # ts, values, flags, domain, sensor: one per series
            for domain, sensor, idx, cuts, (freq, reduce, fill, max_gap, sparse) in series:
                if cuts[k + 1] == cuts[k]:
                    continue
                rows = idx[cuts[k]:cuts[k + 1]]
                cell, grid, gflag, c = resample_sensor(ts_ns[rows], values[rows], qf[rows], start,
                                                       freq, reduce, fill, max_gap, sparse)
                for key in totals:
                    totals[key] += c[key]
                for have, new in zip(day, (start // 1000 + cell * (freq // 1000), grid, gflag, domain, sensor)):
                    have.append(new)
            if day[0]:
                blocks.append(_day_rows(*day))
    out = _grid_frame_of_days(str(df["device_id"].iat[0]), blocks) if blocks else tidy.empty()
    counts = {
        "rows_in": len(df), "rows_out": len(out),
        "combined": {COMBINED: totals["merged"]},
        "created": {CREATED_FILLED: totals["filled"], CREATED_MISSING: totals["missing"] - totals["not_stored"]},
        "rejected": {FLAGGED_UNUSED: totals["flagged_unused"], NAN_IN: totals["nan_in"],
                     OUTSIDE: totals["outside"]},
        "rows_from_samples": totals["out"], "filled": totals["filled"], "missing": totals["missing"],
        "flagged": totals["flagged"], "cells_expected": totals["expected"],
        "cells_not_stored": totals["not_stored"], "flags": _cell_flags(out, totals["not_stored"]),
    }
    return out, counts


def _grid_of(params: dict, domain: str, sensor: str):
    """(freq, reduce, fill, max_gap [ns], sparse_after [cells]) of a series, from
    :func:`resolve_grid`."""
    rule = resolve_grid(params, domain, sensor)
    freq = pd.Timedelta(rule["freq"]).value
    return (freq, rule["reduce"], rule["fill"], pd.Timedelta(rule["max_gap"]).value,
            sparse_after_cells(rule, freq))


def _cell_flags(out: pd.DataFrame, not_stored: int) -> dict:
    """The grid cells by flag name: the rows written, plus the cells not stored as MISSING
    (so a share of flags is a share of the grid, sparse or dense)."""
    counts = fl.counts(out["quality_flag"].to_numpy())
    counts[fl.Flag.MISSING.name] += int(not_stored)
    return counts


def _grid_frame(device, ts_l, val_l, flag_l, dom_l, sen_l) -> pd.DataFrame:
    """One tidy frame of the series' grids (ts [us] per series), sorted by (sensor, ts),
    built once (no frame per series)."""
    return _grid_frame_of_days(device, [_day_rows(ts_l, val_l, flag_l, dom_l, sen_l)])


def _day_rows(ts_l, val_l, flag_l, dom_l, sen_l):
    """The rows of one day's grids (ts [us] per series) sorted by (sensor, ts): (ts, value,
    flag, sorted domain names, their codes, sorted sensor names, their codes)."""
    n = np.array([len(t) for t in ts_l])
    sensors, domains = sorted(set(sen_l)), sorted(set(dom_l))
    sen_code = np.repeat(np.array([sensors.index(x) for x in sen_l], dtype=np.int32), n)
    dom_code = np.repeat(np.array([domains.index(x) for x in dom_l], dtype=np.int32), n)
    series = np.repeat(np.arange(len(n)), n)
    ts = np.concatenate(ts_l).astype(np.int64)
    by_name = sorted(range(len(n)), key=lambda k: sen_l[k])
    if len(set(sen_l)) == len(sen_l) and all(np.all(np.diff(t) > 0) for t in ts_l):
        # one series per name, each in time order: the series in name order are the order
        starts = np.concatenate(([0], np.cumsum(n)[:-1]))
        order = np.concatenate([np.arange(starts[k], starts[k] + n[k]) for k in by_name])
    else:
        order = np.lexsort((series, ts, sen_code))  # by sensor name, then time (stable)
    return (ts[order], np.concatenate(val_l)[order], np.concatenate(flag_l)[order].astype(np.uint8),
            domains, dom_code[order], sensors, sen_code[order])


def _first_seen(blocks, names: int):
    """Categories of the days' blocks joined, in order of first appearance (each block's
    names in their order), and each block's map of its codes onto them (None: the same)."""
    seen: dict = {}
    maps = []
    for block in blocks:
        pos = np.array([seen.setdefault(x, len(seen)) for x in block[names]], dtype=np.int32)
        maps.append(None if np.array_equal(pos, np.arange(len(pos))) else pos)
    return list(seen), maps


def _grid_frame_of_days(device, blocks: list) -> pd.DataFrame:
    """One tidy frame of the days' rows (:func:`_day_rows`; the list is emptied as they are
    copied in), one day after the other, the categories in order of first appearance: what
    concatenating the days' arrow tables and unifying their dictionaries gives
    (:func:`pyjama.runner._concat_days`); one day's are its sorted names."""
    from . import tidy

    domains, dom_maps = _first_seen(blocks, 3)
    sensors, sen_maps = _first_seen(blocks, 5)
    if len(blocks) == 1 and dom_maps[0] is None and sen_maps[0] is None:
        ts, val, flag, _, dom_code, _, sen_code = blocks.pop()
    else:
        n = sum(len(b[0]) for b in blocks)
        ts, val, flag = np.empty(n, np.int64), np.empty(n), np.empty(n, np.uint8)
        dom_code, sen_code = np.empty(n, np.int32), np.empty(n, np.int32)
        at = 0
        for dom_map, sen_map in zip(dom_maps, sen_maps):
            b_ts, b_val, b_flag, _, b_dom, _, b_sen = blocks.pop(0)
            part = slice(at, at + len(b_ts))
            ts[part], val[part], flag[part] = b_ts, b_val, b_flag
            dom_code[part] = b_dom if dom_map is None else dom_map[b_dom]
            sen_code[part] = b_sen if sen_map is None else sen_map[b_sen]
            at += len(b_ts)
    out = pd.DataFrame({
        "ts": pd.DatetimeIndex(ts.view("datetime64[us]")).tz_localize("UTC"),
        "device_id": pd.Categorical.from_codes(np.zeros(len(ts), np.int8), categories=pd.Index([device])),
        "domain": pd.Categorical.from_codes(dom_code, categories=pd.Index(domains)),
        "sensor": pd.Categorical.from_codes(sen_code, categories=pd.Index(sensors)),
        "value": val,
        "quality_flag": flag,
    }, copy=False)      # the arrays are this frame's own
    return tidy.conform(out)
