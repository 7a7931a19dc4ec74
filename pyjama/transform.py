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



def _rule_names(i: int, rule: dict, pattern, present: list[str]) -> tuple[list[str], dict]:
    """The present sensors rule ``$.transforms[i]`` reads and the names it writes; a derived
    name that already exists is a one-line error (both kernels share this check)."""
    names = [n for n in present if pattern.fullmatch(n)]
    new_names = {n: derived_name(n, rule) for n in names}
    if rule["mode"] == "add":
        clash = sorted(v for v in new_names.values() if v in present)
    else:
        clash = sorted(v for k, v in new_names.items() if v in present and v != k)
    if clash:
        raise UserError(f"$.transforms[{i}]: derived sensor {clash[0]!r} already exists; "
                        "allowed: a suffix that makes a new name (set $.transforms[%d].suffix)" % i)
    return names, new_names

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
    The frame is sorted by (sensor, ts), stable.

    Computed on the columns as numpy arrays (categorical codes, no per-row strings), rows
    put in order once at the end; :func:`transform_frame_pandas` is the same rule written
    with pandas frames, kept as the reference the tests compare this with.
    """
    df = tidy.conform(df)
    if not len(df):
        return transform_frame_pandas(df, rules)
    device_cats = [str(c) for c in df["device_id"].cat.categories]
    dev = df["device_id"].cat.codes.to_numpy()
    ts = df["ts"].to_numpy(dtype="datetime64[us]").view(np.int64)
    dom = df["domain"].cat.codes.to_numpy()
    dom_cats = [str(c) for c in df["domain"].cat.categories]
    sen = df["sensor"].cat.codes.to_numpy().astype(np.int64)
    sen_cats = [str(c) for c in df["sensor"].cat.categories]
    value = df["value"].to_numpy(dtype=np.float64)
    flag = df["quality_flag"].to_numpy(dtype=np.uint8)
    rows_added = 0
    undefined_total = 0
    per_rule = []
    for i, rule in enumerate(rules):
        pattern = re.compile(rule["sensors"])
        used = np.bincount(sen, minlength=len(sen_cats)) > 0
        present = sorted(c for c, u in zip(sen_cats, used) if u)
        names, new_names = _rule_names(i, rule, pattern, present)
        is_src = np.zeros(len(sen_cats), dtype=bool)
        is_src[[sen_cats.index(n) for n in names]] = True
        src_mask = is_src[sen]
        y, bad = transform_values(value[src_mask], rule["transform"],
                                  rule.get("gain", 1.0), rule.get("offset", 0.0))
        d_flag = combine(flag[src_mask], np.where(bad, np.uint8(Flag.OUT_OF_RANGE), np.uint8(Flag.OK)).astype(np.uint8))
        # the derived rows' categories: the used source names, renamed (category order kept)
        d_cats = [new_names[c] for c, s in zip(sen_cats, is_src) if s]
        d_code = np.full(len(sen_cats), -1, dtype=np.int64)
        d_code[is_src] = np.arange(int(is_src.sum()))
        d_sen = d_code[sen[src_mask]]
        keep_rest = np.ones(len(sen), bool) if rule["mode"] == "add" else ~src_mask
        n_new = len(y)
        parts = [p for p in ((keep_rest, sen_cats, False), (src_mask, d_cats, True)) if int(p[0].sum())]
        if len(parts) == 2:            # two non-empty frames: union of the categories, sorted
            cats = sorted(set(sen_cats) | set(d_cats))
            pos = {c: k for k, c in enumerate(cats)}
            rest_map = np.array([pos[c] for c in sen_cats], dtype=np.int64)
            new_map = np.array([pos[c] for c in d_cats], dtype=np.int64)
            sen = np.concatenate([rest_map[sen[keep_rest]], new_map[d_sen]])
            sen_cats = cats
        elif parts and parts[0][2]:    # only derived rows remain (replace of everything)
            sen, sen_cats = d_sen, d_cats
        elif parts:
            sen = sen[keep_rest]
        ts = np.concatenate([ts[keep_rest], ts[src_mask]]) if n_new else ts[keep_rest]
        dom = np.concatenate([dom[keep_rest], dom[src_mask]]) if n_new else dom[keep_rest]
        dev = np.concatenate([dev[keep_rest], dev[src_mask]]) if n_new else dev[keep_rest]
        value = np.concatenate([value[keep_rest], y]) if n_new else value[keep_rest]
        flag = np.concatenate([flag[keep_rest], d_flag]) if n_new else flag[keep_rest]
        if len(parts) == 2:            # domain and device: both frames have the same list; sorted
            dom, dom_cats = _sorted_categories(dom, dom_cats)
            dev, device_cats = _sorted_categories(dev, device_cats)
        if rule["mode"] == "add":
            rows_added += n_new
        undefined_total += int(bad.sum())
        per_rule.append({"rule": i, "sensors": len(names), "rows": n_new, "undefined": int(bad.sum())})
    order = _sensor_ts_order(sen, ts)
    out = pd.DataFrame({
        "ts": pd.Series(ts[order].astype("datetime64[us]")).dt.tz_localize("UTC"),
        "device_id": pd.Categorical.from_codes(dev[order], categories=pd.Index(device_cats, dtype=object)),
        "domain": pd.Categorical.from_codes(dom[order], categories=pd.Index(dom_cats, dtype=object)),
        "sensor": pd.Categorical.from_codes(sen[order], categories=pd.Index(sen_cats, dtype=object)),
        "value": value[order],
        "quality_flag": flag[order],
    }, copy=False)      # the arrays are this frame's own
    return tidy.conform(out), {"rows_added": rows_added, "undefined": undefined_total,
                               "per_rule": per_rule}


def _sorted_categories(codes, cats):
    """Codes and categories re-coded onto the sorted categories (as :func:`tidy.concat` does)."""
    srt = sorted(set(cats))
    if srt == list(cats):
        return codes, srt           # already sorted and distinct: the codes stay
    pos = {c: k for k, c in enumerate(srt)}
    return np.array([pos[c] for c in cats], dtype=np.int64)[codes], srt


def _sensor_ts_order(sen, ts):
    """Row order by (sensor code, ts), stable: :func:`pyjama.tidy.key_time_order` (no sort
    when each sensor's rows are one run in time order: the input, then the derived rows)."""
    if not len(ts):
        return np.zeros(0, dtype=np.int64)
    return tidy.key_time_order(ts, sen)


def transform_frame_pandas(df: pd.DataFrame, rules: list):
    """:func:`transform_frame` written with pandas frames (the reference implementation:
    the tests prove the array version gives the same frame). Apply the declared ``rules``
    (in order) to a tidy frame.

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
        names, new_names = _rule_names(i, rule, pattern, present)
        src_mask = df["sensor"].isin(names).to_numpy()
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
    col = tidy.remove_unused(sensor)
    return col.cat.rename_categories([mapping.get(str(c), str(c)) for c in col.cat.categories])


