"""Steps 80 and 81 against a REAL PostgreSQL server (fixtures pg_dsn / pg_conn in conftest).

Specification in short:
* 80 imports a (device, UTC day) partition by deleting that device × day × config scope
  and COPYing the partition's rows, in one transaction; a receipt is written after COMMIT.
* 81 parses raw files with the exposure's parser config, aggregates to the config's window
  and replaces the range (day range mode) or completes after the table's last time (auto).
* Passwords never show; identifiers are validated and quoted; errors are one line.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from pyjama import db, io, tidy
from pyjama.runner import run_step
from pyjama.errors import UserError

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
EXPO = "T"
STAGE70 = "70_aggregated/window=10s"
UTC = dt.timezone.utc


# ---------------------------------------------------------------- tiny project helpers

def make_project(root: Path) -> Path:
    """A project with exposure T: the template parser config and a one-step pipeline."""
    cfg = root / "configs" / EXPO
    cfg.mkdir(parents=True)
    text = (REPO / "configs" / "_template" / "10_parser.json").read_text()
    text = text.replace("{{EXPOSURE_RE}}", EXPO).replace("{{EXPOSURE}}", EXPO)
    (cfg / "10_parser.json").write_text(text)
    (cfg / "pipeline.json").write_text(json.dumps(
        {"exposure": EXPO, "steps": [{"script": "10_parser.py", "with": f"configs/{EXPO}/10_parser.json"}]}))
    (root / "data" / EXPO / "00_raw").mkdir(parents=True)
    return root


def config80(root: Path, pg: dict, name="80_pg.json", **over) -> str:
    c = {"exposure": EXPO, "input_stage": STAGE70, "output_stage": "80_pg",
         "host": pg["host"], "port": pg["port"], "dbname": pg["dbname"], "user": pg["user"],
         "schema": pg["schema"], "table": "t80"}
    c.update(over)
    (root / "configs" / EXPO / name).write_text(json.dumps(c))
    return f"configs/{EXPO}/{name}"


def write70(root: Path, device: str, day: str, rows) -> None:
    """rows: list of (HH:MM:SS[.ffffff], domain, sensor, value[, flag])."""
    ts = [f"{day}T{r[0]}Z" for r in rows]
    df = tidy.frame(ts=ts, device_id=device, domain=[r[1] for r in rows],
                    sensor=[r[2] for r in rows], value=[r[3] for r in rows],
                    quality_flag=[r[4] if len(r) > 4 else 0 for r in rows])
    io.write_tidy(root / io.partition_file(EXPO, STAGE70, device, day), df, {"pyjama.step": "test"})


def table_rows(conn, table, schema=None, where="", order="device_id, sensor, ts"):
    q = f"SELECT ts, device_id, domain, sensor, value, quality_flag FROM {table} {where} ORDER BY {order}"
    with conn.cursor() as cur:
        cur.execute(q)
        return cur.fetchall()


def utc(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def cli(root, *args, env=None, timeout=120):
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO)
    e.update(env or {})
    return subprocess.run([PY, str(REPO / "pyjama.py"), *args], cwd=root, capture_output=True,
                          text=True, env=e, timeout=timeout)


def receipt(root, device, day, stage="80_pg"):
    p = root / io.meta_file(EXPO, stage, f"device_id={device}", f"day={day}", "receipt.json")
    return json.loads(p.read_text()) if p.exists() else None


D1, D2 = "2026-01-20", "2026-01-21"


# ---------------------------------------------------------------- 80: pure helpers

def test_glob_to_like_escapes_underscore_and_percent():
    assert db.glob_to_like("m*__norm__mean") == r"m%\_\_norm\_\_mean"   # '_' is literal in a glob
    assert db.glob_to_like("m?") == "m_"                                 # '?' = one character
    assert db.glob_to_like("*") == "%"


def test_select_rows_by_domain_and_sensor_glob():
    from pyjama.steps.import_postgres import select_rows

    t = tidy.to_arrow(tidy.frame(ts=["2026-01-20T00:00:00Z"] * 4, device_id="a",
                                 domain=["bio_signal", "bio_signal", "environment", "bio_signal"],
                                 sensor=["m0__mean", "m0__std", "outdoor_temp__mean", "m11__mean"],
                                 value=[1.0, 2.0, 3.0, 4.0]))
    out, dropped = select_rows(t, ["bio_signal"], ["m*__mean"])
    assert out.column("value").to_pylist() == [1.0, 4.0]   # m0__std: glob; outdoor_temp: domain
    assert dropped == 2
    out, dropped = select_rows(t, [], ["*"])
    assert out.num_rows == 4 and dropped == 0             # defaults select everything
    out, dropped = select_rows(t.slice(0, 0), ["x"], ["*"])
    assert out.num_rows == 0 and dropped == 0


def test_classify_connect_errors_from_libpq_texts():
    c = db.classify_connect_error
    assert c('connection to server at "127.0.0.1", port 1 failed: Connection refused\n\tIs the server '
             'running on that host and accepting TCP/IP connections?').startswith("server unreachable")
    assert c('connection to server at "h" (10.0.0.1), port 5432 failed: FATAL:  password authentication '
             'failed for user "bob"\n').startswith("bad password or user")
    assert c('connection to server at "h", port 5432 failed: fe_sendauth: no password supplied\n') == \
        "the server wants a password; set $POSTGRES_PASSWORD (or ~/.pgpass)"
    assert c('connection to server at "h", port 5432 failed: FATAL:  database "nope" does not exist\n') \
        .startswith("database does not exist")


def test_value_checksum_is_exact_and_order_free():
    assert db.value_checksum([0.1] * 10) == {"rows": 10, "null_values": 0, "value_sum": 1.0}  # naive sum: 0.9999999999999999
    assert db.value_checksum([np.nan, 2.5]) == {"rows": 2, "null_values": 1, "value_sum": 2.5}
    assert db.value_checksum([1e308, 1e308])["value_sum"] == "inf"    # beyond float64: written as text
    assert db.value_checksum([]) == {"rows": 0, "null_values": 0, "value_sum": 0.0}


def test_redact_removes_the_password(monkeypatch):
    monkeypatch.setenv("POSTGRES_PASSWORD", "s3cr3t!")
    assert db.redact("auth failed with s3cr3t! and password=other") == "auth failed with *** and password=***"


# ---------------------------------------------------------------- 80: config safety

@pytest.mark.parametrize("bad", ['t"; DROP TABLE x; --', "t;x", 'a"b', "Upper", "1abc", ""])
def test_table_name_with_quote_or_semicolon_is_refused(pg_proj, pg_dsn, bad):
    path = config80(pg_proj, pg_dsn, table=bad)
    res = cli(pg_proj, "run", "80_import_postgres.py", "--with", path)
    assert res.returncode == 2
    assert res.stderr == (f"Error: {path}: $.table: {json.dumps(bad)} is not allowed; allowed: lower-case "
                          "letters, digits and '_', not starting with a digit, at most 63 characters\n")


def test_identifier_check_is_also_in_the_sql_layer():
    with pytest.raises(UserError, match=r"^schema: 'x\"y' is not allowed"):
        db.qualified('x"y', "t")


def test_password_in_config_is_an_error(pg_proj, pg_dsn):
    path = config80(pg_proj, pg_dsn, password="hunter2")
    res = cli(pg_proj, "run", "80_import_postgres.py", "--with", path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert res.stderr.startswith(f"Error: {path}: $.password: unknown key 'password'; allowed keys:")
    assert "hunter2" not in res.stderr + res.stdout


# ---------------------------------------------------------------- 80: import behaviour

def test_first_import_rows_receipt_and_ledger(pg_proj, pg_dsn, pg_conn):
    path = config80(pg_proj, pg_dsn, domains=["bio_signal"])
    entries = run_step("80_import_postgres.py", path, root=pg_proj)
    assert [e["partition"] for e in entries] == ["a/2026-01-20", "a/2026-01-21"]
    assert table_rows(pg_conn, "t80") == [
        (utc("2026-01-20T00:00:00Z"), "a", "bio_signal", "m0__mean", 1.5, 0),
        (utc("2026-01-20T00:00:10Z"), "a", "bio_signal", "m0__mean", 2.5, 0),
        (utc("2026-01-21T23:59:50Z"), "a", "bio_signal", "m0__mean", 3.0, 0),
    ]   # outdoor_temp__mean is of domain environment: not selected
    r = receipt(pg_proj, "a", D1)
    assert (r["rows"], r["null_values"], r["value_sum"], r["rows_replaced"]) == (2, 0, 4.0, 0)
    assert r["table"] == f"{pg_dsn['schema']}.t80"
    assert r["range"] == {"from": "2026-01-20T00:00:00.000000Z", "to": "2026-01-21T00:00:00.000000Z"}
    led = io.read_ledger(pg_proj / io.meta_file(EXPO, "80_pg", "device_id=a", f"day={D1}", "receipt.json"))
    assert (led["rows_in"], led["rows_out"]) == (3, 2)
    assert led["rejected"] == {"not selected (domains/sensors of the config)": 1}


def test_table_has_unique_key_and_brin_index(pg_proj, pg_dsn, pg_conn):
    run_step("80_import_postgres.py", config80(pg_proj, pg_dsn), root=pg_proj)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = 't80' "
                    "ORDER BY indexname", (pg_dsn["schema"],))
        defs = [r[0] for r in cur.fetchall()]
    assert any("UNIQUE" in d and "(device_id, sensor, ts)" in d for d in defs), defs
    assert any("USING brin (ts)" in d for d in defs), defs


def test_reimport_leaves_the_table_exactly_as_after_once(pg_proj, pg_dsn, pg_conn):
    path = config80(pg_proj, pg_dsn)
    run_step("80_import_postgres.py", path, root=pg_proj)
    once = table_rows(pg_conn, "t80")
    run_step("80_import_postgres.py", path, root=pg_proj)
    assert table_rows(pg_conn, "t80") == once          # no duplicates, same values
    assert len(once) == 4
    assert receipt(pg_proj, "a", D1)["rows_replaced"] == 3  # the second run replaced its 3 rows


def test_changed_partition_replaces_only_its_range_and_scope(pg_proj, pg_dsn, pg_conn):
    bio = config80(pg_proj, pg_dsn, name="80_bio.json", domains=["bio_signal"])
    env = config80(pg_proj, pg_dsn, name="80_env.json", domains=["environment"], output_stage="80_env")
    run_step("80_import_postgres.py", bio, root=pg_proj)
    run_step("80_import_postgres.py", env, root=pg_proj)
    # day 1 changes: m0 at 00:00:10 is gone, a new sensor m1 appears
    write70(pg_proj, "a", D1, [("00:00:00", "bio_signal", "m0__mean", 9.0),
                            ("00:00:00", "bio_signal", "m1__mean", 8.0),
                            ("00:00:00", "environment", "outdoor_temp__mean", 99.0)])
    run_step("80_import_postgres.py", bio, devices=["a"], day=D1, root=pg_proj)
    assert [(r[0].isoformat(), r[3], r[4]) for r in table_rows(pg_conn, "t80", order="ts, sensor")] == [
        ("2026-01-20T00:00:00+00:00", "m0__mean", 9.0),             # replaced
        ("2026-01-20T00:00:00+00:00", "m1__mean", 8.0),             # new
        ("2026-01-20T00:00:00+00:00", "outdoor_temp__mean", 12.25),  # other config's scope: kept
        ("2026-01-21T23:59:50+00:00", "m0__mean", 3.0),             # other day: kept
    ]


def test_device_absent_from_a_run_keeps_its_rows(pg_proj, pg_dsn, pg_conn):
    write70(pg_proj, "b", D1, [("12:00:00", "bio_signal", "m0__mean", 7.0)])
    path = config80(pg_proj, pg_dsn)
    run_step("80_import_postgres.py", path, root=pg_proj)
    # b's partition disappears from the stage (e.g. its data is reprocessed later)
    (pg_proj / io.partition_file(EXPO, STAGE70, "b", D1)).unlink()
    write70(pg_proj, "a", D1, [("00:00:00", "bio_signal", "m0__mean", 5.0)])
    run_step("80_import_postgres.py", path, root=pg_proj)
    rows = table_rows(pg_conn, "t80", where="WHERE ts < '2026-01-21'", order="device_id, ts")
    assert [(r[1], r[3], r[4]) for r in rows] == [("a", "m0__mean", 5.0), ("b", "m0__mean", 7.0)]


def test_nan_becomes_null_never_float_nan(pg_proj, pg_dsn, pg_conn):
    write70(pg_proj, "a", D1, [("00:00:00", "bio_signal", "m0__mean", float("nan"), 1),
                            ("00:00:10", "bio_signal", "m0__mean", 2.0)])
    run_step("80_import_postgres.py", config80(pg_proj, pg_dsn), devices=["a"], day=D1, root=pg_proj)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE value IS NULL), count(*) FILTER (WHERE value = 'NaN'), "
                    "min(quality_flag) FILTER (WHERE value IS NULL) FROM t80")
        assert cur.fetchone() == (1, 0, 1)   # the NaN row is kept (flag 1 says why), value NULL
    r = receipt(pg_proj, "a", D1)
    assert (r["rows"], r["null_values"], r["value_sum"]) == (2, 1, 2.0)


def test_timestamps_round_trip_exactly_in_utc(pg_proj, pg_dsn, pg_conn):
    write70(pg_proj, "a", D1, [("00:00:00.000001", "bio_signal", "m0__mean", 1.0),
                            ("13:14:15.999999", "bio_signal", "m0__mean", 2.0),
                            ("23:59:59.999999", "bio_signal", "m0__mean", 3.0)])
    run_step("80_import_postgres.py", config80(pg_proj, pg_dsn), devices=["a"], day=D1, root=pg_proj)
    with pg_conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'America/Los_Angeles'")   # the session zone must not matter
        cur.execute("SELECT (extract(epoch FROM ts) * 1e6)::bigint FROM t80 ORDER BY ts")
        got = [r[0] for r in cur.fetchall()]
    want = [int(pd.Timestamp(f"{D1}T{t}Z").value // 1000)
            for t in ("00:00:00.000001", "13:14:15.999999", "23:59:59.999999")]
    assert got == want


def test_batches_group_partitions_into_transactions(pg_proj, pg_dsn, pg_conn):
    from pyjama.steps.import_postgres import _batches
    from pyjama.pipeline import load_step_config
    from pyjama.project import Project

    path = config80(pg_proj, pg_dsn, batch_rows=2)
    st = load_step_config("80_import_postgres.py", path, pg_proj)
    project = Project.for_exposure(EXPO, pg_proj)
    sizes = [[p.label for p in b] for b in _batches(project, st, [("a", D1), ("a", D2)], 2)]
    assert sizes == [["a/2026-01-20"], ["a/2026-01-21"]]   # 3 + 1 rows > 2: two batches
    sizes = [[p.label for p in b] for b in _batches(project, st, [("a", D1), ("a", D2)], 4)]
    assert sizes == [["a/2026-01-20", "a/2026-01-21"]]
    run_step("80_import_postgres.py", path, root=pg_proj)
    assert len(table_rows(pg_conn, "t80")) == 4


def test_dry_run_touches_nothing(pg_proj, pg_dsn, pg_conn):
    path = config80(pg_proj, pg_dsn)
    res = cli(pg_proj, "run", "80_import_postgres.py", "--with", path, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "  a/2026-01-20: 3 rows (0 not selected) from data/T/70_aggregated/window=10s/" in res.stdout
    with pg_conn.cursor() as cur:
        cur.execute("SELECT to_regclass('t80')")
        assert cur.fetchone()[0] is None                 # no table created
    assert not (pg_proj / "data" / EXPO / "80_pg").exists()  # no receipt


def test_server_down_is_one_line_and_records_nothing(pg_proj, pg_dsn):
    path = config80(pg_proj, pg_dsn, host="127.0.0.1", port=1)
    res = cli(pg_proj, "run", "80_import_postgres.py", "--with", path)
    assert res.returncode == 2
    assert res.stderr == (f"Error: cannot connect to PostgreSQL at 127.0.0.1:1/{pg_dsn['dbname']}: server "
                          "unreachable (is PostgreSQL running there, and the host/port right?)\n")
    assert not (pg_proj / "data" / EXPO / "80_pg").exists()


def test_missing_database_is_one_line(pg_proj, pg_dsn):
    path = config80(pg_proj, pg_dsn, dbname="pyjama_no_such_db")
    res = cli(pg_proj, "run", "80_import_postgres.py", "--with", path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert res.stderr.startswith(f"Error: cannot connect to PostgreSQL at {pg_dsn['host']}:{pg_dsn['port']}"
                                 "/pyjama_no_such_db: database does not exist")


def test_password_never_appears_in_output_receipts_or_ledger(pg_proj, pg_dsn):
    secret = os.environ.get("POSTGRES_PASSWORD") or "Zq-7!secret-not-shown"
    env = {"POSTGRES_PASSWORD": secret}
    outputs = []
    for over in ({}, {"port": 1}, {"dbname": "pyjama_no_such_db"}):
        path = config80(pg_proj, pg_dsn, **over)
        res = cli(pg_proj, "run", "80_import_postgres.py", "--with", path, env=env)
        outputs += [res.stdout, res.stderr]
    res = cli(pg_proj, "run", "80_import_postgres.py", "--with", config80(pg_proj, pg_dsn), "--dry-run", env=env)
    outputs += [res.stdout, res.stderr]
    files = [p.read_text() for p in (pg_proj / "data").rglob("*.json")]
    assert receipt(pg_proj, "a", D1) is not None             # the first run did import
    assert all(secret not in text for text in outputs + files)


def test_kill_mid_import_leaves_no_half_day_and_rerun_completes(pg_proj, pg_dsn, pg_conn):
    path = config80(pg_proj, pg_dsn)
    run_step("80_import_postgres.py", path, root=pg_proj)
    before = table_rows(pg_conn, "t80")
    # new content for day 1, imported by a child that is killed between COPY and COMMIT
    write70(pg_proj, "a", D1, [("00:00:00", "bio_signal", "m0__mean", 100.0),
                            ("00:00:20", "bio_signal", "m0__mean", 200.0)])
    (pg_proj / io.meta_file(EXPO, "80_pg", "device_id=a", f"day={D1}", "receipt.json")).unlink()
    e = dict(os.environ, PYTHONPATH=str(REPO), **{db.PAUSE_ENV: "60"})
    child = subprocess.Popen([PY, str(REPO / "pyjama.py"), "run", "80_import_postgres.py", "--with", path,
                              "--device", "a", "--day", D1], cwd=pg_proj, env=e,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stderr.readline()
        assert "pausing 60 s before COMMIT" in line, line
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert table_rows(pg_conn, "t80") == before           # the old day 1, whole
    assert receipt(pg_proj, "a", D1) is None                  # nothing recorded as imported
    run_step("80_import_postgres.py", path, devices=["a"], day=D1, root=pg_proj)
    rows = table_rows(pg_conn, "t80", where="WHERE ts < '2026-01-21'")
    assert [r[4] for r in rows] == [100.0, 200.0]        # outdoor_temp is gone from the new day 1
    assert receipt(pg_proj, "a", D1)["rows"] == 2


# ---------------------------------------------------------------- 80: property test

def test_values_and_timestamps_survive_parquet_to_postgres_and_back(tmp_path_factory, pg_dsn, pg_conn):
    from hypothesis import HealthCheck, given, settings, strategies as st

    floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
    micros = st.integers(min_value=0, max_value=86_400_000_000 - 1)
    root = make_project(tmp_path_factory.mktemp("prop"))
    path = config80(root, pg_dsn, table="tprop")
    day0 = pd.Timestamp(D1, tz="UTC")

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(micros, floats), min_size=0, max_size=30, unique_by=lambda x: x[0]))
    def roundtrip(samples):
        ts = [day0 + pd.Timedelta(microseconds=us) for us, _ in samples]
        df = tidy.frame(ts=pd.Series(ts, dtype="datetime64[us, UTC]"), device_id="p", domain="bio_signal",
                        sensor="m0", value=[v for _, v in samples])
        io.write_tidy(root / io.partition_file(EXPO, STAGE70, "p", D1), df, {})
        run_step("80_import_postgres.py", path, devices=["p"], day=D1, root=root)
        with pg_conn.cursor() as cur:
            cur.execute("SELECT (extract(epoch FROM ts - %s) * 1e6)::bigint, value FROM tprop "
                        "WHERE device_id = 'p' ORDER BY ts", (day0.to_pydatetime(),))
            got = cur.fetchall()
        want = sorted((us, None if math.isnan(v) else v) for us, v in samples)
        assert [g[0] for g in got] == [w[0] for w in want]
        for (_, g), (_, w) in zip(got, want):
            assert (g is None and w is None) or (g == w and math.copysign(1, g) == math.copysign(1, w))

    roundtrip()


# ================================================================ 81: raw → aggregated table

def config81(root: Path, pg: dict, name="81_raw.json", **over) -> str:
    c = {"exposure": EXPO, "input_stage": "00_raw", "output_stage": "81_raw",
         "host": pg["host"], "port": pg["port"], "dbname": pg["dbname"], "user": pg["user"],
         "schema": pg["schema"], "table": "t81", "window": "10s"}
    c.update(over)
    (root / "configs" / EXPO / name).write_text(json.dumps(c))
    return f"configs/{EXPO}/{name}"


def write_raw(root: Path, device: str, day: str, lines, append=False) -> None:
    """lines: 'HH:MM:SS;m0:1;...' (the day and Z are added) in the stations' key:value format."""
    p = root / "data" / EXPO / "00_raw" / f"{EXPO}_{device}_{day}.csv"
    text = "".join(f"{day}T{ln.split(';', 1)[0]}Z;{ln.split(';', 1)[1]}\n" for ln in lines)
    with open(p, "a" if append else "w") as fh:
        fh.write(text)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # a visible mtime change


def rows81(conn, where=""):
    with conn.cursor() as cur:
        cur.execute(f'SELECT "Time", device_id, sensor, value FROM t81 {where} ORDER BY device_id, sensor, "Time"')
        return [(r[0].astimezone(UTC).strftime("%dT%H:%M:%S"), r[1], r[2], r[3]) for r in cur.fetchall()]


def test_aggregate_day_mean_per_window_keeps_raw_sensor_names():
    from pyjama.steps.import_raw_postgres import aggregate_day

    rows = tidy.frame(
        ts=["2026-01-20T00:00:01Z", "2026-01-20T00:00:09.999999Z",   # window 00:00:00
            "2026-01-20T00:00:10Z", "2026-01-20T00:00:15Z",          # window 00:00:10
            "2026-01-20T00:00:20Z"],                                 # window 00:00:20
        device_id="a", domain="bio_signal", sensor=["m0", "m0", "m0", "m0", "m1"],
        value=[1.0, 3.0, 5.0, np.nan, np.nan], quality_flag=[0, 0, 0, 1, 1])
    out = aggregate_day(rows, D1, 10, "mean")
    assert [t.strftime("%H:%M:%S") for t in out["Time"]] == ["00:00:00", "00:00:10", "00:00:20"]
    assert list(out["sensor"]) == ["m0", "m0", "m1"]           # raw names, no __mean suffix
    assert_allclose(out["value"], [2.0, 5.0, np.nan])           # (1+3)/2; missing ignored; only missing → NaN
    assert_allclose(aggregate_day(rows, D1, 60, "max")["value"], [5.0, np.nan])
    assert len(aggregate_day(rows.iloc[:0], D1, 10)) == 0


def test_floor_time_is_exact_to_the_microsecond():
    from pyjama.steps.import_raw_postgres import floor_time

    t = dt.datetime(2026, 1, 20, 12, 34, 56, 999999, tzinfo=UTC)
    assert floor_time(t, 10) == dt.datetime(2026, 1, 20, 12, 34, 50, tzinfo=UTC)
    assert floor_time(t, 3600) == dt.datetime(2026, 1, 20, 12, 0, tzinfo=UTC)


def test_window_must_divide_a_day(pg_proj, pg_dsn):
    path = config81(pg_proj, pg_dsn, window="7s")
    res = cli(pg_proj, "run", "81_import_raw_postgres.py", "--with", path)
    assert res.returncode == 2
    assert res.stderr == (f"Error: {path}: $.window: '7s' is not allowed; allowed: a window that divides "
                          "24 h exactly (e.g. 10s, 60s, 5min, 15min, 1h, 24h)\n")


def test_81_is_not_a_workflow_rule(pg_proj, pg_dsn):
    from pyjama.pipeline import load_step_config
    from pyjama.project import Project
    from pyjama.steps import get_step
    from pyjama.timewindow import parse_window

    st = load_step_config("81_import_raw_postgres.py", config81(pg_proj, pg_dsn), pg_proj)
    assert get_step("81_import_raw_postgres.py").rules(Project.for_exposure(EXPO, pg_proj), st,
                                                             parse_window(None, None)) == []


def test_range_import_parses_with_the_exposure_parser_and_replaces_the_range(pg_proj, pg_dsn, pg_conn):
    write_raw(pg_proj, "a", D1, ["00:00:01;m0:1;outdoor_temp:10.5",
                              "00:00:02;m0:3;outdoor_temp:NA",        # NA: a declared missing value
                              "00:00:02;m0:99",                        # duplicate (m0, ts): first kept
                              "00:00:11;m0:garbage",                   # rejected by the parser
                              "00:00:12;m0:7"])
    path = config81(pg_proj, pg_dsn)
    entries = run_step("81_import_raw_postgres.py", path, start=D1, end=D1, root=pg_proj)
    assert rows81(pg_conn) == [("20T00:00:00", "a", "m0", 2.0),         # (1 + 3) / 2
                               ("20T00:00:10", "a", "m0", 7.0),
                               ("20T00:00:00", "a", "outdoor_temp", 10.5)]
    assert entries[0]["rejected"] == {"duplicate (sensor, ts) merged: first": 1}
    assert (entries[0]["rows_in"], entries[0]["rows_out"], entries[0]["rows_imported"]) == (6, 5, 3)
    rec = receipt(pg_proj, "a", D1, stage="81_raw")
    assert rec["raw_files"] == ["T_a_2026-01-20.csv"] and rec["rows"] == 3
    # re-import: identical
    run_step("81_import_raw_postgres.py", path, start=D1, end=D1, root=pg_proj)
    assert len(rows81(pg_conn)) == 3
    # an instant range is widened to whole windows: [00:00:05, 00:00:12] → [00:00:00, 00:00:20)
    write_raw(pg_proj, "a", D1, ["00:00:01;m0:100", "00:00:12;m0:200", "00:00:25;m0:300"])
    run_step("81_import_raw_postgres.py", path, start=f"{D1}T00:00:05Z", end=f"{D1}T00:00:12Z", root=pg_proj)
    assert rows81(pg_conn) == [("20T00:00:00", "a", "m0", 100.0), ("20T00:00:10", "a", "m0", 200.0)]
    # outdoor_temp's 00:00:00 window was in the range and has no raw value any more → gone;
    # 00:00:25 was outside the range → not imported


def test_range_import_keeps_devices_without_raw_data(pg_proj, pg_dsn, pg_conn):
    write_raw(pg_proj, "a", D1, ["00:00:01;m0:1"])
    write_raw(pg_proj, "b", D1, ["00:00:01;m0:2"])
    path = config81(pg_proj, pg_dsn)
    run_step("81_import_raw_postgres.py", path, start=D1, end=D1, root=pg_proj)
    (pg_proj / "data" / EXPO / "00_raw" / f"{EXPO}_b_{D1}.csv").unlink()
    write_raw(pg_proj, "a", D1, ["00:00:01;m0:5"])
    run_step("81_import_raw_postgres.py", path, start=D1, end=D1, root=pg_proj)
    assert rows81(pg_conn) == [("20T00:00:00", "a", "m0", 5.0), ("20T00:00:00", "b", "m0", 2.0)]


def test_auto_mode_empty_partial_up_to_date_and_new_raw_file(pg_proj, pg_dsn, pg_conn):
    path = config81(pg_proj, pg_dsn)
    write_raw(pg_proj, "a", D1, ["00:00:01;m0:1", "00:00:11;m0:3"])
    write_raw(pg_proj, "b", D1, ["00:00:01;m0:10"])
    # empty table: everything
    run_step("81_import_raw_postgres.py", path, root=pg_proj, options={"mode": "auto"})
    assert rows81(pg_conn) == [("20T00:00:00", "a", "m0", 1.0), ("20T00:00:10", "a", "m0", 3.0),
                               ("20T00:00:00", "b", "m0", 10.0)]
    # up to date: nothing to do, not even parsing (the state file says so)
    assert run_step("81_import_raw_postgres.py", path, root=pg_proj, options={"mode": "auto"}) == []
    # the logger appends to a's file: the last window (00:00:10) is completed, 00:00:20 added
    write_raw(pg_proj, "a", D1, ["00:00:15;m0:5", "00:00:21;m0:7"], append=True)
    entries = run_step("81_import_raw_postgres.py", path, root=pg_proj, options={"mode": "auto"})
    assert [e["partition"] for e in entries] == ["a/2026-01-20"]          # b has nothing new
    assert rows81(pg_conn, "WHERE device_id = 'a'") == [
        ("20T00:00:00", "a", "m0", 1.0), ("20T00:00:10", "a", "m0", 4.0), ("20T00:00:20", "a", "m0", 7.0)]
    # a new raw file arrives (next day) for b
    write_raw(pg_proj, "b", D2, ["00:00:03;m0:20"])
    run_step("81_import_raw_postgres.py", path, root=pg_proj, options={"mode": "auto"})
    assert rows81(pg_conn, "WHERE device_id = 'b'") == [("20T00:00:00", "b", "m0", 10.0),
                                                         ("21T00:00:00", "b", "m0", 20.0)]
    # partial table: rows before the last time are not touched even if raw data changes
    write_raw(pg_proj, "a", D1, ["00:00:01;m0:1000", "00:00:11;m0:3", "00:00:15;m0:5", "00:00:21;m0:7"])
    run_step("81_import_raw_postgres.py", path, root=pg_proj, options={"mode": "auto"})
    assert rows81(pg_conn, "WHERE device_id = 'a'")[0] == ("20T00:00:00", "a", "m0", 1.0)


def test_auto_dry_run_touches_nothing(pg_proj, pg_dsn, pg_conn):
    write_raw(pg_proj, "a", D1, ["00:00:01;m0:1"])
    res = cli(pg_proj, "run", "81_import_raw_postgres.py", "--with", config81(pg_proj, pg_dsn), "--mode", "auto",
              "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "  a: last none (empty table); would read 1 raw file(s) and replace from the start: 1 rows" \
        in res.stdout
    with pg_conn.cursor() as cur:
        cur.execute("SELECT to_regclass('t81')")
        assert cur.fetchone()[0] is None
    assert not (pg_proj / "data" / EXPO / "81_raw").exists()


def test_auto_mode_refuses_a_window(pg_proj, pg_dsn):
    write_raw(pg_proj, "a", D1, ["00:00:01;m0:1"])
    res = cli(pg_proj, "run", "81_import_raw_postgres.py", "--with", config81(pg_proj, pg_dsn), "--mode", "auto",
              "--from", D1)
    assert res.returncode == 2
    assert res.stderr == ("Error: --mode auto takes no --from/--to: it completes, per device, what the table "
                          "lacks after its last time; use --mode range for a day range\n")


# ================================================================ Grafana dashboards

GRAFANA = REPO / "grafana"


def _seconds(text: str) -> int:
    m = re.fullmatch(r"'?(\d+)(s|m|h|d)'?", text.strip())
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def expand_grafana(sql: str, start: str, end: str, variables: dict, interval: str = "1m") -> str:
    """What Grafana does to a PostgreSQL panel query: template variables first (in the
    browser; a multi-value variable becomes 'a','b'), then the backend macros."""
    sql = sql.replace("$__interval", interval)
    for name in sorted(variables, key=len, reverse=True):
        vals = variables[name]
        text = ",".join(f"'{v}'" for v in vals) if isinstance(vals, list) else vals
        sql = sql.replace("${" + name + "}", text).replace("$" + name, text)

    def macro(m):
        name, args = m.group(1), [a.strip() for a in m.group(2).split(",")] if m.group(2).strip() else []
        if name == "timeFilter":
            return f"{args[0]} BETWEEN '{start}' AND '{end}'"
        if name == "timeFrom":
            return f"'{start}'"
        if name == "timeTo":
            return f"'{end}'"
        if name == "time":
            return f'{args[0]} AS "time"'
        if name in ("timeGroup", "timeGroupAlias"):
            s = _seconds(args[1])
            out = f"floor(extract(epoch from {args[0]})/{s})*{s}"
            return out + ' AS "time"' if name == "timeGroupAlias" else out
        raise AssertionError(f"macro $__{name} not expanded by this test")

    out = re.sub(r"\$__(\w+)\(([^()]*)\)", macro, sql)
    assert not re.search(r"\$[A-Za-z_{]", out), out      # every variable and macro replaced
    return out


def test_grafana_macro_expansion_matches_grafana():
    got = expand_grafana("SELECT $__timeGroupAlias(ts, $__interval), $__time(\"Time\") WHERE $__timeFilter(ts) "
                         "AND device_id = '$device' AND sensor IN ($sensor)",
                         "2026-01-20T00:00:00Z", "2026-01-20T23:59:59Z", {"device": "a", "sensor": ["m0", "m1"]})
    assert got == ("SELECT floor(extract(epoch from ts)/60)*60 AS \"time\", \"Time\" AS \"time\" WHERE ts BETWEEN "
                   "'2026-01-20T00:00:00Z' AND '2026-01-20T23:59:59Z' AND device_id = 'a' AND sensor IN ('m0','m1')")


def test_grafana_provisioning_files_hold_no_secret():
    import yaml

    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/pyjama-postgres.yaml").read_text())
    src = ds["datasources"][0]
    assert src["uid"] == "pyjama-pg" and src["type"] == "postgres"
    assert src["secureJsonData"]["password"] == "$PYJAMA_GRAFANA_PG_PASSWORD"   # from Grafana's environment
    prov = yaml.safe_load((GRAFANA / "provisioning/dashboards/pyjama.yaml").read_text())
    assert prov["providers"][0]["type"] == "file"
    for path in (GRAFANA / "dashboards").glob("*.json"):
        d = json.loads(path.read_text())
        assert all(p["datasource"]["uid"] == "pyjama-pg" for p in d["panels"]), path


DASHBOARD_SCHEMA = GRAFANA / "schema" / "dashboard.schema.json"   # its source: see its description


def grafana_interval(range_s: float, max_points: int = 1000) -> str:
    """$__interval as Grafana picks it: range / max data points, rounded up to a round
    interval (Grafana rounds to the nearest; up is the conservative bound here)."""
    for s in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if s >= range_s / max_points:
            return f"{s}s"
    return "86400s"


def test_dashboards_match_the_grafana_schema():
    import jsonschema

    schema = json.loads(DASHBOARD_SCHEMA.read_text())
    assert "@grafana/schema 13.2.3" in schema["description"]
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        d = json.loads(path.read_text())
        jsonschema.Draft202012Validator(schema).validate(d)
        assert d["schemaVersion"] == 42 and d["time"] == {"from": "now-7d", "to": "now"}, path
        names = {v["name"] for v in d["templating"]["list"]}
        for link in d["links"]:     # the campaign-span link only uses variables that exist
            assert set(re.findall(r"\$\{(\w+)\}", link["url"])) <= names, link
        for p in d["panels"]:       # every time series is grouped: a year costs what a day does
            for t in p["targets"]:
                if t["format"] == "time_series":
                    assert "$__timeGroupAlias(" in t["rawSql"], (path.name, p["title"])


def _template80(root, pg, name, table):
    text = (REPO / "configs" / "_template" / name).read_text().replace("{{EXPOSURE}}", EXPO)
    c = json.loads(text)
    c.update({k: pg[k] for k in ("host", "port", "dbname", "user", "schema")}, table=table)
    (root / "configs" / EXPO / name).write_text(json.dumps(c))
    return f"configs/{EXPO}/{name}"


def _write70_window(root, window, device, times, rows_at):
    ts, dom, sen, val = [], [], [], []
    for i, t in enumerate(times):
        for d, s, v in rows_at(i):
            ts.append(t), dom.append(d), sen.append(s), val.append(v)
    df = tidy.frame(ts=ts, device_id=device, domain=dom, sensor=sen, value=val, quality_flag=[0] * len(ts))
    io.write_tidy(root / io.partition_file(EXPO, f"70_aggregated/window={window}", device, D1), df, {"pyjama.step": "t"})


def test_every_dashboard_query_runs_bounded_for_a_day_and_a_year(tmp_path, pg_dsn, pg_conn):
    tables = ("bio_signal_10s", "bio_signal_1h", "environment_10s", "environment_1h", "raw_10s", "raw_60s")
    with pg_conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS " + ", ".join(tables))
    root = make_project(tmp_path)

    def series(i):      # the series of stage 70 that the templates select, and some they do not
        out = []
        for a in ("m0", "m1"):
            base = f"{a}__cbrt_inv__norm"
            out += [("bio_signal", f"{base}__mean", 0.9 - 0.1 * i), ("bio_signal", f"{base}__min", 0.5),
                    ("bio_signal", f"{base}__max", 1.0), ("bio_signal", f"{base}__share_flagged", 0.0),
                    ("bio_signal", f"{base}__state__mean", [1.0, 1.0, 0.0, 0.0][i % 4]),
                    ("bio_signal", f"{base}__std", 0.1), ("bio_signal", f"{a}__mean", 500.0),     # not selected
                    ("bio_signal", f"{base}__velocity__mean", 0.0)]                               # not selected
        return out + [("environment", "outdoor_temp__mean", 12.0 + i), ("environment", "outdoor_temp__std", 0.1)]

    _write70_window(root, "10s", "a", [f"{D1}T10:00:{s:02d}Z" for s in (0, 10, 20, 30)], series)
    _write70_window(root, "1h", "a", [f"{D1}T{h:02d}:00:00Z" for h in (9, 10, 11, 12)], series)
    imported = {}
    for dom in ("bio_signal", "environment"):
        for w in ("10s", "1h"):
            e = run_step("80_import_postgres.py", _template80(root, pg_dsn, f"80_postgres_{dom}_{w}.json",
                                                               f"{dom}_{w}"), root=root)
            imported[f"{dom}_{w}"] = e[0]["rows_out"]
    # 8 of the 10 bio series per animal and window are what the dashboard shows; environment: the mean
    assert imported == {"bio_signal_10s": 40, "bio_signal_1h": 40, "environment_10s": 4, "environment_1h": 4}
    write_raw(root, "a", D1, ["10:00:01;m0:500;outdoor_temp:12.5", "10:00:11;m0:510;outdoor_temp:12.6"])
    for w in ("10s", "60s"):
        run_step("81_import_raw_postgres.py", config81(root, pg_dsn, name=f"81_{w}.json", table=f"raw_{w}",
                                                       window=w, output_stage=f"81_{w}"), start=D1, end=D1, root=root)

    variables = {"device": "a", "animal": ["m0", "m1"], "sensor": ["m0", "outdoor_temp"]}
    ranges = {"day": (f"{D1}T00:00:00Z", f"{D1}T23:59:59Z", 86400),
              "year": ("2025-02-01T00:00:00Z", "2026-01-31T23:59:59Z", 365 * 86400)}
    results, checked = {}, 0
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        d = json.loads(path.read_text())
        queries = [(f"variable {v['name']}", v["query"], None) for v in d["templating"]["list"]]
        queries += [(f"panel {p['title']!r}", t["rawSql"], t["format"]) for p in d["panels"] for t in p["targets"]]
        for span, (start, end, seconds) in ranges.items():
            interval = grafana_interval(seconds)
            for what, sql, fmt in queries:
                q = expand_grafana(sql, start, end, variables, interval)
                with pg_conn.cursor() as cur:
                    cur.execute(q)
                    names = [c.name for c in cur.description]
                    got = cur.fetchall()
                assert got, f"{path.name} ({span}): {what} returned no rows:\n{q}"
                if fmt is not None:
                    assert "time" in names, f"{path.name}: {what}: no `time` column:\n{q}"
                if fmt == "time_series":   # at most one row per time group and series
                    series_n = len({r[names.index("metric")] for r in got})
                    assert len(got) <= series_n * (seconds / int(interval[:-1]) + 1) and len(got) <= 5000, what
                if fmt == "time_series" and span == "year":   # the fine table is never read, the coarse one is
                    with pg_conn.cursor() as cur:
                        cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + q)
                        plan = json.dumps(cur.fetchone()[0])
                    fine_loops = re.findall(r'"Relation Name": "\w+_10s"[^{}]*?"Actual Loops": (\d+)', plan)
                    assert set(fine_loops) <= {"0"}, (what, plan)       # pruned, or never executed
                    assert re.search(r'"Relation Name": "\w+_(1h|60s)"', plan), (what, plan)
                results[f"{path.stem} {span}: {what}"] = got
                checked += 1
    assert checked == 2 * (5 + 4 + 4 + 3)   # 2 ranges × (panels + variables): a new one is covered too
    day, year = "pyjama-valvometry day: panel ", "pyjama-valvometry year: panel "
    # a day reads the 10 s table (one group of 10:00:00-10:00:30 at a 90 s interval), a year the 1 h one
    assert results[day + "'Time closed per animal (%)'"] == [(1768903200, "m0", 50.0), (1768903200, "m1", 50.0)]
    # a year: 12 h groups of the hourly state 1, 1, 0 (09-11 h: 33 % closed) and 0 (12 h: 100 %)
    assert [(r[1], round(r[2], 1)) for r in results[year + "'Time closed per animal (%)'"]] == \
        [("m0", 33.3), ("m1", 33.3), ("m0", 100.0), ("m1", 100.0)]
    assert results[day + "'Completeness per animal (% of usable samples)'"][0][2] == 100.0
    assert sorted(r[1] for r in results[day + "'Opening range per animal (min and max)'"]) == \
        ["m0 max", "m0 min", "m1 max", "m1 min"]
    assert results["pyjama-valvometry day: variable campaign_from"] == [(1768899600000,)]    # 09:00 (1 h table)
    assert results["pyjama-valvometry day: variable campaign_to"] == [(1768914000000,)]      # 12:00 + 1 h


def test_throwaway_cluster_fallback_starts_serves_and_goes():
    """Where no server runs, the tests start their own with the local binaries."""
    import psycopg2

    from tests.pg_throwaway import Throwaway

    tw = Throwaway()
    try:
        dsn = tw.start()
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        folder = tw.dir
    finally:
        tw.stop()
    assert not folder.exists()
