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

import re

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

from .errors import UserError

# MAD → standard deviation of a normal distribution: sigma = 1.4826 × MAD.
MAD_TO_SIGMA = 1.4826


class _Bounds(BaseIndexer):
    """A rolling window given by explicit [start, end) row bounds (pandas computes the
    statistic in Cython; we only say which rows each window holds)."""

    def __init__(self, start, end):
        super().__init__()
        self.start = np.asarray(start, dtype=np.int64)
        self.end = np.asarray(end, dtype=np.int64)

    def get_window_bounds(self, num_values=0, min_periods=None, center=None, closed=None, step=None):
        return self.start, self.end


def centred_bounds(ts_ns: np.ndarray, window) -> tuple:
    """Row bounds [start, end) of the centred window of each sample.

    ``window`` is an odd number of samples (n: the sample, (n−1)/2 before, (n−1)/2 after,
    truncated at the series edges) or a :class:`pandas.Timedelta` W (every sample with
    |t − t_i| ≤ W/2).
    """
    n = len(ts_ns)
    idx = np.arange(n, dtype=np.int64)
    if isinstance(window, (int, np.integer)):
        half = int(window) // 2
        return np.maximum(idx - half, 0), np.minimum(idx + half + 1, n)
    half = int(pd.Timedelta(window).value) // 2
    start = np.searchsorted(ts_ns, ts_ns - half, side="left")
    end = np.searchsorted(ts_ns, ts_ns + half, side="right")
    return start.astype(np.int64), end.astype(np.int64)


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
    return np.isin(x, np.asarray(list(sentinels), dtype=np.float64))


def flag_spikes(ts_ns: np.ndarray, values: np.ndarray, window, threshold_mad=6.0,
                threshold_abs=None, max_length: int = 3, context_window=None) -> np.ndarray:
    """Flag spikes: short excursions from a robust centred reference that return.

    With m_i the median and MAD_i the median absolute deviation (|x − m| of the window)
    over the centred window of sample i (``window``: odd number of samples or a duration):

        T_i       = max(threshold_mad × 1.4826 × MAD_i, threshold_abs)       [sensor unit]
        outlier_i = |x_i − m_i| > T_i

    (a ``None`` threshold drops out of the max; 1.4826 × MAD estimates the noise sigma).
    With a ``context_window`` (longer, same forms), M_i its centred median, a sample must
    also be far from the broader reference: outlier_i also needs |x_i − M_i| > T_i, so a
    brief return to the level the sensor held for most of the last minutes (an animal
    reopening for 2 s between two micro-closures) is not a spike.
    A run of consecutive outliers i = a+1 … b−1 is a spike, and flagged 2, only when

        (b − 1 − a) ≤ max_length           it is short                       [samples]
        a and b exist                      bounded by non-outliers on both sides
        |x_b − x_a| ≤ min(T_a+1 … T_b−1)   it returns to the level it left

    so the edges and overshoots of real closures (level shifts that stay) are never
    flagged, and a run touching the first or last sample is not flagged (it cannot be
    shown to return). NaN values are ignored (they neither count nor break a run);
    pass only the samples that earlier tests left usable.

    ts_ns : sample times [ns since epoch, ascending]; values : [sensor unit].
    """
    x = np.asarray(values, dtype=np.float64)
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    out = np.zeros(len(x), dtype=bool)
    ok = np.flatnonzero(~np.isnan(x))
    if len(ok) < 3:
        return out
    xs, ts = x[ok], ts_ns[ok]
    bounds = _Bounds(*centred_bounds(ts, window))
    s = pd.Series(xs)
    ref = s.rolling(bounds, min_periods=1).median().to_numpy()
    dev = np.abs(xs - ref)
    mad = pd.Series(dev).rolling(bounds, min_periods=1).median().to_numpy()
    thr = np.full(len(xs), -np.inf)
    if threshold_mad is not None:
        thr = np.maximum(thr, threshold_mad * MAD_TO_SIGMA * mad)
    if threshold_abs is not None:
        thr = np.maximum(thr, float(threshold_abs))
    outlier = dev > thr
    if context_window is not None:
        context = s.rolling(_Bounds(*centred_bounds(ts, context_window)), min_periods=1).median()
        outlier &= np.abs(xs - context.to_numpy()) > thr
    # runs of outliers: [first, last] in the usable-sample index
    edges = np.diff(np.concatenate(([0], outlier.astype(np.int8), [0])))
    first = np.flatnonzero(edges == 1)
    last = np.flatnonzero(edges == -1) - 1
    before, after = first - 1, last + 1
    inside = (before >= 0) & (after < len(xs))
    keep = inside & (last - first + 1 <= max_length)
    i_before = np.where(inside, before, 0)   # a in the docstring
    i_after = np.where(inside, after, 0)     # b
    # T_run = min(T_i, i in the run): the return is judged by the threshold the run's own
    # samples broke (not by T_a, which a nearby closure can inflate through the MAD)
    pairs = np.ravel(np.column_stack((first, last + 1)))
    t_run = np.minimum.reduceat(np.append(thr, np.inf), pairs)[::2] if len(first) else thr[:0]
    keep &= np.abs(xs[i_after] - xs[i_before]) <= t_run
    m = len(xs) + 1
    mark = np.bincount(first[keep], minlength=m) - np.bincount(last[keep] + 1, minlength=m)
    out[ok] = np.cumsum(mark[:-1]) > 0
    return out


def flag_flat_lines(ts_ns: np.ndarray, values: np.ndarray, tolerance: float,
                    min_duration) -> np.ndarray:
    """Flag a stuck sensor: samples of a stretch that stays within ``tolerance`` for at
    least ``min_duration``. → 4 FLAT_LINE

    A stretch of consecutive samples i … j is flat when

        max(x_i..x_j) − min(x_i..x_j) ≤ tolerance      [sensor unit]
        t_j − t_i ≥ min_duration                       [duration]

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
    dur = int(pd.Timedelta(min_duration).value)
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

    ``range``, ``sentinels`` and null replace; ``spike`` / ``flat`` objects merge key by
    key. Returns None when neither the domain nor the sensor has a rule.
    """
    base = params.get("rules", {}).get(domain)
    over = params.get("sensors", {}).get(sensor)
    if base is None and over is None:
        return None
    rule = schema_defaults("30_clean", "rule")
    for layer in (base or {}, over or {}):
        for key, value in layer.items():
            if key in ("spike", "flat") and isinstance(value, dict):
                prev = rule[key] if isinstance(rule[key], dict) else {}
                rule[key] = {**prev, **value}
            else:
                rule[key] = value
    for key in ("spike", "flat"):
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


def clean_frame(df: pd.DataFrame, params: dict, device: str):
    """Pure core of 30_clean: a tidy frame → the same rows with quality flags set.

    Per sensor (rows sorted by time): NaN → 1; range and sentinels → 3; exclusions → 6;
    spikes → 2 and flat lines → 4, both computed only on the samples still usable
    (flag not in :data:`pyjama.flags.UNUSABLE`; spikes are also left out of the flat-line
    test). An input flag is kept unless a new one has higher precedence
    (:func:`pyjama.flags.combine`). ``value`` is never changed, rows keep their order.

    Returns (frame, counts) where counts holds the ledger keys: rows_in, rows_out,
    rejected (always empty), flags (stored codes by name), tests (samples each test
    matched, before precedence) and sensors_without_rules.
    """
    from . import flags as fl
    from . import tidy

    df = tidy.conform(df)
    n = len(df)
    tests = dict.fromkeys(TESTS, 0)
    unruled = []
    qf = df["quality_flag"].to_numpy().copy()
    if n:
        values = df["value"].to_numpy()
        ts_ns = df["ts"].to_numpy(dtype="datetime64[us]").astype(np.int64) * 1000
        unusable = np.array(sorted(int(f) for f in fl.UNUSABLE), dtype=np.uint8)
        for domain, sensor, idx in tidy.sensor_groups(df):
            x, t = values[idx], ts_ns[idx]
            f = qf[idx]

            def apply(mask, code, test):
                nonlocal f
                tests[test] += int(mask.sum())
                f = fl.combine(f, np.where(mask, np.uint8(code), np.uint8(fl.Flag.OK)))

            apply(flag_missing(x), fl.Flag.MISSING, "missing")
            apply(flag_exclusions(t, exclusion_windows(params, device, sensor)),
                  fl.Flag.EXCLUDED, "excluded")
            rule = resolve_rule(params, domain, sensor)
            if rule is None:
                unruled.append(sensor)
            else:
                if rule["range"] is not None:
                    apply(flag_range(x, *rule["range"]), fl.Flag.OUT_OF_RANGE, "range")
                apply(flag_sentinels(x, rule["sentinels"]), fl.Flag.OUT_OF_RANGE, "sentinel")
                usable = np.where(np.isin(f, unusable), np.nan, x)
                if rule["spike"] is not None:
                    sp = rule["spike"]
                    if sp["threshold_mad"] is None and sp["threshold_abs"] is None:
                        raise UserError(f"$.sensors.{sensor}.spike: threshold_mad and threshold_abs "
                                        "are both null after merging with the domain's rule; "
                                        "allowed: at least one threshold")
                    context = None if sp["context_window"] is None else window_value(sp["context_window"])
                    spikes = flag_spikes(t, usable, window_value(sp["window"]), sp["threshold_mad"],
                                         sp["threshold_abs"], sp["max_length"], context)
                    apply(spikes, fl.Flag.SPIKE, "spike")
                    usable = np.where(spikes, np.nan, usable)
                if rule["flat"] is not None:
                    fp = rule["flat"]
                    apply(flag_flat_lines(t, usable, fp["tolerance"], pd.Timedelta(fp["min_duration"])),
                          fl.Flag.FLAT_LINE, "flat")
            qf[idx] = f
    out = df.copy()
    out["quality_flag"] = qf
    counts = {"rows_in": n, "rows_out": n, "rejected": {}, "flags": fl.counts(qf),
              "tests": tests, "sensors_without_rules": sorted(set(unruled))}
    return out, counts
