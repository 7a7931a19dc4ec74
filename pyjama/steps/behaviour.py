"""60_behaviour: valvometry metrics per (device, UTC day). A thin shell over pyjama.behaviour.

Outputs (one (device, day) partition each; device_id and day live in the path):

- ``output_stage`` (60_behaviour): the input tidy rows unchanged, plus ``<sensor>__state``
  and ``<sensor>__velocity`` per analysed animal; its footer holds the ledger;
- ``events_stage`` (60_events): closures, micro-closures, synchronised closures;
- ``daily_stage`` (60_daily): one row per animal;
- ``device_daily_stage`` (60_device_daily): one row per device and day.
"""
from __future__ import annotations


import sys
from typing import ClassVar

from . import Output, PartitionStep, edge_reader
from .. import io
from ..behaviour import DAILY_SCHEMA, DEVICE_DAILY_SCHEMA, EVENTS_SCHEMA, NEIGHBOUR_EDGE, ArrowDay
from ..errors import UserError


def read_day_rows(path, device, day) -> ArrowDay:
    """The "data" reader: the day's rows of the input partition (what ``io.read_tidy``
    reads) as an arrow table — compute_behaviour reads its columns from arrow; a slow
    logger's day of a few hundred rows would spend more on building the pandas frame."""
    return ArrowDay(io.read_day(path, day) if io.multi_day(path) else io.read_parquet(path), device)


class BehaviourStep(PartitionStep):
    script = "60_behaviour.py"
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

    # the day's rows and the previous day's last NEIGHBOUR_EDGE (only those rows are read),
    # both as arrow tables (ArrowDay): compute_behaviour takes them as they are
    readers: ClassVar[dict] = {"data": read_day_rows,
                               "previous": edge_reader("previous", NEIGHBOUR_EDGE, ArrowDay)}

    def pass_on(self, st, frames, tables, counts):
        """:meth:`PartitionStep.pass_on`, given the input's tidy frame when ``$.keep`` needs it."""
        if st.get("keep", ".*") != ".*" and isinstance(frames.get("data"), ArrowDay):
            frames = {**frames, "data": frames["data"].frame()}
        return super().pass_on(st, frames, tables, counts)

    def input_files(self, project, st, device, day):
        """The day's partition and, when the plan has it, D−1 of the input stage: the
        velocity window reaches back across midnight. Not D+1: a new day would then re-run
        the 60 job of the day before the day before (D−1 reads D, whose clean re-runs when
        D+1 arrives); the day's last W/2 stays NaN (docs/steps/behaviour-aggregate.md)."""
        return {"data": io.partition_file(st.exposure, st["input_stage"], device, day, period=st.partition),
                "previous": self.adjacent_inputs(project, st, device, day)["previous"]}

    SCHEMAS = {"events": EVENTS_SCHEMA, "daily": DAILY_SCHEMA, "device_daily": DEVICE_DAILY_SCHEMA}

    def output_tables(self, st):
        out = {"data": Output(st["output_stage"])}
        for key, cfg in self.STAGE_KEYS:
            out[key] = Output(st[cfg], self.SCHEMAS[key])
        return out

    def compute(self, frames, st, device, day):
        """Pure: the tidy partition → (tables by output key, ledger counts)."""
        from ..behaviour import compute_behaviour

        previous = frames["previous"][0] if frames.get("previous") else None
        res = compute_behaviour(frames["data"], day, st.params, previous=previous)
        for w in res.counts.get("warnings", []):   # one line per animal not counted
            print(f"warning: {w}", file=sys.stderr)
        tables = {"data": res.data, "events": res.events, "daily": res.daily,
                  "device_daily": res.device_daily}
        return tables, res.counts
