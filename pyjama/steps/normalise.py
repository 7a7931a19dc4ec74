"""50_normalise: per (device, sensor) opening in [0, 1]; a thin shell over pyjama.normalise.

The percentile fit lives in ``data/<EXPO>/_meta/<output_stage>/fit/<device>.json`` (outside
the stage's dataset tree). How the DAG treats it:

* every normalise partition of a device lists that device's fit file as an input;
* the fit rule (``<rule>_fit``) is declared ONLY for devices whose fit file does not exist
  when the DAG is built: a fresh exposure fits itself, once;
* once it exists the fit file is a plain source file: nothing rewrites it, new days never
  refit, and an explicit ``pyjama.py run 50_normalise.py --with … --fit`` (which rewrites it)
  makes the next workflow run redo that device's normalise partitions and what follows.
"""
from __future__ import annotations

import json
import math
import re
import sys

import pandas as pd

from . import Option, PartitionStep, Rule
from .. import io, tidy
from ..config import check_regex as _check_regex, digest
from ..errors import UserError
from ..normalise import (build_fit, compute_rolling_bounds, cut_to_period,
                         direction_for, fit_mismatch, normalise_frame,
                         select_fit_days, selected_sensors, span_check)
from ..timewindow import parse_bound, shift_day

FIT_DIR = "fit"


def read_fit_file(path, device=None, day=None) -> dict:
    """The content of a fit file; unreadable JSON is a one-line error saying how to refit."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{io.relative(path)}: not a readable fit file ({exc}); refit it with "
                        "pyjama.py run 50_normalise.py --with <config> --fit") from None


class NormaliseStep(PartitionStep):
    script = "50_normalise.py"
    summary = "opening in [0, 1] per device and sensor: percentile fit (a readable file) or rolling min/max"
    options = (Option("--fit", "50_normalise: (re)write the fit file of each device (method percentile)"),)
    readers = {"params": read_fit_file}

    # ---------------------------------------------------------------- config
    def check_config(self, params, source):
        def check_regex(where, text):
            _check_regex(text, f"{source}: {where}", r"^m\d+__cbrt_inv$")

        check_regex("$.sensors", params["sensors"])
        for i, rule in enumerate(params["direction"]):
            check_regex(f"$.direction[{i}].sensors", rule["sensors"])
            if rule["direction"] == "auto" and params["method"] != "percentile":
                raise UserError(f"{source}: $.direction[{i}].direction: 'auto' is not allowed with "
                                f"method {params['method']!r}; allowed: 'up' or 'down' ('auto' is "
                                "decided at fit time, method 'percentile' only)")
        if not params["p_low"] < params["p_high"]:
            raise UserError(f"{source}: $.p_high: {params['p_high']!r} is not allowed; allowed: a "
                            f"percentile above $.p_low ({params['p_low']!r})")
        fit = params["fit"]
        if (fit["from"] is None) != (fit["to"] is None):
            missing = "to" if fit["to"] is None else "from"
            raise UserError(f"{source}: $.fit.{missing}: null is not allowed when $.fit."
                            f"{'from' if missing == 'to' else 'to'} is set; allowed: both from and to "
                            "(a fixed period) or both null (the first $.fit.first_days days)")
        if fit["from"] is not None:
            bounds = {}
            for side in ("from", "to"):
                text = fit[side]
                if "NOW" in text:
                    raise UserError(f"{source}: $.fit.{side}: {text!r} is not allowed; allowed: a fixed "
                                    "YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (a fit period must not move)")
                try:
                    bounds[side] = parse_bound(text, side)
                except UserError as exc:
                    raise UserError(f"{source}: $.fit.{side}: {str(exc).split(': ', 1)[1]}") from None
            if bounds["from"] > bounds["to"]:
                raise UserError(f"{source}: $.fit.to: {fit['to']!r} is not allowed; allowed: a bound "
                                f"at or after $.fit.from ({fit['from']!r})")

    # ---------------------------------------------------------------- paths and the DAG
    def fit_file(self, st, device="{device}") -> str:
        """Relative path of a device's fit file."""
        return io.meta_file(st.exposure, st["output_stage"], FIT_DIR, f"{device}.json")

    def input_files(self, project, st, device, day):
        files = {"data": io.partition_file(st.exposure, st["input_stage"], device, day, period=st.partition)}
        if st["method"] == "percentile":
            files["params"] = self.fit_file(st, device)
        else:
            files["neighbours"] = [io.partition_file(st.exposure, st["input_stage"], device, d, period=st.partition)
                                   for d in self.neighbour_days(project, st, device, day)]
        return files

    def neighbour_days(self, project, st, device, day):
        """Days within ± W/2 of ``day`` that the project has data for (rolling method)."""
        reach = math.ceil(float(st["rolling"]["window_hours"]) / 2 / 24)
        known = self._known_partitions(project)
        days = [shift_day(day, k) for k in range(-reach, reach + 1) if k]
        return [d for d in days if (device, d) in known]

    def _known_partitions(self, project):
        cache = getattr(self, "_known", None)
        if cache is None or cache[0] is not project:
            cache = (project, set(project.partitions()))
            self._known = cache
        return cache[1]

    def device_days(self, project) -> dict:
        """device → sorted days with data (from the raw index, as the DAG sees them)."""
        out: dict = {}
        for dev, day in project.partitions():
            out.setdefault(dev, []).append(day)
        return out

    def fit_days(self, project, st, device):
        """(days, period) of a device's fit; a one-line error when it has no data there."""
        days, period = select_fit_days(self.device_days(project).get(device, []), st["fit"])
        if not days:
            have = self.device_days(project).get(device, [])
            span = f"{have[0]}..{have[-1]}" if have else "no days at all"
            raise UserError(f"{st.path}: $.fit: device {device!r} has no data in the fit period "
                            f"{period['declared']} (it has {span}); allowed: a period that overlaps "
                            "the device's data")
        return days, period

    def rules(self, project, st, window) -> list:
        rules = super().rules(project, st, window)
        if st["method"] != "percentile":
            return rules
        missing = sorted(dev for dev in self.device_days(project)
                         if not (project.root / self.fit_file(st, dev)).exists())
        if not missing:
            return rules   # every fit exists: plain source files, never rebuilt by the workflow
        fit_inputs = {dev: list(dict.fromkeys(     # a week's or month's file once
            io.partition_file(st.exposure, st["input_stage"], dev, d, period=st.partition)
            for d in self.fit_days(project, st, dev)[0])) for dev in missing}

        def inputs(device, _files=fit_inputs):
            return {"data": _files[device]}

        rules.append(Rule(
            name=self.rule_name(st) + "_fit", step=st, outputs={"params": self.fit_file(st)},
            log=f"logs/{st.exposure}/{st.name}/fit_{{device}}.log",
            wildcard_sets=[{"device": dev} for dev in missing],
            input_function=inputs,
            # only the missing devices: an existing fit must never match this rule
            wildcard_constraints={"device": "|".join(re.escape(d) for d in missing)},
            options={"fit": True},
            target=False,   # built when a normalise partition of the device needs it
        ))
        return rules

    # ---------------------------------------------------------------- running
    def prepare(self, project, st, sel, todo, options, quiet):
        """``--fit`` (re)writes fit files and runs no partition; otherwise the devices of
        ``todo`` without a fit file are fitted first."""
        if options.get("fit"):
            if st["method"] != "percentile":
                raise UserError(f"--fit: {st.path}: $.method is {st['method']!r}; allowed: --fit only "
                                "with method 'percentile' (rolling_minmax has nothing to fit)")
            if sel.window.start is not None or sel.window.end is not None or sel.day:
                raise UserError(f"--fit reads the fit period declared in {st.path} ($.fit); "
                                "--from/--to/--day are not allowed with it")
            targets = list(sel.devices) or [d for d in sorted(self.device_days(project))
                                            if select_fit_days(self.device_days(project)[d], st["fit"])[0]]
            if not targets:
                raise UserError(f"{st.path}: $.fit: no device has data in the fit period")
            return [self.fit_device(project, st, dev, quiet) for dev in targets]
        if st["method"] == "percentile":
            for dev in sorted({d for d, _ in todo}):
                if not (project.root / self.fit_file(st, dev)).exists():
                    self.fit_device(project, st, dev, quiet)
        return None

    def fit_device(self, project, st, device, quiet=True) -> dict:
        """Fit one device from its fit period and write its fit file (always rewritten)."""
        days, period = self.fit_days(project, st, device)
        per_day = [io.partition_file(st.exposure, st["input_stage"], device, d, period=st.partition) for d in days]
        files = list(dict.fromkeys(per_day))        # a week's or a month's file holds several days
        frames = []
        for d, f in zip(days, per_day):
            if not (project.root / f).exists():
                raise io.input_missing(f)
            frames.append(cut_to_period(io.read_tidy(project.root / f, device, d), st["fit"]))
        frames = [f for f in frames if len(f)]
        df = tidy.conform(pd.concat(frames, ignore_index=True)) if frames else tidy.empty()
        content = build_fit(df, st.params, device, period)
        content.update({"exposure": st.exposure, "config": st.path, "inputs": files,
                        "refit": f"python3 pyjama.py run {self.script} --with {st.path} --fit "
                                 f"--device {device}"})
        path = project.root / self.fit_file(st, device)
        old = path.read_bytes() if path.exists() else None
        io.write_json(path, content)
        warnings = [w for e in content["sensors"].values() for w in (e["warning"], e.get("shift_warning")) if w]
        if not period["complete"]:
            warnings.append(f"{device}: fit period {period['declared']} only partly has data "
                            f"({len(days)} day(s)); refit with --fit once it is complete")
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        if not quiet:
            state = "new" if old is None else ("unchanged" if old == path.read_bytes() else "changed")
            print(f"{self.script}: fitted {self.fit_file(st, device)} ({state}): "
                  f"{len(content['sensors'])} sensor(s) from {', '.join(days)}")
        # The fit writes no rows: its entry says how many it read and how many samples
        # entered the percentiles (the rest: other sensors, unusable flags, NaN).
        n_used = sum(e["n_samples"] for e in content["sensors"].values())
        return io.ledger_entry(self.script, f"{device}/{FIT_DIR}", rows_in=len(df), rows_out=len(df),
                               samples_fitted=n_used, warnings=warnings)

    def read_fit(self, project, st, device) -> dict:
        """The fit file of a device, checked against the config it must match."""
        rel = self.fit_file(st, device)
        if not (project.root / rel).exists():
            raise UserError(f"{rel}: fit file missing; fit it: python3 pyjama.py run {self.script} "
                            f"--with {st.path} --fit --device {device}")
        fit = read_fit_file(project.root / rel)
        self.check_fit(fit, st, device)
        return fit

    def check_fit(self, fit, st, device) -> None:
        """A fit made with other fit keys than the config's now is a one-line error."""
        bad = fit_mismatch(fit.get("fit_config", {}), st.params)
        if bad:
            key, old, new = bad
            raise UserError(f"{st.path}: $.{key}: {json.dumps(new)} differs from the fit in "
                            f"{self.fit_file(st, device)} ({json.dumps(old)}); refit: python3 pyjama.py "
                            f"run {self.script} --with {st.path} --fit --device {device}")

    def extra_meta(self, frames):
        return {"pyjama.normalise_fit": digest(frames["params"])} if "params" in frames else {}

    def compute(self, frames, st, device, day):
        """Pure: ``frames["data"]`` + ``frames["params"]`` (the fit file's content,
        percentile) or ``frames["neighbours"]`` (rolling) → normalised frame and counts."""
        data = frames["data"]
        if st["method"] == "percentile":
            self.check_fit(frames["params"], st, device)
            bounds, warnings = self.fitted_bounds(frames["params"], data, st, device)
        else:
            bounds, warnings = self.rolling_bounds(data, frames.get("neighbours", []), st, device)
        out, report = normalise_frame(data, st.params, bounds, device)
        warnings = warnings + report["warnings"]      # level shifts inside the day
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        return {"data": out}, self.ledger_counts(data, out, report, warnings)

    @staticmethod
    def ledger_counts(data, out, report, warnings) -> dict:
        return {"rows_in": len(data), "rows_out": len(out) - report["rows_added"], "rejected": {},
                "rows_added": report["rows_added"], "rows_written": len(out),
                "undefined_flagged_out_of_range": report["undefined"],
                "clipped_to_0": report["clipped_low"], "clipped_to_1": report["clipped_high"],
                "level_shifts": report["level_shifts"], "warnings": warnings}

    def fitted_bounds(self, fit, data, st, device):
        """Per sensor of the partition: low/high/direction from the fit file, and the
        warnings (narrow range re-checked with the current $.min_range, incomplete fit)."""
        bounds, warnings = {}, []
        rel = self.fit_file(st, device)
        for name in selected_sensors(data, st["sensors"]):
            entry = fit["sensors"].get(name)
            if entry is None:
                raise UserError(f"{rel}: no fit for sensor {name!r} of device {device!r}; refit: "
                                f"python3 pyjama.py run {self.script} --with {st.path} --fit "
                                f"--device {device}")
            ok, warning = span_check(fit, name, st["min_range"], st["min_span_share"])
            bounds[name] = {"low": entry["low"], "high": entry["high"], "direction": entry["direction"],
                            "span_ok": ok,   # shifts the fit found in its period [input unit]
                            "shifts": [(pd.Timestamp(s["ts"]).value, float(s["size"]))
                                       for s in entry.get("level_shifts", [])]}
            if warning:
                warnings.append(warning)
        if not fit.get("period", {}).get("complete", True):
            warnings.append(f"{device}: the fit in {rel} covers only {len(fit['period']['days'])} "
                            f"day(s) of {fit['period']['declared']}; refit with --fit once complete")
        return bounds, warnings

    def rolling_bounds(self, data, around, st, device):
        """Per sensor: centred rolling min/max over this day and its neighbours, aligned
        with the sensor's rows of ``data`` sorted by ts."""
        data = tidy.conform(data).sort_values(["sensor", "ts"], kind="stable")
        pool = [tidy.conform(f) for f in [data, *around] if len(f)]
        pool = (pd.concat([f.assign(sensor=f["sensor"].astype(str)) for f in pool], ignore_index=True)
                if pool else tidy.empty())
        bounds, warnings = {}, []
        w = float(st["rolling"]["window_hours"])
        for name in selected_sensors(data, st["sensors"]):
            rows = pool[pool["sensor"].astype(str) == name].sort_values("ts", kind="stable")
            rows = rows[~rows["ts"].duplicated(keep="first")]
            low, high = compute_rolling_bounds(rows["ts"], rows["value"].to_numpy(),
                                               rows["quality_flag"].to_numpy(), w)
            want = data.loc[data["sensor"] == name, "ts"]
            pos = pd.Index(rows["ts"]).get_indexer(want)
            lo, hi = low[pos], high[pos]
            bounds[name] = {"low": lo, "high": hi, "direction": direction_for(name, st["direction"])}
            narrow = int(((hi - lo) < st["min_range"]).sum())
            if narrow:
                warnings.append(f"{device}/{name}: rolling range below $.min_range {st['min_range']:g} "
                                f"for {narrow} of {len(lo)} sample(s)")
        return bounds, warnings
