"""20_split: parsed files → one tidy partition per (device, UTC day), sorted, de-duplicated."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import PartitionStep
from .. import io, tidy


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
    fast = None if duplicates == "mean" else _sorted_first_or_last(df, duplicates, sort)
    if fast is None:
        df, merged = merge_duplicates(df, duplicates)
        order = ["sensor", "ts"] if sort == "sensor_ts" else ["ts", "sensor"]
        df = df.sort_values(order, kind="stable").reset_index(drop=True)
    else:
        df, merged = fast
    df["quality_flag"] = df["quality_flag"].astype(np.uint8)
    counts = {"rows_in": rows_in, "rows_out": len(df),
              "rejected": {f"duplicate (sensor, ts) merged: {duplicates}": merged},
              "input_files": len(frames)}
    return tidy.conform(df), counts


def _sorted_first_or_last(df: pd.DataFrame, policy: str, sort: str):
    """(frame, rows merged away) of :func:`merge_duplicates` (``first`` or ``last``) then the
    stable sort of :func:`split_partition`, from one stable sort of integer keys: the rows of
    one (sensor, ts) end up side by side in input order, so the first (last) of each run is
    the row ``drop_duplicates`` keeps. The same rows in the same order as the pandas path
    (``df.duplicated`` and ``sort_values``: ~0.4 of 0.5 CPU-s of a 1 Hz device-day of 1.1 M
    rows, issue 14), tested against it in tests/test_split.py. The sensor key is the
    categorical's codes when the frame kept one category set (``sort_values`` orders a
    categorical by its categories), else the labels' sorted order, as ``sort_values`` orders
    strings. None when a key is missing (NaT, no sensor): the pandas path decides."""
    if df.empty:
        return None
    sensor, ts = df["sensor"], df["ts"]
    if isinstance(sensor.dtype, pd.CategoricalDtype):
        key = sensor.cat.codes.to_numpy().astype(np.int64)
    else:
        if sensor.isna().any():
            return None
        key = pd.factorize(sensor.to_numpy(), sort=True)[0].astype(np.int64)
    if (key < 0).any() or ts.isna().any():
        return None
    t = tidy.ts_us(ts)
    order = tidy.key_time_order(t, key) if sort == "sensor_ts" else np.lexsort((key, t))
    k, tt = key[order], t[order]
    same = (k[1:] == k[:-1]) & (tt[1:] == tt[:-1])      # row i+1 repeats row i's (sensor, ts)
    if not same.any():
        return df.take(order).reset_index(drop=True), 0
    keep = np.ones(len(order), dtype=bool)
    if policy == "first":
        keep[1:] = ~same
    else:
        keep[:-1] = ~same
    return df.take(order[keep]).reset_index(drop=True), int(len(order) - keep.sum())


def read_parsed(path, device: str, day: str):
    """Rows of one (device, day) from a parsed file, in file order: a filtered read of a raw
    file's, or, from a batch of raw files (week or month partitions: a job reads it for
    each of its days), cut from the batch's table read once (:func:`pyjama.io.read_day`)."""
    from ..timewindow import day_bounds

    if io.is_batch_file(path):
        import pyarrow.compute as pc

        t = io.read_day(path, day)
        t = t.filter(pc.equal(t.column("device_id"), device))
    else:
        start, end = day_bounds(day)
        t = io.read_parquet(path, filters=[("device_id", "=", device), ("ts", ">=", start), ("ts", "<", end)])
    return tidy.from_arrow(t.drop_columns(["device_id"]), device)


class SplitStep(PartitionStep):
    script = "20_split.py"
    summary = "merge parsed files, cut into (device, UTC day), sort, resolve duplicates"
    readers = {"data": read_parsed}

    def input_files(self, project, st, device, day):
        return {"data": project.parsed_inputs(st["input_stage"], device, day)}

    def direct_partitions(self, project, st, sel):
        if sel.day:
            return super().direct_partitions(project, st, sel)
        return [(d, day) for d, day in project.partitions([st["input_stage"]])
                if sel.window.contains_day(day) and (not sel.devices or d in sel.devices)]

    def compute(self, frames, st, device, day):
        df, counts = split_partition(frames["data"], device, day, st["duplicates"], st["sort"])
        return {"data": df}, counts
