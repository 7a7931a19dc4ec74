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
from .transform import rename_sensors

# Keys of the step config that define a fit: the fit file records them, and applying a fit
# made with other values is an error (refit explicitly) rather than a silent mismatch.
FIT_KEYS = ("method", "sensors", "p_low", "p_high", "fit", "direction")

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
    rx = re.compile(pattern)
    cats = df["sensor"].cat.categories
    codes = df["sensor"].cat.codes.to_numpy()
    used = np.bincount(codes[codes >= 0], minlength=len(cats)) > 0
    return sorted(str(c) for c, u in zip(cats, used) if u and rx.fullmatch(str(c)))


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
        rng, ok = check_range(low, high, params["min_range"])
        entry = {
            "method": "percentile", "p_low": p_low, "p_high": p_high,
            "low": low, "high": high, "range": rng, "n_samples": n,
            "n_rows": int(len(rows)), "fit_from": period["from"], "fit_to": period["to"],
            "direction": direction, "direction_declared": declared,
            "range_ok": ok, "warning": range_warning(device, name, rng, params["min_range"]),
        }
        if declared == "auto":
            entry["median_position"] = position
        sensors[name] = entry
    return {
        "device_id": device,
        "period": period,
        "fit_config": {k: params[k] for k in FIT_KEYS},
        "min_range": params["min_range"],
        "sensors": sensors,
    }


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

    ``bounds[sensor]`` is ``{"low", "high", "direction"}``: scalars (percentile fit) or
    arrays aligned with that sensor's rows in ``df`` sorted by ts (rolling). The flag of a
    normalised row is the source flag, combined with OUT_OF_RANGE (3) where the scale is
    undefined (no fit, ``high − low ≤ 0``). Returns (frame, report).
    """
    df = tidy.conform(df).sort_values(["sensor", "ts"], kind="stable").reset_index(drop=True)
    names = selected_sensors(df, params["sensors"])
    report = {"rows_added": 0, "undefined": 0, "clipped_low": 0, "clipped_high": 0}
    codes = df["sensor"].cat.codes.to_numpy()
    cats = [str(c) for c in df["sensor"].cat.categories]
    values = df["value"].to_numpy()
    flags = df["quality_flag"].to_numpy()
    idxs, ys, fs = [], [], []
    for name in names:
        idx = np.flatnonzero(codes == cats.index(name))
        b = bounds[name]
        y, bad, below, above = normalise_values(values[idx], b["low"], b["high"],
                                                b["direction"], params["clip"])
        idxs.append(idx)
        ys.append(y)
        fs.append(combine(flags[idx], np.where(bad, np.uint8(Flag.OUT_OF_RANGE),
                                               np.uint8(Flag.OK)).astype(np.uint8)))
        report["undefined"] += int(bad.sum())
        if params["clip"]:
            report["clipped_low"] += below
            report["clipped_high"] += above
    if idxs:
        idx = np.concatenate(idxs)
        derived = df.iloc[idx].copy()
        derived["sensor"] = rename_sensors(derived["sensor"],
                                           {n: f"{n}__{params['suffix']}" for n in names})
        derived["value"] = np.concatenate(ys)
        derived["quality_flag"] = np.concatenate(fs)
    else:
        idx, derived = np.array([], dtype=np.int64), tidy.empty()
    if params["mode"] == "add":
        keep = df
        report["rows_added"] = int(len(idx))
    else:
        keep = df.drop(index=idx)
    out = tidy.concat([keep, derived])
    out = out.sort_values(["sensor", "ts"], kind="stable").reset_index(drop=True)
    return tidy.conform(out), report


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
        if saved.get(key) != params[key]:
            return key, saved.get(key), params[key]
    return None
