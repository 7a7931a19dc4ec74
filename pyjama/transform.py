"""Step 50 transform: pure functions turning one sensor's values into a derived sensor.

A Hall sensor's field falls off roughly with the cube of the magnet distance, so the
distance (and hence the valve gap) goes like ``count^(-1/3)``: raw counts rise as the
valve closes, ``count^(-1/3)`` rises as it opens. Each rule below is a pure function of
numpy arrays; :func:`transform_frame` applies the declared list of rules to a tidy frame.

Undefined results (``x <= 0`` for the power and log rules) become NaN flagged
``Flag.OUT_OF_RANGE`` (3); rows are never dropped.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from . import tidy
from .errors import UserError
from .flags import Flag, combine

# transform name → suffix of the derived sensor in "add" mode when none is declared
DEFAULT_SUFFIX = {"cbrt_inv": "cbrt_inv", "sqrt_inv": "sqrt_inv", "log": "log",
                  "identity": "identity", "linear": "cal"}
TRANSFORMS = tuple(DEFAULT_SUFFIX)


def compute_cbrt_inv(x):
    """Inverse cube root: ``y = x^(-1/3)`` [input unit^(-1/3)], defined for ``x > 0``.

    Returns (y, undefined) where ``undefined`` marks finite ``x <= 0`` (y is NaN there).
    """
    x = np.asarray(x, dtype=np.float64)
    bad = np.isfinite(x) & (x <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(bad, np.nan, np.cbrt(np.where(bad, 1.0, x)) ** -1.0)
    return y, bad


def compute_sqrt_inv(x):
    """Inverse square root: ``y = x^(-1/2)`` [input unit^(-1/2)], defined for ``x > 0``.

    Returns (y, undefined) where ``undefined`` marks finite ``x <= 0`` (y is NaN there).
    """
    x = np.asarray(x, dtype=np.float64)
    bad = np.isfinite(x) & (x <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(bad, np.nan, 1.0 / np.sqrt(np.where(bad, 1.0, x)))
    return y, bad


def compute_log(x):
    """Natural logarithm: ``y = ln(x)`` [ln of input unit], defined for ``x > 0``.

    Returns (y, undefined) where ``undefined`` marks finite ``x <= 0`` (y is NaN there).
    """
    x = np.asarray(x, dtype=np.float64)
    bad = np.isfinite(x) & (x <= 0)
    y = np.where(bad, np.nan, np.log(np.where(bad, 1.0, x)))
    return y, bad


def compute_identity(x):
    """Identity: ``y = x`` [input unit]; defined everywhere. Returns (y, undefined=False)."""
    x = np.asarray(x, dtype=np.float64)
    return x.copy(), np.zeros(len(x), dtype=bool)


def calibrate_linear(x, gain: float = 1.0, offset: float = 0.0):
    """Linear calibration: ``y = gain · x + offset`` [output unit]; ``gain`` in
    [output unit / input unit], ``offset`` in [output unit]. Defined everywhere."""
    x = np.asarray(x, dtype=np.float64)
    return gain * x + offset, np.zeros(len(x), dtype=bool)


def transform_values(x, transform: str, gain: float = 1.0, offset: float = 0.0):
    """Apply the named transform to ``x``; returns (y, undefined mask)."""
    if transform == "cbrt_inv":
        return compute_cbrt_inv(x)
    if transform == "sqrt_inv":
        return compute_sqrt_inv(x)
    if transform == "log":
        return compute_log(x)
    if transform == "identity":
        return compute_identity(x)
    if transform == "linear":
        return calibrate_linear(x, gain, offset)
    raise ValueError(f"unknown transform {transform!r}; allowed: {', '.join(TRANSFORMS)}")


def derived_name(sensor: str, rule: dict) -> str:
    """Name of the sensor a rule makes from ``sensor``: ``<sensor>__<suffix>``, or
    ``sensor`` itself for a replace rule with an empty suffix."""
    suffix = rule.get("suffix")
    if suffix is None:
        suffix = DEFAULT_SUFFIX[rule["transform"]]
    return f"{sensor}__{suffix}" if suffix else sensor


def transform_frame(df: pd.DataFrame, rules: list):
    """Apply the declared ``rules`` (in order) to a tidy frame.

    Each rule: ``sensors`` (regex, full match on the sensor name), ``transform``,
    ``mode`` (``add`` keeps the source sensor and adds ``<sensor>__<suffix>``; ``replace``
    puts the derived rows in place of the source rows), ``suffix``, ``gain``, ``offset``.
    Rule *i* sees the sensors rule *i-1* left, so rules chain (calibrate, then cbrt_inv).

    Derived rows keep ts, device_id, domain; value is the transformed value; the flag is
    the source flag combined with ``OUT_OF_RANGE`` where the transform is undefined.
    Returns (frame, report) with report = {rows_added, undefined, per_rule: [...]}
    (``undefined``: finite source values the transform could not take, now NaN flag 3).
    """
    df = tidy.conform(df)
    rows_added = 0
    undefined_total = 0
    per_rule = []
    for i, rule in enumerate(rules):
        pattern = re.compile(rule["sensors"])
        present = _present_sensors(df)
        names = [n for n in present if pattern.fullmatch(n)]
        src_mask = df["sensor"].isin(names).to_numpy()
        new_names = {n: derived_name(n, rule) for n in names}
        if rule["mode"] == "add":
            clash = sorted(v for v in new_names.values() if v in present)
        else:
            clash = sorted(v for k, v in new_names.items() if v in present and v != k)
        if clash:
            raise UserError(f"$.transforms[{i}]: derived sensor {clash[0]!r} already exists; "
                            "allowed: a suffix that makes a new name (set $.transforms[%d].suffix)" % i)
        src = df.loc[src_mask]
        y, bad = transform_values(src["value"].to_numpy(), rule["transform"],
                                  rule.get("gain", 1.0), rule.get("offset", 0.0))
        flag = combine(src["quality_flag"].to_numpy(),
                       np.where(bad, np.uint8(Flag.OUT_OF_RANGE), np.uint8(Flag.OK)).astype(np.uint8))
        derived = src.copy()
        derived["sensor"] = rename_sensors(src["sensor"], new_names)
        derived["value"] = y
        derived["quality_flag"] = flag
        if rule["mode"] == "add":
            rest = df
            rows_added += len(derived)
        else:
            rest = df.loc[~src_mask]
        df = tidy.concat([rest, derived])
        undefined_total += int(bad.sum())
        per_rule.append({"rule": i, "sensors": len(names), "rows": int(len(derived)),
                         "undefined": int(bad.sum())})
    df = df.sort_values(["sensor", "ts"], kind="stable").reset_index(drop=True)
    return tidy.conform(df), {"rows_added": rows_added, "undefined": undefined_total,
                              "per_rule": per_rule}


def _present_sensors(df: pd.DataFrame) -> list:
    """Sensor names with at least one row (categories may hold unused names)."""
    if not len(df):
        return []
    cats = df["sensor"].cat.categories
    codes = df["sensor"].cat.codes.to_numpy()
    used = np.bincount(codes[codes >= 0], minlength=len(cats)) > 0
    return sorted(str(c) for c, u in zip(cats, used) if u)


def rename_sensors(sensor: pd.Series, mapping: dict) -> pd.Series:
    """Rename the categories of a categorical sensor column (cheap: no per-row strings)."""
    col = sensor.cat.remove_unused_categories()
    return col.cat.rename_categories([mapping.get(str(c), str(c)) for c in col.cat.categories])


