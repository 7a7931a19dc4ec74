"""A job whose inputs carry the same data as when its outputs were made does not recompute
(pyjama.keep). Unit tests on tiny partitions: each case says kept or recomputed, and why;
then the real workflow on a tiny exposure: a new day keeps the day before's 40 → 70."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from pyjama import io, keep
from tests.wf import edit, make_project, outputs, planned_jobs, slow_down, snakemake

DAY = "2026-01-20"
PART = f"device_id=valve01/day={DAY}/part.parquet"


# ---------------------------------------------------------------- the content digest

def _rows(values, flags=None):
    n = len(values)
    return pa.table({
        "ts": pa.array([1_000_000 * i for i in range(n)], pa.timestamp("us", tz="UTC")),
        "sensor": pa.array(["m0"] * n).dictionary_encode(),
        "value": pa.array(values, pa.float64()),
        "quality_flag": pa.array(flags or [0] * n, pa.uint8()),
    })


def test_the_content_digest_is_of_the_rows_only():
    a = _rows([1.0, 2.0, 3.0])
    same = _rows([1.0, 2.0, 3.0]).replace_schema_metadata({"pyjama.ledger": "{}", "x": "y"})
    assert io.content_digest(a) == io.content_digest(same)              # metadata does not enter
    assert io.content_digest(a) != io.content_digest(_rows([1.0, 2.0, 3.5]))    # one value
    assert io.content_digest(a) != io.content_digest(_rows([1.0, 2.0, 3.0], [0, 2, 0]))  # one flag
    assert io.content_digest(a) != io.content_digest(_rows([1.0, 2.0]))          # one row fewer
    assert io.content_digest(a) != io.content_digest(a.rename_columns(["ts", "sensor", "v", "quality_flag"]))


def test_write_table_records_the_digest_whatever_the_ledger(tmp_path):
    t = _rows([1.0, float("nan")])
    io.write_table(tmp_path / "a.parquet", t, {"pyjama.ledger": json.dumps({"rows_in": 2})})
    io.write_table(tmp_path / "b.parquet", t, {"pyjama.ledger": json.dumps({"rows_in": 3})})
    a, b = io.read_meta(tmp_path / "a.parquet"), io.read_meta(tmp_path / "b.parquet")
    assert a[io.CONTENT_KEY] == b[io.CONTENT_KEY] == io.content_digest(t)
    assert len(a[io.CONTENT_KEY]) == 32


def test_written_files_keep_statistics_for_times_and_values_not_for_names(tmp_path):
    """io.encodings: min/max statistics on ts, value and quality_flag, none on the dictionary
    columns; a filter on sensor still returns exactly its rows (pyarrow, DuckDB)."""
    import duckdb
    import pyarrow.parquet as pq

    t = _rows([1.0, 2.0, 3.0])
    t = t.set_column(1, "sensor", pa.array(["b", "a", "b"]).dictionary_encode())
    io.write_table(tmp_path / "a.parquet", t, {})
    rg = pq.ParquetFile(tmp_path / "a.parquet").metadata.row_group(0)
    stats = {rg.column(i).path_in_schema: rg.column(i).statistics for i in range(rg.num_columns)}
    assert stats["sensor"] is None
    assert stats["ts"].has_min_max and stats["value"].min == 1.0 and stats["quality_flag"].has_min_max
    got = pq.read_table(tmp_path / "a.parquet", filters=[("sensor", "=", "b")])
    assert got.column("value").to_pylist() == [1.0, 3.0]
    q = f"select value from read_parquet('{tmp_path / 'a.parquet'}') where sensor = 'b' order by value"
    assert [r[0] for r in duckdb.sql(q).fetchall()] == [1.0, 3.0]


def test_the_code_version_covers_the_science_module_behind_the_step():
    closure = keep.module_closure(["pyjama.steps.clean"])
    assert {"pyjama", "pyjama.steps", "pyjama.steps.clean", "pyjama.qc", "pyjama.io"} <= closure
    assert "pyjama.status" not in closure and "pyjama.behaviour" not in closure


def _imports_by_ast(name: str) -> set:
    """What keep._imports read with ast before (the oracle of the regular expression)."""
    import ast

    path = keep._module_path(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = {"pyjama"}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "pyjama")
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            target = (".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                      if node.level else node.module or "")
            if target.split(".")[0] == "pyjama":
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    out.add(sub if keep._module_path(sub).exists() else target)
    return out


def test_the_import_scan_finds_what_ast_finds_in_every_module():
    names = ["pyjama"] + sorted(
        "pyjama." + ".".join(p.relative_to(keep._PKG).with_suffix("").parts).removesuffix(".__init__")
        for p in keep._PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != keep._PKG)
    assert len(names) > 30
    for name in names:
        assert keep._imports(name) == _imports_by_ast(name), name


def test_the_import_scan_reads_every_form(tmp_path, monkeypatch):
    src = ("import os, pyjama.io as pio\n"
           "from pyjama import qc, tidy  # (a comment) with, commas\n"
           "from . import (flags,  # why (two)\n    rules,\n)\n"
           "def f():\n    from .steps import clean\n"
           "x = 'not an import'; from .. import nothing\n")
    (tmp_path / "probe.py").write_text(src)
    monkeypatch.setattr(keep, "_module_path", lambda n: tmp_path / "probe.py" if n == "pyjama.probe"
                        else keep._PKG.joinpath(*n.split(".")[1:]).with_suffix(".py"))
    keep._imports.cache_clear()
    try:
        assert keep._imports("pyjama.probe") == {"pyjama", "pyjama.io", "pyjama.qc", "pyjama.tidy",
                                                 "pyjama.flags", "pyjama.rules", "pyjama.steps.clean"}
    finally:
        keep._imports.cache_clear()


def test_kept_links_live_beside_the_stages_hidden():
    assert io.kept_file(f"data/T/30_clean/{PART}") == f"data/T/.pyjama/kept/30_clean/{PART}.kept"


# ---------------------------------------------------------------- may a run keep?

def _workflow(mode="DEFAULT", **dag):
    from snakemake.settings.types import ExecMode

    settings = {"forceall": False, "forcerun": frozenset(), "forcetargets": False, **dag}
    return SimpleNamespace(exec_mode=getattr(ExecMode, mode), dag_settings=SimpleNamespace(**settings))


@pytest.mark.parametrize("wf, env, why", [
    (_workflow(), "", None),                                               # the default profile: may keep
    (_workflow(), "0", None),
    (_workflow(forceall=True), "", "a force flag"),                        # --forceall
    (_workflow(forcerun=frozenset({"s30_clean"})), "", "a force flag"),    # --forcerun, drawer.py --only
    (_workflow(forcetargets=True), "", "a force flag"),                    # --force
    (_workflow("SUBPROCESS"), "", "a job process of its own"),             # SLURM, no threads
    (_workflow(), "1", "PYJAMA_RECOMPUTE=1"),
    (None, "", "not a Snakemake job"),
])
def test_who_may_keep(monkeypatch, wf, env, why):
    monkeypatch.setenv(keep.RECOMPUTE_ENV, env)
    got = keep.why_not_allowed(wf)
    assert (got is None) if why is None else got.startswith(why)


# ---------------------------------------------------------------- kept or recomputed, per case

@pytest.fixture
def proj(tmp_path, monkeypatch):
    """10 → 20 → 30 on 2 days of one device (0.05 Hz), built with pyjama.py's code path."""
    from pyjama.runner import run_step

    make_project(tmp_path, days=2, steps=("10_parser", "20_split", "30_clean"), defects=False)
    monkeypatch.chdir(tmp_path)
    for step in ("10_parser", "20_split", "30_clean"):
        run_step(f"{step}.py", f"configs/T/{step}.json", root=tmp_path)
    return tmp_path


def _job(root, step="30_clean", day=DAY):
    from pyjama.steps import get_step
    from pyjama.workflow import WorkflowPlan

    plan = WorkflowPlan.for_pipeline("configs/T/pipeline.json", root=root)
    job = next(j for j in plan.jobs_of(step) if j.partition == ("valve01", day))
    st = next(s for s in plan.project.pipeline.steps if s.name == step)
    return job, get_step(st.script), plan.project, st


def _as_snakemake_would(root, job):
    """What Snakemake does when it runs a job: lock (the run starts), then delete its outputs."""
    started = time.time()
    time.sleep(0.02)
    for rel in job.output_files:
        (root / rel).unlink()
    return started


def _decide(root, step="30_clean", day=DAY):
    job, step_obj, project, st = _job(root, step, day)
    before = {rel: (root / rel).read_bytes() for rel in job.output_files}
    kept, why = keep.keep_unchanged(job, step_obj, project, st, _as_snakemake_would(root, job))
    if kept is not None:
        assert {rel: (root / rel).read_bytes() for rel in job.output_files} == before   # put back as they were
    return kept, why


def test_unchanged_inputs_keep_the_outputs_with_their_ledger(proj):
    out = proj / f"data/T/30_clean/{PART}"
    ledger = io.read_ledger(out)
    old_mtime = out.stat().st_mtime
    kept, why = _decide(proj)
    assert why is None
    assert kept.ledger == ledger                                  # the same rows in, the same out
    assert kept.ledger["rows_in"] == kept.ledger["rows_out"] + sum(kept.ledger["rejected"].values())
    assert out.stat().st_mtime > old_mtime                        # touched: Snakemake sees it new
    assert kept.since == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(old_mtime))


def test_an_upstream_rewrite_with_the_same_rows_keeps(proj):
    from pyjama.runner import run_step

    run_step("20_split.py", "configs/T/20_split.json", root=proj)   # new file, new mtime, same rows
    assert _decide(proj)[1] is None


def test_an_upstream_partition_with_other_rows_recomputes(proj):
    up = proj / f"data/T/20_split/{PART}"
    df = io.read_tidy(up)
    df.loc[df.index[5], "value"] += 1.0
    io.write_tidy(up, df, io.read_meta(up))
    kept, why = _decide(proj)
    assert kept is None and why == f"input data/T/20_split/{PART} changed"


def test_a_config_edit_recomputes(proj):
    cfg = proj / "configs/T/30_clean.json"
    data = json.loads(cfg.read_text())
    data["comment"] = "a comment changes nothing"
    cfg.write_text(json.dumps(data))
    assert _decide(proj)[1] is None
    data["rules"] = {"bio_signal": {"range": [0, 500]}}
    cfg.write_text(json.dumps(data))
    assert _decide(proj) == (None, "config changed")


def test_a_code_change_recomputes(proj, monkeypatch):
    job, step, project, st = _job(proj)
    monkeypatch.setitem(keep._CODE, type(step).__module__, "0.1.0+another")
    assert _decide(proj) == (None, "code changed")


def test_an_output_deleted_before_the_run_recomputes(proj):
    job, step, project, st = _job(proj)
    (proj / job.main_output).unlink()                  # you delete it ...
    time.sleep(0.02)
    started = time.time()                              # ... then the run starts
    kept, why = keep.keep_unchanged(job, step, project, st, started)
    assert kept is None and why == f"{job.main_output} was deleted before this run"
    assert not (proj / io.kept_file(job.main_output)).exists()   # its kept link is gone too


def test_an_output_without_a_kept_copy_recomputes(proj):
    job, *_ = _job(proj)
    os.unlink(proj / io.kept_file(job.main_output))
    assert _decide(proj) == (None, f"no kept copy of {job.main_output} (a new output, or made before keep existed)")


def test_an_input_without_a_digest_recomputes(proj):
    up = proj / f"data/T/20_split/{PART}"
    t = io.read_parquet(up)
    md = {k: v for k, v in (t.schema.metadata or {}).items() if k != io.CONTENT_KEY.encode()}
    import pyarrow.parquet as pq

    pq.write_table(t.replace_schema_metadata(md), up)     # a file written before the digest
    assert _decide(proj) == (None, "an input has no recorded digest")


def test_a_new_neighbour_day_recomputes_the_day_that_reads_it(proj):
    """30 of D reads D+1's edge: a new D+1 changes its set of inputs."""
    from pyjama.runner import run_step

    assert _decide(proj, day="2026-01-21")[1] is None
    # a third day arrives: 30 of 2026-01-21 now also reads 2026-01-22
    from pyjama.demo import generate

    gen = proj / "gen"
    generate(gen, "T", devices=1, days=1, hz=0.05, defects=False, start="2026-01-22")
    for f in gen.iterdir():
        f.rename(proj / "data/T/00_raw" / f.name)
    for step in ("10_parser", "20_split"):
        run_step(f"{step}.py", f"configs/T/{step}.json", root=proj)
    assert _decide(proj, day="2026-01-21") == (None, "its set of inputs changed")


# ---------------------------------------------------------------- the real workflow

CHAIN = ("10_parser", "20_split", "30_clean", "40_resample", "50_transform", "50_normalise",
         "60_behaviour", "70_aggregate")


def _fast_chain(root: Path, days: int) -> None:
    """The template chain 10 → 70 on one device at 0.05 Hz, on a 20-s grid (as
    tests.wf.make_fast_demo does for the DEMO): the whole chain in seconds."""
    make_project(root, "T", days=days, steps=CHAIN, defects=False)
    cfg = root / "configs/T"
    edit(cfg / "40_resample.json", lambda c: [r.update(freq="20s", max_gap="60s")
                                              for r in [*c["domains"].values(), c["default_rule"]]])
    edit(cfg / "60_behaviour.json", lambda c: slow_down(c, 20))


@pytest.mark.slow
def test_a_new_day_keeps_the_chain_of_the_day_before_and_equals_a_clean_build(tmp_path):
    """The chain 10 → 70, one device, days 20 and 21; then 22 arrives. Snakemake plans the
    same jobs as ever (30 of the 21st reads the 22nd's edge, so it and its chain run), but
    only 30 of the 21st recomputes: its rows came out the same, so 40 → 70 of the 21st keep
    their outputs. Every output equals a clean build of the three days, byte for byte."""
    from tests.test_status_agreement import agree

    root = tmp_path / "inc"
    _fast_chain(root, days=3)
    raw = root / "data/T/00_raw"
    held = tmp_path / "T_valve01_2026-01-22.csv"
    (raw / held.name).rename(held)
    snakemake(root)
    held.rename(raw / held.name)
    agree(root)                                             # board == dry run, job for job
    assert planned_jobs(root) == {
        "s10_parser": 1, "s20_split": 1, "s30_clean": 2, "s40_resample": 2, "s50_transform": 2,
        "s50_normalise": 2, "s60_behaviour": 2, "s70_aggregate": 2, "all": 1}   # as before
    snakemake(root)
    decided = _decisions(root)
    assert {s: decided[(s, "2026-01-21")] for s in CHAIN[2:]} == {
        "30_clean": "recomputed: its set of inputs changed",
        "40_resample": "kept", "50_transform": "kept", "50_normalise": "kept",
        "60_behaviour": "kept", "70_aggregate": "kept"}
    assert {v.split(":")[0] for (s, d), v in decided.items() if d == "2026-01-22"} == {"recomputed"}
    assert planned_jobs(root) == {}                         # a second run does nothing
    agree(root)

    clean = tmp_path / "clean"
    _fast_chain(clean, days=3)
    snakemake(clean)
    for stage in ("20_split", "30_clean", "40_resampled", "50_transformed", "50_normalised",
                  "60_behaviour", "60_events", "60_daily", "60_device_daily", "70_aggregated", "_meta"):
        assert outputs(root, stage) == outputs(clean, stage), stage

    # a force flag is never defeated: --forcerun recomputes 50_transform and every job after it
    snakemake(root, "--forcerun", "s50_transform")
    forced = {k: v for k, v in _decisions(root).items() if k[0] in ("50_transform", "70_aggregate")}
    assert set(forced.values()) == {"recomputed: a force flag (--forceall, --forcerun, --force) was given"}
    assert len(forced) == 6
    for stage in ("50_transformed", "70_aggregated"):
        assert outputs(root, stage) == outputs(clean, stage), stage


def _decisions(root: Path) -> dict:
    """(step, day) → "kept" or "recomputed: <why>", from the job logs' second line."""
    out = {}
    for log in (root / "logs/T").glob("*/valve01/*.log"):
        line = log.read_text().splitlines()[1]
        out[(log.parts[-3], log.stem)] = "kept" if line.endswith(": kept") else line
    return out


def test_an_archive_leaves_the_kept_links_out(proj):
    from pyjama.manage import archive

    job, *_ = _job(proj)
    assert (proj / io.kept_file(job.main_output)).exists()
    dest = archive("T", proj)
    assert (dest / "data/30_clean" / PART).exists()
    assert not (dest / "data/.pyjama/kept").exists()


def test_the_digest_reads_the_rows_not_the_memory_layout():
    t = _rows([1.0, 2.0, 3.0, 4.0, 5.0])
    chunked = pa.Table.from_batches(t.to_batches(max_chunksize=2))
    assert chunked.column("value").num_chunks == 3
    assert io.content_digest(chunked) == io.content_digest(t)          # chunks combined
    part = t.slice(1, 3)                                                 # a slice of larger buffers
    copy = pa.Table.from_arrays([pa.concat_arrays([c.chunk(0)]) for c in part.columns], schema=part.schema)
    assert io.content_digest(part) == io.content_digest(copy)
    assert io.content_digest(part) != io.content_digest(t.slice(2, 3))
