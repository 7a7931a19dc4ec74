#!/usr/bin/env python3
"""PyJAMA science validation: QC flags and behaviour events against independent truth.

    python3 bench/validate.py [--size small|full] [--json out.json] [--plot real.png]

Data: bench/valvegen.py (written from FIELD.md and the real records, not from the step code
or pyjama/demo.py) at 0.1, 1 and 10 Hz with several seeds, plus the real HFNI record
../shared/data/real/extremefit_dataOyster.csv (time declared relative to 2026-01-20T00:00Z).

What runs: the library's real steps 30_clean → 40_resample → 50_transform → 50_normalise (fit
on the device's first days, as the workflow does) → 60_behaviour, through each step's
``compute`` with the TEMPLATE configs (configs/_template, exposure filled in): no per-case
tuning. The real record is in mm, not Hall counts: it runs with the same template values
expressed for a calibrated gap (bench/validate.py:HFNI_CHANGES lists every change and why).

Printed, per defect and event kind: recall, precision, timing error, false events per
animal-hour, and the issue-10 target with PASS/MISS. ``--size small`` (seconds) runs in the
test suite; ``full`` is the figure in the README.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import valvegen  # noqa: E402

REAL = REPO.parent / "shared" / "data" / "real" / "extremefit_dataOyster.csv"
START = "2026-01-20"

# size → list of (kind, hz, animals, hours, seeds); records start at 18:00 so they cross
# midnight (first/last sample of a day) and the fit reads both days.
SIZES = {
    "small": [("never_close", 1.0, 4, 6, [1]), ("closures", 1.0, 4, 12, [1]),
              ("micro", 1.0, 3, 6, [1]), ("qc", 1.0, 2, 12, [1]), ("qc", 0.1, 2, 12, [1]),
              ("qc", 10.0, 1, 6, [1]), ("shift", 1.0, 2, 12, [1]), ("shift_offset", 1.0, 2, 12, [1]),
              ("shift_late", 1.0, 2, 48, [1])],
    "full": [("never_close", 1.0, 6, 30, [1, 2]), ("never_close", 0.1, 6, 30, [3]),
             ("never_close", 10.0, 2, 8, [4]),
             ("closures", 1.0, 6, 30, [1, 2]), ("closures", 0.1, 6, 30, [3]),
             ("closures", 10.0, 3, 8, [4]),
             ("micro", 1.0, 4, 12, [1, 2]), ("micro", 0.1, 4, 12, [3]), ("micro", 10.0, 2, 8, [4]),
             ("qc", 1.0, 4, 30, [1, 2]), ("qc", 0.1, 4, 30, [3]), ("qc", 10.0, 2, 8, [4]),
             ("shift", 1.0, 4, 30, [1, 2, 3, 4]), ("shift_offset", 1.0, 4, 30, [1, 2, 3, 4]),
             ("shift_late", 1.0, 4, 48, [1, 2])],
}
RECORD_START_S = 18 * 3600.0

TARGETS = {
    "closure_recall": (">=", 0.95), "closure_precision": (">=", 0.9),
    "micro_false_per_animal_h": ("<=", 0.5), "micro_recall": (">=", 0.8), "micro_precision": (">=", 0.8),
    "closures_on_never_closing_per_animal_h": ("<=", 0.0),
    "spike_recall_spike_1": (">=", 0.8), "spike_recall_spike_2_3": (">=", 0.8),
    "spike_recall_edge_glitch": (">=", 0.8), "spike_recall_day_first": (">=", 0.8),
    "spike_recall_day_last": (">=", 0.8), "ramp_false_flags_per_100_closures": ("<=", 5.0),
    "spike_precision": (">=", 0.99), "flat_recall": (">=", 1.0), "flat_false_stretches": ("<=", 0),
    "shift_recall": (">=", 1.0), "shifted_closure_recall": (">=", 0.95), "shifted_closure_precision": (">=", 0.9),
    "real_closure_recall": (">=", 0.95),
    "real_closure_precision": (">=", 0.9), "real_spike_flags_on_adductions": ("<=", 0),
}

# The real record is a calibrated gap in mm (larger = more open), 1.6 s: the template values
# in the units of that sensor. Everything else (windows, thresholds in opening fraction,
# durations) is the template's.
HFNI_CHANGES = {
    "30_clean": "range [0, 50] mm, no ADC sentinels, spike threshold_abs 0.25 mm (the template's 50 "
                "counts is ~10 % of a Hall span; 10 % of this oyster's ~2.4 mm span)",
    "50_transform": "identity (a calibrated gap is already linear in distance; no x^(-1/3))",
    "50_normalise": "direction up (larger mm = more open); min_range 0.2 mm",
}


# ---------------------------------------------------------------- the steps, as the workflow runs them

def template_configs(tmp: Path, hfni: bool = False) -> dict:
    """Load configs/_template/*.json (exposure VALID) through the real loader."""
    from pyjama.pipeline import load_step_config

    names = {"30_clean": "30_clean.py", "40_resample": "40_resample.py",
             "50_transform": "50_transform.py", "50_normalise": "50_normalise.py",
             "60_behaviour": "60_behaviour.py"}
    out = {}
    for stem, script in names.items():
        raw = json.loads((REPO / "configs" / "_template" / f"{stem}.json").read_text()
                         .replace("{{EXPOSURE}}", "VALID"))
        if hfni:
            raw = hfni_config(stem, raw)
        path = tmp / ("hfni_" if hfni else "") / f"{stem}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(raw))
        out[stem] = load_step_config(script, path, tmp)
        if stem == "50_normalise" and raw.get("shift"):   # the template without its shift check, and
            for label, value in (("off", None), ("flag", {**raw["shift"], "action": "flag"})):   # flagging
                var = tmp / ("hfni_" if hfni else "") / f"50_normalise_shift_{label}.json"
                var.write_text(json.dumps({**raw, "shift": value}))
                out[f"50_normalise_shift_{label}"] = load_step_config(script, var, tmp)
    return out


def hfni_config(stem: str, raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    if stem == "30_clean":
        r = raw["rules"]["bio_signal"]
        r["range"], r["sentinels"] = [0, 50], []
        r["spike"]["threshold_abs"] = 0.25
        if r["spike"].get("direction") == "down":   # glitch = beyond open: up in mm
            r["spike"]["direction"] = "up"
    elif stem == "50_transform":
        raw["transforms"] = [{"sensors": "^m\\d+$", "transform": "identity", "mode": "add",
                              "suffix": "cbrt_inv"}]
    elif stem == "50_normalise":
        raw["direction"] = [{"sensors": "^m\\d+__cbrt_inv$", "direction": "up"}]
        raw["min_range"] = 0.2
        if "min_span" in raw:
            raw["min_span"] = 0.2
    return raw


def by_day(df: pd.DataFrame) -> dict:
    days = df["ts"].dt.strftime("%Y-%m-%d")
    return {d: df[(days == d).to_numpy()].reset_index(drop=True) for d in sorted(days.unique())}


def run_chain(df: pd.DataFrame, cfg: dict, device: str) -> dict:
    """20_split frame of one device → every stage, day by day, as the workflow runs them:
    the 30 job gets its neighbouring days' edges (``previous`` / ``next``), the 60 job the
    previous day's, cut the way their edge readers cut them (pyjama.steps.edge_reader)."""
    from pyjama import behaviour as bh, normalise as nm, qc
    from pyjama.steps import get_step

    clean, resampled, transformed = {}, {}, {}
    qc_counts = {}
    split = by_day(df)
    days = list(split)
    for day in days:
        frames = {"data": split[day], **neighbour_frames(split, day, qc.NEIGHBOUR_EDGE)}
        st = cfg["30_clean"]
        out, counts = get_step(st.script).compute(frames, st, device, day)
        clean[day], qc_counts[day] = out["data"], counts
        out, _ = get_step("40_resample.py").compute({"data": clean[day]}, cfg["40_resample"], device, day)
        resampled[day] = out["data"]
        out, _ = get_step("50_transform.py").compute({"data": resampled[day]}, cfg["50_transform"], device, day)
        transformed[day] = out["data"]
    st = cfg["50_normalise"]
    fit_days, period = nm.select_fit_days(days, st["fit"])
    from pyjama import tidy
    fit_df = nm.cut_to_period(tidy.concat([transformed[d] for d in fit_days]), st["fit"])
    fit = nm.build_fit(fit_df, st.params, device, period)
    events, daily, warnings, normalised, ncounts_all = [], [], [], {}, {}
    nstep, bstep = get_step("50_normalise.py"), get_step("60_behaviour.py")
    for day in days:
        out, ncounts = nstep.compute({"data": transformed[day], "params": fit}, st, device, day)
        warnings += ncounts.get("warnings", [])
        normalised[day], ncounts_all[day] = out["data"], ncounts
    for day in days:
        frames = {"data": normalised[day],   # 60 reads only the day before
                  "previous": neighbour_frames(normalised, day, bh.NEIGHBOUR_EDGE)["previous"]}
        tables, bcounts = bstep.compute(frames, cfg["60_behaviour"], device, day)
        warnings += bcounts.get("warnings", [])
        events.append(tables["events"].assign(day=day))
        daily.append(tables["daily"].assign(day=day))
    return {"clean": tidy.concat(list(clean.values())), "qc_counts": qc_counts, "fit": fit, "normalised": normalised,
            "normalise_counts": ncounts_all, "micro_rule": dict(cfg["60_behaviour"]["micro_closure"]),
            "events": pd.concat(events, ignore_index=True), "daily": pd.concat(daily, ignore_index=True),
            "warnings": sorted(set(w for w in warnings if w))}


def neighbour_frames(by_day_frames: dict, day: str, edge: str) -> dict:
    """``{"previous": [rows], "next": [rows]}``: the neighbouring days' rows within ``edge``
    of ``day`` (empty lists where that day is not in the record), as the jobs read them."""
    from pyjama.timewindow import day_bounds, shift_day

    start, end = (pd.Timestamp(b) for b in day_bounds(day))
    width = pd.Timedelta(edge)
    out = {"previous": [], "next": []}
    prev, nxt = by_day_frames.get(shift_day(day, -1)), by_day_frames.get(shift_day(day, 1))
    if prev is not None:
        out["previous"] = [prev[(prev["ts"] >= start - width).to_numpy()]]
    if nxt is not None:
        out["next"] = [nxt[(nxt["ts"] < end + width).to_numpy()]]
    return out


# ---------------------------------------------------------------- scoring

def animal_of(sensor) -> str:
    return str(sensor).split("__")[0]


def merged_events(ev: pd.DataFrame, kind: str, t0: pd.Timestamp, period: float = 1.0) -> pd.DataFrame:
    """Events of a kind in seconds since the record's day 0; a closure cut at midnight and
    continued the next day is joined into one (the two parts may be up to one raw sample
    ``period`` [s] apart: 40 fills no gap across midnight, so at 0.1 Hz day D's part ends
    at its last sample + 1 grid cell, 9 s before D+1's first)."""
    e = ev[ev["kind"] == kind].copy()
    if not len(e):
        return pd.DataFrame(columns=["animal", "start", "end", "duration_s", "depth"])
    e["animal"] = e["sensor"].map(animal_of)
    e["start"] = (e["start"] - t0).dt.total_seconds()
    e["end"] = (e["end"] - t0).dt.total_seconds()
    e = e.sort_values(["animal", "start"])
    rows = []
    for _, r in e.iterrows():
        if rows and rows[-1]["animal"] == r["animal"] and rows[-1]["cut_end"] and r["cut_start"] \
                and abs(r["start"] - rows[-1]["end"]) < max(2.0, period + 1.0):
            rows[-1]["end"], rows[-1]["cut_end"] = r["end"], r["cut_end"]
            continue
        rows.append({k: r[k] for k in ("animal", "start", "end", "duration_s", "depth", "cut_start", "cut_end")})
    return pd.DataFrame(rows)


def match_closures(truth, det: pd.DataFrame, tol=60.0):
    """Greedy one-to-one: a truth closure is found by a detection whose start AND end are
    within ±tol s. Returns (matched pairs of (start error, end error), n_truth, n_det)."""
    used, pairs = set(), []
    for animal, s, e in truth:
        cand = det[(det["animal"] == animal)] if len(det) else det
        best, best_err = None, None
        for i, r in cand.iterrows():
            if i in used:
                continue
            ds, de = r["start"] - s, r["end"] - e
            if abs(ds) <= tol and abs(de) <= tol and (best is None or abs(ds) + abs(de) < best_err):
                best, best_err = i, abs(ds) + abs(de)
        if best is not None:
            used.add(best)
            pairs.append((det.loc[best, "start"] - s, det.loc[best, "end"] - e))
    return pairs, len(truth), len(det)


def micro_resolvable(t_samples, t0, depth, tau, rule: dict, period_s: float, threshold=None) -> bool:
    """Can the micro-closure definition see this injected drop at this sampling rate? Its
    rule applied to the TRUE drop (no noise) at the logger's sample times: at least
    ``min_samples`` samples with drop >= ``min_drop``, spanning (n samples x the grid period,
    the samples between interpolated) at least ``min_duration``. A drop shorter than one
    sample period is one sample at most: not resolvable (scored apart, not dropped)."""
    from pyjama.timewindow import parse_duration

    i0, i1 = np.searchsorted(t_samples, [t0, t0 + 60.0])
    ts = t_samples[i0:i1]
    seen = ts[valvegen.micro_drop(ts, t0, depth, tau) >= (rule["min_drop"] if threshold is None else threshold)]
    if len(seen) < max(int(rule.get("min_samples", 1)), 1):
        return False
    dur = (seen[-1] - seen[0]) + period_s
    return dur >= parse_duration(rule["min_duration"], "min_duration", True).total_seconds() - 1e-9


def match_micro(truth, det: pd.DataFrame, hz: float):
    """A truth drop at t0 is found by a micro-closure starting in [t0 − max(3 s, 1 sample
    period), t0 + tol] (tol = max(6 s, 2 sample periods)): on the 1 s grid of a 0.1 Hz record
    the cells before the first low sample are interpolated toward it, so the dip can start up
    to one raw period before t0. Returns (start errors, n_truth, n_matched_det)."""
    tol = max(6.0, 2.0 / hz)
    early = max(3.0, 1.0 / hz)
    used, errs = set(), []
    for animal, t0, *_ in truth:
        cand = det[(det["animal"] == animal) & (det["start"] >= t0 - early) & (det["start"] <= t0 + tol)] \
            if len(det) else det
        for i, r in cand.iterrows():
            if i not in used:
                used.add(i)
                errs.append(r["start"] - t0)
                break
    return errs, len(truth), len(used)


class Score:
    """Accumulates counts per metric over sets, then prints one table."""

    def __init__(self):
        self.rows = []     # (group, metric, value, detail)

    def add(self, group, metric, value, detail=""):
        self.rows.append((group, metric, value, detail))


def score_set(kind, hz, seed, animals, truth, res, hours, sc: Score, t0):
    g = f"{kind} {hz:g} Hz s{seed}"
    ev = res["events"]
    det_cl = merged_events(ev, "closure", t0, 1.0 / hz)
    det_mc = merged_events(ev, "micro_closure", t0, 1.0 / hz)
    out = {}
    # closures
    pairs, n_t, n_d = match_closures(truth.closures, det_cl)
    never = [a for a, c in truth.closing.items() if not c]
    on_never = int(det_cl["animal"].isin(never).sum()) if len(det_cl) else 0
    out["closures"] = {"truth": n_t, "detected": n_d, "matched": len(pairs),
                       "start_err": [p[0] for p in pairs], "end_err": [p[1] for p in pairs],
                       "on_never": on_never, "never_animal_h": len(never) * hours}
    # micro-closures
    micro_animals = {a for a, *_ in truth.micros}
    if truth.micros:
        # recall over the drops the definition can see at this rate; the others are counted
        # apart ("not resolvable"); precision: a detection matching any injected drop is true
        t_raw = {a.name: a.t for a in res["animals"]}
        rule = res["micro_rule"]
        seeable = [m for m in truth.micros if micro_resolvable(t_raw[m[0]], m[1], m[2], m[3], rule, 1.0 / hz)]
        unseeable = [m for m in truth.micros if m not in seeable]
        errs, n_t, _ = match_micro(seeable, det_mc, hz)
        _, _, n_m = match_micro(truth.micros, det_mc, hz)
        e_u, _, _ = match_micro(unseeable, det_mc, hz)
        by_noise = {}
        for a in sorted(micro_animals):
            e_a, n_a, _ = match_micro([m for m in seeable if m[0] == a], det_mc, hz)
            f, n = by_noise.get(truth.noise_pct[a], (0, 0))
            by_noise[truth.noise_pct[a]] = (f + len(e_a), n + n_a)
        # diagnostic: the drops above the definition's noise floor D = max(min_drop, k x sd),
        # sd = the TRUE noise of the opening at its open level (the generator's), i.e. the
        # drops a perfect estimate of the noise would let the definition see
        an_of = {x.name: x for x in res["animals"]}
        fit_s = res["fit"]["sensors"]

        def true_sd(a):   # on the fitted scale; 40 averages hz samples into each 1 s cell
            e, x = fit_s[f"{a}__cbrt_inv"], an_of[a]
            span_true = (x.d_open - x.d_closed) / x.K ** (1 / 3)
            return x.noise_sd_opening(0.9) * span_true / (e["high"] - e["low"]) / np.sqrt(max(hz, 1.0))

        floor = {a: max(rule["min_drop"], rule["noise_factor"] * true_sd(a)) for a in micro_animals}
        above = [m for m in seeable if micro_resolvable(t_raw[m[0]], m[1], m[2], m[3], rule, 1.0 / hz,
                                                        floor[m[0]])]
        e_ab, _, _ = match_micro(above, det_mc, hz)
        out["micro"] = {"truth": n_t, "found": len(errs), "detected": len(det_mc), "matched_det": n_m,
                        "start_err": errs, "by_noise": by_noise,
                        "not_resolvable": len(unseeable), "not_resolvable_found": len(e_u),
                        "above_floor": len(above), "above_floor_found": len(e_ab),
                        "true_noise_sd": {a: round(true_sd(a), 4) for a in sorted(micro_animals)}}
    else:
        quiet = [a for a in animals if a not in micro_animals]
        out["micro_quiet"] = {"detected": int(len(det_mc)), "animal_h": len(quiet) * hours}
    if len(det_mc):
        out["micro_min_duration"] = float(det_mc["duration_s"].min())
    # QC on the clean output (rows keep their order per sensor and ts)
    cl = res["clean"]
    flags = {}
    for a in animals:
        sub = cl[cl["sensor"].astype(str) == a].sort_values("ts")
        flags[a] = sub["quality_flag"].to_numpy()
    spiked_truth = {a: set() for a in animals}
    kinds = {}
    for kind_, inst in truth.spikes.items():
        found = sum(all(flags[a][i] == 2 for i in idx) for a, idx in inst)
        kinds[kind_] = (found, len(inst))
        for a, idx in inst:
            spiked_truth[a].update(idx)
    n_flag2 = sum(int((f == 2).sum()) for f in flags.values())
    true_flag2 = sum(int(sum(flags[a][i] == 2 for i in spiked_truth[a])) for a in animals)
    # flags on injected micro-closures (fast adductions) that are one sample at this rate and
    # back at the next: the spike rule's physical side ("a run that comes straight back, to
    # within 3 noise sd") cannot tell them from a glitch toward closed; counted apart
    t_of = {a.name: a.t for a in res["animals"]}
    rule = res.get("micro_rule")
    on_adduction, on_resolvable = 0, 0
    for a, t_m, depth, tau in truth.micros:
        i0, i1 = np.searchsorted(t_of[a], [t_m, t_m + 1.0 + 3 * tau])
        k = int((flags[a][i0:i1] == 2).sum())
        on_adduction += k
        if rule and micro_resolvable(t_of[a], t_m, depth, tau, rule, 1.0 / hz):
            on_resolvable += k
    out["spikes"] = {"kinds": kinds, "flagged": n_flag2 - on_adduction, "true": true_flag2,
                     "on_adductions": on_adduction, "on_resolvable_adductions": on_resolvable}
    # ramp samples flagged (not the glitch itself)
    ramp_false = 0
    tt = {a.name: a.t for a in res["animals"]}
    for a, r0, r1 in truth.ramps:
        idx = np.flatnonzero((tt[a] >= r0) & (tt[a] < r1))
        ramp_false += int(sum(flags[a][i] != 0 and i not in spiked_truth[a] for i in idx))
    out["ramps"] = {"false": ramp_false, "closures": len(truth.closures)}
    # flat lines
    fl = {"should": 0, "found": 0, "false_stretches": 0, "false_samples": 0, "dur_flagged": []}
    flat_truth = {a: np.zeros(len(flags[a]), bool) for a in animals}
    for a, i0, n, should in truth.flats:
        frac = float(np.mean(flags[a][i0:i0 + n] == 4))
        if should:
            fl["should"] += 1
            fl["found"] += frac >= 0.99
            flat_truth[a][i0:i0 + n] = True
        elif frac > 0:
            fl["false_stretches"] += 1
    for a in animals:
        fl["false_samples"] += int(((flags[a] == 4) & ~flat_truth[a]).sum())
    out["flat"] = fl
    # level shifts: reported by 30_clean's ledger (key level_shifts) when implemented
    reported = [s for c in res["qc_counts"].values() for s in c.get("level_shifts", [])]
    sh = {"truth": len(truth.shifts), "found": 0, "reported": len(reported), "time_err": [], "size_err": []}
    for a, ts, size in truth.shifts:
        tsa = t0 + pd.Timedelta(seconds=ts)
        best = None
        for r in reported:
            if r["sensor"] == a and abs((pd.Timestamp(r["ts"]) - tsa).total_seconds()) <= 300:
                best = r
        if best:
            sh["found"] += 1
            sh["time_err"].append((pd.Timestamp(best["ts"]) - tsa).total_seconds())
            sh["size_err"].append(best["size"] - size)
    # 50_normalise's check: the shifts it found on the normalised opening, and the closures
    # of the shifted animals (the samples after a shift are left unnormalised, flag 3)
    sh["normalise_reported"] = sum(len(c.get("level_shifts", [])) for c in res.get("normalise_counts", {}).values())
    shifted = {a for a, _, _ in truth.shifts}
    if shifted:
        t_sh = [c for c in truth.closures if c[0] in shifted]
        d_sh = det_cl[det_cl["animal"].isin(shifted)] if len(det_cl) else det_cl
        pairs_sh, _, _ = match_closures(t_sh, d_sh)
        sh["closures_shifted"] = {"truth": len(t_sh), "detected": len(d_sh), "matched": len(pairs_sh)}
        # the opening itself after the shift, against the true opening g (what a wrong scale
        # spoils even where the closures survive): median |y - g| of the samples with an
        # opening, and the share of samples after the shift with none (NaN)
        norm = pd.concat(list(res["normalised"].values()), ignore_index=True) if res.get("normalised") else None
        err, none = [], [0, 0]
        for a_, ts_, _ in truth.shifts:
            an = next(x for x in res["animals"] if x.name == a_)
            rows_ = norm[norm["sensor"].astype(str) == f"{a_}__cbrt_inv__norm"]
            sec = (rows_["ts"] - t0).dt.total_seconds().to_numpy()
            after = sec >= ts_ + 60
            y = rows_["value"].to_numpy()[after]
            g_true = np.interp(sec[after], an.t, an.g)
            err += list(np.abs(y - g_true)[np.isfinite(y)])
            none[0] += int((~np.isfinite(y)).sum())
            none[1] += len(y)
        sh["opening_after"] = {"abs_err": float(np.median(err)) if err else float("nan"),
                               "abs_err_p95": float(np.percentile(err, 95)) if err else float("nan"),
                               "no_opening": none[0], "samples": none[1]}
    out["shift"] = sh
    # daily state of never-closing animals
    d = res["daily"]
    d = d[d["sensor"].map(animal_of).isin(never)]
    out["never_daily"] = {"share_closed_max": float(np.nanmax(d["share_closed"])) if len(d) else np.nan,
                          "status": sorted(set(d["status"])) if "status" in d else ["(no status column)"]}
    out["warnings"] = res["warnings"]
    return g, out


def run_real(cfg, sc_plot=None):
    df, t_s, x = valvegen.real_oyster(REAL, START)
    truth = valvegen.real_closures(t_s, x)
    res = run_chain(df, cfg, "hfni01")
    t0 = pd.Timestamp(START, tz="UTC")
    det_all = merged_events(res["events"], "closure", t0)
    # the targets are on the four LONG closures; shorter real dips (< 5 min) are listed
    det = det_all[(det_all["end"] - det_all["start"]) > 300] if len(det_all) else det_all
    short = det_all[(det_all["end"] - det_all["start"]) <= 300] if len(det_all) else det_all
    pairs, n_t, n_d = match_closures(truth, det)
    mc = merged_events(res["events"], "micro_closure", t0)
    flags = res["clean"].sort_values("ts")["quality_flag"].to_numpy()
    out = {"closures": {"truth": n_t, "detected": n_d, "matched": len(pairs),
                        "short": [round(float(r["end"] - r["start"])) for _, r in short.iterrows()],
                        "start_err": [p[0] for p in pairs], "end_err": [p[1] for p in pairs]},
           "micro": {"detected": int(len(mc)),
                     "one_sample": int((mc["duration_s"] <= 1.0).sum()) if len(mc) else 0,
                     "min_duration": float(mc["duration_s"].min()) if len(mc) else None,
                     "depth_median": float(mc["depth"].median()) if len(mc) else None},
           "spike_flags": int((flags == 2).sum()),
           # a flagged sample below both neighbours is a drop: a real adduction lost to QC
           "spike_flags_down": int(sum(1 for i in np.flatnonzero(flags == 2)
                                       if 0 < i < len(x) - 1 and x[i] < min(x[i - 1], x[i + 1]))), "flags": {int(k): int(v) for k, v in
                                                              zip(*np.unique(flags, return_counts=True))},
           "warnings": res["warnings"]}
    if sc_plot:
        plot_real(t_s, x, det_all, mc, truth, sc_plot)
    return out


def plot_real(t_s, x, det, mc, truth, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(14, 9))
    axes[0].plot(t_s / 3600, x, lw=0.4, color="k")
    for _, s, e in truth:
        axes[0].axvspan(s / 3600, e / 3600, color="tab:green", alpha=0.2)
    for _, r in det.iterrows():
        axes[0].axvspan(r["start"] / 3600, r["end"] / 3600, ymax=0.1, color="tab:red", alpha=0.6)
    axes[0].set_title("HFNI oyster: opening [mm]; green = truth closures, red bars = detected")
    if len(mc):
        axes[0].plot(mc["start"] / 3600, np.interp(mc["start"], t_s, x), "v", color="tab:blue", ms=3)
    # two zooms on the busiest micro-closure hours
    for ax, k in zip(axes[1:], range(2)):
        if len(mc):
            h = np.bincount((mc["start"] // 3600).astype(int), minlength=25)
            hour = np.argsort(h)[::-1][k]
        else:
            hour = 6 + 6 * k
        sel = (t_s >= hour * 3600) & (t_s < hour * 3600 + 1800)
        ax.plot(t_s[sel] / 60, x[sel], lw=0.6, color="k")
        if len(mc):
            m = mc[(mc["start"] >= hour * 3600) & (mc["start"] < hour * 3600 + 1800)]
            for _, r in m.iterrows():
                ax.axvspan(r["start"] / 60, r["end"] / 60, color="tab:blue", alpha=0.3)
        ax.set_title(f"30 min from hour {hour}: blue = reported micro-closures")
        ax.set_xlabel("minutes since start")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


# ---------------------------------------------------------------- the table

def ratio(a, b):
    return a / b if b else float("nan")


def summarise(results: dict, real: dict) -> list:
    """Rows (metric, scope, value, target, status, detail) over all sets."""
    rows = []

    def target_row(metric, scope, value, detail=""):
        op, goal = TARGETS.get(metric, (None, None))
        if op is None or value is None or (isinstance(value, float) and np.isnan(value)):
            status = "n/a" if op is None else "—"
        else:
            ok = value >= goal if op == ">=" else value <= goal
            status = "PASS" if ok else "MISS"
        tgt = f"{op} {goal:g}" if op else ""
        rows.append((metric, scope, value, tgt, status, detail))

    def med_abs(v):
        return f"median |err| {np.median(np.abs(v)):.0f} s, max {np.max(np.abs(v)):.0f} s" if v else ""

    by_rate = {}
    for g, o in results.items():
        kind, hz = g.split()[0], g.split()[1]
        by_rate.setdefault((kind, hz), []).append(o)
    for (kind, hz), outs in sorted(by_rate.items(), key=lambda k: (k[0][0], float(k[0][1]))):
        scope = f"{kind} @{hz} Hz"
        c = [o["closures"] for o in outs]
        nt, nd, nm = sum(x["truth"] for x in c), sum(x["detected"] for x in c), sum(x["matched"] for x in c)
        se = [e for x in c for e in x["start_err"]] + [e for x in c for e in x["end_err"]]
        if nt:
            target_row("closure_recall", scope, ratio(nm, nt), f"{nm}/{nt}; {med_abs(se)}")
            target_row("closure_precision", scope, ratio(nm, nd), f"{nm}/{nd} detections")
        never_h = sum(x["never_animal_h"] for x in c)
        if never_h:
            cause = ""
            target_row("closures_on_never_closing_per_animal_h", scope,
                       ratio(sum(x["on_never"] for x in c), never_h),
                       f"{sum(x['on_never'] for x in c)} in {never_h:g} animal-h{cause}")
        q = [o["micro_quiet"] for o in outs if "micro_quiet" in o]
        if q:
            n, h = sum(x["detected"] for x in q), sum(x["animal_h"] for x in q)
            target_row("micro_false_per_animal_h", scope, ratio(n, h), f"{n} in {h:g} animal-h (none injected)")
        m = [o["micro"] for o in outs if "micro" in o]
        if m:
            nt, nf = sum(x["truth"] for x in m), sum(x["found"] for x in m)
            nd, nmd = sum(x["detected"] for x in m), sum(x["matched_det"] for x in m)
            errs = [e for x in m for e in x["start_err"]]
            per = {}
            for x in m:
                for nz, (f, n) in x["by_noise"].items():
                    per[nz] = (per.get(nz, (0, 0))[0] + f, per.get(nz, (0, 0))[1] + n)
            noise = ", ".join(f"{nz:g} %: {f}/{n}" for nz, (f, n) in sorted(per.items()))
            nu, nuf = sum(x["not_resolvable"] for x in m), sum(x["not_resolvable_found"] for x in m)
            target_row("micro_recall", scope, ratio(nf, nt),
                       f"{nf}/{nt} resolvable; start {med_abs(errs)}; by noise (% of the counts span): {noise}")
            na, naf = sum(x["above_floor"] for x in m), sum(x["above_floor_found"] for x in m)
            rows.append(("micro_recall_above_noise_floor", scope, ratio(naf, na), "", "n/a",
                         f"{naf}/{na}: the resolvable drops >= max(min_drop, noise_factor x the TRUE noise sd "
                         "of the opening at 0.9 open, on the fitted scale) on >= min_samples samples; the "
                         "rest of the recall's misses are below the definition's noise floor"))
            rows.append(("micro_not_resolvable", scope, nu, "", "n/a",
                         f"injected drops the definition cannot see at {hz} Hz (fewer than min_samples "
                         f"samples >= min_drop below open, or shorter than min_duration): {nu} of {nt + nu}, "
                         f"{nuf} of them reported anyway (not in the recall)"))
            target_row("micro_precision", scope, ratio(nmd, nd), f"{nmd}/{nd} detections")
        mins = [o["micro_min_duration"] for o in outs if "micro_min_duration" in o]
        if mins:
            rows.append(("micro_shortest_s", scope, min(mins), "", "n/a", "shortest reported micro-closure"))
        if kind == "qc":
            for k in ("spike_1", "spike_2_3", "edge_glitch", "day_first", "day_last"):
                f = sum(o["spikes"]["kinds"].get(k, (0, 0))[0] for o in outs)
                n = sum(o["spikes"]["kinds"].get(k, (0, 0))[1] for o in outs)
                if n:
                    target_row(f"spike_recall_{k}", scope, ratio(f, n), f"{f}/{n}")
            rf, ncl = sum(o["ramps"]["false"] for o in outs), sum(o["ramps"]["closures"] for o in outs)
            target_row("ramp_false_flags_per_100_closures", scope, 100 * ratio(rf, ncl), f"{rf} on {ncl} closures")
            fl = [o["flat"] for o in outs]
            target_row("flat_recall", scope, ratio(sum(x["found"] for x in fl), sum(x["should"] for x in fl)),
                       f"{sum(x['found'] for x in fl)}/{sum(x['should'] for x in fl)} stuck stretches of 30 and "
                       f"45 min fully flagged; {sum(x['false_samples'] for x in fl)} flag-4 samples outside them")
            target_row("flat_false_stretches", scope, sum(x["false_stretches"] for x in fl),
                       "29-min stuck stretches flagged (N·p < 30 min)")
        if kind.startswith("shift"):
            s = [o["shift"] for o in outs]
            nt, nf = sum(x["truth"] for x in s), sum(x["found"] for x in s)
            te = [e for x in s for e in x["time_err"]]
            target_row("shift_recall", scope, ratio(nf, nt),
                       f"{nf}/{nt} reported by 30; {sum(x['reported'] for x in s)} reports; {med_abs(te)}")
            for label, key in (("", "closures_shifted"), ("_without_50_shift_check", "closures_shifted_off"),
                               ("_with_50_shift_flag", "closures_shifted_flag")):
                cs = [x[key] for x in s if key in x]
                if cs:
                    m_, t_, d_ = (sum(x[k] for x in cs) for k in ("matched", "truth", "detected"))
                    rep = sum(x.get("normalise_reported" + (key[len("closures_shifted"):]), 0) for x in s)
                    detail = (f"{m_}/{t_}, precision {m_}/{d_} (closures of the animals with a step change); "
                              f"{rep} shift(s) seen by 50")
                    oa = [x[key.replace("closures_shifted", "opening_after")] for x in s]
                    n_none, n_all = sum(o["no_opening"] for o in oa), sum(o["samples"] for o in oa)
                    detail += (f"; opening after the shift: median |y - g| {np.nanmedian([o['abs_err'] for o in oa]):.3f}"
                               f" (p95 {np.nanmax([o['abs_err_p95'] for o in oa]):.3f}), {n_none}/{n_all} samples without one")
                    if label:
                        rows.append((f"shifted_closure_recall{label}", scope, ratio(m_, t_), "", "n/a", detail))
                    else:
                        target_row("shifted_closure_recall", scope, ratio(m_, t_), detail)
                        target_row("shifted_closure_precision", scope, ratio(m_, d_), f"{m_}/{d_} detections")
        sp_f = sum(o["spikes"]["flagged"] for o in outs)
        sp_t = sum(o["spikes"]["true"] for o in outs)
        sp_a = sum(o["spikes"].get("on_adductions", 0) for o in outs)
        sp_r = sum(o["spikes"].get("on_resolvable_adductions", 0) for o in outs)
        if sp_f or kind == "qc":
            target_row("spike_precision", scope, ratio(sp_t, sp_f), f"{sp_t}/{sp_f} flagged samples injected"
                       + (f" (and {sp_a} on injected adductions, below)" if sp_a else ""))
        if sp_a:
            rows.append(("spike_flags_on_adductions", scope, sp_a, "", "n/a",
                         f"flag 2 on injected fast adductions ({hz} Hz): {sp_a - sp_r} of them one high sample "
                         "back at the next, which the spike rule's physical side takes for a glitch (and the "
                         f"micro-closure definition cannot see: min_samples); {sp_r} on adductions it can see"))
        nd = [o["never_daily"] for o in outs if not np.isnan(o["never_daily"]["share_closed_max"])]
        if nd:
            rows.append(("never_closing_share_closed_max", scope, max(x["share_closed_max"] for x in nd), "",
                         "n/a", "60_daily state: " + ",".join(sorted({s for x in nd for s in x["status"]}))))
    if real:
        c = real["closures"]
        se = c["start_err"] + c["end_err"]
        target_row("real_closure_recall", "real HFNI", ratio(c["matched"], c["truth"]),
                   f"{c['matched']}/{c['truth']}; starts {[round(e) for e in c['start_err']]} s, "
                   f"ends {[round(e) for e in c['end_err']]} s")
        target_row("real_closure_precision", "real HFNI", ratio(c["matched"], c["detected"]),
                   f"{c['matched']}/{c['detected']} detections over 5 min; also {len(c.get('short', []))} "
                   f"short closures (real dips, s): {c.get('short', [])}")
        m = real["micro"]
        rows.append(("real_micro_closures", "real HFNI", m["detected"], "", "n/a",
                     f"{m['one_sample']} of one sample; shortest {m['min_duration']} s; median depth "
                     f"{m['depth_median']}"))
        target_row("real_spike_flags_on_adductions", "real HFNI", real["spike_flags_down"],
                   f"flag-2 samples below both neighbours (drops = adductions); {real['spike_flags']} flag-2 "
                   "samples in all (the others: 1-2-sample rises toward open, see the plot)")
    return rows


def fmt(v):
    if isinstance(v, float):
        return "nan" if np.isnan(v) else (f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}")
    return str(v)


def print_table(rows, file=sys.stdout):
    print(f"{'metric':<40} {'scope':<24} {'value':>8} {'target':>8}  {'':4}  detail", file=file)
    for metric, scope, value, tgt, status, detail in rows:
        print(f"{metric:<40} {scope:<24} {fmt(value):>8} {tgt:>8}  {status:4}  {detail}", file=file)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--plot", help="PNG of the real record with its closures and micro-closures")
    ap.add_argument("--no-real", action="store_true", help="skip the real record")
    ap.add_argument("--only", help="run only sets whose kind starts with this")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = template_configs(Path(tmp))
        t0 = pd.Timestamp(START, tz="UTC")
        for kind, hz, n_animals, hours, seeds in SIZES[args.size]:
            if args.only and not kind.startswith(args.only):
                continue
            for seed in seeds:
                animals, truth = valvegen.exposure(kind, seed, hz, n_animals, hours * 3600.0,
                                                   start_s=RECORD_START_S)
                df = valvegen.tidy_frame(animals, start=START)
                res = run_chain(df, cfg, "valve01")
                res["animals"] = animals
                g, out = score_set(kind, hz, seed, [a.name for a in animals], truth, res, hours, None, t0)
                if kind.startswith("shift"):   # the same record without 50's shift check, and flagging
                    for label in ("off", "flag"):
                        if f"50_normalise_shift_{label}" not in cfg:
                            continue
                        var = run_chain(df, {**cfg, "50_normalise": cfg[f"50_normalise_shift_{label}"]}, "valve01")
                        var["animals"] = animals
                        _, o2 = score_set(kind, hz, seed, [a.name for a in animals], truth, var, hours, None, t0)
                        out["shift"][f"closures_shifted_{label}"] = o2["shift"]["closures_shifted"]
                        out["shift"][f"normalise_reported_{label}"] = o2["shift"]["normalise_reported"]
                        out["shift"][f"opening_after_{label}"] = o2["shift"]["opening_after"]
                results[g] = out
        real = None
        if not args.no_real and REAL.exists() and not args.only:
            real = run_real(template_configs(Path(tmp), hfni=True), args.plot)
    rows = summarise(results, real)
    print(f"PyJAMA validation ({args.size}; template configs; {time.perf_counter() - t_start:.1f} s)")
    print_table(rows)
    warn = sorted({w for o in results.values() for w in o["warnings"]} | set((real or {}).get("warnings", [])))
    if warn:
        print(f"\n{len(warn)} distinct warning(s) from the steps, e.g.:")
        for w in warn[:8]:
            print(f"  {w}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "sets": results, "real": real},
                                              default=lambda o: o if not isinstance(o, np.generic) else o.item(),
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
