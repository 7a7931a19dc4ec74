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
from pyjama.cli import run_step
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
    p = root / io.partition_file(EXPO, stage, device, day, "receipt.json")
    return json.loads(p.read_text()) if p.exists() else None


D1, D2 = "2026-01-20", "2026-01-21"


@pytest.fixture
def proj(tmp_path, pg_dsn, pg_conn):
    """A project with two partitions of device a; table t80 dropped before each test."""
    with pg_conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS t80, t81")
    root = make_project(tmp_path)
    write70(root, "a", D1, [("00:00:00", "bio_signal", "m0__mean", 1.5),
                            ("00:00:10", "bio_signal", "m0__mean", 2.5),
                            ("00:00:00", "environment", "outdoor_temp__mean", 12.25)])
    write70(root, "a", D2, [("23:59:50", "bio_signal", "m0__mean", 3.0)])
    return root


# ---------------------------------------------------------------- 80: pure helpers

def test_glob_to_like_escapes_underscore_and_percent():
    assert db.glob_to_like("m*__norm__mean") == r"m%\_\_norm\_\_mean"   # '_' is literal in a glob
    assert db.glob_to_like("m?") == "m_"                                 # '?' = one character
    assert db.glob_to_like("*") == "%"


def test_select_rows_by_domain_and_sensor_glob():
    import pyarrow as pa
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


def test_redact_removes_the_password(monkeypatch):
    monkeypatch.setenv("POSTGRES_PASSWORD", "s3cr3t!")
    assert db.redact("auth failed with s3cr3t! and password=other") == "auth failed with *** and password=***"


# ---------------------------------------------------------------- 80: config safety

@pytest.mark.parametrize("bad", ['t"; DROP TABLE x; --', "t;x", 'a"b', "Upper", "1abc", ""])
def test_table_name_with_quote_or_semicolon_is_refused(proj, pg_dsn, bad):
    path = config80(proj, pg_dsn, table=bad)
    res = cli(proj, "run", "80_import_postgres.py", "--with", path)
    assert res.returncode == 2
    assert res.stderr == (f"Error: {path}: $.table: {json.dumps(bad)} is not allowed; allowed: lower-case "
                          "letters, digits and '_', not starting with a digit, at most 63 characters\n")


def test_identifier_check_is_also_in_the_sql_layer():
    with pytest.raises(UserError, match=r"^schema: 'x\"y' is not allowed"):
        db.qualified('x"y', "t")


def test_password_in_config_is_an_error(proj, pg_dsn):
    path = config80(proj, pg_dsn, password="hunter2")
    res = cli(proj, "run", "80_import_postgres.py", "--with", path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert res.stderr.startswith(f"Error: {path}: $.password: unknown key 'password'; allowed keys:")
    assert "hunter2" not in res.stderr + res.stdout


# ---------------------------------------------------------------- 80: import behaviour

def test_first_import_rows_receipt_and_ledger(proj, pg_dsn, pg_conn):
    path = config80(proj, pg_dsn, domains=["bio_signal"])
    entries = run_step("80_import_postgres.py", path, root=proj)
    assert [e["partition"] for e in entries] == ["a/2026-01-20", "a/2026-01-21"]
    assert table_rows(pg_conn, "t80") == [
        (utc("2026-01-20T00:00:00Z"), "a", "bio_signal", "m0__mean", 1.5, 0),
        (utc("2026-01-20T00:00:10Z"), "a", "bio_signal", "m0__mean", 2.5, 0),
        (utc("2026-01-21T23:59:50Z"), "a", "bio_signal", "m0__mean", 3.0, 0),
    ]   # outdoor_temp__mean is of domain environment: not selected
    r = receipt(proj, "a", D1)
    assert (r["rows"], r["null_values"], r["value_sum"], r["rows_replaced"]) == (2, 0, 4.0, 0)
    assert r["table"] == f"{pg_dsn['schema']}.t80"
    assert r["range"] == {"from": "2026-01-20T00:00:00.000000Z", "to": "2026-01-21T00:00:00.000000Z"}
    led = io.read_ledger(proj / io.partition_file(EXPO, "80_pg", "a", D1, io.LEDGER))
    assert (led["rows_in"], led["rows_out"]) == (3, 2)
    assert led["rejected"] == {"not selected (domains/sensors of the config)": 1}


def test_table_has_unique_key_and_brin_index(proj, pg_dsn, pg_conn):
    run_step("80_import_postgres.py", config80(proj, pg_dsn), root=proj)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = 't80' "
                    "ORDER BY indexname", (pg_dsn["schema"],))
        defs = [r[0] for r in cur.fetchall()]
    assert any("UNIQUE" in d and "(device_id, sensor, ts, domain)" in d for d in defs), defs
    assert any("USING brin (ts)" in d for d in defs), defs


def test_reimport_leaves_the_table_exactly_as_after_once(proj, pg_dsn, pg_conn):
    path = config80(proj, pg_dsn)
    run_step("80_import_postgres.py", path, root=proj)
    once = table_rows(pg_conn, "t80")
    run_step("80_import_postgres.py", path, root=proj)
    assert table_rows(pg_conn, "t80") == once          # no duplicates, same values
    assert len(once) == 4
    assert receipt(proj, "a", D1)["rows_replaced"] == 3  # the second run replaced its 3 rows


def test_changed_partition_replaces_only_its_range_and_scope(proj, pg_dsn, pg_conn):
    bio = config80(proj, pg_dsn, name="80_bio.json", domains=["bio_signal"])
    env = config80(proj, pg_dsn, name="80_env.json", domains=["environment"], output_stage="80_env")
    run_step("80_import_postgres.py", bio, root=proj)
    run_step("80_import_postgres.py", env, root=proj)
    # day 1 changes: m0 at 00:00:10 is gone, a new sensor m1 appears
    write70(proj, "a", D1, [("00:00:00", "bio_signal", "m0__mean", 9.0),
                            ("00:00:00", "bio_signal", "m1__mean", 8.0),
                            ("00:00:00", "environment", "outdoor_temp__mean", 99.0)])
    run_step("80_import_postgres.py", bio, devices=["a"], day=D1, root=proj)
    assert [(r[0].isoformat(), r[3], r[4]) for r in table_rows(pg_conn, "t80", order="ts, sensor")] == [
        ("2026-01-20T00:00:00+00:00", "m0__mean", 9.0),             # replaced
        ("2026-01-20T00:00:00+00:00", "m1__mean", 8.0),             # new
        ("2026-01-20T00:00:00+00:00", "outdoor_temp__mean", 12.25),  # other config's scope: kept
        ("2026-01-21T23:59:50+00:00", "m0__mean", 3.0),             # other day: kept
    ]


def test_device_absent_from_a_run_keeps_its_rows(proj, pg_dsn, pg_conn):
    write70(proj, "b", D1, [("12:00:00", "bio_signal", "m0__mean", 7.0)])
    path = config80(proj, pg_dsn)
    run_step("80_import_postgres.py", path, root=proj)
    # b's partition disappears from the stage (e.g. its data is reprocessed later)
    (proj / io.partition_file(EXPO, STAGE70, "b", D1)).unlink()
    write70(proj, "a", D1, [("00:00:00", "bio_signal", "m0__mean", 5.0)])
    run_step("80_import_postgres.py", path, root=proj)
    rows = table_rows(pg_conn, "t80", where="WHERE ts < '2026-01-21'", order="device_id, ts")
    assert [(r[1], r[3], r[4]) for r in rows] == [("a", "m0__mean", 5.0), ("b", "m0__mean", 7.0)]


def test_nan_becomes_null_never_float_nan(proj, pg_dsn, pg_conn):
    write70(proj, "a", D1, [("00:00:00", "bio_signal", "m0__mean", float("nan"), 1),
                            ("00:00:10", "bio_signal", "m0__mean", 2.0)])
    run_step("80_import_postgres.py", config80(proj, pg_dsn), devices=["a"], day=D1, root=proj)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE value IS NULL), count(*) FILTER (WHERE value = 'NaN'), "
                    "min(quality_flag) FILTER (WHERE value IS NULL) FROM t80")
        assert cur.fetchone() == (1, 0, 1)   # the NaN row is kept (flag 1 says why), value NULL
    r = receipt(proj, "a", D1)
    assert (r["rows"], r["null_values"], r["value_sum"]) == (2, 1, 2.0)


def test_timestamps_round_trip_exactly_in_utc(proj, pg_dsn, pg_conn):
    write70(proj, "a", D1, [("00:00:00.000001", "bio_signal", "m0__mean", 1.0),
                            ("13:14:15.999999", "bio_signal", "m0__mean", 2.0),
                            ("23:59:59.999999", "bio_signal", "m0__mean", 3.0)])
    run_step("80_import_postgres.py", config80(proj, pg_dsn), devices=["a"], day=D1, root=proj)
    with pg_conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'America/Los_Angeles'")   # the session zone must not matter
        cur.execute("SELECT (extract(epoch FROM ts) * 1e6)::bigint FROM t80 ORDER BY ts")
        got = [r[0] for r in cur.fetchall()]
    want = [int(pd.Timestamp(f"{D1}T{t}Z").value // 1000)
            for t in ("00:00:00.000001", "13:14:15.999999", "23:59:59.999999")]
    assert got == want


def test_batches_group_partitions_into_transactions(proj, pg_dsn, pg_conn):
    from pyjama.steps.import_postgres import _batches
    from pyjama.config import load_step_config
    from pyjama.project import Project

    path = config80(proj, pg_dsn, batch_rows=2)
    st = load_step_config("80_import_postgres.py", path, proj)
    project = Project.for_exposure(EXPO, proj)
    sizes = [[p.label for p in b] for b in _batches(project, st, [("a", D1), ("a", D2)], 2)]
    assert sizes == [["a/2026-01-20"], ["a/2026-01-21"]]   # 3 + 1 rows > 2: two batches
    sizes = [[p.label for p in b] for b in _batches(project, st, [("a", D1), ("a", D2)], 4)]
    assert sizes == [["a/2026-01-20", "a/2026-01-21"]]
    run_step("80_import_postgres.py", path, root=proj)
    assert len(table_rows(pg_conn, "t80")) == 4


def test_dry_run_touches_nothing(proj, pg_dsn, pg_conn):
    path = config80(proj, pg_dsn)
    res = cli(proj, "run", "80_import_postgres.py", "--with", path, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "  a/2026-01-20: 3 rows (0 not selected) from data/T/70_aggregated/window=10s/" in res.stdout
    with pg_conn.cursor() as cur:
        cur.execute("SELECT to_regclass('t80')")
        assert cur.fetchone()[0] is None                 # no table created
    assert not (proj / "data" / EXPO / "80_pg").exists()  # no receipt


def test_server_down_is_one_line_and_records_nothing(proj, pg_dsn):
    path = config80(proj, pg_dsn, host="127.0.0.1", port=1)
    res = cli(proj, "run", "80_import_postgres.py", "--with", path)
    assert res.returncode == 2
    assert res.stderr == (f"Error: cannot connect to PostgreSQL at 127.0.0.1:1/{pg_dsn['dbname']}: server "
                          "unreachable (is PostgreSQL running there, and the host/port right?)\n")
    assert not (proj / "data" / EXPO / "80_pg").exists()


def test_missing_database_is_one_line(proj, pg_dsn):
    path = config80(proj, pg_dsn, dbname="pyjama_no_such_db")
    res = cli(proj, "run", "80_import_postgres.py", "--with", path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert res.stderr.startswith(f"Error: cannot connect to PostgreSQL at {pg_dsn['host']}:{pg_dsn['port']}"
                                 "/pyjama_no_such_db: database does not exist")


def test_password_never_appears_in_output_receipts_or_ledger(proj, pg_dsn):
    secret = os.environ.get("POSTGRES_PASSWORD") or "Zq-7!secret-not-shown"
    env = {"POSTGRES_PASSWORD": secret}
    outputs = []
    for over in ({}, {"port": 1}, {"dbname": "pyjama_no_such_db"}):
        path = config80(proj, pg_dsn, **over)
        res = cli(proj, "run", "80_import_postgres.py", "--with", path, env=env)
        outputs += [res.stdout, res.stderr]
    res = cli(proj, "run", "80_import_postgres.py", "--with", config80(proj, pg_dsn), "--dry-run", env=env)
    outputs += [res.stdout, res.stderr]
    files = [p.read_text() for p in (proj / "data").rglob("*.json")]
    assert receipt(proj, "a", D1) is not None             # the first run did import
    assert all(secret not in text for text in outputs + files)


def test_kill_mid_import_leaves_no_half_day_and_rerun_completes(proj, pg_dsn, pg_conn):
    path = config80(proj, pg_dsn)
    run_step("80_import_postgres.py", path, root=proj)
    before = table_rows(pg_conn, "t80")
    # new content for day 1, imported by a child that is killed between COPY and COMMIT
    write70(proj, "a", D1, [("00:00:00", "bio_signal", "m0__mean", 100.0),
                            ("00:00:20", "bio_signal", "m0__mean", 200.0)])
    (proj / io.partition_file(EXPO, "80_pg", "a", D1, "receipt.json")).unlink()
    e = dict(os.environ, PYTHONPATH=str(REPO), **{db.PAUSE_ENV: "60"})
    child = subprocess.Popen([PY, str(REPO / "pyjama.py"), "run", "80_import_postgres.py", "--with", path,
                              "--device", "a", "--day", D1], cwd=proj, env=e,
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
    assert receipt(proj, "a", D1) is None                  # nothing recorded as imported
    run_step("80_import_postgres.py", path, devices=["a"], day=D1, root=proj)
    rows = table_rows(pg_conn, "t80", where="WHERE ts < '2026-01-21'")
    assert [r[4] for r in rows] == [100.0, 200.0]        # outdoor_temp is gone from the new day 1
    assert receipt(proj, "a", D1)["rows"] == 2


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
