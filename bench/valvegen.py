"""Independent valvometry generator for bench/validate.py, with known truth.

Written from ../shared/reference/FIELD.md and the real HFNI record (extremefit_dataOyster),
NOT from the step code or pyjama/demo.py. The physics, in order:

* opening g(t) in [0, 1] per animal (1 = fully open): an open level drifting slowly
  (hours) — between 0.5 and 1.0 for an animal that never closes, 0.8–1.0 for one that does;
* closures: g ramps down to 0–0.04 in 2–6 s, stays closed 20–120 min, ramps up in 2–6 s
  (the real record: closures of 13 min to 3.3 h); truth start/end = the ramp midpoints;
* micro-closures / fast adductions: g drops by 0.3–0.6 within one second and recovers
  exponentially (tau 2–10 s): "fast partial closings that recover slowly" (real record);
* magnet distance d = d_closed + g (d_open − d_closed) [mm]; Hall counts c = K / d^3
  (field ~ cube of the distance, FIELD.md), so counts RISE as the valve closes;
  K and the distances vary per animal (closed ≈ 700–820 counts, open ≈ 270–330);
* noise: Gaussian, sd = 1–5 % of the animal's open–closed span in counts, then rounded
  to integer ADC counts;
* defects, in counts (the direction physically impossible for a valve is "beyond open",
  i.e. LOWER counts: a valve cannot open in one sample and shut again, FIELD.md):
  one-sample spikes and 2–3-sample spikes toward open, a one-sample glitch replacing the
  first/last ramp sample of a closure (an edge glitch), a spike on the first and on the
  last sample of a day, a stuck sensor (exactly the same count) for exactly 30 min and
  45 min at the level it had (and a 29-min one that must NOT be flagged), a step change
  (the magnet shifted: its distance to the sensor changes for the rest of the record, by
  ±80 counts at the moment of the shift; ``shift_offset``: ±80 counts at every opening, an
  offset of the sensor's output, which x^(-1/3) does not move alike at both ends).

Rates 0.1, 1 and 10 Hz: the sample times are t_k = k / hz + 5 ms (a logger's clock).
Everything is seeded: the same (kind, seed, hz) gives the same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DAY_S = 86400.0


@dataclass
class Truth:
    closures: list = field(default_factory=list)     # (animal, start_s, end_s)
    micros: list = field(default_factory=list)       # (animal, t0_s, depth, tau_s)
    ramps: list = field(default_factory=list)        # (animal, t0_s, t1_s) ramp intervals
    spikes: dict = field(default_factory=dict)       # kind → list of (animal, [sample idx])
    flats: list = field(default_factory=list)        # (animal, i0, n, should_flag)
    shifts: list = field(default_factory=list)       # (animal, t_s, size_counts)
    closing: dict = field(default_factory=dict)      # animal → closes at all (bool)
    noise_pct: dict = field(default_factory=dict)    # animal → noise sd in % of span


@dataclass
class Animal:
    name: str
    t: np.ndarray          # s since the record's start (day 0, 00:00 UTC)
    counts: np.ndarray     # float (integer-valued) Hall counts
    g: np.ndarray          # true opening
    K: float = 0.0         # counts x mm^3 (c = K / d^3)
    d: np.ndarray = None   # magnet distance [mm]
    noise: np.ndarray = None   # the noise added to the counts (before rounding)
    d_closed: float = 0.0  # [mm]
    d_open: float = 0.0    # [mm]
    noise_sd: float = 0.0  # [counts]

    def noise_sd_opening(self, g: float = 0.9) -> float:
        """The counts' noise sd seen on the opening y = (x - x_closed)/(x_open - x_closed),
        x = counts^(-1/3), at the opening g [opening fraction]: sd_counts x |dy/dc| there
        (x^(-1/3) is steeper at the open end: the same counts noise is more opening noise)."""
        d = self.d_closed + g * (self.d_open - self.d_closed)
        c = self.K / d ** 3
        span_x = (self.d_open - self.d_closed) / self.K ** (1 / 3)
        return float(self.noise_sd * c ** (-4 / 3) / 3 / span_x)


def open_level(rng, t, lo, hi):
    """A slow drift between lo and hi: two sinusoids of 3–9 h periods plus a slow walk."""
    p1, p2 = rng.uniform(3, 9, 2) * 3600
    f1, f2 = rng.uniform(0, 2 * np.pi, 2)
    u = 0.5 + 0.35 * np.sin(2 * np.pi * t / p1 + f1) + 0.15 * np.sin(2 * np.pi * t / p2 + f2)
    return lo + (hi - lo) * np.clip(u, 0, 1)


def add_closure(g, t, t0, ramp_down, hold, ramp_up, closed_level):
    """Piecewise linear closure from the current open level (in place). Returns (start, end)
    = midpoints of the ramps [s]."""
    t1, t2, t3 = t0 + ramp_down, t0 + ramp_down + hold, t0 + ramp_down + hold + ramp_up
    base = g.copy()
    down = (t >= t0) & (t < t1)
    g[down] = base[down] + (closed_level - base[down]) * (t[down] - t0) / ramp_down
    g[(t >= t1) & (t < t2)] = closed_level
    up = (t >= t2) & (t < t3)
    g[up] = closed_level + (base[up] - closed_level) * (t[up] - t2) / ramp_up
    return t0 + ramp_down / 2, t2 + ramp_up / 2


def micro_drop(t, t0, depth, tau):
    """The true drop of a micro-closure below the open level at times t [opening fraction]
    (the shape add_micro gives it): depth (t - t0) within the first second, then
    depth exp(-(t - t0 - 1) / tau); 0 before t0."""
    t = np.asarray(t, dtype=float)
    return np.where(t < t0, 0.0, np.where(t < t0 + 1.0, depth * (t - t0),
                                          depth * np.exp(-(t - t0 - 1.0) / tau)))


def add_micro(g, t, t0, depth, tau):
    """A fast partial drop at t0 (within 1 s) recovering exponentially with tau [s]."""
    a = (t >= t0) & (t < t0 + 1.0)
    g[a] -= depth * (t[a] - t0)
    b = t >= t0 + 1.0
    g[b] -= depth * np.exp(-(t[b] - t0 - 1.0) / tau)


def make_animal(rng, name, t, kind, noise_pct, truth, n_closures_per_day=2, micro_every_s=None,
                closing=True):
    days = (t[-1] - t[0]) / DAY_S if len(t) else 0
    if closing:
        g = open_level(rng, t, 0.8, 1.0)
    else:
        g = open_level(rng, t, 0.5, 1.0)
    busy = []   # (t0, t1) intervals already used by an event
    if closing:
        n = max(1, int(round(n_closures_per_day * max(days, 0.25))))
        span = t[-1] - t[0]
        for k in range(n):
            for _ in range(50):
                hold = rng.uniform(20, 120) * 60
                t0 = t[0] + rng.uniform(0.02, 0.98) * span - hold / 2
                rd, ru = rng.uniform(2, 6, 2)
                t1 = t0 + rd + hold + ru
                if t0 > t[0] + 600 and t1 < t[-1] - 600 and all(t1 + 900 < a or t0 - 900 > b for a, b in busy):
                    break
            else:
                continue
            s, e = add_closure(g, t, t0, rd, hold, ru, rng.uniform(0.0, 0.04))
            busy.append((t0, t1))
            truth.closures.append((name, s, e))
            truth.ramps.append((name, t0, t0 + rd))
            truth.ramps.append((name, t0 + rd + hold, t1))
    if micro_every_s:
        tm = t[0] + rng.exponential(micro_every_s)
        while tm < t[-1] - 120:
            if all(tm + 90 < a or tm - 60 > b for a, b in busy):
                depth = rng.uniform(0.3, 0.6)
                tau = rng.uniform(2, 10)
                add_micro(g, t, tm, depth, tau)
                truth.micros.append((name, tm, depth, tau))
                busy.append((tm, tm + 60))
            tm += max(90.0, rng.exponential(micro_every_s))
    g = np.clip(g, 0.0, 1.0)
    dc = rng.uniform(3.8, 4.2)
    do = dc + rng.uniform(1.4, 1.7)
    closed_counts = rng.uniform(700, 820)
    K = closed_counts * dc ** 3
    d = dc + g * (do - dc)
    counts = K / d ** 3
    span = K / dc ** 3 - K / do ** 3
    sd = noise_pct / 100.0 * span
    noise = rng.normal(0, sd, len(t))
    counts = np.round(counts + noise)
    truth.closing[name] = bool(closing)
    truth.noise_pct[name] = noise_pct
    return Animal(name, t, counts, g, K, d, noise, dc, do, sd), span, busy


def times(hz, seconds, start_s=0.0):
    n = int(round(seconds * hz))
    return start_s + np.arange(n) / hz + 0.005


def inject_qc(rng, a: Animal, span, hz, truth, busy, day_edges):
    """Defects of the QC set, on one closing animal (in place on a.counts)."""
    c, t, name = a.counts, a.t, a.name
    used = np.zeros(len(c), bool)

    def free(i0, n, margin):
        lo, hi = max(i0 - margin, 0), min(i0 + n + margin, len(c))
        tt0, tt1 = t[lo], t[hi - 1]
        if used[lo:hi].any() or any(not (tt1 < b0 - 60 or tt0 > b1 + 60) for b0, b1 in busy) \
                or any(tt0 - 60 <= e <= tt1 + 60 for e in day_edges):   # one day's file each
            return False
        used[lo:hi] = True
        return True

    def add(kind, idx):
        truth.spikes.setdefault(kind, []).append((name, list(map(int, idx))))

    margin = int(max(40, 40 * hz))
    # one-sample and 2-3-sample spikes toward open (lower counts), 40-80 % of the span (a
    # glitch stands out: >= 8 noise sd at the noisiest 5 %)
    for kind, lengths in (("spike_1", [1] * 6), ("spike_2_3", [2, 3, 2, 3])):
        for L in lengths:
            for _ in range(200):
                i0 = int(rng.integers(margin, len(c) - margin))
                if free(i0, L, margin):
                    c[i0:i0 + L] -= rng.uniform(0.4, 0.8) * span
                    add(kind, range(i0, i0 + L))
                    break
    # glitches at closure edges: replace the first ramp sample of a closure's start or the
    # last ramp sample of its end by a value beyond the open level
    for (nm, r0, r1) in [r for r in truth.ramps if r[0] == name]:
        inside = np.flatnonzero((t >= r0) & (t < r1))
        if len(inside):
            i = inside[0] if rng.random() < 0.5 else inside[-1]
        else:   # ramp shorter than a sample (0.1 Hz): the first sample after it
            i = int(np.searchsorted(t, r1))
            if i >= len(c):
                continue
        # the open level is on the open side of the ramp: before a closure's start, after
        # its end (the lower count of the two sides; higher = more closed)
        level_open = min(np.median(c[max(i - margin, 0):max(i - 2, 1)]),
                         np.median(c[min(i + 3, len(c) - 1):min(i + margin, len(c))]))
        c[i] = min(c[i], level_open) - rng.uniform(0.4, 0.8) * span
        used[max(i - 2, 0):i + 3] = True
        add("edge_glitch", [i])
    # first and last sample of each day (inside the record)
    odd = int(name.lstrip("m")) % 2      # first sample of the day on even animals, last on odd
    for d0 in day_edges:
        i_first = int(np.searchsorted(t, d0))
        for i, kind in ((i_first, "day_first"), (i_first - 1, "day_last"))[odd:odd + 1]:
            if 0 < i < len(c) - 1 and not any(b0 - 60 <= t[i] <= b1 + 60 for b0, b1 in busy):
                c[i] -= rng.uniform(0.4, 0.8) * span
                add(kind, [i])
    # stuck sensor: exactly N samples equal (N·p = 30 min, 45 min; 29 min must not flag)
    for minutes, should in ((30, True), (45, True), (29, False)):
        n = int(round(minutes * 60 * hz))
        for _ in range(500):
            i0 = int(rng.integers(margin, len(c) - n - margin))
            if free(i0, n, margin):
                c[i0:i0 + n] = c[i0]
                truth.flats.append((name, i0, n, should))
                break
    np.clip(c, 0, 1022, out=c)         # a 10-bit ADC reads 0..1023 (1023 = saturation)


def inject_shift(rng, a: Animal, truth, busy, model="distance", where=(0.3, 0.7)):
    """A step change for the rest of the record, of +/-80 counts at the moment it happens.

    model "distance" (a magnet that moved on the shell): its distance to the sensor changes
    by delta for the rest of the record, d -> d + delta, delta chosen so that the counts at
    the shift time change by the size; with c = K/d^3 the step in counts is then larger at
    the closed end than at the open end, and x = c^(-1/3) moves by delta/K^(1/3) at every
    opening. model "offset" (the sensor's electronics: an offset of the Hall output): the
    same number of counts is added at every opening."""
    for _ in range(200):
        ts = a.t[0] + rng.uniform(*where) * (a.t[-1] - a.t[0])
        if all(ts < b0 - 1800 or ts > b1 + 1800 for b0, b1 in busy):
            break
    size = 80.0 * (1 if rng.random() < 0.5 else -1)
    after = a.t >= ts
    if model == "offset":
        a.counts[after] += size
    else:
        k = int(np.searchsorted(a.t, ts))
        c0 = a.K / a.d[k] ** 3
        delta = (a.K / (c0 + size)) ** (1 / 3) - a.d[k]
        a.counts[after] = np.round(a.K / (a.d[after] + delta) ** 3 + a.noise[after])
    truth.shifts.append((a.name, float(ts), size))


def exposure(kind: str, seed: int, hz: float, animals: int, seconds: float, noise=(1, 5),
             start_s: float = 0.0):
    """One device's record: (list of Animal, Truth).

    kind: ``never_close`` (all open, drifting 0.5–1.0), ``closures`` (2 closures per day
    on 2 channels, the others never close), ``micro`` (1 closure per day and micro-closures
    every ~8 min on every channel), ``qc`` (closing animals with every defect), ``shift`` (closing
    animals, one with a step change of the magnet's distance), ``shift_offset`` (the same with
    an offset of the counts instead), ``shift_late`` (as shift, the shift in the last 30-10 %
    of the record: a 48-h record from 18:00 has it on its third day, after a 2-day fit).
    """
    # shift_offset: the same animals and shift times as shift, only the shift model differs
    rng = np.random.default_rng([seed, int(hz * 10), sum(map(ord, "shift" if kind == "shift_offset" else kind))])
    truth = Truth()
    t = times(hz, seconds, start_s)
    out = []
    edges = [k * DAY_S for k in range(1, int((start_s + seconds) // DAY_S) + 1)
             if start_s < k * DAY_S < start_s + seconds]
    for i in range(animals):
        name = f"m{i}"
        nz = float(np.round(np.interp(i, [0, max(animals - 1, 1)], noise), 2))
        if kind == "never_close":
            a, span, busy = make_animal(rng, name, t, kind, nz, truth, closing=False)
        elif kind == "closures":
            a, span, busy = make_animal(rng, name, t, kind, nz, truth, closing=i < 2)
        elif kind == "micro":   # closing animals (so their span is known) with micro-closures
            a, span, busy = make_animal(rng, name, t, kind, nz, truth, closing=True, micro_every_s=480,
                                        n_closures_per_day=1)
        elif kind == "qc":
            a, span, busy = make_animal(rng, name, t, kind, nz, truth, closing=True)
            inject_qc(rng, a, span, hz, truth, busy, edges)
        elif kind in ("shift", "shift_offset", "shift_late"):
            a, span, busy = make_animal(rng, name, t, kind, nz, truth, closing=True)
            if i == 0:    # shift_late: in the last 30-10 % of the record (after a 2-day fit of 48 h)
                inject_shift(rng, a, truth, busy, "offset" if kind == "shift_offset" else "distance",
                             (0.7, 0.9) if kind == "shift_late" else (0.3, 0.7))
        else:
            raise ValueError(kind)
        out.append(a)
    return out, truth


def tidy_frame(animals, device="valve01", start="2026-01-20"):
    """The animals as a 20_split tidy frame (ts UTC, bio_signal counts, flag 0)."""
    from pyjama import tidy

    t0 = pd.Timestamp(start, tz="UTC")
    parts = []
    for a in animals:
        ts = t0 + pd.to_timedelta(np.round(a.t * 1e6).astype(np.int64), unit="us")
        parts.append(pd.DataFrame({"ts": ts, "sensor": a.name, "value": a.counts}))
    df = pd.concat(parts, ignore_index=True)
    return tidy.frame(ts=df["ts"], device_id=device, domain="bio_signal", sensor=df["sensor"],
                      value=df["value"].to_numpy(float), quality_flag=0)


def real_oyster(path, start="2026-01-20"):
    """The real HFNI record as a tidy frame: time [h since start] → ts = start + time,
    opening [mm] as sensor m0 (larger = more open). Returns (frame, t_s, opening)."""
    from pyjama import tidy

    d = pd.read_csv(path)
    t_s = d["time"].to_numpy() * 3600.0
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.round(t_s * 1e6).astype(np.int64), unit="us")
    df = tidy.frame(ts=ts, device_id="hfni01", domain="bio_signal", sensor="m0",
                    value=d["opening"].to_numpy(float), quality_flag=0)
    return df, t_s, d["opening"].to_numpy(float)


def real_closures(t_s, x):
    """Truth closures of the real record, by a rule stated here (on the raw mm, not through
    the steps): the centred 5-sample (8 s) median of the opening is closed from when it
    falls below P1 + 0.1 × (P99 − P1) until it rises above P1 + 0.2 × (P99 − P1) (FIELD.md:
    closed below about 0.1 of the range, open above 0.1–0.2, a hysteresis band); runs over 5 min; start/end = first/last sample of the run [s]. They are the four long
    closures the record's README lists (about 45 min, 3 h, 13 min, 3.3 h)."""
    m = pd.Series(x).rolling(5, center=True, min_periods=1).median().to_numpy()
    p1, p99 = np.percentile(x, [1, 99])
    closed, opened = p1 + 0.1 * (p99 - p1), p1 + 0.2 * (p99 - p1)
    state, out, start = 1, [], None
    for k, v in enumerate(m):          # hysteresis: closed below 0.1, open again above 0.2
        if state == 1 and v < closed:
            state, start = 0, k
        elif state == 0 and v > opened:
            state = 1
            if t_s[k - 1] - t_s[start] > 300:
                out.append(("m0", float(t_s[start]), float(t_s[k - 1])))
    return out
