"""80_import_postgres: aggregated partitions → one PostgreSQL long table for Grafana.

    python3 pyjama.py run 80_import_postgres.py --with configs/X/80_postgres_bio_signal_10s.json [--from A --to B] [--dry-run]

Table (created if missing): ``(ts timestamptz, device_id text, domain text, sensor text,
value double precision, quality_flag smallint)``, unique on ``(device_id, sensor, ts)``
(a sensor name belongs to one domain), BRIN index on ``ts``.

Per (device, UTC day) partition of the input stage (e.g. ``70_aggregated/window=10s``):

1. keep the rows of the config's ``domains`` and ``sensors`` (globs) — the others are
   counted in the ledger as "not selected";
2. in ONE transaction: delete the table's rows of that device, day ``[D, D+1)``, and of
   the config's domains/sensors; COPY the selected rows (NaN → NULL); commit;
3. ``data/<EXPO>/_meta/<output_stage>/device_id=X/day=D/receipt.json`` (rows, NULL count,
   exact value sum, table, database, input file digest, import time, and the ledger) is
   written to a temporary file before the COMMIT and renamed into place after it: a disk
   that cannot take them rolls the rows back. The receipt is the Snakemake target: a
   partition is re-imported when its input changes, and a partition without receipt was
   not (fully) imported.

An existing table is checked column by column before anything else (db.ensure_table);
one import per table runs at a time (db.import_lock: a second run says which run holds
the table and waits).

A run over many partitions groups whole partitions into transactions of up to
``batch_rows`` rows (fewer round trips, one COPY per batch).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from . import ExternalStep, Option
from ..progress import progress_bar
from .. import db, io
from ..timewindow import day_bounds, iso

RECEIPT = "receipt.json"
NOT_SELECTED = "not selected (domains/sensors of the config)"


# ---------------------------------------------------------------- pure functions

def select_rows(table, domains, sensors):
    """Keep the rows of an input partition (arrow table with ts, domain, sensor, value,
    quality_flag) whose domain is in ``domains`` (all when empty) and whose sensor name
    matches one of the globs ``sensors``. Returns (selected table, rows set aside)."""
    import numpy as np
    import pyarrow as pa

    n = table.num_rows
    if n == 0:
        return table, 0
    keep = _dict_mask(table.column("sensor"), lambda names: db.match_sensors(names, sensors))
    if domains:
        wanted = set(domains)
        keep &= _dict_mask(table.column("domain"), lambda names: [x in wanted for x in names])
    if keep.all():
        return table, 0
    return table.filter(pa.array(keep)), int(n - np.count_nonzero(keep))


def _dict_mask(column, predicate):
    """Boolean numpy mask of a (dictionary or plain) string column, computing
    ``predicate`` once per distinct name (a long table repeats a few names)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    names = arr.dictionary.to_pylist()
    hits = np.asarray(predicate(names) + [False], dtype=bool)   # last slot: null index
    idx = pc.fill_null(arr.indices, len(names)).to_numpy(zero_copy_only=False)
    return hits[idx]


def to_long_table(table, device: str):
    """Selected partition rows → the table's COPY columns, in order:
    ts [UTC, µs], device_id, domain, sensor, value [NaN → NULL], quality_flag."""
    import numpy as np
    import pyarrow as pa

    n = table.num_rows
    device_col = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([device]))
    return pa.table({
        "ts": table.column("ts").cast(pa.timestamp("us", tz="UTC")),
        "device_id": device_col,
        "domain": table.column("domain"),
        "sensor": table.column("sensor"),
        "value": db.nan_to_null(table.column("value")),
        "quality_flag": table.column("quality_flag").cast(pa.int16()),
    })


# ---------------------------------------------------------------- one partition, planned

@dataclass
class Part:
    """One (device, day) partition ready to import."""

    device: str
    day: str
    input: str                   # relative path of the input parquet
    input_sha256: str
    rows_in: int
    not_selected: int
    rows: object                 # arrow table in COPY column order
    checksum: dict = field(default_factory=dict)
    sensors: list = field(default_factory=list)

    @property
    def label(self):
        return f"{self.device}/{self.day}"


def plan_part(project, st, device: str, day: str) -> Part:
    """Read one input partition and prepare its rows (no database access)."""
    import pyarrow.parquet as pq

    rel = io.partition_file(st.exposure, st["input_stage"], device, day, period=st.partition)
    path = project.root / rel
    if not path.exists():
        raise io.input_missing(rel)
    data = path.read_bytes()
    import pyarrow as pa

    table = pq.read_table(pa.BufferReader(data))
    selected, dropped = select_rows(table, st["domains"], st["sensors"])
    rows = to_long_table(selected, device)
    sensors = sorted(set(rows.column("sensor").combine_chunks().dictionary.to_pylist())) if rows.num_rows else []
    return Part(device=device, day=day, input=rel, input_sha256=hashlib.sha256(data).hexdigest(),
                rows_in=table.num_rows, not_selected=dropped, rows=rows,
                checksum=db.value_checksum(selected.column("value").to_numpy()), sensors=sensors)


# ---------------------------------------------------------------- the step

DRY_RUN = Option("--dry-run", "imports: print what would be done, touch nothing", short="-n")


def receipt_file(st, device: str, day: str, period: str | None = None) -> str:
    """Where the receipt of an imported (device, day) lives (80 and 81): 80's per partition
    (a week's or a month's key when the exposure's $.partition says so), 81's per day
    (``period="day"``: it aggregates raw rows day by day, whatever the partitions)."""
    period = period or st.partition
    return io.meta_file(st.exposure, st["output_stage"], f"device_id={device}", f"{period}={day}", RECEIPT)


class ImportPostgresStep(ExternalStep):
    script = "80_import_postgres.py"
    summary = "aggregated partitions → PostgreSQL long table (idempotent per device/day, receipts)"
    options = (DRY_RUN,)

    def check_config(self, params, source):
        db.check_target(params, source)

    def rules(self, project, st, window):
        rule = self.partition_rule(project, st, window, {"receipt": receipt_file(st, "{device}", "{day}")})
        rule.input_patterns = {"data": io.partition_file(st.exposure, st["input_stage"], "{device}", "{day}", period=st.partition)}
        return [rule]

    # ---- pyjama.py run (and every workflow job) comes here
    def run(self, project, st, sel, options, quiet):
        todo = self.direct_partitions(project, st, sel)
        if options.get("dry_run"):
            return self.dry_run(project, st, todo)
        if not todo:
            return []
        schema, table = st["schema"], st["table"]
        with db.thread_lock(schema, table):
            conn = db.connect(st.params, application_name=db.session_name(self.script))
            try:
                db.ensure_table(conn, schema, table, db.LONG_80)
                db.import_lock(conn, self.script, schema, table, wait=True)
                entries = []
                bar = progress_bar(len(todo), self.script, "part", quiet)
                for batch in _batches(project, st, todo, st["batch_rows"]):
                    entries += self.import_batch(project, conn, st, batch)
                    if bar is not None:
                        bar.update(len(batch))
                if bar is not None:
                    bar.close()
                return entries
            finally:
                conn.close()     # also releases the import lock

    def import_batch(self, project, conn, st, batch) -> list:
        """Replace every partition of ``batch`` in ONE transaction: delete each partition's
        device × day × scope, then one COPY of all the batch's rows; nothing is visible to
        others before the commit. The receipts and ledgers are written to temporary files
        before the COMMIT (a full disk or a read-only folder rolls the rows back) and
        renamed into place right after it. Returns the ledger entries.

        (Stage + merge, which writes only what differs, was measured against this in
        bench/bench_postgres.py: it wins only when nothing changed, and loses when every
        value changed — e.g. after a refit — so the simple way stays.)"""
        import pyarrow as pa

        schema, table = st["schema"], st["table"]
        likes = [db.glob_to_like(p) for p in st["sensors"]]
        deleted = {}
        label = f"{batch[0].label}" if len(batch) == 1 else f"{batch[0].label} … {batch[-1].label}"
        with db.transaction(conn, f"{self.script} {label}: import into {schema}.{table} failed") as cur:
            existing = {}
            for part in batch:
                if part.device not in existing:
                    existing[part.device] = db.device_sensors(cur, schema, table, part.device, likes)
                start, end = day_bounds(part.day)
                deleted[part.label] = db.delete_range(
                    cur, schema, table, db.LONG_80, part.device, existing[part.device],
                    start, end, st["domains"])
            tables = [p.rows for p in batch if p.rows.num_rows]
            if tables:
                db.copy_csv(cur, schema, table, db.LONG_80.names, db.csv_payload(pa.concat_tables(tables)))
            staged, entries = io.StagedFiles(), []
            try:
                for part in batch:
                    entries.append(self.write_receipt(project, st, part, deleted[part.label], staged))
            except BaseException:
                staged.discard()
                raise
        staged.commit()     # after the database COMMIT: renames only
        return entries

    def write_receipt(self, project, st, part: Part, deleted: int, staged) -> dict:
        """Receipt + ledger of one partition, staged in ``staged`` (an io.StagedFiles)."""
        start, end = day_bounds(part.day)
        entry = io.ledger_entry(self.script, part.label, rows_in=part.rows_in,
                                rows_out=part.checksum["rows"],
                                rejected={NOT_SELECTED: part.not_selected},
                                table=f"{st['schema']}.{st['table']}", rows_replaced=int(deleted))
        receipt = {
            "step": self.script,
            "partition": part.label,
            "table": f"{st['schema']}.{st['table']}",
            "database": db.target_label(st.params),
            "range": {"from": iso(start), "to": iso(end)},
            "domains": list(st["domains"]),
            "sensors": list(st["sensors"]),
            "rows": part.checksum["rows"],
            "null_values": part.checksum["null_values"],
            "value_sum": part.checksum["value_sum"],
            "rows_replaced": int(deleted),
            "input": part.input,
            "input_sha256": part.input_sha256,
            "config": st.path,
            "config_digest": st.digest,
            "imported_at": db.utc_now_text(),
            "ledger": entry,
        }
        staged.json(project.root / receipt_file(st, part.device, part.day), receipt)
        return entry

    def dry_run(self, project, st, todo) -> list:
        """Print what would be imported; touch neither the database nor any file."""
        target = f"{st['schema']}.{st['table']}"
        print(f"{self.script} --dry-run: would import into {target} at {db.target_label(st.params)} "
              f"(replacing each partition's device × day × domains {st['domains'] or 'all'} × "
              f"sensors {st['sensors']}):")
        entries = []
        for device, day in todo:
            part = plan_part(project, st, device, day)
            print(f"  {part.label}: {part.checksum['rows']} rows ({part.not_selected} not selected) "
                  f"from {part.input}")
            entries.append(io.ledger_entry(self.script, part.label, rows_in=part.rows_in,
                                           rows_out=part.checksum["rows"],
                                           rejected={NOT_SELECTED: part.not_selected},
                                           table=target, dry_run=True))
        if not todo:
            print("  nothing: no input partition in this window")
        return entries


# ---------------------------------------------------------------- helpers

def _batches(project, st, todo, max_rows: int):
    """Plan partitions one by one and yield lists of whole partitions of up to
    ``max_rows`` rows (a partition bigger than that is a batch of its own)."""
    batch, rows = [], 0
    for device, day in todo:
        part = plan_part(project, st, device, day)
        if batch and rows + part.rows.num_rows > max_rows:
            yield batch
            batch, rows = [], 0
        batch.append(part)
        rows += part.rows.num_rows
    if batch:
        yield batch
