"""Shared pytest fixtures. Each block belongs to one area; keep them delimited."""
from __future__ import annotations

import os

import pytest


# ============================================================================ PostgreSQL
# Fixtures of the database tests (tests/test_postgres.py). A REAL server is used, never a
# mock: the DSN comes from PYJAMA_TEST_PG_DSN, else the project machines' default
# (127.0.0.1:5432, trust auth, database `test`). If none can be reached the tests FAIL
# with what to install: they are never silently skipped.

PG_DSN_ENV = "PYJAMA_TEST_PG_DSN"
PG_DEFAULT_DSN = "host=127.0.0.1 port=5432 dbname=test connect_timeout=5"
PG_INSTALL_HINT = (
    "the PostgreSQL tests need a real server. Install and start one "
    "(Debian/Ubuntu: apt-get install postgresql && service postgresql start; "
    "conda: conda install -c conda-forge postgresql, then initdb/pg_ctl start), "
    f"or point {PG_DSN_ENV} at a server you may create schemas on, e.g. "
    f"{PG_DSN_ENV}='host=127.0.0.1 port=5432 dbname=test user=me'")


def _pg_try_connect(dsn: str):
    import psycopg2

    return psycopg2.connect(dsn)


@pytest.fixture(scope="session")
def pg_dsn():
    """Connection settings of the test server as step-config keys, plus a schema of its
    own (``pyjama_test_<pid>``) created for this test run and dropped at its end:
    ``{"host", "port", "dbname", "user", "schema"}``."""
    import psycopg2

    from tests.pg_throwaway import Throwaway, ThrowawayError

    dsn = os.environ.get(PG_DSN_ENV) or PG_DEFAULT_DSN
    throwaway = None
    try:
        conn = _pg_try_connect(dsn)
    except psycopg2.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        if os.environ.get(PG_DSN_ENV):   # an explicit DSN that fails is an error, not a fallback
            pytest.fail(f"PostgreSQL not reachable with {dsn!r} ({first}): {PG_INSTALL_HINT}", pytrace=False)
        # No server where the project machines have one: start a throwaway cluster with
        # the local PostgreSQL binaries; only when that fails too, fail with what to install.
        throwaway = Throwaway()
        try:
            dsn = throwaway.start()
            conn = _pg_try_connect(dsn)
        except (ThrowawayError, psycopg2.OperationalError) as exc2:
            throwaway.stop()
            pytest.fail(f"PostgreSQL not reachable with {PG_DEFAULT_DSN!r} ({first}), and no throwaway "
                        f"cluster could be started ({exc2}): {PG_INSTALL_HINT}", pytrace=False)
    conn.autocommit = True
    info = conn.info
    schema = f"pyjama_test_{os.getpid()}"
    with conn.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        cur.execute(f'CREATE SCHEMA "{schema}"')
    settings = {"host": info.host, "port": int(info.port), "dbname": info.dbname,
                "user": info.user, "schema": schema}
    try:
        yield settings
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()
        if throwaway is not None:
            throwaway.stop()


@pytest.fixture
def pg_conn(pg_dsn):
    """An autocommit connection to the test database (search_path = the test schema)."""
    import psycopg2

    conn = psycopg2.connect(host=pg_dsn["host"], port=pg_dsn["port"], dbname=pg_dsn["dbname"],
                            user=pg_dsn["user"], options=f"-c search_path={pg_dsn['schema']}")
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def pg_proj(tmp_path, pg_dsn, pg_conn):
    """A project with exposure T and two step-70 partitions of device a (three rows on
    2026-01-20, one on 2026-01-21); tables t80 and t81 dropped before each test
    (tests/test_postgres.py and tests/test_postgres_ops.py)."""
    from tests.test_postgres import D1, D2, make_project, write70

    with pg_conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS t80, t81")
    root = make_project(tmp_path)
    write70(root, "a", D1, [("00:00:00", "bio_signal", "m0__mean", 1.5),
                            ("00:00:10", "bio_signal", "m0__mean", 2.5),
                            ("00:00:00", "environment", "outdoor_temp__mean", 12.25)])
    write70(root, "a", D2, [("23:59:50", "bio_signal", "m0__mean", 3.0)])
    return root
# ======================================================================== end PostgreSQL
