"""60_behaviour: valvometry metrics per (device, UTC day). A thin shell over pyjama.behaviour.

Outputs (one (device, day) partition each; device_id and day live in the path):

- ``output_stage`` (60_behaviour): the input tidy rows unchanged, plus ``<sensor>__state``
  and ``<sensor>__velocity`` per analysed animal; holds ``_ledger.json``;
- ``events_stage`` (60_events): closures, micro-closures, synchronised closures;
- ``daily_stage`` (60_daily): one row per animal;
- ``device_daily_stage`` (60_device_daily): one row per device and day.
"""
from __future__ import annotations


import sys

import numpy as np
import pyarrow as pa

from . import Step
from .. import io
from ..errors import UserError

TS = pa.timestamp("us", tz="UTC")

EVENTS_SCHEMA = pa.schema([
    ("kind", pa.string()), ("sensor", pa.string()), ("start", TS), ("end", TS),
    ("duration_s", pa.float64()), ("depth", pa.float64()), ("cut_start", pa.bool_()),
    ("cut_end", pa.bool_()), ("n_animals", pa.int32()), ("share_active", pa.float64()),
    ("animals", pa.string()),
])
DAILY_SCHEMA = pa.schema([
    ("sensor", pa.string()), ("samples_expected", pa.int64()), ("samples_usable", pa.int64()),
    ("share_open", pa.float64()), ("share_closed", pa.float64()), ("share_unknown", pa.float64()),
    ("share_missing", pa.float64()), ("closures", pa.int64()), ("closure_mean_duration_s", pa.float64()),
    ("micro_closures", pa.int64()), ("velocity_abs_mean", pa.float64()),
    ("velocity_abs_p99", pa.float64()), ("range", pa.float64()), ("active", pa.bool_()),
    ("noise_sd", pa.float64()), ("status", pa.string()),
])
DEVICE_DAILY_SCHEMA = pa.schema([
    ("animals", pa.int32()), ("active_animals", pa.int32()), ("samples_expected", pa.int64()),
    ("samples_recorded", pa.int64()), ("samples_usable", pa.int64()),
    ("completeness_pct", pa.float64()), ("usable_pct", pa.float64()), ("closures", pa.int64()),
    ("micro_closures", pa.int64()), ("sync_closures", pa.int64()),
])


def to_table(df, schema: pa.Schema) -> pa.Table:
    """A pandas frame → arrow table with exactly ``schema`` (explicit types: deterministic)."""
    cols = {}
    for f in schema:
        s = df[f.name]
        if pa.types.is_timestamp(f.type):
            arr = pa.array(s.to_numpy(dtype="datetime64[us]"), type=f.type)
        elif pa.types.is_string(f.type):
            arr = pa.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                            for v in s], type=f.type)
        else:
            arr = pa.array(s.to_numpy(), type=f.type, from_pandas=True)
        cols[f.name] = arr
    return pa.table(cols, schema=schema)


class BehaviourStep(Step):
    script = "60_behaviour.py"
    kind = "60_behaviour"
    summary = "valvometry: open/closed state, closures, micro-closures, velocity, daily and sync summaries"

    STAGE_KEYS = (("events", "events_stage"), ("daily", "daily_stage"),
                  ("device_daily", "device_daily_stage"))

    def check_config(self, params, source):
        from ..behaviour import read_durations
        from ..config import check_regex, check_stage

        check_regex(params["sensors"], f"{source}: $.sensors", "__norm$")
        sp = params["state"]
        if not sp["open_above"] > sp["closed_below"]:
            raise UserError(f"{source}: $.state.open_above: {sp['open_above']!r} is not allowed; allowed: "
                            f"a number above $.state.closed_below ({sp['closed_below']!r})")
        read_durations(params, source)
        seen = {params["output_stage"]: "$.output_stage"}
        for _, key in self.STAGE_KEYS:
            check_stage(params[key], f"{source}: $.{key}")
            if params[key] in seen:
                raise UserError(f"{source}: $.{key}: {params[key]!r} is not allowed; allowed: a stage "
                                f"other than {seen[params[key]]}")
            seen[params[key]] = f"$.{key}"

    def output_stages(self, st):
        out = {"data": st["output_stage"]}
        for key, cfg in self.STAGE_KEYS:
            out[key] = st[cfg]
        return out

    def compute(self, frames, st, device, day):
        """Pure: the tidy partition → (tables by output key, ledger counts)."""
        from ..behaviour import compute_behaviour

        res = compute_behaviour(frames["data"], day, st.params)
        for w in res.counts.get("warnings", []):   # one line per animal not counted
            print(f"warning: {w}", file=sys.stderr)
        tables = {"data": res.data, "events": res.events, "daily": res.daily,
                  "device_daily": res.device_daily}
        return tables, res.counts

    def run_partition(self, project, st, device, day):
        files = self.input_files(project, st, device, day)
        path = project.root / files["data"]
        if not path.exists():
            raise UserError(f"{files['data']}: input missing; run the step writing "
                            f"{st['input_stage']} first")
        tables, counts = self.compute({"data": io.read_tidy(path, device)}, st, device, day)
        meta = io.provenance(self.script, st.path, st.digest, [files["data"]])
        outs = self.output_files(st, device, day)
        io.write_tidy(project.root / outs["data"], tables["data"], meta)
        io.write_table(project.root / outs["events"], to_table(tables["events"], EVENTS_SCHEMA), meta)
        io.write_table(project.root / outs["daily"], to_table(tables["daily"], DAILY_SCHEMA), meta)
        io.write_table(project.root / outs["device_daily"],
                       to_table(tables["device_daily"], DEVICE_DAILY_SCHEMA), meta)
        entry = io.ledger_entry(self.script, f"{device}/{day}", **counts)
        io.write_json(project.root / outs["ledger"], entry)
        return entry
