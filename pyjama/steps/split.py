"""20_split: parsed files → one tidy partition per (device, UTC day), sorted, de-duplicated."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import Step
from .. import io, tidy
from ..errors import UserError


def merge_duplicates(df: pd.DataFrame, policy: str):
    """Resolve several rows of one (sensor, ts) by ``policy`` (first | last | mean).

    ``df`` is in input order (raw files by name, then line order). Returns (frame, number
    of rows merged away). The flag of a merged row is the flag of the kept row (first/last)
    or OK when any merged value was OK (mean).
    """
    if df.empty:
        return df, 0
    key = ["sensor", "ts"]
    dup = df.duplicated(key, keep=False)
    if not dup.any():
        return df, 0
    if policy in ("first", "last"):
        out = df.drop_duplicates(key, keep=policy)
    elif policy == "mean":
        single = df[~dup]
        multi = df[dup]
        agg = multi.groupby(key, sort=False, observed=True).agg(
            device_id=("device_id", "first"), domain=("domain", "first"),
            value=("value", "mean"), quality_flag=("quality_flag", "min")).reset_index()
        out = pd.concat([single, agg[tidy.COLUMNS]], ignore_index=True)
    else:
        raise ValueError(f"unknown duplicates policy {policy!r}")
    return out, len(df) - len(out)


def split_partition(frames, device: str, day: str, duplicates: str = "first",
                    sort: str = "sensor_ts"):
    """Pure core of 20_split: rows of (device, day) from several parsed files → one frame.

    ``frames`` are the rows each input file holds for that (device, day), in file order.
    Returns (frame, counts) with counts for the ledger.
    """
    frames = [f for f in frames if len(f)]
    df = pd.concat(frames, ignore_index=True) if frames else tidy.empty()
    rows_in = len(df)
    df, merged = merge_duplicates(df, duplicates)
    order = ["sensor", "ts"] if sort == "sensor_ts" else ["ts", "sensor"]
    df = df.sort_values(order, kind="stable").reset_index(drop=True)
    df["quality_flag"] = df["quality_flag"].astype(np.uint8)
    counts = {"rows_in": rows_in, "rows_out": len(df),
              "rejected": {f"duplicate (sensor, ts) merged: {duplicates}": merged},
              "input_files": len(frames)}
    return tidy.conform(df), counts


class SplitStep(Step):
    script = "20_split.py"
    kind = "20_split"
    summary = "merge parsed files, cut into (device, UTC day), sort, resolve duplicates"

    def input_files(self, project, st, device, day):
        return {"data": project.parsed_inputs(st["input_stage"], device, day)}

    def direct_partitions(self, project, st, window, devices=None):
        return [(d, day) for d, day in project.partitions([st["input_stage"]])
                if window.contains_day(day) and (not devices or d in devices)]

    def run_partition(self, project, st, device, day):
        from .parser import read_parsed

        files = self.input_files(project, st, device, day)["data"]
        frames = []
        for f in files:
            if not (project.root / f).exists():
                raise UserError(f"{f}: input missing; run the parser step first "
                                f"(python3 pyjama.py run 10_parser.py --with ...)")
            frames.append(read_parsed(project.root / f, device, day))
        df, counts = split_partition(frames, device, day, st["duplicates"], st["sort"])
        outs = self.output_files(st, device, day)
        meta = io.provenance(self.script, st.path, st.digest, files)
        io.write_tidy(project.root / outs["data"], df, meta)
        entry = io.ledger_entry(self.script, f"{device}/{day}", **counts)
        io.write_json(project.root / outs["ledger"], entry)
        return entry
