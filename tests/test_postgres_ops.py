"""Unattended imports (issue 13): bad targets, one import per table, receipts that describe
the table, OS errors as one line, no temp file left. Real PostgreSQL (conftest)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pyjama import db, io
from pyjama.runner import run_step
from tests.test_postgres import (D1, EXPO, PY, REPO, cli, config80, config81, make_project, receipt,
                                 rows81, table_rows, write70, write_raw)


# ---------------------------------------------------------------- bad import targets

@pytest.mark.parametrize("schema", ["pg_catalog", "information_schema", "pg_toast", "pg_temp_1"])
def test_system_schema_is_refused_before_connecting(pg_proj, pg_dsn, schema):
    path = config80(pg_proj, pg_dsn, schema=schema)
    res = cli(pg_proj, "run", "80_import_postgres.py", "--with", path)
    assert res.returncode == 2
    assert res.stderr == (f"Error: {path}: $.schema: '{schema}' is a PostgreSQL system schema; allowed: a "
                          "schema of your own, e.g. public or pyjama (not pg_catalog, information_schema, "
                          "pg_toast or a name starting with pg_)\n")


@pytest.mark.parametrize("step, make", [("80_import_postgres.py", config80), ("81_import_raw_postgres.py", config81)])
def test_system_table_name_is_refused(pg_proj, pg_dsn, step, make):
    path = make(pg_proj, pg_dsn, schema="public", table="pg_class")
    res = cli(pg_proj, "run", step, "--with", path)
    assert res.returncode == 2
    assert res.stderr == (f"Error: {path}: $.table: 'pg_class' is a PostgreSQL system table name (pg_* is "
                          "reserved for the system catalogs); allowed: a name not starting with pg_\n")


FOREIGN = {
    "text types": ("CREATE TABLE t80 (ts text, device_id text, domain text, sensor text, value text, "
                   "quality_flag text)",
                   "table {s}.t80: column ts is text; expected timestamp with time zone (fix the table or "
                   "use a new table name)"),
    "wrong columns": ("CREATE TABLE t80 (time timestamptz, device text, value double precision)",
                      "table {s}.t80: column ts is missing; expected ts timestamp with time zone (the columns "
                      "PyJAMA writes: ts, device_id, domain, sensor, value, quality_flag; or use a new table name)"),
    "value not null": ("CREATE TABLE t80 (ts timestamptz, device_id text, domain text, sensor text, "
                       "value double precision NOT NULL, quality_flag smallint)",
                       "table {s}.t80: column value is double precision NOT NULL; expected double precision "
                       "allowing NULL (a missing value is written as NULL)"),
    "extra not null": ("CREATE TABLE t80 (ts timestamptz, device_id text, domain text, sensor text, "
                       "value double precision, quality_flag smallint, site text NOT NULL)",
                       "table {s}.t80: column site is text NOT NULL without a default, which would reject "
                       "every row; expected: no such column, a default, or NULL allowed"),
    "a view": ("CREATE VIEW t80 AS SELECT now() AS ts",
               "{s}.t80 is a view, not a table; allowed: a table PyJAMA created (or a new table name)"),
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_existing_table_of_another_shape_is_refused_and_left_untouched(pg_proj, pg_dsn, pg_conn, case):
    ddl, message = FOREIGN[case]
    with pg_conn.cursor() as cur:
        cur.execute(ddl)
    res = cli(pg_proj, "run", "80_import_postgres.py", "--with", config80(pg_proj, pg_dsn))
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND tablename = 't80'",
                    (pg_dsn["schema"],))
        indexes = cur.fetchone()[0]
        if "VIEW" in ddl:
            cur.execute("DROP VIEW t80")
    assert res.returncode == 2
    assert res.stderr == "Error: " + message.format(s=pg_dsn["schema"]) + "\n"
    assert indexes == 0                                    # nothing created on a foreign table
    assert receipt(pg_proj, "a", D1) is None


def test_81_checks_an_existing_table_too_even_in_a_dry_run(pg_proj, pg_dsn, pg_conn):
    with pg_conn.cursor() as cur:
        cur.execute('CREATE TABLE t81 ("Time" text, device_id text, sensor text, value double precision)')
    write_raw(pg_proj, "a", D1, ["00:00:01;m0:1"])
    for extra in ([], ["--dry-run"]):
        res = cli(pg_proj, "run", "81_import_raw_postgres.py", "--with", config81(pg_proj, pg_dsn), "--mode", "auto", *extra)
        assert res.returncode == 2, res.stderr
        assert res.stderr == (f"Error: table {pg_dsn['schema']}.t81: column Time is text; expected timestamp "
                              "with time zone (fix the table or use a new table name)\n")


def test_a_table_pyjama_created_is_accepted_and_marked(pg_proj, pg_dsn, pg_conn):
    path = config80(pg_proj, pg_dsn)
    run_step("80_import_postgres.py", path, root=pg_proj)
    run_step("80_import_postgres.py", path, root=pg_proj)     # the second run checks it and goes on
    with pg_conn.cursor() as cur:
        cur.execute("SELECT obj_description('t80'::regclass)")
        assert cur.fetchone()[0].startswith("created by PyJAMA")


# ---------------------------------------------------------------- one import per table

def _popen(root, args, env):
    e = dict(os.environ, PYTHONPATH=str(REPO), **env)
    return subprocess.Popen([PY, str(REPO / "pyjama.py"), *args], cwd=root, env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_concurrent_80_runs_the_second_names_the_first_and_waits(pg_proj, pg_dsn, pg_conn):
    path = config80(pg_proj, pg_dsn)
    first = _popen(pg_proj, ["run", "80_import_postgres.py", "--with", path, "--quiet"], {db.PAUSE_ENV: "3"})
    try:
        assert "pausing 3 s before COMMIT" in first.stderr.readline()
        second = _popen(pg_proj, ["run", "80_import_postgres.py", "--with", path, "--quiet"], {})
        out2, err2 = second.communicate(timeout=60)
        out1, err1 = first.communicate(timeout=60)
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
    assert (first.returncode, second.returncode) == (0, 0), err1 + err2
    pattern = (rf"80_import_postgres.py: another import into {pg_dsn['schema']}.t80 is running "
               rf"\(pyjama 80_import_postgres.py pid {first.pid}@[^,]+, server pid \d+, connected since "
               r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\); waiting for it\n")
    assert re.fullmatch(pattern, err2), err2
    rows = table_rows(pg_conn, "t80")
    assert len(rows) == len(set((r[1], r[3], r[0]) for r in rows)) == 4     # no duplicate, nothing lost


def test_waiting_import_gives_up_after_the_lock_wait_naming_the_other_run(pg_proj, pg_dsn, pg_conn):
    path = config80(pg_proj, pg_dsn)
    first = _popen(pg_proj, ["run", "80_import_postgres.py", "--with", path, "--quiet"], {db.PAUSE_ENV: "6"})
    try:
        assert "pausing" in first.stderr.readline()
        res = cli(pg_proj, "run", "80_import_postgres.py", "--with", path, env={db.LOCK_WAIT_ENV: "1"})
    finally:
        first.kill()
        first.wait(10)
    assert res.returncode == 2
    last = res.stderr.splitlines()[-1]
    assert re.fullmatch(rf"Error: 80_import_postgres.py: another import into {pg_dsn['schema']}.t80 is running "
                        rf"\(pyjama 80_import_postgres.py pid {first.pid}@.*\) for more than 1 s; nothing "
                        "done this time", last), res.stderr


def test_81_auto_skips_with_the_same_message_while_80_style_lock_is_held(pg_proj, pg_dsn, pg_conn):
    import psycopg2

    write_raw(pg_proj, "a", D1, ["00:00:01;m0:1"])
    path = config81(pg_proj, pg_dsn)
    run_step("81_import_raw_postgres.py", path, root=pg_proj, options={"mode": "auto"})
    other = psycopg2.connect(host=pg_dsn["host"], port=pg_dsn["port"], dbname=pg_dsn["dbname"],
                             user=pg_dsn["user"], application_name="someone else")
    try:
        assert db.import_lock(other, "test", pg_dsn["schema"], "t81", wait=False)
        write_raw(pg_proj, "a", D1, ["00:00:01;m0:1", "00:00:11;m0:2"])
        res = cli(pg_proj, "run", "81_import_raw_postgres.py", "--with", path, "--mode", "auto", "--quiet")
    finally:
        other.close()
    assert res.returncode == 0
    assert re.fullmatch(rf"81_import_raw_postgres.py: another import into {pg_dsn['schema']}.t81 is running "
                        r"\(someone else, server pid \d+, connected since \S+Z\); nothing done this time\n",
                        res.stderr), res.stderr


# ---------------------------------------------------------------- 81 receipts = what the table holds

def test_81_auto_after_a_day_range_keeps_the_whole_day_in_the_receipt(pg_proj, pg_dsn, pg_conn):
    write_raw(pg_proj, "a", D1, [f"{h:02d}:{m:02d}:0{s};m0:{h + m + s}" for h in (0, 12, 23) for m in (0, 59)
                              for s in (1, 5)])
    path = config81(pg_proj, pg_dsn)
    run_step("81_import_raw_postgres.py", path, start=D1, end=D1, root=pg_proj)
    r1 = receipt(pg_proj, "a", D1, stage="81_raw")
    assert r1["rows"] == 6 and r1["range"] == {"from": "2026-01-20T00:00:00.000000Z",
                                                "to": "2026-01-21T00:00:00.000000Z"}
    run_step("81_import_raw_postgres.py", path, root=pg_proj, options={"mode": "auto"})
    r2 = receipt(pg_proj, "a", D1, stage="81_raw")
    rows = rows81(pg_conn)
    assert r2["mode"] == "auto" and r2["imported"]["from"] == "2026-01-20T23:59:00.000000Z"
    assert r2["imported"]["rows"] == 1                      # auto re-covered the last window only
    assert (r2["rows"], r2["value_sum"]) == (len(rows), sum(r[3] for r in rows)) == (6, r1["value_sum"])
    assert r2["range"] == r1["range"]


# ---------------------------------------------------------------- temp files and OS errors

def test_temp_files_of_a_dead_writer_are_removed_on_the_next_write(tmp_path):
    target = tmp_path / "device_id=a" / "day=2026-01-20" / "part.parquet"
    target.parent.mkdir(parents=True)
    dead = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = target.parent / f".part.parquet.{dead.stdout.strip()}@{io._HOST}.abcd1234.tmp"
    stale.write_bytes(b"half")
    other_host = target.parent / ".part.parquet.1@elsewhere.abcd1234.tmp"   # a live writer elsewhere
    other_host.write_bytes(b"half")
    mine = target.parent / f".part.parquet.{os.getpid()}@{io._HOST}.zz.tmp"  # this process: alive
    mine.write_bytes(b"x")
    io.write_json(target.with_name("x.json"), {})            # another file's write: not its business
    assert stale.exists()
    io.write_text(target, "data")
    assert not stale.exists() and other_host.exists() and mine.exists()
    old = time.time() - io.STALE_TMP_S - 10
    os.utime(other_host, (old, old))
    io.write_text(target, "data")
    assert not other_host.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([".part.parquet." + mine.name[14:],
                                                                     "part.parquet", "x.json"])


def test_os_errors_are_one_line_naming_the_file():
    import errno

    from pyjama.errors import os_error_text

    assert os_error_text(OSError(errno.ENOSPC, "No space left on device", "/nowhere/r.json")) == \
        "/nowhere/r.json: no space left on device; free space on that filesystem and run again"
    assert os_error_text(PermissionError(errno.EACCES, "Permission denied", "/x")) == \
        "/x: permission denied; allowed: a folder this user may write (check its owner and mode)"
    assert os_error_text(OSError(errno.EROFS, "Read-only file system", "/x")) == \
        "/x: read-only file system; allowed: a writable folder (remount it read-write or run elsewhere)"


def test_errno_of_counts_pyarrows_errno_less_full_disk_as_enospc():
    """pyarrow raises OSError("... No space left on device") with errno None: errno_of is the
    one place that reads it as ENOSPC, for the one-line error and for io's named rewrite."""
    import errno

    from pyjama.errors import errno_of, os_error_text

    arrow_full = OSError("IOError: error writing to .part.parquet.tmp: No space left on device")
    assert arrow_full.errno is None
    assert errno_of(arrow_full) == errno.ENOSPC
    assert errno_of(OSError(errno.EACCES, "Permission denied", "/x")) == errno.EACCES
    assert errno_of(OSError("something else")) is None
    assert os_error_text(arrow_full) == "no space left on device; free space on that filesystem and run again"
    named = io._named(arrow_full, Path("data/X/20_split/part.parquet"))
    assert (named.errno, named.filename) == (errno.ENOSPC, "data/X/20_split/part.parquet")
    assert io._named(OSError("something else"), Path("p")).errno is None


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MB tmpfs (root only); skipped with the reason where mounting is not allowed."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if not shutil.which("mount"):
        pytest.skip("no mount command: the disk-full test needs a small tmpfs")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.strip() or res.returncode}): "
                    "the disk-full test needs root or CAP_SYS_ADMIN")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_disk_full_and_read_only_are_one_line_and_roll_the_import_back(small_fs, pg_dsn, pg_conn):
    with pg_conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS t80")
    root = make_project(small_fs)
    write70(root, "a", D1, [("00:00:00", "bio_signal", "m0__mean", 1.5)])
    path = config80(root, pg_dsn)
    filler = _fill(small_fs)
    res = cli(root, "run", "80_import_postgres.py", "--with", path)
    assert res.returncode == 2, res.stderr
    assert res.stderr == ("Error: 80_import_postgres.py: data/T/_meta/80_pg/device_id=a/day=2026-01-20/receipt.json: "
                          "no space left on device; free space on that filesystem and run again\n")
    assert table_rows(pg_conn, "t80") == []                 # rolled back: no rows without receipt
    assert not list(small_fs.rglob("*.tmp"))
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        res = cli(root, "run", "80_import_postgres.py", "--with", path)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    assert res.returncode == 2
    assert res.stderr == ("Error: 80_import_postgres.py: data/T/_meta/80_pg/device_id=a/day=2026-01-20/receipt.json: "
                          "read-only file system; allowed: a writable folder (remount it read-write or run "
                          "elsewhere)\n")
    assert table_rows(pg_conn, "t80") == []
    res = cli(root, "run", "80_import_postgres.py", "--with", path, "--quiet")
    assert res.returncode == 0 and len(table_rows(pg_conn, "t80")) == 1
    assert json.loads((root / io.meta_file(EXPO, "80_pg", "device_id=a", f"day={D1}", "receipt.json")).read_text())["rows"] == 1


# ---------------------------------------------------------------- demo generator

@pytest.mark.parametrize("bad", ["../x", "a/b"])
def test_demo_generator_checks_the_exposure_name_like_manager(tmp_path, bad):
    res = subprocess.run([PY, "-m", "pyjama.demo", str(tmp_path / "out"), "--exposure", bad, "--days", "1",
                          "--devices", "1"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2
    assert res.stderr == (f"Error: --exposure: {bad!r} is not allowed; allowed: letters, digits, '_', '-', "
                          "'.' (not first, no '..'), at most 64 characters\n")
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()
