"""30_clean: one (device, day) of 20_split → the same rows with quality flags (never deletions).

The rules are pure functions in :mod:`pyjama.qc`; this class only checks the config and
calls :func:`pyjama.qc.clean_frame`. docs/steps/clean-resample.md documents every key.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar


from . import PartitionStep
from .. import io, qc
from ..config import check_regex
from ..errors import UserError
from ..timewindow import DURATION_HINT, day_bounds, parse_duration

WINDOW_ALLOWED = f"an odd number of samples >= 3, or {DURATION_HINT}"


def check_window(window, where: str) -> None:
    """A window is an odd number of samples >= 3 or a positive duration (None: absent)."""
    if window is None:
        return
    if isinstance(window, int):
        if window < 3 or window % 2 == 0:
            raise UserError(f"{where}: {window!r} is not allowed; allowed: {WINDOW_ALLOWED}")
        return
    try:
        parse_duration(window, where)
    except UserError:
        raise UserError(f"{where}: {window!r} is not allowed; allowed: {WINDOW_ALLOWED}") from None


def check_rule(rule: dict, where: str, partial: bool) -> None:
    """Semantic checks of one rule object (``partial``: a per-sensor override, whose
    missing keys come from the domain's rule)."""
    rng = rule.get("range")
    if rng is not None and None not in rng and rng[0] > rng[1]:
        raise UserError(f"{where}.range: {rng!r} is not allowed; allowed: [min, max] with min <= max "
                        "(null for an open side)")
    spike = rule.get("spike")
    if isinstance(spike, dict):
        for key in ("window", "context_window"):
            check_window(spike.get(key), f"{where}.spike.{key}")
        keys = ("threshold_mad", "threshold_abs")
        if partial:   # an override: only what it states (the rest comes from the domain)
            both_null = all(k in spike and spike[k] is None for k in keys)
        else:
            merged = {**qc.schema_defaults("30_clean", "spike"), **spike}
            both_null = all(merged[k] is None for k in keys)
        if both_null:
            raise UserError(f"{where}.spike: threshold_mad and threshold_abs are both null; "
                            "allowed: at least one threshold")
    flat = rule.get("flat")
    if isinstance(flat, dict) and "min_duration" in flat:
        parse_duration(flat["min_duration"], f"{where}.flat.min_duration")


def edge_array_reader(side: str, length: str):
    """A reader (path, device, day) → the rows of a neighbouring day's file within ``length``
    of ``day`` (those :func:`pyjama.steps.edge_reader` reads: side "previous" keeps [day
    start − length, day start), "next" [day end, day end + length)) as the
    :class:`pyjama.qc.Edge` that :func:`pyjama.qc.clean_frame` makes of their tidy frame,
    made from the arrow table without one (pandas' frame was most of the cost of reading a
    slow logger's edge). A table it cannot take exactly is read into a tidy frame."""
    def read(path, device, day):
        import pandas as pd
        import pyarrow as pa

        from .. import tidy

        start, end = day_bounds(day)
        width = pd.Timedelta(length).to_pytimedelta()
        lo, hi = (start - width, start) if side == "previous" else (end, end + width)
        if io.multi_day(path):        # a week's or a month's file: the same rows, from memory
            table = io.read_day(path, day, lo, hi)
        else:
            unit = pa.timestamp("us", tz="UTC")
            table = io.read_parquet(path, filters=[("ts", ">=", pa.scalar(lo, unit)),
                                                   ("ts", "<", pa.scalar(hi, unit))])
        edge = edge_of_arrow(table)
        return edge if edge is not None else tidy.from_arrow(table, device)

    read.__name__ = f"read_{side}_edge"
    return read


def edge_of_arrow(table):
    """``qc.Edge.of_frame(tidy.from_arrow(table, device))`` of a table with the file schema,
    straight from its arrays: times, values, flags and each sensor's rows in time order (as
    :func:`pyjama.tidy.sensor_groups` orders them: one stable sort on (domain, sensor, ts),
    the codes being the dictionaries' indices, which pandas' categories keep). None when
    the table might give something else (several chunks, nulls, other types)."""
    import numpy as np

    from .. import tidy

    if table.schema.names != tidy.FILE_SCHEMA.names or \
            [f.type for f in table.schema] != [f.type for f in tidy.FILE_SCHEMA]:
        return None
    if not table.num_rows:
        empty = np.zeros(0, dtype=np.int64)
        return qc.Edge(empty, np.zeros(0), np.zeros(0, dtype=np.uint8), {})
    ts, dom, sen = table.column("ts"), table.column("domain"), table.column("sensor")
    if dom.num_chunks != 1 or sen.num_chunks != 1 or ts.null_count or dom.null_count or sen.null_count:
        return None
    dom, sen = dom.chunk(0), sen.chunk(0)
    names = sen.dictionary.to_pylist()
    if len(set(names)) != len(names) or None in names or \
            len(set(dom.dictionary.to_pylist())) != len(dom.dictionary) or dom.dictionary.null_count:
        return None
    ts_us = ts.to_numpy().astype(np.int64)
    dom_codes = dom.indices.to_numpy().astype(np.int64)
    sen_codes = sen.indices.to_numpy().astype(np.int64)
    key = dom_codes * (len(names) + 1) + sen_codes
    order = np.lexsort((ts_us, key))
    cuts = np.flatnonzero(np.diff(key[order])) + 1
    rows = {str(names[sen_codes[idx[0]]]): idx for idx in np.split(order, cuts)}
    return qc.Edge(ts_us * 1000, table.column("value").to_numpy(), table.column("quality_flag").to_numpy(), rows)


# A week's or a month's input file of at most this many rows is made one tidy frame, kept
# for the job's days (a few MB for a slow logger; a 1 Hz month is read day by day).
WHOLE_FRAME_ROWS = 500_000
_WHOLE: dict = {}


def read_day_rows(path, device, day):
    """The tidy rows of ``day`` in the input partition file, as :func:`pyjama.io.read_tidy`
    reads them. Of a week's or a month's file (at most :data:`WHOLE_FRAME_ROWS` rows) they
    are cut from one tidy frame of the whole file, made once per job: ``tidy.from_arrow``
    of a slow logger's day was ~1 ms, as much as its tests. The same rows in file order,
    the same columns, dtypes and categories (the file's dictionaries)."""
    import numpy as np
    import pyarrow as pa

    whole = _whole_frame(Path(path), device) if io.multi_day(path) else None
    if whole is None:
        return io.read_tidy(path, device, day)
    frame, ts_us = whole
    unit = pa.timestamp("us", tz="UTC")
    lo, hi = (pa.scalar(b, unit).value for b in day_bounds(day))
    rows = np.flatnonzero((ts_us >= lo) & (ts_us < hi))
    if not len(rows):
        return io.read_tidy(path, device, day)
    if rows[-1] - rows[0] + 1 == len(rows):        # a day's rows are one block of the file
        return frame.iloc[rows[0]:rows[-1] + 1].reset_index(drop=True)
    return frame.take(rows).reset_index(drop=True)


def _whole_frame(path: Path, device: str):
    """(tidy frame of the whole file, its ts [µs]) or None (too many rows, or dictionaries
    in several chunks, which pandas would unify differently for a day's rows). Kept while
    the file's size, mtime and inode stay (a rewritten file is read again)."""
    import numpy as np
    import pyarrow.parquet as pq

    from .. import tidy

    try:
        st = path.stat()
    except FileNotFoundError:
        return None                 # read_tidy says so in one line
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino, device)
    if key not in _WHOLE:
        whole = None
        try:
            small = pq.ParquetFile(path).metadata.num_rows <= WHOLE_FRAME_ROWS
        except Exception:           # a damaged file: read_tidy's one-line error
            small = False
        if small:
            table = io.read_parquet(path)
            if table.num_rows and all(table.column(c).num_chunks == 1 for c in ("domain", "sensor")):
                frame = tidy.from_arrow(table, device)
                whole = (frame, frame["ts"].to_numpy(dtype="datetime64[us]").astype(np.int64))
        _WHOLE.clear()              # one file at a time: a job reads one
        _WHOLE[key] = whole
    return _WHOLE[key]


class CleanStep(PartitionStep):
    script = "30_clean.py"
    summary = "quality flags: gross range, sentinels, spikes, flat lines, exclusion windows"

    def check_config(self, params, source):
        for domain, rule in params.get("rules", {}).items():
            check_rule(rule, f"{source}: $.rules.{domain}", partial=False)
        for sensor, rule in params.get("sensors", {}).items():
            check_rule(rule, f"{source}: $.sensors.{sensor}", partial=True)
        for i, ex in enumerate(params.get("exclusions", [])):
            where = f"{source}: $.exclusions[{i}]"
            pattern = ex.get("sensors", ".*")
            check_regex(pattern, f"{where}.sensors", "m[0-3]")
            start = qc.parse_instant(ex["start"], "from", f"{where}.start")
            end = qc.parse_instant(ex["end"], "to", f"{where}.end")
            if start > end:
                raise UserError(f"{where}: start {ex['start']!r} is after end {ex['end']!r}; "
                                "allowed: start <= end")

    # the neighbouring days' edges (qc.NEIGHBOUR_EDGE of each): only those rows are read
    # and the day's rows of a week's or a month's file cut from one frame of it
    readers: ClassVar[dict] = {"data": read_day_rows,
                               "previous": edge_array_reader("previous", qc.NEIGHBOUR_EDGE),
                               "next": edge_array_reader("next", qc.NEIGHBOUR_EDGE)}

    def input_files(self, project, st, device, day):
        """The day's partition and, when the plan has them, the partitions of D−1 and D+1 of
        the input stage (their edge minutes judge the day's first and last samples): a new
        day D+1 makes day D's job re-run (docs/steps/clean-resample.md)."""
        return {"data": io.partition_file(st.exposure, st["input_stage"], device, day, period=st.partition),
                **self.adjacent_inputs(project, st, device, day)}

    def compute(self, frames, st, device, day):
        edge = {k: frames[k][0] if frames.get(k) else None for k in ("previous", "next")}
        df, counts = qc.clean_frame(frames["data"], st.params, device, **edge)
        for w in counts.get("warnings", []):      # level shifts: one line each
            print(f"warning: {w}", file=sys.stderr)
        return {"data": df}, counts
