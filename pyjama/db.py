"""PostgreSQL helpers shared by steps 80 and 81: connection, identifiers, tables, COPY.

Rules kept here, once:

* **Password**: only from ``POSTGRES_PASSWORD`` (else libpq's own ``PGPASSWORD`` /
  ``~/.pgpass``). Never in a config, a log line, an error message or a receipt: every
  error text that leaves this module goes through :func:`redact`.
* **Identifiers** (schema, table) come from configs: they are validated against
  :data:`IDENT_RE` *and* quoted with :class:`psycopg2.sql.Identifier`, never formatted
  into SQL text. Devices, sensors and domains travel as query parameters or COPY data.
* **Connection errors** (server down, bad password, missing database, missing role) end
  in one line naming ``host:port/dbname`` and the cause: :class:`~pyjama.errors.UserError`.
* **Bulk load**: an arrow table → CSV bytes with pyarrow's C++ writer (NaN → NULL,
  timestamps in UTC with microseconds, floats in shortest round-trip form) → ``COPY ...
  FROM STDIN`` through ``copy_expert``.
* **Idempotence**: callers delete the (device, time range) they replace and COPY the new
  rows in the same transaction, so a crash leaves the old rows or the new, never half.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import io as _io
import math
import os
import re
import sys
import threading
import time
from dataclasses import dataclass

from .errors import UserError
from .timewindow import iso, iso_seconds

PASSWORD_ENV = "POSTGRES_PASSWORD"
# Test hook: seconds to sleep after COPY and before COMMIT (so a test can kill the
# process mid-import and check that nothing half-imported is visible). Never set it in
# production; it only delays.
PAUSE_ENV = "PYJAMA_PG_PAUSE_BEFORE_COMMIT"

IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
IDENT_ALLOWED = ("lower-case letters, digits and '_', not starting with a digit, "
                 "at most 63 characters")
# Sensor selection patterns: globs with * and ? only, over the characters sensor names use.
SENSOR_GLOB_RE = re.compile(r"^[A-Za-z0-9_.*?-]+$")
SENSOR_GLOB_ALLOWED = "globs of letters, digits, '_', '.', '-' with * (any text) and ? (one character)"

CONNECT_TIMEOUT_S = 10


# ---------------------------------------------------------------- identifiers

def check_identifier(name, where: str) -> str:
    """Return ``name`` if it is a safe SQL identifier, else raise a one-line UserError."""
    if not isinstance(name, str) or not IDENT_RE.match(name):
        raise UserError(f"{where}: {name!r} is not allowed; allowed: {IDENT_ALLOWED}")
    return name


SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
SYSTEM_ALLOWED = ("a schema of your own, e.g. public or pyjama (not pg_catalog, "
                  "information_schema, pg_toast or a name starting with pg_)")


def check_target(params: dict, source: str) -> None:
    """The table settings every import config has: schema and table identifiers (no
    system schema, no system table name), sensor globs (one-line errors naming the file
    and JSON path). Checked by PyJAMA itself, before any connection."""
    check_identifier(params["schema"], f"{source}: $.schema")
    check_identifier(params["table"], f"{source}: $.table")
    check_not_system(params["schema"], params["table"], source)
    check_sensor_globs(params["sensors"], f"{source}: $.sensors")


def check_not_system(schema: str, table: str, source: str) -> None:
    """PostgreSQL's own schemas (pg_catalog, information_schema, pg_toast, any pg_*) and
    names of the system catalogs (pg_*: ``public.pg_class`` would be shadowed by
    ``pg_catalog.pg_class`` in every unqualified Grafana query) are never import targets."""
    if schema in SYSTEM_SCHEMAS or schema.startswith("pg_"):
        raise UserError(f"{source}: $.schema: {schema!r} is a PostgreSQL system schema; "
                        f"allowed: {SYSTEM_ALLOWED}")
    if table.startswith("pg_"):
        raise UserError(f"{source}: $.table: {table!r} is a PostgreSQL system table name (pg_* is "
                        "reserved for the system catalogs); allowed: a name not starting with pg_")


def qualified(schema: str, table: str):
    """``"schema"."table"`` as a composable SQL object (validated, then quoted)."""
    from psycopg2 import sql

    check_identifier(schema, "schema")
    check_identifier(table, "table")
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def index_name(table: str, suffix: str) -> str:
    """An index name derived from a table name, kept within PostgreSQL's 63 bytes."""
    return f"{table[:63 - len(suffix) - 1]}_{suffix}"


# ---------------------------------------------------------------- sensor globs

def check_sensor_globs(patterns, where: str) -> list:
    for i, p in enumerate(patterns):
        if not isinstance(p, str) or not SENSOR_GLOB_RE.match(p):
            raise UserError(f"{where}[{i}]: {p!r} is not allowed; allowed: {SENSOR_GLOB_ALLOWED}")
    return list(patterns)


def glob_to_like(pattern: str) -> str:
    """Sensor glob → SQL LIKE pattern (``*`` → ``%``, ``?`` → ``_``, literal ``_``/``%``
    escaped with a backslash, LIKE's default escape character)."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "_%\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def match_sensors(names, patterns) -> "list[bool]":
    """For each sensor name: does any glob of ``patterns`` match it (case-sensitive)?"""
    import fnmatch

    return [any(fnmatch.fnmatchcase(str(n), p) for p in patterns) for n in names]


# ---------------------------------------------------------------- connection

def connection_kwargs(params: dict) -> dict:
    """libpq keywords from a step config (no password). Empty values are left out so
    libpq's own defaults (PGHOST, PGPORT, PGDATABASE, PGUSER, the Unix socket) apply."""
    out = {}
    for key in ("host", "port", "dbname", "user"):
        v = params.get(key)
        if v not in (None, "", 0):
            out[key] = str(v)
    return out


def target_label(params: dict) -> str:
    """``host:port/dbname`` as libpq will resolve it, for messages (never a password)."""
    kw = connection_kwargs(params)
    host = kw.get("host") or os.environ.get("PGHOST") or "localhost (Unix socket)"
    port = kw.get("port") or os.environ.get("PGPORT") or "5432"
    db = kw.get("dbname") or os.environ.get("PGDATABASE") or kw.get("user") or \
        os.environ.get("PGUSER") or "(default)"
    return f"{host}:{port}/{db}"


def redact(text: str) -> str:
    """Remove the password (from the environment) from any text that may be shown."""
    text = str(text)
    for var in (PASSWORD_ENV, "PGPASSWORD"):
        secret = os.environ.get(var)
        if secret:
            text = text.replace(secret, "***")
    text = re.sub(r"(password\s*=\s*)\S+", r"\1***", text, flags=re.I)
    return text


def classify_connect_error(message: str) -> str:
    """The cause of a libpq connection failure, in a few words, from its message text."""
    m = message.lower()
    if "password authentication failed" in m:
        return f"bad password or user ({_first_line(message)}; the password comes from ${PASSWORD_ENV})"
    if "no password supplied" in m or "fe_sendauth" in m:
        return f"the server wants a password; set ${PASSWORD_ENV} (or ~/.pgpass)"
    if "database" in m and "does not exist" in m:
        return f"database does not exist ({_first_line(message)})"
    if "role" in m and "does not exist" in m:
        return f"user does not exist ({_first_line(message)})"
    if "no pg_hba.conf entry" in m:
        return f"the server refuses this host/user/database (pg_hba.conf) ({_first_line(message)})"
    if ("could not connect" in m or "connection refused" in m or "timeout expired" in m
            or "could not translate host name" in m or "no route to host" in m
            or "is the server running" in m):
        return "server unreachable (is PostgreSQL running there, and the host/port right?)"
    return _first_line(message) or "connection failed"


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line.removeprefix("FATAL:").strip()
    return ""


def connect(params: dict, application_name: str = "pyjama", readonly: bool = False):
    """Open a connection with the config's settings and the password from the environment.

    Raises a one-line UserError (``cannot connect to host:port/dbname: <cause>``).
    """
    import psycopg2

    kw = connection_kwargs(params)
    secret = os.environ.get(PASSWORD_ENV)
    if secret:
        kw["password"] = secret
    kw["connect_timeout"] = CONNECT_TIMEOUT_S
    kw["application_name"] = application_name[:63]
    try:
        conn = psycopg2.connect(**kw)
    except psycopg2.OperationalError as exc:
        raise UserError(f"cannot connect to PostgreSQL at {target_label(params)}: "
                        f"{redact(classify_connect_error(str(exc)))}") from None
    if readonly:
        conn.set_session(readonly=True)
    return conn


def db_error(exc, what: str) -> UserError:
    """A psycopg2 error raised while working → one-line UserError (redacted)."""
    msg = getattr(exc, "pgerror", None) or str(exc)
    return UserError(f"{what}: {redact(_first_line(msg).removeprefix('ERROR:').strip())}")


# ---------------------------------------------------------------- tables

@dataclass(frozen=True)
class TableSpec:
    """The shape of one long table: columns in COPY order, the unique key, the time column."""

    columns: tuple            # ((name, SQL type), ...)
    key: tuple                # unique key column names, in index order
    time_column: str

    @property
    def names(self):
        return [c for c, _ in self.columns]


# Step 80: aggregated partitions. The key puts time after (device, sensor) so a Grafana
# panel "this device, these sensors, this time range" is one index range scan per sensor.
# domain is not in the key: a sensor name belongs to one domain (naming contract), and a
# narrower key is a cheaper index to maintain on every COPY.
LONG_80 = TableSpec(
    columns=(("ts", "timestamptz NOT NULL"), ("device_id", "text NOT NULL"),
             ("domain", "text NOT NULL"), ("sensor", "text NOT NULL"),
             ("value", "double precision"), ("quality_flag", "smallint")),
    key=("device_id", "sensor", "ts"),
    time_column="ts",
)

# Step 81: raw quick look. "Time" is quoted (mixed case) as the users' dashboards expect.
RAW_81 = TableSpec(
    columns=(("Time", "timestamptz NOT NULL"), ("device_id", "text NOT NULL"),
             ("sensor", "text NOT NULL"), ("value", "double precision")),
    key=("device_id", "sensor", "Time"),
    time_column="Time",
)


def table_exists(conn, schema: str, table: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL",
                    (f'"{check_identifier(schema, "schema")}"."{check_identifier(table, "table")}"',))
        return bool(cur.fetchone()[0])


# format_type() spelling of the types a spec declares (what an existing table must have).
_TYPE_NAMES = {"timestamptz": "timestamp with time zone", "text": "text",
               "double precision": "double precision", "smallint": "smallint"}


def ensure_table(conn, schema: str, table: str, spec: TableSpec, create: bool = True) -> None:
    """Check an existing table against ``spec`` BEFORE any DDL; create a missing one.

    * Existing table: every column we write must exist with our type; a NOT NULL column
      where we write NULLs, or another NOT NULL column without a default, would reject
      rows. A mismatch is one line naming the table, the column, its type and the
      expected type (:class:`UserError`). Nothing is ever created on an existing table
      (no index, no constraint): it may not be PyJAMA's.
    * Missing table (``create``): schema, table, unique key and BRIN index on time, in
      one transaction (so a table is either PyJAMA's whole or absent); concurrent jobs
      creating tables of one schema are serialised by an advisory lock.
    Commits."""
    import psycopg2
    from psycopg2 import sql

    qual = qualified(schema, table)
    label = f"{schema}.{table}"
    try:
        with conn.cursor() as cur:
            have = _table_columns(cur, schema, table)
            if have is None and create:
                cols = sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in spec.columns)
                key = sql.SQL(", ").join(sql.Identifier(c) for c in spec.key)
                _create_table(cur, schema, table, spec, qual, cols, key, index_name(table, "time_brin"))
                have = _table_columns(cur, schema, table)
        conn.commit()
    except psycopg2.Error as exc:
        conn.rollback()
        raise db_error(exc, f"cannot create table {label}") from None
    if have is not None:
        check_table_shape(label, have, spec)


def _table_columns(cur, schema: str, table: str):
    """{column: (format_type, not null, has default)} of an existing relation, or None.
    A relation that is not a plain or partitioned table is refused."""
    cur.execute("SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s", (schema, table))
    row = cur.fetchone()
    if row is None:
        return None
    oid, kind = row
    if kind not in ("r", "p"):
        what = {"v": "a view", "m": "a materialized view", "f": "a foreign table", "i": "an index",
                "S": "a sequence", "c": "a composite type"}.get(kind, f"a relation of kind {kind!r}")
        raise UserError(f"{schema}.{table} is {what}, not a table; allowed: a table PyJAMA created "
                        "(or a new table name)")
    cur.execute("SELECT attname, format_type(atttypid, atttypmod), attnotnull, atthasdef "
                "FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
                "ORDER BY attnum", (oid,))
    return {r[0]: (r[1], bool(r[2]), bool(r[3])) for r in cur.fetchall()}


def check_table_shape(label: str, have: dict, spec: TableSpec) -> None:
    """One-line UserError at the first column of ``have`` (an existing table) that does not
    take the rows ``spec`` describes."""
    for name, decl in spec.columns:
        base = decl.replace(" NOT NULL", "")
        want = _TYPE_NAMES[base]
        if name not in have:
            raise UserError(f"table {label}: column {name} is missing; expected {name} {want} "
                            f"(the columns PyJAMA writes: {', '.join(spec.names)}; or use a new table name)")
        typ, notnull, _ = have[name]
        if typ != want:
            raise UserError(f"table {label}: column {name} is {typ}; expected {want} "
                            "(fix the table or use a new table name)")
        if notnull and "NOT NULL" not in decl:
            raise UserError(f"table {label}: column {name} is {typ} NOT NULL; expected {want} "
                            "allowing NULL (a missing value is written as NULL)")
    for name, (typ, notnull, hasdef) in have.items():
        if name not in spec.names and notnull and not hasdef:
            raise UserError(f"table {label}: column {name} is {typ} NOT NULL without a default, which "
                            "would reject every row; expected: no such column, a default, or NULL allowed")


def _create_table(cur, schema, table, spec, qual, cols, key, brin) -> None:
    from psycopg2 import sql

    # One lock per schema: two jobs creating two tables of a new schema race on the schema.
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pyjama:ddl:{schema}",))
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}"."{table}"',))
    if cur.fetchone()[0]:       # created by a concurrent job while we waited for the lock
        return
    cur.execute(sql.SQL("CREATE TABLE {} ({}, CONSTRAINT {} UNIQUE ({}))").format(
        qual, cols, sql.Identifier(index_name(table, "key")), key))
    cur.execute(sql.SQL("CREATE INDEX {} ON {} USING brin ({}) "
                        "WITH (pages_per_range = 32)").format(
        sql.Identifier(brin), qual, sql.Identifier(spec.time_column)))
    cur.execute(sql.SQL("COMMENT ON TABLE {} IS %s").format(qual),
                (f"created by PyJAMA ({', '.join(spec.names)}; unique {', '.join(spec.key)})",))


# ---------------------------------------------------------------- one import per table

LOCK_NAMESPACE = 0x50594A41          # 'PYJA': first key of PyJAMA's advisory locks
LOCK_WAIT_ENV = "PYJAMA_PG_LOCK_WAIT"
LOCK_WAIT_S = 600.0                  # how long a waiting import waits before giving up


def _lock_key(schema: str, table: str) -> int:
    import zlib

    return zlib.crc32(f"{schema}.{table}".encode()) & 0x7FFFFFFF


def lock_holder(conn, schema: str, table: str) -> str:
    """Who holds the import lock of ``schema.table``, for messages: application name (it
    carries the client's pid and host), server pid and since when."""
    with conn.cursor() as cur:
        cur.execute("SELECT a.application_name, a.pid, a.backend_start FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                    "AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 2",
                    (LOCK_NAMESPACE, _lock_key(schema, table)))
        row = cur.fetchone()
    conn.commit()
    if row is None:
        return "a run that has just finished"
    app, pid, since = row
    since = iso_seconds(since)
    return f"{app or 'unnamed client'}, server pid {pid}, connected since {since}"


def busy_message(script: str, schema: str, table: str, holder: str) -> str:
    """THE one line of an import that finds another import of its table running."""
    return f"{script}: another import into {schema}.{table} is running ({holder})"


_THREAD_LOCKS: dict = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def thread_lock(schema: str, table: str):
    """Jobs of one workflow run are threads of one process: they queue here for a table
    (silently) before the advisory lock, which is then only ever contended by another run."""
    with _THREAD_LOCKS_GUARD:
        lock = _THREAD_LOCKS.setdefault(f"{schema}.{table}", threading.Lock())
    with lock:
        yield


def import_lock(conn, script: str, schema: str, table: str, wait: bool) -> bool:
    """Take the session advisory lock of ``schema.table`` (one import per table at a time,
    80 and 81 alike; the server releases it when the session ends, even after a kill).

    Free: taken, True. Busy and ``wait``: one line on stderr naming the other run
    (:func:`busy_message` + "; waiting for it"), then wait up to ``PYJAMA_PG_LOCK_WAIT``
    seconds (default 600): taken, True, or a UserError naming it. Busy and not ``wait``:
    False (the caller says :func:`busy_message` + what it does)."""
    import psycopg2

    key = (LOCK_NAMESPACE, _lock_key(schema, table))
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s, %s)", key)
        got = bool(cur.fetchone()[0])
    conn.commit()
    if got or not wait:
        return got
    holder = lock_holder(conn, schema, table)
    print(busy_message(script, schema, table, holder) + "; waiting for it", file=sys.stderr, flush=True)
    limit = float(os.environ.get(LOCK_WAIT_ENV) or LOCK_WAIT_S)
    try:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = %s", (f"{int(limit * 1000)}ms",))
            cur.execute("SELECT pg_advisory_lock(%s, %s)", key)
            cur.execute("RESET lock_timeout")
        conn.commit()
    except psycopg2.errors.LockNotAvailable:
        conn.rollback()
        raise UserError(busy_message(script, schema, table, holder) +
                        f" for more than {limit:g} s; nothing done this time") from None
    return True


def session_name(script: str) -> str:
    """The session's application_name: the step and this process (pid@host), so a busy
    message names the other run."""
    import socket

    return f"pyjama {script} pid {os.getpid()}@{socket.gethostname()}"[:63]


def device_sensors(cur, schema: str, table: str, device: str, sensor_likes=None) -> list:
    """Distinct sensors of ``device`` in the table, by a skip scan over the unique key
    (one index probe per sensor, whatever the table size). Optionally only those matching
    the LIKE patterns."""
    from psycopg2 import sql

    qual = qualified(schema, table)
    q = sql.SQL("""
        WITH RECURSIVE s(sensor) AS (
            SELECT min(sensor) FROM {t} WHERE device_id = %(d)s
          UNION ALL
            SELECT (SELECT min(sensor) FROM {t} WHERE device_id = %(d)s AND sensor > s.sensor)
            FROM s WHERE s.sensor IS NOT NULL
        )
        SELECT sensor FROM s WHERE sensor IS NOT NULL
          AND (%(likes)s::text[] IS NULL OR sensor LIKE ANY(%(likes)s::text[]))""").format(t=qual)
    cur.execute(q, {"d": device, "likes": list(sensor_likes) if sensor_likes is not None else None})
    return [r[0] for r in cur.fetchall()]


def delete_range(cur, schema: str, table: str, spec: TableSpec, device: str, sensors,
                 start=None, end=None, domains=None) -> int:
    """Delete the rows of ``device`` × ``sensors`` with start <= time < end (either bound
    may be None = open), optionally only of ``domains``. Returns the row count.

    ``sensors`` is an explicit list (see :func:`device_sensors`), so the delete is one
    index range scan per sensor."""
    from psycopg2 import sql

    if not sensors:
        return 0
    tcol = sql.Identifier(spec.time_column)
    cond = [sql.SQL("device_id = %(d)s"), sql.SQL("sensor = ANY(%(s)s::text[])")]
    if start is not None:
        cond.append(sql.SQL("{} >= %(a)s").format(tcol))
    if end is not None:
        cond.append(sql.SQL("{} < %(b)s").format(tcol))
    if domains:
        cond.append(sql.SQL("domain = ANY(%(dom)s::text[])"))
    q = sql.SQL("DELETE FROM {} WHERE {}").format(qualified(schema, table), sql.SQL(" AND ").join(cond))
    cur.execute(q, {"d": device, "s": list(sensors), "a": start, "b": end, "dom": list(domains or [])})
    return cur.rowcount


# ---------------------------------------------------------------- COPY

def nan_to_null(arr):
    """Float arrow array with NaN → null (PostgreSQL must get NULL, never the float NaN)."""
    import pyarrow.compute as pc

    return pc.if_else(pc.is_nan(arr), None, arr)


def csv_payload(table) -> bytes:
    """Arrow table → CSV bytes for ``COPY ... (FORMAT csv)``.

    pyarrow's writer quotes every string (so an empty string stays '' and a NULL is an
    unquoted empty field), writes timestamps as ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC, µs:
    exact; load them with :func:`copy_csv`, which reads them as UTC) and doubles in
    shortest round-trip form (exact). Callers turn NaN into null first
    (:func:`nan_to_null`)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # Timestamps are written without the zone suffix (the writer formats zoned timestamps
    # ~6× slower); copy_csv sets the session TimeZone to UTC, so they are read as UTC.
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type) and f.type.tz is not None:
            table = table.set_column(i, f.name, table.column(i).cast(pa.timestamp(f.type.unit)))
    buf = _io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, batch_size=1 << 16))
    return buf.getvalue()


def copy_csv(cur, schema: str, table: str, columns, payload: bytes) -> None:
    """COPY the CSV ``payload`` of :func:`csv_payload` into ``schema.table`` (``columns``
    in payload order). Sets the session TimeZone to UTC: the payload's timestamps are UTC."""
    from psycopg2 import sql

    if not payload:
        return
    cur.execute("SET TIME ZONE 'UTC'")
    q = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        qualified(schema, table), sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    cur.copy_expert(q.as_string(cur), _io.BytesIO(payload), size=1 << 20)


@contextlib.contextmanager
def transaction(conn, what: str):
    """One transaction: yields a cursor; commits at the end, rolls back on any error.
    A database error becomes one line, ``<what> (nothing was changed)``."""
    import psycopg2

    try:
        with conn.cursor() as cur:
            yield cur
        pause_before_commit()
        conn.commit()
    except psycopg2.Error as exc:
        conn.rollback()
        raise db_error(exc, f"{what} (nothing was changed)") from None
    except BaseException:
        conn.rollback()
        raise


def pause_before_commit() -> None:
    """Test hook (``PYJAMA_PG_PAUSE_BEFORE_COMMIT=<seconds>``): announce and sleep."""
    delay = os.environ.get(PAUSE_ENV)
    if delay:
        print(f"pyjama: COPY done, pausing {delay} s before COMMIT ({PAUSE_ENV})",
              file=sys.stderr, flush=True)
        time.sleep(float(delay))


# ---------------------------------------------------------------- receipts

def value_checksum(values) -> dict:
    """Audit figures of a value column: rows, NULL count and the exactly rounded sum of
    the non-null values (math.fsum: independent of row order). A sum beyond float64 is
    written as the text "inf" / "-inf" / "nan"."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    finite = v[~np.isnan(v)]
    try:
        s = math.fsum(finite.tolist()) if len(finite) else 0.0
    except (OverflowError, ValueError):     # the sum leaves float64 (or inf - inf)
        with np.errstate(over="ignore", invalid="ignore"):
            s = float(np.sum(finite))
    return {"rows": int(len(v)), "null_values": int(len(v) - len(finite)),
            "value_sum": s if math.isfinite(s) else repr(s)}


def utc_now_text() -> str:
    return iso(dt.datetime.now(dt.timezone.utc))
