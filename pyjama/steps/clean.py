"""30_clean: one (device, day) of 20_split → the same rows with quality flags (never deletions).

The rules are pure functions in :mod:`pyjama.qc`; this class only checks the config and
calls :func:`pyjama.qc.clean_frame`. docs/steps/clean-resample.md documents every key.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import ClassVar

from . import PartitionStep, edge_bounds, edge_table
from .. import io, qc, tidy
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
    made without one (pandas' frame was most of the cost of reading a slow logger's edge):
    from the arrays of a week's or a month's file kept whole (:func:`read_day_rows`), or
    from the arrow table. A table it cannot take exactly is read into a tidy frame."""
    def read(path, device, day):
        lo, hi = edge_bounds(day, side, length)
        whole = _whole_file(Path(path), device) if io.multi_day(path) else None
        if whole is not None:         # a week's or a month's file: the same rows, from memory
            return whole.edge(whole.rows(lo, hi))
        table = edge_table(path, day, lo, hi)
        edge = edge_of_arrow(table)
        return edge if edge is not None else tidy.from_arrow(table, device)

    read.__name__ = f"read_{side}_edge"
    return read


def edge_of_arrow(table):
    """``qc.Edge.of_frame(tidy.from_arrow(table, device))`` of a table with the file schema,
    straight from its arrays: times, values, flags and each sensor's rows in time order
    (:func:`pyjama.tidy.series_rows` on the dictionaries' indices, which pandas' categories
    keep). None when the table might give something else (several chunks, nulls, other
    types, a name twice in a dictionary)."""
    import numpy as np

    if not _plain(table):
        return None
    if not table.num_rows:
        return qc.Edge(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.uint8), {})
    dom, sen = table.column("domain").chunk(0), table.column("sensor").chunk(0)
    ts_us = table.column("ts").to_numpy().astype(np.int64)
    rows = {s: i for _, s, i in tidy.series_rows(ts_us, dom.indices.to_numpy(), sen.indices.to_numpy(),
                                               dom.dictionary.to_pylist(), sen.dictionary.to_pylist())}
    return qc.Edge(ts_us * 1000, table.column("value").to_numpy(), table.column("quality_flag").to_numpy(), rows)


def _plain(table) -> bool:
    """The file schema, domain and sensor in one chunk each (or none), their dictionaries of
    distinct names, no null time, domain or sensor: a table whose tidy frame's categories
    are its dictionaries and whose codes are their indices."""
    if table.schema.names != tidy.FILE_SCHEMA.names or \
            [f.type for f in table.schema] != [f.type for f in tidy.FILE_SCHEMA]:
        return False
    if not table.num_rows:
        return True
    for c in ("domain", "sensor"):
        col = table.column(c)
        if col.num_chunks != 1 or col.null_count:
            return False
        names = col.chunk(0).dictionary
        if names.null_count or len(set(names.to_pylist())) != len(names):
            return False
    return not table.column("ts").null_count


# A week's or a month's input file of at most this many rows is kept whole as one tidy
# frame for the job's days (a slow logger's month: ~10,000 rows; a 1 Hz month is read
# day by day); a job reads its period's file and the neighbouring periods' edges.
WHOLE_FILE_ROWS = 1_000_000
_WHOLE: dict = {}
_WHOLE_KEPT = 3
_WHOLE_LOCK = threading.Lock()


class _WholeFile:
    """A week's or a month's file as one tidy frame and the arrays the edges are cut from."""

    def __init__(self, table, device):
        import numpy as np
        self.frame = tidy.from_arrow(table, device)
        self.ts_us = self.frame["ts"].to_numpy(dtype="datetime64[us]").astype(np.int64)
        dom, sen = table.column("domain").chunk(0), table.column("sensor").chunk(0)
        self.dom_codes, self.sen_codes = dom.indices.to_numpy(), sen.indices.to_numpy()
        self.dom_names, self.sen_names = dom.dictionary.to_pylist(), sen.dictionary.to_pylist()
        self.values = self.frame["value"].to_numpy()
        self.flags = self.frame["quality_flag"].to_numpy()

    def rows(self, lo, hi):
        """Positions of the rows with ts in [lo, hi) (datetimes), in file order: the rows
        io.read_day's mask keeps."""
        import numpy as np
        import pyarrow as pa

        unit = pa.timestamp("us", tz="UTC")
        lo, hi = pa.scalar(lo, unit).value, pa.scalar(hi, unit).value
        return np.flatnonzero((self.ts_us >= lo) & (self.ts_us < hi))

    def day(self, rows):
        if rows[-1] - rows[0] + 1 == len(rows):        # a day's rows are one block of the file
            return self.frame.iloc[rows[0]:rows[-1] + 1].reset_index(drop=True)
        return self.frame.take(rows).reset_index(drop=True)

    def edge(self, rows):
        ts_us = self.ts_us[rows]
        found = tidy.series_rows(ts_us, self.dom_codes[rows], self.sen_codes[rows], self.dom_names, self.sen_names)
        return qc.Edge(ts_us * 1000, self.values[rows], self.flags[rows], {s: i for _, s, i in found})


def read_day_rows(path, device, day):
    """The tidy rows of ``day`` in the input partition file, as :func:`pyjama.io.read_tidy`
    reads them. Of a week's or a month's file (at most :data:`WHOLE_FILE_ROWS` rows) they
    are cut from one tidy frame of the whole file, made once per job: ``tidy.from_arrow``
    of a slow logger's day was ~1 ms, as much as its tests. The same rows in file order,
    the same columns, dtypes and categories (the file's dictionaries)."""
    whole = _whole_file(Path(path), device) if io.multi_day(path) else None
    if whole is None:
        return io.read_tidy(path, device, day)
    rows = whole.rows(*day_bounds(day))
    if not len(rows):
        return io.read_tidy(path, device, day)
    return whole.day(rows)


def _whole_file(path: Path, device: str):
    """The :class:`_WholeFile` of ``path`` or None (too many rows, or not :func:`_plain`:
    pandas might make other categories of the whole file than of a day's rows). Kept
    while the file's size, mtime and inode stay (a rewritten file is read again)."""
    import pyarrow.parquet as pq

    try:
        st = path.stat()
    except FileNotFoundError:
        return None                 # read_tidy says so in one line
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino, device)
    with _WHOLE_LOCK:               # jobs may run as threads of one process
        if key in _WHOLE:
            return _WHOLE[key]
    whole = None
    try:
        small = pq.ParquetFile(path).metadata.num_rows <= WHOLE_FILE_ROWS
    except Exception:               # a damaged file: read_tidy's one-line error
        small = False
    if small:
        table = io.period_table(path)        # the table io.read_day reads too: read once
        if table.num_rows and _plain(table):
            whole = _WholeFile(table, device)
    with _WHOLE_LOCK:
        _WHOLE[key] = whole
        while len(_WHOLE) > _WHOLE_KEPT:
            _WHOLE.pop(next(iter(_WHOLE)))
    return whole


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
