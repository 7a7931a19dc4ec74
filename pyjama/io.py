"""Partition paths, atomic and deterministic parquet/JSON writes, provenance, the ledger.

Layout (DESIGN.md, docs/data-conventions.md):

    data/<EXPO>/<stage>/device_id=<id>/day=<YYYY-MM-DD>/part.parquet   the rows; the footer
                                      holds provenance and the ledger (key ``pyjama.ledger``)
    data/<EXPO>/_meta/<stage>/<same sub-path>/<name>                   every other file of a
                                      step (parser rejects, normalise fits, import receipts)

A stage folder holds only ``part.parquet`` files under hive partitions, so pyarrow, pandas,
DuckDB and Polars read it as one dataset, by folder or by glob.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from . import __version__
from .errors import UserError, errno_of

PART = "part.parquet"
META = "_meta"
LEDGER_KEY = "pyjama.ledger"
CONTENT_KEY = "pyjama.content"   # digest of the data rows (pyjama.io.content_digest)
JOB_KEY = "pyjama.key"           # what the job that wrote the file was made from (pyjama.keep)
KEPT = ".pyjama/kept"            # under data/<EXPO>/: a hard link of every partition output


def data_dir(expo: str) -> Path:
    return Path("data") / expo


def stage_dir(expo: str, stage: str) -> Path:
    return data_dir(expo) / stage


def partition_file(expo: str, stage: str, device: str, day: str, name: str = PART,
                   period: str = "day") -> str:
    """Relative path (str, as Snakemake wants) of one file of a (device, day) partition.
    (Plain string formatting: the DAG of a year asks for tens of thousands of these.)

    ``period``: the exposure's partition period (pipeline.json ``$.partition``). With
    ``week`` or ``month`` a day is held by its week's or month's file (``day`` may be a
    day or already the period's key, :mod:`pyjama.timewindow`), and a wildcard ``{day}``
    gives the pattern ``week={day}`` / ``month={day}``."""
    if period == "day":
        return f"data/{expo}/{stage}/device_id={device}/day={day}/{name}"
    if not day.startswith("{") and len(day) == 10:
        from .timewindow import period_key

        day = period_key(day, period)
    return f"data/{expo}/{stage}/device_id={device}/{period}={day}/{name}"


PARTITION_DIRS = ("day=", "week=", "month=")


def multi_day(path) -> bool:
    """True when ``path`` is the file of a week or month partition (it holds several days)."""
    return "/week=" in str(path) or "/month=" in str(path)


def meta_file(expo: str, stage: str, *parts: str) -> str:
    """Relative path of a step's other file (not a dataset row file) for ``stage``:
    ``data/<EXPO>/_meta/<stage>/<parts...>``, e.g. ``meta_file(X, "80_pg",
    "device_id=a", "day=2026-01-20", "receipt.json")``."""
    return "/".join([f"data/{expo}/{META}/{stage}", *parts])


def stage_of(rel: str) -> str:
    """The stage of a relative data path (``data/X/70_aggregated/window=10s/device_id=a/...``
    → ``70_aggregated/window=10s``; ``data/X/_meta/S/...`` → ``S``)."""
    parts = Path(rel).parts[2:]
    if parts and parts[0] == META:
        parts = parts[1:]
    out = []
    for p in parts:
        if p.startswith(("device_id=", "raw=", "batch=") + PARTITION_DIRS) or p == PART:
            break
        out.append(p)
    return "/".join(out)


def input_missing(rel: str) -> "UserError":
    """The one error for an input file that does not exist (the job that writes it has not
    run): names the file and the stage to build."""
    return UserError(f"{rel}: input missing; run the step that writes {stage_of(rel)} first "
                     "(or drawer.py run)")


def raw_partition_file(expo: str, stage: str, raw_name: str, name: str = PART, key: str = "raw") -> str:
    """Relative path of one file of a parser output, which is per raw file
    (``data/<EXPO>/<stage>/raw=<file name>/<name>``) or, with week or month partitions, per
    batch of raw files (``key="batch"``: ``data/<EXPO>/<stage>/batch=<device>_<period>/<name>``,
    :meth:`pyjama.project.RawIndex.batches`)."""
    return f"data/{expo}/{stage}/{key}={raw_name}/{name}"


def is_batch_file(path) -> bool:
    """True for a parser output of a batch of raw files (:func:`raw_partition_file`, key
    ``batch``): it holds several days, each read of it cuts one."""
    return "/batch=" in str(path)


def list_partitions(expo: str, stage: str, root: Path | None = None):
    """Sorted (device, day) pairs that have a part.parquet in ``stage``."""
    base = Path(root or ".") / stage_dir(expo, stage)
    out = []
    if not base.is_dir():
        return out
    for dev in sorted(base.glob("device_id=*")):
        for day in sorted(p for p in dev.iterdir() if p.name.startswith(PARTITION_DIRS)):
            if (day / PART).exists():
                out.append((dev.name.split("=", 1)[1], day.name.split("=", 1)[1]))
    return out


# ---------------------------------------------------------------- atomic writes

_UMASK = os.umask(0)
os.umask(_UMASK)


_HOST = __import__("socket").gethostname().replace("/", "_")
STALE_TMP_S = 6 * 3600     # a temp file of another host (or a reused pid) this old is a dead writer's


def _temp_for(path: Path) -> str:
    """A new temporary file beside ``path`` (same filesystem: os.replace is atomic), named
    ``.<name>.<pid>@<host>.<random>.tmp``. First removes the temporaries a dead writer of
    the same file left there (a kill between create and rename): the next run of the job
    that owns a file cleans up after the one that was killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared like any file
    return tmp


def remove_stale_temps(path: Path) -> int:
    """Delete ``.<name>.*.tmp`` beside ``path`` whose writer is dead: written by this host
    and its pid no longer runs, or older than STALE_TMP_S. Returns how many."""
    import time

    prefix = f".{path.name}."
    removed = 0
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except FileNotFoundError:
        return 0
    for n in names:
        owner = n[len(prefix):-len(".tmp")].rsplit(".", 1)[0]
        pid, _, host = owner.partition("@")
        full = path.parent / n
        try:
            dead = (host == _HOST and pid.isdigit() and not _alive(int(pid))) or \
                time.time() - full.stat().st_mtime > STALE_TMP_S
            if dead:
                full.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _atomic_replace(path: Path, write) -> None:
    path = Path(path)
    tmp = _named_temp_for(path)
    try:
        try:
            write(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            raise _named(exc, path) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _named_temp_for(path: Path) -> str:
    """:func:`_temp_for`, its OSError naming ``path`` (the file the temporary stands for)."""
    try:
        return _temp_for(path)
    except OSError as exc:
        raise _named(exc, path) from None


def _named(exc: OSError, path: Path) -> OSError:
    """The OSError of writing a temporary file, naming the file it stands for (a write()
    error such as ENOSPC carries no file name at all)."""
    code = errno_of(exc)
    if code is None:
        return exc
    return OSError(code, os.strerror(code), str(path))


class StagedFiles:
    """Files written now to temporaries beside their targets, renamed into place by
    :meth:`commit` (e.g. right after a database COMMIT). Everything that can fail on a
    full disk or a read-only folder happens before; the renames need no space."""

    def __init__(self):
        self._todo = []

    def json(self, path, obj) -> None:
        path = Path(path)
        tmp = _named_temp_for(path)
        try:
            Path(tmp).write_text(_json_text(obj), encoding="utf-8")
        except OSError as exc:
            os.unlink(tmp)
            raise _named(exc, path) from None
        except BaseException:
            os.unlink(tmp)
            raise
        self._todo.append((tmp, path))

    def commit(self) -> None:
        for tmp, path in self._todo:
            os.replace(tmp, path)
        self._todo = []

    def discard(self) -> None:
        for tmp, _ in self._todo:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self._todo = []


def _json_text(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path, obj) -> None:
    """Write JSON atomically, deterministic (sorted keys, 2-space indent, final newline)."""
    text = _json_text(obj)
    _atomic_replace(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_text(path, text: str) -> None:
    _atomic_replace(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def provenance(step: str, config_path: str, config_digest: str, inputs, ledger: dict | None = None) -> dict:
    """The key-value metadata every output parquet carries (no clock time: determinism);
    the main output of a job also carries its ledger."""
    meta = {
        "pyjama.step": step,
        "pyjama.config": str(config_path),
        "pyjama.config_digest": config_digest,
        "pyjama.code_version": __version__,
        "pyjama.inputs": json.dumps(sorted(str(p) for p in inputs)),
    }
    if ledger is not None:
        meta[LEDGER_KEY] = json.dumps(ledger, sort_keys=True, ensure_ascii=False)
    return meta


def write_table(path, table, meta: dict) -> None:
    """Write an arrow table as snappy parquet, atomically, with ``meta`` in the footer and
    the digest of its rows (:func:`content_digest`) under ``pyjama.content``.

    Same table + same meta → same bytes (no timestamps are written).
    """
    import pyarrow.parquet as pq

    schema_meta = dict(table.schema.metadata or {})
    schema_meta.pop(b"pandas", None)
    schema_meta.update({k.encode(): str(v).encode() for k, v in meta.items()})
    schema_meta[CONTENT_KEY.encode()] = content_digest(table).encode()   # never a caller's
    table = table.replace_schema_metadata(schema_meta)
    _atomic_replace(Path(path), lambda tmp: pq.write_table(
        table, tmp, compression="snappy", row_group_size=1 << 20, **encodings(table.schema)))


def content_digest(table) -> str:
    """Digest of an arrow table's rows: column names and types, then every column's
    values (its buffers: values, validity, offsets; a dictionary column's indices and
    dictionary), xxh3 128 bits. No metadata enters it (not the provenance, not the
    ledger, no clock), so a job that makes the same rows again writes the same digest, and
    the jobs reading its file see their input unchanged (pyjama.keep). Chunks are combined
    and slices copied first, so only the rows' own bytes are read: the same rows in the
    same types digest alike however they are laid out in memory.

    It is a change detector, not a signature: a non-cryptographic hash is enough (nobody
    forges a partition to make a job keep stale outputs). Measured at write time on a 1 Hz
    device-day (issue 14): 60_behaviour's 3.1 M rows (78 MB of columns) 3 ms with xxh3
    against 89 ms with blake2b, which it replaced (session 10): ~0.3 CPU-s saved per
    device-day over its 13 outputs. Files written before keep blake2b digests: their
    readers recompute once, then keep again."""
    import xxhash

    h = xxhash.xxh3_128()
    h.update(repr([(f.name, str(f.type)) for f in table.schema]).encode())
    h.update(b"rows %d;" % table.num_rows)
    for column in table.columns:
        _digest_array(h, _one_array(column))
    return h.hexdigest()


def _one_array(column):
    """A chunked column as one array of its own buffers (no chunks, no slice of a larger
    buffer: a table read from parquet is made of slices)."""
    import pyarrow as pa

    try:
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):      # e.g. dictionaries that differ
        return pa.concat_arrays([pa.array(c.to_pylist(), c.type) for c in column.chunks])


def _digest_array(h, arr) -> None:
    import pyarrow as pa

    h.update(b"%d:%d;" % (len(arr), arr.null_count))
    if isinstance(arr, pa.DictionaryArray):
        _digest_array(h, arr.indices)
        _digest_array(h, arr.dictionary)
        return
    if arr.offset or arr.nbytes < sum(b.size for b in arr.buffers() if b is not None):
        arr = pa.concat_arrays([arr])           # a slice of a larger buffer: its own bytes only
    for buf in arr.buffers():
        if buf is None:
            h.update(b"-;")
        else:
            h.update(b"%d;" % buf.size)
            h.update(buf)


def encodings(schema) -> dict:
    """Parquet encodings and statistics: ``ts`` delta-encoded (DELTA_BINARY_PACKED: a sorted
    series of timestamps is a run of near-equal steps), every other column
    dictionary-encoded; min/max statistics for every column but the dictionary-typed ones
    (``device_id``, ``domain``, ``sensor``).

    Measured on a 1 Hz device-day of 60_behaviour (5.2 M rows), against dictionary for all:
    19.2 MB → 5.6 MB, write 2.9 s → 1.7 s, read 0.65 s → 0.38 s (issue 14). The statistics
    of the dictionary columns were ~40 % of a write's CPU (60_behaviour's 3.1 M rows 141 →
    81 ms, 20_split's 1.1 M 60 → 37 ms; session 10) and serve only row-group skipping by
    sensor name in files of one to three row groups: a filter on them still reads right
    (pyarrow, DuckDB and Polars filter the rows), ``ts`` and the values keep theirs.
    pyarrow, DuckDB, Polars and pandas all read it."""
    import pyarrow as pa

    names = list(schema.names)
    stats = [n for n in names if not pa.types.is_dictionary(schema.field(n).type)]
    if "ts" in names and (pa.types.is_timestamp(schema.field("ts").type) or pa.types.is_integer(schema.field("ts").type)):
        return {"use_dictionary": [n for n in names if n != "ts"], "column_encoding": {"ts": "DELTA_BINARY_PACKED"},
                "write_statistics": stats}
    return {"use_dictionary": True, "write_statistics": stats}


def write_tidy(path, df, meta: dict) -> None:
    """Write a tidy frame to a partition file (device_id lives in the path)."""
    from . import tidy

    write_table(path, tidy.to_arrow(df), meta)


def read_tidy(path, device_id: str | None = None, day: str | None = None):
    """Read a partition file back into a tidy frame. ``device_id`` defaults to the one in
    the path (``.../device_id=<id>/...``). ``day``: the rows of that UTC day only, when the
    file is a week's or a month's (:func:`multi_day`); a day's file is read whole."""

    from . import tidy

    path = Path(path)
    if device_id is None:
        device_id = next((p.split("=", 1)[1] for p in path.parts if p.startswith("device_id=")), "")
    if day is not None and multi_day(path):
        return tidy.from_arrow(read_day(path, day), device_id)
    return tidy.from_arrow(read_parquet(path), device_id)


def read_day(path, day: str, lo=None, hi=None):
    """The rows of a week's or month's partition file with ts in [lo, hi) (default: the UTC
    day ``day``), in file order. A job of such a partition computes day by day and reads
    the same files for each day: the file is read once and kept (a few recent files, keyed
    by path, size, mtime and inode: a rewritten file is read again)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .timewindow import day_bounds

    table = period_table(path)
    if lo is None:
        lo, hi = day_bounds(day)
    unit = pa.timestamp("us", tz="UTC")
    ts = table.column("ts")
    mask = pc.and_(pc.greater_equal(ts, pa.scalar(lo, unit)), pc.less(ts, pa.scalar(hi, unit)))
    return table.filter(mask)


_TABLES: dict = {}
_TABLES_LOCK = __import__("threading").Lock()
_TABLES_MAX = 16
# at most this many bytes of kept tables (a worker process keeps them from job to job);
# the two most recently used are kept whatever their size (a job reads its period's file
# and a neighbour's, day after day)
_TABLES_BYTES = 512 << 20
_TABLES_KEEP = 2


def period_table(path):
    """The whole table of a week's or month's partition file, read once and kept (see
    :func:`read_day`; a job reads its period's file day by day)."""
    return _cached_table(Path(path))


def _cached_table(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        raise input_missing(relative(path)) from None
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    with _TABLES_LOCK:
        hit = _TABLES.pop(key, None)
        if hit is not None:
            _TABLES[key] = hit              # the most recently used last
    if hit is not None:
        return hit
    table = read_parquet(path)
    with _TABLES_LOCK:
        _TABLES[key] = table
        while len(_TABLES) > _TABLES_KEEP and (len(_TABLES) > _TABLES_MAX or
                                               sum(t.nbytes for t in _TABLES.values()) > _TABLES_BYTES):
            _TABLES.pop(next(iter(_TABLES)))        # the least recently used
    return table


def read_parquet(path, **kwargs):
    """pyarrow.parquet.read_table with a one-line error for a missing or damaged file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, **kwargs)
    except FileNotFoundError:
        raise input_missing(relative(path)) from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise unreadable(path, exc) from None


def unreadable(path, exc) -> UserError:
    """The one error for a parquet file pyarrow cannot read (damaged, not parquet)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(f"{path}: not a readable parquet file ({first}); delete it and re-run the "
                     "step that writes it")


def read_meta(path) -> dict:
    """The pyjama.* key-value metadata of a parquet file (reads the footer only); a missing
    or damaged file is the one-line error of :func:`read_parquet`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        md = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise input_missing(relative(path)) from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise unreadable(path, exc) from None
    return {k.decode(): v.decode() for k, v in md.items() if k.startswith(b"pyjama.")}


def kept_file(rel: str) -> str:
    """The kept hard link of a partition output: ``data/<EXPO>/<stage>/.../part.parquet`` →
    ``data/<EXPO>/.pyjama/kept/<stage>/.../part.parquet.kept`` (in a hidden folder and not
    named ``*.parquet``: no dataset reader and no glob of the parquet files lists it)."""
    parts = rel.split("/")
    return "/".join(parts[:2] + [KEPT] + parts[2:]) + ".kept"


# ---------------------------------------------------------------- the ledger

def ledger_entry(step: str, partition: str, rows_in: int, rows_out: int,
                 rejected: dict | None = None, combined: dict | None = None,
                 created: dict | None = None, **extra) -> dict:
    """One ledger record, balanced or refused:

        rows_in + sum(created) == rows_out + sum(combined) + sum(rejected)

    ``rejected``: input rows set aside, by reason; ``combined``: input rows folded into an
    output row with others (not lost: e.g. samples combined into one grid cell);
    ``created``: output rows made without an input row (e.g. grid cells with no sample).
    Most steps have neither and the rule is rows_in == rows_out + rejected. It is checked
    here, so a step that loses rows fails loudly instead of writing a false ledger."""
    def _clean(d):
        return {k: int(v) for k, v in sorted((d or {}).items()) if int(v)}

    rejected, combined, created = _clean(rejected), _clean(combined), _clean(created)
    if int(rows_in) + sum(created.values()) != int(rows_out) + sum(combined.values()) + sum(rejected.values()):
        raise AssertionError(f"{step} {partition}: ledger does not balance: in={rows_in} "
                             f"created={created} out={rows_out} combined={combined} rejected={rejected}")
    entry = {"step": step, "partition": partition, "rows_in": int(rows_in),
             "rows_out": int(rows_out), "rejected": rejected}
    if combined:
        entry["combined"] = combined
    if created:
        entry["created"] = created
    entry.update(extra)
    return entry


def merge_counts(days: list) -> dict:
    """The ledger counts of a week's or a month's job from its days' counts (or of a parser
    batch from its files'): numbers add up, counts by reason add up by reason, lists are
    joined in day order; any other value (a text) is kept when every day has the same, else
    the days' values are listed."""
    out: dict = {}
    for c in days:
        for k, v in c.items():
            if k not in out:
                out[k] = dict(v) if isinstance(v, dict) else (list(v) if isinstance(v, list) else v)
                continue
            have = out[k]
            if isinstance(v, bool) or v is None or isinstance(v, str):
                if have != v:
                    out[k] = (have if isinstance(have, list) else [have]) + [v]
            elif isinstance(v, (int, float)):
                out[k] = have + v
            elif isinstance(v, dict):
                out[k] = merge_counts([have, v])
            elif isinstance(v, list):
                have.extend(v)
            else:
                raise TypeError(f"ledger count {k!r}: cannot merge {type(v).__name__}")
    return out


def ledger_rows_written(led: dict) -> int:
    """The rows a job wrote to its stage (what the next stage reads in): ``rows_out`` plus
    ``rows_added``, the rows of the series steps 50 and 60 add to the rows they pass through
    (their ledgers balance on the rows passed through: rows_in = rows_out + rejected)."""
    return int(led.get("rows_out", 0)) + int(led.get("rows_added", 0) or 0)


def read_ledger(path) -> dict | None:
    """The ledger in the footer of a job's main output parquet, or None (no file, no ledger).
    A JSON file (receipts of the imports) holds it under ``"ledger"``."""
    p = Path(path)
    if not p.exists():
        return None
    if p.suffix == ".json":
        return json.loads(p.read_text(encoding="utf-8")).get("ledger")
    import pyarrow.parquet as pq

    md = pq.read_schema(p).metadata or {}
    text = md.get(LEDGER_KEY.encode())
    return None if text is None else json.loads(text.decode())


def relative(path) -> str:
    """``/root/x/data/E/...`` → ``data/E/...`` (errors name project-relative paths)."""
    parts = Path(path).parts
    return "/".join(parts[parts.index("data"):]) if "data" in parts else str(path)
