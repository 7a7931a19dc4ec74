"""81_import_raw_postgres: raw files → aggregated long table for a quick look in Grafana.

    python3 pyjama.py run 81_import_raw_postgres.py --with configs/X/81_import_raw_postgres_60s.json --from 2026-02-05 --to 2026-02-05
    python3 pyjama.py run 81_import_raw_postgres.py --with configs/X/81_import_raw_postgres_10s.json --mode auto
    (add --dry-run to print the plan and touch nothing)

Without running the pipeline: raw files of ``input_stage`` are parsed with the exposure's
own parser config by THE parser (:func:`pyjama.parse.parse_bytes`, as step 10), duplicate
(sensor, ts) values resolved like step 20, and aggregated per sensor to ``window``
(``"Time"`` = window start, UTC). Table: ``("Time" timestamptz, device_id text, sensor
text, value double precision)``, unique on ``(device_id, sensor, "Time")``.

* **Day range** (``--from/--to``, dates or UTC instants, widened outwards to whole
  windows): for each device with raw data in the range, and each of its days, the rows of
  that device × the config's sensors × the range are deleted and the new aggregates
  COPYed, in one transaction per ``batch_days`` days. Devices without raw data there keep
  their rows.
* **Auto** (``--mode auto``, for cron): per device, the last ``"Time"`` in the table
  (over the config's sensors); the raw files that hold days from that one on are read,
  and everything from that last window on (it may have been incomplete) is replaced, up
  to the newest raw data. An empty table gets everything. A state file
  (``data/<EXPO>/_meta/<output_stage>/auto_state.json``: per device the last time and the
  size/mtime of the files read) lets a run with no new raw data stop before parsing.

81 is not a workflow step: ``rules`` returns no rule (run it by hand or from cron).
A receipt per (device, day) imported is written under ``data/<EXPO>/_meta/<output_stage>/``.
"""
from __future__ import annotations

import datetime as dt
import json
import sys

from . import ExternalStep, Option
from .import_postgres import DRY_RUN, receipt_file
from ..progress import progress_bar
from .. import db, io
from ..aggregate import day_window_seconds, window_seconds
from ..errors import UserError
from ..timewindow import day_bounds, iso, parse_window

STATE = "auto_state.json"
NOT_SELECTED = "not selected (sensors of the config)"
UTC = dt.timezone.utc


# ---------------------------------------------------------------- pure functions

def floor_time(t: dt.datetime, seconds: int) -> dt.datetime:
    """Start of the window holding ``t``: floor(t / w) * w [UTC, µs exact]."""
    us = _epoch_us(t)
    w = seconds * 1_000_000
    return _from_epoch_us(us - us % w)


def aggregate_day(rows, day: str, seconds: int, stat: str = "mean"):
    """Raw tidy rows of one device and one UTC ``day`` → one row per (sensor, window)
    holding at least one raw value, by THE aggregation of step 70
    (:func:`pyjama.aggregate.aggregate_window`):

        Time  = floor(ts / w) * w        [UTC; w = ``seconds``, dividing 24 h]
        value = stat(valid values in [Time, Time + w))   (valid: flag OK and finite;
                                                           none valid → NULL)

    Sensor names stay the raw ones (``m0``, not ``m0__mean``). Returns a DataFrame
    (Time, sensor, value) sorted by (sensor, Time)."""
    import numpy as np
    import pandas as pd

    from ..aggregate import aggregate_window

    if len(rows) == 0:
        return pd.DataFrame({"Time": pd.Series([], dtype="datetime64[us, UTC]"),
                             "sensor": pd.Series([], dtype=object),
                             "value": pd.Series([], dtype=np.float64)})
    rows = rows.copy()
    rows["sensor"] = rows["sensor"].astype("category").cat.remove_unused_categories()
    rows["domain"] = rows["domain"].astype("category").cat.remove_unused_categories()
    out = aggregate_window(rows, day, seconds, (stat,), fill_day=False)
    suffix = f"__{stat}"
    names = out["sensor"].cat.rename_categories([str(c).removesuffix(suffix)
                                                  for c in out["sensor"].cat.categories])
    return pd.DataFrame({"Time": out["ts"], "sensor": names.astype(str).to_numpy(dtype=object),
                         "value": out["value"].to_numpy(dtype=np.float64)})


def select_raw_rows(rows, device: str, sensors, start=None, end=None):
    """Rows of ``device`` with start <= ts < end (open bounds when None) whose sensor
    matches a glob of ``sensors``. Returns (rows in range, rows selected)."""
    import numpy as np

    if len(rows) == 0:
        return rows, rows
    keep = (rows["device_id"].astype(str) == device).to_numpy().copy()
    ts = rows["ts"]
    if start is not None:
        keep &= (ts >= start).to_numpy()
    if end is not None:
        keep &= (ts < end).to_numpy()
    in_range = rows[keep]
    if len(in_range) == 0:
        return in_range, in_range
    cats = in_range["sensor"].astype("category")
    hits = np.asarray(db.match_sensors(list(cats.cat.categories), sensors) + [False], dtype=bool)
    codes = cats.cat.codes.to_numpy()
    return in_range, in_range[hits[np.where(codes < 0, len(hits) - 1, codes)]]


def to_copy_table(agg, device: str):
    """Aggregates → arrow table in COPY column order ("Time", device_id, sensor, value)."""
    import numpy as np
    import pyarrow as pa

    n = len(agg)
    return pa.table({
        "Time": pa.array(agg["Time"].to_numpy(dtype="datetime64[us]"), pa.timestamp("us", tz="UTC")),
        "device_id": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([device])),
        "sensor": pa.array(agg["sensor"].to_numpy(dtype=object), pa.string()),
        "value": db.nan_to_null(pa.array(agg["value"].to_numpy(), pa.float64())),
    })


# ---------------------------------------------------------------- the step

class ImportRawPostgresStep(ExternalStep):
    script = "81_import_raw_postgres.py"
    summary = "raw files → aggregated PostgreSQL long table (day range or --mode auto; not a workflow rule)"
    options = (Option("--mode", "81 import: a --from/--to day range, or auto (complete what the table lacks)",
                      choices=("range", "auto"), default="range"), DRY_RUN)

    def check_config(self, params, source):
        db.check_target(params, source)
        day_window_seconds(params["window"], f"{source}: $.window")  # step 70's rule

    # ---- not a workflow step
    def rules(self, project, st, window) -> list:
        """No rule: 81 is run by hand or by cron (``--mode auto``), never by Snakemake."""
        return []

    # ---- helpers
    def parser_config(self, project, st):
        """The parser step config of the exposure's pipeline that reads ``input_stage``."""
        found = [p for p in project.parser_steps() if p["input_stage"] == st["input_stage"]]
        if st["parser"]:
            found = [p for p in project.parser_steps() if p.name == st["parser"]]
        if len(found) != 1:
            names = ", ".join(p.name for p in project.parser_steps()) or "none"
            want = repr(st["parser"]) if st["parser"] else f"one reading {st['input_stage']!r}"
            raise UserError(f"{st.path}: $.parser: no single parser step {want} in "
                            f"{project.pipeline.path}; allowed: {names}")
        return found[0]

    # ---- pyjama.py run comes here
    def run(self, project, st, sel, options, quiet):
        mode = options.get("mode") or "range"
        window = sel.window
        if sel.day:
            window = parse_window(sel.day, sel.day)
        pst = self.parser_config(project, st)
        run = _Run(self, project, st, pst, sel.devices, quiet, bool(options.get("dry_run")))
        if mode == "auto":
            if window is not None and (window.start is not None or window.end is not None):
                raise UserError("--mode auto takes no --from/--to: it completes, per device, what the "
                                "table lacks after its last time; use --mode range for a day range")
            return run.auto()
        return run.range(window)


class _Run:
    """State of one 81 invocation (connection, raw index, parse cache)."""

    def __init__(self, step, project, st, pst, devices, quiet, dry_run):
        self.step, self.project, self.st, self.pst = step, project, st, pst
        self.devices = list(devices or [])
        self.quiet, self.dry_run = quiet, dry_run
        self.index = project.raw_index(pst)
        self.seconds = window_seconds(st["window"])
        self.likes = [db.glob_to_like(p) for p in st["sensors"]]
        self.target = f"{st['schema']}.{st['table']}"
        self._cache: dict = {}

    # ---- raw data
    def device_days(self):
        """{device: sorted days} of the raw index, limited to --device when given."""
        out: dict = {}
        for dev, day in self.index.partitions():
            if not self.devices or dev in self.devices:
                out.setdefault(dev, []).append(day)
        return out

    def parsed(self, name: str):
        """Rows of one raw file, parsed once per run with the exposure's parser config."""
        from ..parse import parse_bytes, read_raw_bytes

        if name not in self._cache:
            if len(self._cache) > 8:
                self._cache.pop(next(iter(self._cache)))
            path = self.index.raw_dir / name
            self._cache[name] = parse_bytes(read_raw_bytes(path), self.pst.params, name).rows
        return self._cache[name]

    def rows_for(self, device, day, files, start, end):
        """(raw rows in range, aggregated frame, counts) of ``device`` from ``files``."""
        import pandas as pd

        from .. import tidy
        from .split import merge_duplicates

        parts_in, parts_sel = [], []
        for name in sorted(files):
            rows = self.parsed(name)
            in_range, sel = select_raw_rows(rows, device, self.st["sensors"], start, end)
            parts_in.append(len(in_range))
            if len(sel):
                parts_sel.append(sel)
        selected = pd.concat(parts_sel, ignore_index=True) if parts_sel else tidy.empty()
        rows_in = sum(parts_in)
        merged_df, merged = merge_duplicates(selected, self.st["duplicates"]) if len(selected) else (selected, 0)
        agg = aggregate_day(merged_df, day, self.seconds, self.st["stat"])
        counts = {"rows_in": rows_in, "rows_out": len(merged_df),
                  "rejected": {NOT_SELECTED: rows_in - len(selected),
                               f"duplicate (sensor, ts) merged: {self.st['duplicates']}": merged}}
        return agg, counts

    def fingerprint(self, files) -> dict:
        return {n: [self.index.files[n]["size"], self.index.files[n]["mtime_ns"]] for n in sorted(files)}

    # ---- the two modes
    def range(self, window):
        """Replace, per device with raw data in the window, the window's rows (widened to
        whole aggregation windows) by fresh aggregates, ``batch_days`` days per transaction."""
        start = floor_time(window.start, self.seconds) if window and window.start else None
        end = (floor_time(window.end, self.seconds) + dt.timedelta(seconds=self.seconds)) \
            if window and window.end else None
        plan = []
        for dev, days in self.device_days().items():
            days = [d for d in days if window is None or window.contains_day(d)]
            for i in range(0, len(days), self.st["batch_days"]):
                plan.append((dev, days[i:i + self.st["batch_days"]]))
        if self.dry_run:
            print(f"{self.step.script} --dry-run: would replace in {self.target} at "
                  f"{db.target_label(self.st.params)} the range [{iso(start) if start else '-inf'}, "
                  f"{iso(end) if end else '+inf'}) ({self.st['window']} {self.st['stat']}, "
                  f"sensors {self.st['sensors']}):")
        if not plan:
            if self.dry_run:
                print("  nothing: no raw data in this window")
            return []
        conn = None if self.dry_run else self.open()
        entries = []
        try:
            if conn is not None:
                self.lock(conn, wait=True)
            bar = progress_bar(len(plan), self.step.script, "batch", self.quiet)
            for dev, days in plan:
                spans = []
                for day in days:
                    ds, de = day_bounds(day)
                    lo, hi = max(ds, start) if start else ds, min(de, end) if end else de
                    files = self.index.files_for(dev, day)
                    agg, counts = self.rows_for(dev, day, files, lo, hi)
                    spans.append((day, lo, hi, files, agg, counts))
                entries += self.commit(conn, dev, spans, mode="range")
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
        finally:
            if conn is not None:
                conn.close()
        return entries

    def auto(self):
        """Per device: complete the table from its last "Time" on (re-covering that window)."""
        state_path = self.project.root / io.meta_file(self.st.exposure, self.st["output_stage"], STATE)
        state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.exists() else {}
        state_key = f"{self.target}@{db.target_label(self.st.params)}"
        st_dev = state.get(state_key, {})
        conn = self.open(readonly=self.dry_run)
        entries = []
        try:
            exists = db.table_exists(conn, self.st["schema"], self.st["table"])
            if not self.dry_run:
                if not self.lock(conn, wait=False):
                    holder = db.lock_holder(conn, self.st["schema"], self.st["table"])
                    print(db.busy_message(self.step.script, self.st["schema"], self.st["table"], holder)
                          + "; nothing done this time", file=sys.stderr)
                    return []
            conn.commit()
            for dev, days in self.device_days().items():
                last, sensors = self.last_time(conn, dev) if exists else (None, [])
                start = floor_time(last, self.seconds) if last else None
                todo_days = [d for d in days if start is None or d >= start.date().isoformat()]
                files = sorted({f for d in todo_days for f in self.index.files_for(dev, d)})
                fp = self.fingerprint(files)
                seen = st_dev.get(dev)
                if seen and seen.get("last") == (iso(last) if last else None) and seen.get("files") == fp:
                    if self.dry_run or not self.quiet:
                        print(f"  {dev}: up to date (last {seen['last']}, no raw file changed)")
                    continue
                spans = []
                for day in todo_days:
                    ds, de = day_bounds(day)
                    lo = max(ds, start) if start else ds
                    day_files = self.index.files_for(dev, day)
                    agg, counts = self.rows_for(dev, day, day_files, lo, de)
                    spans.append((day, lo, de, day_files, agg, counts))
                n_rows = sum(len(sp[4]) for sp in spans)
                if self.dry_run:
                    print(f"  {dev}: last {iso(last) if last else 'none (empty table)'}; would read "
                          f"{len(files)} raw file(s) and replace from {iso(start) if start else 'the start'}: "
                          f"{n_rows} rows from {sum(sp[5]['rows_out'] for sp in spans)} raw values")
                    entries += self.commit(None, dev, spans, mode="auto", open_end=True)
                    continue
                new_last = last
                if n_rows:
                    entries += self.commit(conn, dev, spans, mode="auto", open_end=True, sensors=sensors)
                    new_last = max(sp[4]["Time"].max() for sp in spans if len(sp[4])).to_pydatetime()
                # What the next run will see if nothing changes: the table's last time is
                # new_last, and it would read the files of the days from new_last's on.
                nxt = floor_time(new_last, self.seconds).date().isoformat() if new_last else None
                nxt_files = {f for d in days if nxt is None or d >= nxt for f in self.index.files_for(dev, d)}
                st_dev[dev] = {"last": iso(new_last) if new_last else None,
                               "files": self.fingerprint(nxt_files)}
                state[state_key] = st_dev
                io.write_json(state_path, state)
        finally:
            conn.close()
        return entries

    # ---- database
    def open(self, readonly=False):
        conn = db.connect(self.st.params, application_name=db.session_name(self.step.script),
                          readonly=readonly)
        # an existing table is checked in a dry run too; only a real run creates one
        db.ensure_table(conn, self.st["schema"], self.st["table"], db.RAW_81, create=not readonly)
        return conn

    def lock(self, conn, wait: bool) -> bool:
        """The import lock of the table (db.import_lock, shared with step 80): one import
        per table at a time (cron runs may overlap; the later one waits (range) or skips
        (auto), naming the run that holds it)."""
        return db.import_lock(conn, self.step.script, self.st["schema"], self.st["table"], wait)

    def last_time(self, conn, device):
        """(last "Time" of ``device`` over the config's sensors, those sensors)."""
        from psycopg2 import sql

        with conn.cursor() as cur:
            sensors = db.device_sensors(cur, self.st["schema"], self.st["table"], device, self.likes)
            if not sensors:
                return None, []
            cur.execute(sql.SQL(
                'SELECT max(m) FROM unnest(%s::text[]) AS s(sensor), LATERAL '
                '(SELECT max("Time") AS m FROM {} t WHERE t.device_id = %s AND t.sensor = s.sensor) x'
            ).format(db.qualified(self.st["schema"], self.st["table"])), (sensors, device))
            last = cur.fetchone()[0]
        conn.commit()
        return (last.astimezone(UTC) if last else None), sensors

    def commit(self, conn, device, spans, mode, open_end=False, sensors=None) -> list:
        """One transaction: delete each span of ``device`` (config's sensors), COPY the new
        aggregates, commit; then receipts. In a dry run: print and return the entries."""
        import numpy as np
        import pyarrow as pa

        if self.dry_run:
            for day, lo, hi, files, agg, counts in spans:
                print(f"  {device}/{day}: {len(agg)} rows from {counts['rows_out']} raw values in "
                      f"{len(files)} raw file(s), range [{iso(lo)}, {iso(hi)})")
            return [self.entry(device, day, agg, counts, dry_run=True) for day, _, _, _, agg, counts in spans]
        schema, table = self.st["schema"], self.st["table"]
        with db.transaction(conn, f"{self.step.script} {device}: import into {self.target} failed") as cur:
            if sensors is None:
                sensors = db.device_sensors(cur, schema, table, device, self.likes)
            new = set()
            for _, _, _, _, agg, _ in spans:
                new.update(agg["sensor"].unique().tolist())
            scope = sorted(set(sensors) | new)
            if open_end and spans:
                db.delete_range(cur, schema, table, db.RAW_81, device, scope, spans[0][1], None)
            else:
                for _, lo, hi, _, _, _ in spans:
                    db.delete_range(cur, schema, table, db.RAW_81, device, scope, lo, hi)
            frames = [to_copy_table(agg, device) for _, _, _, _, agg, _ in spans if len(agg)]
            if frames:
                db.copy_csv(cur, schema, table, db.RAW_81.names, db.csv_payload(pa.concat_tables(frames)))
            # A receipt describes what the table holds for its (device, day): where this
            # run replaced part of a day only (auto mode's last window, a range from/to an
            # instant), the rest of the day's rows are read back and counted in.
            kept = {day: self.kept_values(cur, device, scope, day, lo, hi)
                    for day, lo, hi, _, _, _ in spans if (lo, hi) != day_bounds(day)}
            # receipts are written before the COMMIT (a full disk rolls the rows back) and
            # renamed into place after it
            staged, out = io.StagedFiles(), []
            try:
                for day, lo, hi, files, agg, counts in spans:
                    values = agg["value"].to_numpy()
                    if day in kept:
                        values = np.concatenate([kept[day], values])
                    rec = self.receipt(device, day, lo, hi, files, agg, counts, values, mode, open_end)
                    rec["ledger"] = self.entry(device, day, agg, counts)
                    staged.json(self.project.root / receipt_file(self.st, device, day, period="day"), rec)
                    out.append(rec["ledger"])
            except BaseException:
                staged.discard()
                raise
        staged.commit()
        return out

    def receipt(self, device, day, lo, hi, files, agg, counts, values, mode, open_end) -> dict:
        """What the table holds for (device, day) (``values``) and what this run did."""
        ds, de = day_bounds(day)
        return {
            "step": self.step.script, "mode": mode, "partition": f"{device}/{day}",
            "table": self.target, "database": db.target_label(self.st.params),
            "range": {"from": iso(ds), "to": iso(de)},
            "imported": {"from": iso(lo), "to": None if open_end else iso(hi), "rows": int(len(agg))},
            "window": self.st["window"], "stat": self.st["stat"], "sensors": list(self.st["sensors"]),
            **db.value_checksum(values),
            "raw_values": int(counts["rows_out"]), "raw_files": sorted(files),
            "parser": self.pst.path, "config": self.st.path, "config_digest": self.st.digest,
            "imported_at": db.utc_now_text(),
        }

    def kept_values(self, cur, device, sensors, day, lo, hi):
        """Values the table holds for ``device`` × ``sensors`` on ``day`` outside [lo, hi)
        (the part of the day this run did not replace)."""
        import numpy as np
        from psycopg2 import sql

        ds, de = day_bounds(day)
        cur.execute(sql.SQL('SELECT value FROM {} WHERE device_id = %s AND sensor = ANY(%s::text[]) '
                            'AND "Time" >= %s AND "Time" < %s AND NOT ("Time" >= %s AND "Time" < %s)')
                    .format(db.qualified(self.st["schema"], self.st["table"])),
                    (device, list(sensors), ds, de, lo, hi))
        return np.array([np.nan if r[0] is None else r[0] for r in cur.fetchall()], dtype=np.float64)

    def entry(self, device, day, agg, counts, **extra):
        return io.ledger_entry(self.step.script, f"{device}/{day}", unit="raw values",
                               rows_imported=int(len(agg)), table=self.target, **counts, **extra)


# ---------------------------------------------------------------- small helpers

def _epoch_us(t: dt.datetime) -> int:
    d = t - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _from_epoch_us(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=us)
