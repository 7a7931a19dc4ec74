#!/usr/bin/env python3
"""Benchmark of step 80 against a bare COPY, side by side, on data it makes itself.

    python3 bench/bench_postgres.py                 # small smoke run (~200 k rows)
    python3 bench/bench_postgres.py --rows 2000000  # the reference size (2 M long rows)

What it prints (all against the same rows, the same server, in one run):

* bare COPY: the rows' CSV bytes (prepared beforehand, not timed) COPYed into an
  UNINDEXED table with the same columns — the floor no import can beat;
* step 80, first import: the real code path (read the stage-70 parquet partitions, select,
  convert, delete the (device, day) ranges, COPY into the INDEXED table, commit, write the
  receipts) into an empty table;
* step 80, re-import over a full table (delete the ranges + COPY), first with nothing
  changed, then with every value changed;
* the same two re-imports done as stage + merge (COPY into a temporary table, delete the
  rows that differ, insert the missing ones: writes only the difference), for comparison;
* ratios: speed of each against the bare COPY (goal for step 80: >= 0.3).

The connection comes from --dsn, else PYJAMA_TEST_PG_DSN, else 127.0.0.1:5432/test. A schema
``pyjama_bench_<pid>`` is created and dropped; a temporary project folder is removed.
"""
from __future__ import annotations

import argparse
import io as _io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

EXPO = "BENCH"
STAGE = "70_aggregated/window=10s"
WINDOWS_PER_DAY = 8640     # 10 s windows


def make_data(root: Path, rows: int, devices: int = 2):
    """Write stage-70 partitions of about ``rows`` long rows (10 s windows, 1 day each)."""
    import numpy as np
    import pandas as pd

    from pyjama import io, tidy

    cfg = root / "configs" / EXPO
    cfg.mkdir(parents=True)
    text = (REPO / "configs" / "_template" / "10_parser.json").read_text()
    (cfg / "10_parser.json").write_text(text.replace("{{EXPOSURE_RE}}", EXPO).replace("{{EXPOSURE}}", EXPO))
    (cfg / "pipeline.json").write_text(json.dumps(
        {"exposure": EXPO, "steps": [{"script": "10_parser.py", "with": f"configs/{EXPO}/10_parser.json"}]}))
    sensors = max(1, min(26, rows // (devices * WINDOWS_PER_DAY)))
    days = max(1, round(rows / (devices * WINDOWS_PER_DAY * sensors)))
    names = [f"m{i // 2}__cbrt_inv__norm__{'mean' if i % 2 == 0 else 'std'}" for i in range(sensors)]
    rng = np.random.default_rng(1)
    total = 0
    for d in range(devices):
        for k in range(days):
            day = (pd.Timestamp("2026-01-20") + pd.Timedelta(days=k)).date().isoformat()
            n = WINDOWS_PER_DAY * sensors
            ts = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(np.tile(np.arange(WINDOWS_PER_DAY) * 10, sensors), "s")
            value = rng.random(n)
            value[rng.random(n) < 0.01] = np.nan
            df = tidy.frame(ts=pd.Series(ts).astype("datetime64[us, UTC]"), device_id=f"valve{d + 1:02d}",
                            domain="bio_signal", sensor=np.repeat(names, WINDOWS_PER_DAY), value=value,
                            quality_flag=np.where(np.isnan(value), 1, 0))
            io.write_tidy(root / io.partition_file(EXPO, STAGE, f"valve{d + 1:02d}", day), df, {})
            total += n
    return total, sensors, days


def config(root: Path, conn_params: dict, schema: str, table: str) -> str:
    c = {"exposure": EXPO, "input_stage": STAGE, "output_stage": "80_bench", "schema": schema,
         "table": table, **conn_params}
    path = root / "configs" / EXPO / "80_bench.json"
    path.write_text(json.dumps(c))
    return f"configs/{EXPO}/80_bench.json"


def bare_payload(root: Path, project, st):
    """All rows of the stage as one CSV payload, as step 80 would send them (not timed)."""
    import pyarrow as pa

    from pyjama import db, io
    from pyjama.steps.import_postgres import plan_part

    parts = [plan_part(project, st, d, day) for d, day in io.list_partitions(EXPO, STAGE, root)]
    t0 = time.perf_counter()
    payload = db.csv_payload(pa.concat_tables([p.rows for p in parts]))
    return payload, time.perf_counter() - t0, sum(p.rows.num_rows for p in parts)


def merge_ranges(cur, schema, table, spec, payload, ranges, sensors, domains=None):
    """Make the ``ranges`` [(device, start, end), ...] of the table hold exactly the rows
    of ``payload`` (CSV of pyjama.db.csv_payload), writing only what differs:

    1. COPY the payload into a temporary table (not WAL-logged, no index);
    2. delete the rows of the ranges (× ``sensors`` × ``domains``) that have no identical
       new row (same key and same content, bit-exact on value);
    3. insert the new rows whose key is not in the table any more.

    Same end state as delete + COPY, in the caller's transaction; an unchanged re-import
    only reads."""
    from psycopg2 import sql

    from pyjama.db import qualified

    ident = sql.Identifier
    qual = qualified(schema, table)
    tcol = ident(spec.time_column)
    cols = sql.SQL(", ").join(ident(c) for c in spec.names)
    cur.execute(sql.SQL("CREATE TEMP TABLE pyjama_stage (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP")
                .format(qual))
    cur.execute("SET TIME ZONE 'UTC'")
    cur.copy_expert(sql.SQL("COPY pyjama_stage ({}) FROM STDIN WITH (FORMAT csv)").format(cols)
                    .as_string(cur), _io.BytesIO(payload), size=1 << 20)
    cur.execute("ANALYZE pyjama_stage")
    same_key = sql.SQL(" AND ").join(sql.SQL("s.{c} = t.{c}").format(c=ident(c)) for c in spec.key)
    same_row = sql.SQL(" AND ").join(
        sql.SQL("float8send(s.{c}) IS NOT DISTINCT FROM float8send(t.{c})").format(c=ident(c))
        if c == "value" else sql.SQL("s.{c} IS NOT DISTINCT FROM t.{c}").format(c=ident(c))
        for c in spec.names if c not in spec.key)
    cur.execute(sql.SQL(
        "DELETE FROM {t} AS t USING unnest(%(d)s::text[], %(a)s::timestamptz[], %(b)s::timestamptz[]) "
        "AS r(d, a, b) WHERE t.device_id = r.d AND t.sensor = ANY(%(s)s::text[]) "
        "AND t.{tc} >= r.a AND t.{tc} < r.b{dom} "
        "AND NOT EXISTS (SELECT 1 FROM pyjama_stage s WHERE {key} AND {row})").format(
        t=qual, tc=tcol, key=same_key, row=same_row,
        dom=sql.SQL(" AND t.domain = ANY(%(dom)s::text[])") if domains else sql.SQL("")),
        {"d": [r[0] for r in ranges], "a": [r[1] for r in ranges], "b": [r[2] for r in ranges],
         "s": list(sensors), "dom": list(domains or [])})
    cur.execute(sql.SQL(
        "INSERT INTO {t} ({cols}) SELECT {scols} FROM pyjama_stage s "
        "WHERE NOT EXISTS (SELECT 1 FROM {t} t WHERE {key})").format(
        t=qual, cols=cols, key=same_key,
        scols=sql.SQL(", ").join(sql.SQL("s.{}").format(ident(c)) for c in spec.names)))


def stage_merge_import(conn, project, st, todo):
    """The alternative to step 80's delete + COPY: per batch, stage the rows and write only
    the difference (:func:`merge_ranges`), in one transaction (same batches as step 80)."""
    import pyarrow as pa

    from pyjama import db
    from pyjama.steps.import_postgres import _batches
    from pyjama.timewindow import day_bounds

    schema, table = st["schema"], st["table"]
    for batch in _batches(project, st, todo, st["batch_rows"]):
        with conn.cursor() as cur:
            sensors = set()
            for dev in {p.device for p in batch}:
                sensors.update(db.device_sensors(cur, schema, table, dev))
            payload = db.csv_payload(pa.concat_tables([p.rows for p in batch]))
            merge_ranges(cur, schema, table, db.LONG_80, payload,
                         [(p.device, *day_bounds(p.day)) for p in batch], sorted(sensors))
        conn.commit()


def change_values(root: Path):
    """Rewrite every partition with value + 1 (a re-import where every row changed)."""
    from pyjama import io

    for dev, day in io.list_partitions(EXPO, STAGE, root):
        path = root / io.partition_file(EXPO, STAGE, dev, day)
        df = io.read_tidy(path)
        df["value"] = df["value"] + 1.0
        io.write_tidy(path, df, {})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example:\n  python3 bench/bench_postgres.py --rows 2000000",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000, help="long rows to make (default 200000)")
    ap.add_argument("--dsn", default=os.environ.get("PYJAMA_TEST_PG_DSN") or "host=127.0.0.1 port=5432 dbname=test",
                    help="libpq connection string of the server to use")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line (bench/run.py reads it)")
    args = ap.parse_args(argv)

    import psycopg2
    from psycopg2 import sql

    from pyjama import db
    from pyjama.runner import run_step
    from pyjama.pipeline import load_step_config
    from pyjama.io import list_partitions
    from pyjama.project import Project

    try:
        admin = psycopg2.connect(args.dsn)
    except psycopg2.OperationalError as exc:
        print(f"Error: cannot connect with {args.dsn!r}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    admin.autocommit = True
    info = admin.info
    conn_params = {"host": info.host, "port": int(info.port), "dbname": info.dbname, "user": info.user}
    schema = f"pyjama_bench_{os.getpid()}"
    root = Path(tempfile.mkdtemp(prefix="pyjama_bench_"))
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        t0 = time.perf_counter()
        n, sensors, days = make_data(root, args.rows)
        print(f"data: {n} long rows = 2 devices x {days} day(s) x {sensors} sensors x {WINDOWS_PER_DAY} "
              f"windows of 10 s (made in {time.perf_counter() - t0:.1f} s)")
        path = config(root, conn_params, schema, "t80")
        st = load_step_config("80_import_postgres.py", path, root)
        project = Project.for_exposure(EXPO, root)
        todo = list_partitions(EXPO, STAGE, root)

        payload, t_conv, n_rows = bare_payload(root, project, st)
        conn = db.connect(conn_params, "pyjama bench")
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE TABLE {} (ts timestamptz, device_id text, domain text, sensor text, "
                                "value double precision, quality_flag smallint)").format(db.qualified(schema, "bare")))
        conn.commit()
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            db.copy_csv(cur, schema, "bare", db.LONG_80.names, payload)
        conn.commit()
        t_bare = time.perf_counter() - t0

        def timed(fn):
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t

        t_first = timed(lambda: run_step("80_import_postgres.py", path, root=root))
        t_same = timed(lambda: run_step("80_import_postgres.py", path, root=root))
        t_sm_same = timed(lambda: stage_merge_import(conn, project, st, todo))
        change_values(root)
        t_changed = timed(lambda: run_step("80_import_postgres.py", path, root=root))
        change_values(root)
        t_sm_changed = timed(lambda: stage_merge_import(conn, project, st, todo))
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*), sum(value) FROM {}").format(db.qualified(schema, "t80")))
            count, _ = cur.fetchone()
            assert count == n_rows, "re-imports must not duplicate rows"
        conn.close()

        def line(label, t):
            return f"{label:62s} {t:7.2f} s {n_rows / t / 1e3:7.0f} k rows/s  ratio {t_bare / t:4.2f}"

        print(f"(conversion to CSV alone, pyarrow: {t_conv:.2f} s, {n_rows / t_conv / 1e3:.0f} k rows/s)")
        print(line("bare COPY, unindexed table (CSV prepared beforehand)", t_bare))
        print(line("step 80, first import (parquet -> indexed table + receipts)", t_first))
        print(line("step 80, re-import, nothing changed (delete + COPY)", t_same))
        print(line("   alternative: stage + merge (write only the diff)", t_sm_same))
        print(line("step 80, re-import, every value changed (delete + COPY)", t_changed))
        print(line("   alternative: stage + merge (write only the diff)", t_sm_changed))
        worst = max(t_first, t_same, t_changed)
        print(f"ratio = speed / bare COPY speed; step 80 worst case {t_bare / worst:.2f} (goal >= 0.30)")
        if args.json:
            print(json.dumps({"rows": n_rows, "bare_s": t_bare, "import_s": t_first,
                              "import_rows_per_s": n_rows / t_first, "ratio": t_bare / t_first,
                              "ratio_reimport_same": t_bare / t_same, "ratio_reimport_changed": t_bare / t_changed,
                              "ratio_stage_merge_same": t_bare / t_sm_same,
                              "ratio_stage_merge_changed": t_bare / t_sm_changed}))
        return 0
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        admin.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
