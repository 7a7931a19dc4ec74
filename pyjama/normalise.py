"""Step 50 normalise: per device AND per sensor opening in [0, 1], fitted or rolling.

Two methods:

* ``percentile`` — fit once, per (device, sensor), ``low = P_low`` and ``high = P_high``
  of the usable samples of a declared fit period, written to a readable JSON file
  (:func:`build_fit`); then every partition is normalised with those two numbers
  (:func:`normalise_values`). The fit file is an input of every partition of its device,
  so refitting (an explicit act) re-runs exactly what depends on it.
* ``rolling_minmax`` — ``low``/``high`` are the min/max of the usable samples within a
  centred window of W hours around each sample (:func:`compute_rolling_bounds`); needs the
  neighbouring days.

Direction: ``up`` means a higher input value = more open, ``y = (x − low) / (high − low)``;
``down`` means a lower input value = more open, ``y = (high − x) / (high − low)``.
``auto`` (percentile only) decides at fit time (:func:`detect_direction`).

Everything here is pure (arrays and frames in, arrays and frames out); the file I/O and
the DAG live in :mod:`pyjama.steps.normalise`.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from . import tidy
from .flags import UNUSABLE, Flag, combine
from .timewindow import iso_seconds

# Keys of the step config that define a fit: the fit file records them, and applying a fit
# made with other values is an error (refit explicitly) rather than a silent mismatch.
FIT_KEYS = ("method", "sensors", "p_low", "p_high", "fit", "direction", "closure_evidence", "shift")

_UNUSABLE_CODES = np.array(sorted(int(f) for f in UNUSABLE), dtype=np.uint8)


def usable_mask(values, flags):
    """True where a sample may enter a fit: value finite and flag not in ``UNUSABLE``
    (so OK (0) and INTERPOLATED (5) samples count)."""
    values = np.asarray(values, dtype=np.float64)
    flags = np.asarray(flags, dtype=np.uint8)
    return np.isfinite(values) & ~np.isin(flags, _UNUSABLE_CODES)


def fit_percentiles(values, p_low: float = 2.0, p_high: float = 98.0):
    """``low = P_low(x)``, ``high = P_high(x)`` [input unit] over the finite ``values``.

    Percentiles use linear interpolation between order statistics (numpy's default):
    for n sorted values x₀…x_{n−1}, P_p = x at rank p/100 · (n − 1).
    Returns (low, high, n_samples); (None, None, 0) when no value is finite.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
        return None, None, 0
    low, high = np.percentile(x, [p_low, p_high])
    return float(low), float(high), int(len(x))


def detect_direction(values, low, high):
    """Decide which end of the range is "open", from where the bulk of the samples lies.

    Bivalves spend most of their time open, so the median of a day or more of samples
    sits near the open end: ``m = (median(x) − low) / (high − low)`` [0–1];
    ``m ≥ 0.5`` → ``"up"`` (open = high values), else ``"down"``.
    Returns (direction, m); ("up", None) when the range is empty or undefined.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if low is None or high is None or not len(x) or not high > low:
        return "up", None
    m = float((np.median(x) - low) / (high - low))
    return ("up" if m >= 0.5 else "down"), m


def normalise_values(x, low, high, direction: str = "up", clip: bool = True):
    """Scale ``x`` [input unit] to the opening ``y`` [0–1, dimensionless].

    up:   ``y = (x − low) / (high − low)``;  down: ``y = (high − x) / (high − low)``;
    with ``clip``: ``y = min(max(y, 0), 1)``. ``low``/``high`` are scalars or arrays
    (rolling bounds). Where ``high − low`` is not > 0 or a bound is missing (None/NaN),
    ``y`` is undefined: NaN, reported in the ``undefined`` mask for finite ``x``.
    Returns (y, undefined, n_clipped_low, n_clipped_high).
    """
    x = np.asarray(x, dtype=np.float64)
    lo = np.asarray(np.nan if low is None else low, dtype=np.float64)
    hi = np.asarray(np.nan if high is None else high, dtype=np.float64)
    span = hi - lo
    ok = np.broadcast_to(np.isfinite(span) & (span > 0), x.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = (x - lo) / span if direction == "up" else (hi - x) / span
    y = np.where(ok, y, np.nan)
    undefined = np.isfinite(x) & ~ok
    below = int(np.sum(y < 0))
    above = int(np.sum(y > 1))
    if clip:
        y = np.clip(y, 0.0, 1.0)   # NaN stays NaN
    return y, undefined, below, above


def compute_rolling_bounds(ts, values, flags, window_hours: float = 48.0):
    """Centred rolling bounds: for each sample at time t [UTC],
    ``low(t) = min{x(s) : |s − t| ≤ W/2}``, ``high(t) = max{…}`` over usable samples,
    W = ``window_hours`` [h]. One sensor, samples sorted by time. NaN where the window
    holds no usable sample."""
    x = np.where(usable_mask(values, flags), np.asarray(values, dtype=np.float64), np.nan)
    if not len(x):
        return np.array([]), np.array([])
    s = pd.Series(x, index=pd.DatetimeIndex(ts))
    roll = s.rolling(pd.Timedelta(hours=window_hours), center=True, min_periods=1, closed="both")
    return roll.min().to_numpy(), roll.max().to_numpy()


def direction_for(sensor: str, rules: list) -> str:
    """The declared direction of ``sensor``: the first rule whose ``sensors`` regex
    matches the whole name; ``"up"`` when none does."""
    for rule in rules:
        if re.fullmatch(rule["sensors"], sensor):
            return rule["direction"]
    return "up"


def check_range(low, high, min_range: float):
    """``range = high − low`` [input unit]; ok when ``range ≥ min_range``. Returns (range, ok)."""
    if low is None or high is None:
        return None, False
    rng = float(high - low)
    return rng, bool(rng >= min_range)


def selected_sensors(df: pd.DataFrame, pattern: str) -> list:
    """Sorted names of the sensors with rows in ``df`` whose whole name matches ``pattern``."""
    if not len(df):
        return []
    sensor = df["sensor"].array            # a Categorical: no accessor, categories as one list
    return _selected([str(c) for c in sensor.categories.tolist()], sensor.codes, pattern)


def build_fit(df: pd.DataFrame, params: dict, device: str, period: dict) -> dict:
    """The fit of one device: per selected sensor, P_low/P_high of its usable samples.

    ``df`` holds the device's rows in the fit period (already cut to it); ``period``
    describes it (``from``, ``to``, ``days``, …) and is copied into each sensor's entry
    so the file reads on its own. Returns the JSON-able content of the fit file
    (deterministic: no clock time).
    """
    p_low, p_high = float(params["p_low"]), float(params["p_high"])
    sensors = {}
    for name in selected_sensors(df, params["sensors"]):
        rows = df[df["sensor"] == name]
        vals = rows["value"].to_numpy()
        use = usable_mask(vals, rows["quality_flag"].to_numpy())
        low, high, n = fit_percentiles(vals[use], p_low, p_high)
        declared = direction_for(name, params["direction"])
        if declared == "auto":
            direction, position = detect_direction(vals[use], low, high)
        else:
            direction, position = declared, None
        # the times as integers from the column (its to_numpy() made a Timestamp object per
        # row: 2.7 of 3.6 CPU-s of a 2-day fit of 12 series at 1 Hz, issue 14)
        ts_use = tidy.ts_us(rows["ts"])[use] * 1000
        order = np.argsort(ts_use, kind="stable")
        ts_use, x_use = ts_use[order], vals[use][order]
        shifts = fit_level_shifts(ts_use, x_use, low, high, direction, params.get("shift"))
        if shifts:   # percentiles of the signal brought back to the level before the shift(s)
            x_use = x_use - shift_offset(ts_use, shifts)
            low, high, n = fit_percentiles(x_use, p_low, p_high)
        rng, ok = check_range(low, high, params["min_range"])
        ev = params.get("closure_evidence")
        seen = None
        if ev is not None:
            from .timewindow import parse_duration

            seen = closures_seen(ts_use, x_use, low, high, direction,
                                 parse_duration(ev["within"], "$.closure_evidence.within").total_seconds(),
                                 parse_duration(ev["hold"], "$.closure_evidence.hold").total_seconds())
        entry = {
            "method": "percentile", "p_low": p_low, "p_high": p_high,
            "low": low, "high": high, "range": rng, "n_samples": n,
            "n_rows": int(len(rows)), "fit_from": period["from"], "fit_to": period["to"],
            "direction": direction, "direction_declared": declared,
            "range_ok": ok, "warning": range_warning(device, name, rng, params["min_range"]),
        }
        if seen is not None:
            entry["closures_seen"] = seen
        if params.get("shift") is not None:
            entry["level_shifts"] = [{"ts": _stamp_us(at), "size": size} for at, size in shifts]
            if shifts:
                entry["shift_warning"] = (
                    f"{device}/{name}: {len(shifts)} level shift(s) in the fit period ("
                    + ", ".join(f"{size:+.4g} at {iso_seconds(pd.Timestamp(at, unit='ns', tz='UTC'))}"
                                for at, size in shifts)
                    + " [input unit]); the percentiles are of the signal moved back by them, and every "
                    "sample after a shift is normalised with the fit moved by it")
        if declared == "auto":
            entry["median_position"] = position
        sensors[name] = entry
    fit = {
        "device_id": device,
        "period": period,
        "fit_config": {k: params.get(k) for k in FIT_KEYS},
        "min_range": params["min_range"],
        "min_span_share": params.get("min_span_share"),
        "sensors": sensors,
    }
    for name, entry in sensors.items():
        entry["span_ok"], warning = span_check(fit, name, params["min_range"], params.get("min_span_share"))
        entry["warning"] = warning or entry["warning"]
    return fit


def closures_seen(ts, values, low, high, direction: str, within_s: float, hold_s: float) -> int:
    """How many closures the fit period shows, on the tentatively normalised opening
    y = normalise_values(x, low, high, direction) [0-1] (samples sorted by time, usable only):

        a closure = a run of y <= 0.2 lasting >= hold_s [s] that holds a sample with y <= 0.1
                    whose preceding within_s [s] reach y >= 0.5       (a fast fall from open)

    A valve closes fast (adductor, seconds) and stays closed; an animal that only drifts
    between half and fully open reaches the bottom of its drift slowly (hours), and a fast
    adduction recovers within seconds: neither counts, so its P_low is not a closed level.
    """
    if low is None or high is None or not high > low or len(values) < 3:
        return 0
    y, _, _, _ = normalise_values(np.asarray(values, float), low, high, direction, clip=True)
    t = pd.DatetimeIndex(ts)
    prev_max = pd.Series(y, index=t).rolling(pd.Timedelta(seconds=within_s), min_periods=1).max().to_numpy()
    low2 = y <= 0.2
    edges = np.diff(np.concatenate(([0], low2.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)   # runs [s, e)
    sec = (t - t[0]).total_seconds().to_numpy()      # whatever the index's unit
    n = 0
    for a, b in zip(starts, ends):
        if sec[b - 1] - sec[a] < hold_s:
            continue
        seg = slice(a, b)
        if np.any((y[seg] <= 0.1) & (prev_max[seg] >= 0.5)):
            n += 1
    return n


def device_best_range(fit: dict):
    """The widest fitted range high - low among the sensors of a device's fit [input unit]."""
    rngs = [e.get("range") for e in fit.get("sensors", {}).values() if e.get("range") is not None]
    return max(rngs) if rngs else None


def span_check(fit: dict, sensor: str, min_range: float, min_span_share=None):
    """Does the fitted span of ``sensor`` show an animal that closed during the fit period?

    With ``$.closure_evidence`` set, the fit counts the closures it saw
    (:func:`closures_seen`); none → span unknown. Then, with the span

        span = high - low                                   [input unit]
        required = max(min_range, min_span_share * widest span of the device's sensors)
        ok  <=>  span >= required

    The fit period must hold closures for P_low to be the closed level: an animal that
    stayed open (drifting between half and fully open) has a span well below that of the
    device's closing animals, and stretching it to 0-1 would invent closures. Below the
    required span the sensor is "span unknown / not closing": 50_normalise writes NaN with
    flag 3 and 60_behaviour counts no events for it. Returns (ok, one-line warning or None).
    """
    entry = fit["sensors"][sensor]
    rng = entry.get("range")
    device = fit.get("device_id", "?")
    if rng is None:
        return False, range_warning(device, sensor, None, min_range)
    if entry.get("closures_seen") == 0:
        return False, (f"{device}/{sensor}: span unknown / not closing: no closure in the fit period "
                       f"{entry.get('fit_from')}..{entry.get('fit_to')} (0 falls from >= 0.5 to <= 0.1 "
                       f"of the fitted span {rng:.6g} within $.closure_evidence.within that stay closed "
                       "for $.closure_evidence.hold); its opening is not normalised (NaN, flag 3) and "
                       "its closures are not counted")
    required, why = float(min_range), f"$.min_range {min_range:g}"
    best = device_best_range(fit)
    if min_span_share and best:
        rel = float(min_span_share) * best
        if rel > required:
            required, why = rel, f"$.min_span_share {min_span_share:g} x the device's widest {best:.6g}"
    if rng >= required:
        return True, None
    return False, (f"{device}/{sensor}: span unknown / not closing: fitted span {rng:.6g} is below "
                   f"the required {required:.6g} ({why}) in the fit period {entry.get('fit_from')}.."
                   f"{entry.get('fit_to')}; its opening is not normalised (NaN, flag 3) and its closures "
                   "are not counted")


def range_warning(device: str, sensor: str, rng, min_range: float):
    """The one-line warning for a narrow or empty fitted range, or None when it is fine."""
    if rng is None:
        return (f"{device}/{sensor}: no usable sample in the fit period; its normalised values "
                "are NaN (flag 3)")
    if rng < min_range:
        return (f"{device}/{sensor}: fitted range {rng:.6g} is below $.min_range {min_range:g} "
                "(dead sensor, lost magnet or inactive animal?)")
    return None


def normalise_frame(df: pd.DataFrame, params: dict, bounds: dict, device: str):
    """Add (or put in place of the source) ``<sensor>__<suffix>`` for the selected sensors.

    ``bounds[sensor]`` is ``{"low", "high", "direction"}`` (+ optional ``span_ok``): scalars
    (percentile fit) or arrays aligned with that sensor's rows in ``df`` sorted by ts
    (rolling). The flag of a normalised row is the source flag, combined with OUT_OF_RANGE
    (3) where the scale is undefined (no fit, ``high − low ≤ 0``, or ``span_ok`` false:
    span unknown / not closing, :func:`span_check`). Returns (frame, report); the frame is
    sorted by (sensor, ts), stable (at equal keys the input's rows before the derived ones),
    its categories those :func:`pyjama.tidy.concat` gives the input's and the derived rows.

    Computed on the columns as numpy arrays, every selected sensor at once (its bounds laid
    out on its rows; only the level shifts go sensor by sensor), the frame built once: a
    slow logger's day is ~13 series of a few dozen rows, where a pandas frame per sensor and
    a concat cost ~10 ms of fixed work a day. tests/test_normalise.py keeps the per-sensor
    pandas version this replaced and checks both give the same frame and report.
    """
    df = tidy.conform(df)
    report = {"rows_added": 0, "undefined": 0, "clipped_low": 0, "clipped_high": 0,
              "level_shifts": [], "warnings": []}
    if not len(df):
        return tidy.conform(sort_sensor_ts(tidy.empty())), report
    col = {c: df[c] for c in tidy.COLUMNS}
    dtypes = {c: col[c].dtype for c in ("device_id", "domain", "sensor")}
    cats = {c: [str(x) for x in dtypes[c].categories.tolist()] for c in dtypes}
    codes = {c: col[c].array.codes for c in cats}       # small ints, −1 for none
    ts = col["ts"].to_numpy(dtype="datetime64[us]").view(np.int64)
    sen_cats = cats["sensor"]
    # the input in (sensor category, ts) order: what sort_values(kind="stable") gives
    # (None: it is in that order already, as every partition file is)
    rows = _sensor_ts_rows(codes["sensor"].astype(np.int64), ts, none_if_sorted=True)

    def ordered(a):
        return a if rows is None else a[rows]

    sen, ts_s = ordered(codes["sensor"]), ordered(ts)
    values, flags = ordered(col["value"].to_numpy()), ordered(col["quality_flag"].to_numpy())
    names = _selected(sen_cats, sen, params["sensors"])
    # each selected sensor's rows (one run of the sorted input, in time order), by name
    code = {c: k for k, c in enumerate(sen_cats)}
    key = np.where(sen < 0, len(sen_cats), sen)                 # ascending
    first = np.searchsorted(key, [code[n] for n in names], side="left")
    last = np.searchsorted(key, [code[n] for n in names], side="right")
    at = np.concatenate(([0], np.cumsum(last - first))).astype(np.int64)
    sel = _runs(first, last - first)
    x, f = values[sel], flags[sel]
    lo, hi, up = np.empty(len(sel)), np.empty(len(sel)), np.empty(len(sel), dtype=bool)
    for k, name in enumerate(names):
        b = bounds[name]
        ok = b.get("span_ok", True)    # False: span unknown / not closing (span_check): no scale, flag 3
        part = slice(at[k], at[k + 1])
        lo[part] = np.asarray(np.nan if not ok or b["low"] is None else b["low"], dtype=np.float64)
        hi[part] = np.asarray(np.nan if not ok or b["high"] is None else b["high"], dtype=np.float64)
        up[part] = b["direction"] == "up"
    y, bad = _normalise_rows(x, lo, hi, up)
    ts_sel = ts_s[sel]
    ts_ns = pd.DatetimeIndex(ts_sel.view("datetime64[us]")).as_unit("ns").asi8
    if params.get("shift") is not None:
        for k, name in enumerate(names):
            part = slice(at[k], at[k + 1])
            y_k, bad_k = apply_level_shifts(ts_ns[part], y[part], bad[part], f[part], bounds[name],
                                            params, device, name, report)
            y[part], bad[part] = y_k, bad_k
    if params["clip"]:
        report["clipped_low"], report["clipped_high"] = int(np.sum(y < 0)), int(np.sum(y > 1))
        y = np.clip(y, 0.0, 1.0)   # NaN stays NaN
    report["undefined"] = int(bad.sum())
    f = combine(f, np.where(bad, np.uint8(Flag.OUT_OF_RANGE), np.uint8(Flag.OK)).astype(np.uint8))
    # the rows written: the input's (all of them, or those not replaced), then the derived
    if params["mode"] == "add":
        kept = slice(None)
        report["rows_added"] = int(len(sel))
    else:
        kept = np.ones(len(sen), dtype=bool)
        kept[sel] = False
        kept = np.flatnonzero(kept)
    n_kept = len(sen) if params["mode"] == "add" else len(kept)
    # derived sensors: the selected names renamed, in the input's category order
    chosen = set(names)
    d_cats = [f"{c}__{params['suffix']}" for c in sen_cats if c in chosen]
    d_code = np.full(len(sen_cats), -1, dtype=np.int64)
    d_code[[code[c] for c in sen_cats if c in chosen]] = np.arange(len(d_cats))
    sizes = (n_kept, len(sel))
    map_k, map_d, sen_dtype = _united(sen_cats, dtypes["sensor"], d_cats, None, sizes)
    out_sen = np.concatenate((_mapped(map_k, sen[kept]), _mapped(map_d, d_code[sen[sel]]))).astype(np.int64)
    out_ts = np.concatenate((ts_s[kept], ts_sel))
    order = _sensor_ts_rows(out_sen, out_ts)
    out = {"ts": pd.Series(out_ts[order].view("datetime64[us]")).dt.tz_localize("UTC")}
    for c in ("device_id", "domain"):       # both parts hold the input's categories
        map_k, map_d, dtype = _united(cats[c], dtypes[c], cats[c], dtypes[c], sizes)
        both = np.concatenate((ordered(codes[c])[kept], ordered(codes[c])[sel]))[order]
        out[c] = pd.Categorical.from_codes(_mapped(map_k, both), dtype=dtype, validate=False)
    out["sensor"] = pd.Categorical.from_codes(out_sen[order], dtype=sen_dtype, validate=False)
    out["value"] = np.concatenate((values[kept], y))[order]
    out["quality_flag"] = np.concatenate((flags[kept], f))[order]
    out = pd.DataFrame(out, copy=False)     # the arrays are this frame's own
    return out, report     # tidy (the tests hold it to the frame tidy.conform gives)


def _selected(cats: list, codes: np.ndarray, pattern: str) -> list:
    """:func:`selected_sensors` on the columns: sorted used categories matching ``pattern``."""
    used = np.bincount(codes[codes >= 0], minlength=len(cats)) > 0
    rx = re.compile(pattern)
    return sorted(c for c, u in zip(cats, used) if u and rx.fullmatch(c))


def _runs(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions start_i … start_i + length_i − 1 of every run, concatenated."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if not len(lengths) or not lengths.sum():
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + (np.arange(int(lengths.sum()), dtype=np.int64) - offsets)


def _normalise_rows(x, lo, hi, up):
    """:func:`normalise_values` (no clip) row by row: bounds and direction per row.
    Returns (y, undefined)."""
    span = hi - lo
    ok = np.isfinite(span) & (span > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(up, (x - lo) / span, (hi - x) / span)
    return np.where(ok, y, np.nan), np.isfinite(x) & ~ok


# (categories of part a, of part b) → (dtype, codes map of a, of b): the same few lists
# come back every day of a job (bounded: cleared when full)
_UNITED: dict = {}


def _united(cats_a, dtype_a, cats_b, dtype_b, sizes):
    """The categories of one column of two parts put end to end as :func:`pyjama.tidy.concat`
    does: an empty part is left out, one part keeps its categories, two get the union,
    sorted. ``cats_*``: a part's categories as str; ``dtype_*``: its dtype (None: made from
    ``cats_*``); ``sizes``: the parts' rows. Returns (code map of a, of b, dtype): a map
    takes a part's codes to the result's (code −1, no value, to −1); both None when the
    codes stay as they are (one part, or the union is the same list)."""
    if sizes[0] and sizes[1]:
        key = (tuple(cats_a), tuple(cats_b))
        hit = _UNITED.get(key)
        if hit is None:
            united = sorted(set(cats_a) | set(cats_b))
            pos = {c: k for k, c in enumerate(united)}
            map_a = np.array([pos[c] for c in cats_a] + [-1], dtype=np.int64)    # code −1 → the last
            map_b = np.array([pos[c] for c in cats_b] + [-1], dtype=np.int64)
            same = united == list(cats_a) == list(cats_b)
            hit = (None if same else map_a, None if same else map_b, pd.CategoricalDtype(pd.Index(united)))
            if len(_UNITED) >= 256:
                _UNITED.clear()
            _UNITED[key] = hit
        return hit
    cats, dtype = (cats_a, dtype_a) if sizes[0] else (cats_b, dtype_b)
    return None, None, dtype if dtype is not None else pd.CategoricalDtype(pd.Index(cats))


def _mapped(code_map, codes):
    """``codes`` through a code map of :func:`_united` (None: as they are)."""
    return codes if code_map is None else code_map[codes]


def _sensor_ts_rows(sen: np.ndarray, ts: np.ndarray, none_if_sorted: bool = False):
    """Row order by (sensor code, ts), stable, a missing sensor (code −1) or time (NaT)
    last: ``df.sort_values(["sensor", "ts"], kind="stable")`` on the columns. With
    ``none_if_sorted``: None when that order is the rows' own."""
    from .transform import _sensor_ts_order

    nat = ts == np.iinfo(np.int64).min
    if not len(sen) or ((sen >= 0).all() and not nat.any()):
        if none_if_sorted and _in_order(sen, ts):
            return None
        return _sensor_ts_order(sen, ts)
    return np.lexsort((ts, nat, np.where(sen < 0, sen.max() + 1, sen)))


def _in_order(sen: np.ndarray, ts: np.ndarray) -> bool:
    """True when the rows are sorted by (sensor code, ts): a stable sort leaves them."""
    if len(sen) < 2:
        return True
    ds, dt = np.diff(sen), np.diff(ts)
    return bool(((ds > 0) | ((ds == 0) & (dt >= 0))).all())


def sort_sensor_ts(df: pd.DataFrame) -> pd.DataFrame:
    """``df.sort_values(["sensor", "ts"], kind="stable").reset_index(drop=True)`` of a tidy
    frame, by one stable argsort of a combined (sensor code, ts) int64 key
    (:func:`pyjama.transform._sensor_ts_order`): the frame is runs already in order (the
    input; the input, then the derived rows), which timsort merges in O(n), where pandas
    factorizes the timestamps first (measured: 0.47 of 50_normalise's 0.84 CPU-s on a 1 Hz
    device-day). A missing sensor or time (never in a tidy frame) takes pandas' sort."""
    from .transform import _sensor_ts_order

    sen = df["sensor"].cat.codes.to_numpy().astype(np.int64)
    ts = df["ts"].to_numpy(dtype="datetime64[us]").view(np.int64)
    if (sen < 0).any() or (ts == np.iinfo(np.int64).min).any():
        return df.sort_values(["sensor", "ts"], kind="stable").reset_index(drop=True)
    order = _sensor_ts_order(sen, ts)
    if np.array_equal(order, np.arange(len(order))):
        return df.reset_index(drop=True)
    return df.take(order).reset_index(drop=True)


SHIFT_DEFAULTS = {"min_size": 0.2, "min_segment": "30min", "action": "correct"}
OPEN_BOTH_SIDES = 0.3    # [opening fraction] a shift is a step between two open levels


def find_level_shifts(ts_ns, y, flags, sp: dict) -> list:
    """Level shifts of the opening y [0-1, before clipping] of one sensor (samples sorted by
    time, ``ts_ns`` int64 ns), as [(ts_ns of the first sample at the new level, size J)].

    Only samples with flag 0 or 5 count. A shift is a step found by
    :func:`pyjama.qc.detect_level_shifts` with ``sp["min_size"]`` [opening fraction] and
    ``sp["min_segment"]``: |J| >= min_size on per-minute medians, a step that does not come
    back (a closure reopens, so it is not one), between two OPEN levels: the medians of
    ``min_segment`` on each side both >= 0.3 (a day that starts closed and reopens is a
    closure across midnight, not a shift).
    """
    from . import qc

    sp = {**SHIFT_DEFAULTS, **sp}
    y = np.where(np.isin(flags, (int(Flag.OK), int(Flag.INTERPOLATED))), y, np.nan)
    found = qc.detect_level_shifts(ts_ns, y, sp["min_size"], sp["min_segment"])
    seg = int(pd.Timedelta(sp["min_segment"]).value)

    def level(lo, hi):
        w = y[(ts_ns >= lo) & (ts_ns < hi)]
        w = w[np.isfinite(w)]
        return float(np.median(w)) if len(w) else np.nan

    return [(int(at), float(size)) for at, size in found
            if min(level(at - seg, at), level(at, at + seg)) >= OPEN_BOTH_SIDES]


def shift_offset(ts_ns, shifts) -> np.ndarray:
    """The step function o(t) = sum of the sizes of the shifts at or before t (same unit as
    the sizes); 0 before the first."""
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    off = np.zeros(len(ts_ns))
    for at, size in shifts:
        off += np.where(ts_ns >= int(at), float(size), 0.0)
    return off


def fit_level_shifts(ts_ns, x, low, high, direction: str, sp) -> list:
    """The level shifts of the fit period, in the input unit: [(ts_ns, size_x)].

    Found (:func:`find_level_shifts`) on the tentative opening y = normalise_values(x, low,
    high) of the uncorrected fit period; a step J of y is a step J * (high - low) of x
    (direction up; -J * (high - low) down). [] when ``sp`` is None or the range is empty."""
    if sp is None or low is None or high is None or not high > low or len(x) < 10:
        return []
    y = normalise_values(x, low, high, direction, clip=False)[0]
    sign = 1.0 if direction == "up" else -1.0
    return [(at, round(sign * size * (high - low), 9))
            for at, size in find_level_shifts(ts_ns, y, np.zeros(len(x), np.uint8), sp)]


def _stamp_us(ts_ns) -> str:
    return pd.Timestamp(int(ts_ns), unit="ns", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def apply_level_shifts(ts_ns, y, bad, flags, b: dict, params: dict, device: str, name: str, report: dict):
    """The opening after the level shifts of the fit and of the day (``$.shift``).

    A magnet that moves on the shell changes its distance d to the sensor by some delta for
    the rest of the record; x = counts^(-1/3) is proportional to d (c = K/d^3), so x moves by
    the same amount at every opening, and so does y = (x - low)/(high - low). The fit holds
    again when its low and high move with it:

        y'(t) = y(t) - sum of J_k over the shifts k at or before t       [opening fraction]

    J_k = the measured step (level after minus level before). Two sources: the shifts the fit
    found in its period (``b["shifts"]``: (ts_ns, size in the input unit), J = size /
    (high - low), sign by direction; they hold for every later day too), then the shifts
    found in this day on the opening corrected by those (:func:`find_level_shifts`).
    ``$.shift.action`` "correct" (default) applies the formula; "flag" leaves the samples
    from the day's first shift on without an opening (NaN, flag 3). Each shift found in the
    day goes to ``report["level_shifts"]`` and one line to ``report["warnings"]``.
    Returns (y, bad).
    """
    sp = params.get("shift")
    if sp is None or b.get("low") is None or not b.get("span_ok", True):
        return y, bad
    sp = {**SHIFT_DEFAULTS, **sp}
    known = b.get("shifts") or []
    if known and np.ndim(b["low"]) == 0:
        span = float(b["high"]) - float(b["low"])
        sign = 1.0 if b["direction"] == "up" else -1.0
        y = y - shift_offset(ts_ns, [(at, sign * size / span) for at, size in known])
        for at, size in known:
            if ts_ns.size and ts_ns[0] <= at <= ts_ns[-1]:
                report["level_shifts"].append({"sensor": name, "ts": iso_seconds(pd.Timestamp(at, unit="ns", tz="UTC")),
                                               "size": round(sign * size / span, 6),
                                               "samples_after": int((ts_ns >= at).sum()), "found_by": "fit",
                                               "action": "correct"})
    found = find_level_shifts(ts_ns, y, flags, sp)
    for at, size in found:
        stamp = iso_seconds(pd.Timestamp(at, unit="ns", tz="UTC"))
        n_after = int((ts_ns >= at).sum())
        report["level_shifts"].append({"sensor": name, "ts": stamp, "size": round(size, 6),
                                       "samples_after": n_after, "found_by": "day", "action": sp["action"]})
        if sp["action"] == "flag":
            report["warnings"].append(
                f"{device}/{name}: level shift of {size:+.3g} of the fitted span at {stamp}; the "
                f"{n_after} samples after it are not normalised (NaN, flag 3): the fit does not "
                "hold there; refit from the next day (--fit with $.fit.from) if the shift stays")
            after = ts_ns >= found[0][0]
            return np.where(after, np.nan, y), bad | after
        report["warnings"].append(
            f"{device}/{name}: level shift of {size:+.3g} of the fitted span at {stamp}; the {n_after} "
            f"samples after it are normalised with the fit moved by it (opening - ({size:+.3g})); the "
            "next days keep the fit as it is: refit from the next day (--fit with $.fit.from) if the "
            "shift stays")
    if found:
        y = y - shift_offset(ts_ns, found)
    return y, bad


def select_fit_days(days, fit: dict):
    """The fit period of one device and the days it reads.

    ``days``: the device's UTC days with data (``YYYY-MM-DD``, any order). ``fit``: the
    config's ``$.fit``. With ``from``/``to`` null the period is the first ``first_days``
    days the device has data for (whatever exists when the fit runs); otherwise the
    declared window (``pyjama.timewindow`` bounds; a bare ``to`` date is inclusive).
    Returns (days read, period dict for the fit file); days is empty when none has data.
    """
    from .timewindow import parse_window

    days = sorted(set(days))
    if fit.get("from") is None:
        n = int(fit["first_days"])
        chosen = days[:n]
        return chosen, {
            "declared": f"the first {n} day(s) of the device's data",
            "from": chosen[0] if chosen else None, "to": chosen[-1] if chosen else None,
            "days": chosen, "complete": len(chosen) == n,
        }
    window = parse_window(fit["from"], fit["to"])
    chosen = window.select_days(days)
    first, last = window.start.date(), window.end.date()
    expected = (last - first).days + 1
    return chosen, {
        "declared": f"{fit['from']} .. {fit['to']}",
        "from": fit["from"], "to": fit["to"], "days": chosen,
        "complete": len(chosen) == expected,
    }


def cut_to_period(df: pd.DataFrame, fit: dict) -> pd.DataFrame:
    """Rows of ``df`` inside the declared fit window (all rows for a first-days period)."""
    if fit.get("from") is None or not len(df):
        return df
    from .timewindow import parse_window

    window = parse_window(fit["from"], fit["to"])
    ts = df["ts"]
    keep = (ts >= pd.Timestamp(window.start)) & (ts <= pd.Timestamp(window.end))
    return df.loc[keep.to_numpy()]


def fit_mismatch(saved: dict, params: dict):
    """The first fit-defining config key whose value differs from the one a fit file was
    made with, as (key, saved value, current value); None when they agree."""
    for key in FIT_KEYS:
        if saved.get(key) != params.get(key):
            return key, saved.get(key), params.get(key)
    return None
