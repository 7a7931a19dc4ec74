"""The real Snakemake workflow on a tiny generated exposure: outputs, ledgers, incremental
rebuilds, windows, dry runs, and agreement with `pyjama.py run` (no mocks)."""
import json
import re
import shutil
from pathlib import Path

import pytest

from pyjama import io
from tests.wf import drawer, make_project, outputs, planned_jobs, pyjama, snakemake

pytestmark = pytest.mark.slow

DAYS = ["2026-01-20", "2026-01-21"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A project built once by the workflow (2 devices × 2 days, 0.05 Hz, with defects)."""
    root = tmp_path_factory.mktemp("wf")
    make_project(root, "T", devices=2, days=2, hz=0.05)
    snakemake(root)
    return root


def copy_project(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def jobs_without_all(jobs):
    return {k: v for k, v in jobs.items() if k != "all"}


def test_every_partition_is_built_with_a_balanced_ledger(built):
    for dev in ("valve01", "valve02"):
        for day in DAYS:
            part = built / f"data/T/20_split/device_id={dev}/day={day}"
            led = io.read_ledger(part / "part.parquet")
            assert led["rows_in"] == led["rows_out"] + sum(led["rejected"].values())
            assert (part / "part.parquet").stat().st_size > 0
    for led_path in (built / "data/T/10_parsed").glob("raw=*/part.parquet"):
        led = io.read_ledger(led_path)
        assert led["unit"] == "lines"
        assert led["rows_in"] == led["rows_out"] + sum(led["rejected"].values())
    # the truncated last line of the demo's last file of valve01 is in the rejects file
    rejects = (built / "data/T/_meta/10_parsed/raw=T_valve01_2026-01-21.csv/rejects.csv").read_text().splitlines()
    assert rejects[0] == "file,line,reason,detail,text"
    assert rejects[1].startswith("T_valve01_2026-01-21.csv,") and ",truncated last line (no line end)," in rejects[1]


def test_provenance_in_parquet_metadata(built):
    from pyjama.io import read_meta

    meta = read_meta(built / "data/T/20_split/device_id=valve01/day=2026-01-20/part.parquet")
    assert meta["pyjama.step"] == "20_split.py"
    assert meta["pyjama.config"] == "configs/T/20_split.json"
    assert len(meta["pyjama.config_digest"]) == 16
    assert json.loads(meta["pyjama.inputs"]) == ["data/T/10_parsed/raw=T_valve01_2026-01-20.csv/part.parquet"]


def test_stage_reads_as_one_hive_dataset(built):
    import pyarrow.dataset as ds

    t = ds.dataset(built / "data/T/20_split", partitioning="hive").to_table()
    assert set(t.column("device_id").to_pylist()) == {"valve01", "valve02"}
    assert set(t.column("day").to_pylist()) == set(DAYS)


def test_second_run_does_nothing(built):
    assert planned_jobs(built) == {}
    res = snakemake(built)
    assert "Nothing to be done" in res.stdout + res.stderr


def test_new_raw_file_reruns_only_its_partitions(built, tmp_path):
    root = copy_project(built, tmp_path / "p")
    from pyjama.demo import generate

    gen = tmp_path / "gen"
    generate(gen, "T", devices=2, days=3, hz=0.05)
    shutil.copy(gen / "T_valve02_2026-01-22.csv", root / "data/T/00_raw/")
    assert jobs_without_all(planned_jobs(root)) == {"s10_parser": 1, "s20_split": 1}
    snakemake(root)
    assert (root / "data/T/20_split/device_id=valve02/day=2026-01-22/part.parquet").exists()
    assert planned_jobs(root) == {}


def test_second_file_for_an_existing_day_is_merged(built, tmp_path):
    root = copy_project(built, tmp_path / "p")
    import gzip

    extra = b"2026-01-21T12:00:00.000000Z;m0:1;outdoor_temp:9.00\n"
    (root / "data/T/00_raw/T_valve01_2026-01-21.csv.gz").write_bytes(gzip.compress(extra))
    assert jobs_without_all(planned_jobs(root)) == {"s10_parser": 1, "s20_split": 1}
    snakemake(root)
    led = io.read_ledger(root / "data/T/20_split/device_id=valve01/day=2026-01-21/part.parquet")
    assert led["input_files"] == 2


def test_changed_config_reruns_that_step_and_dependants_only(built, tmp_path):
    root = copy_project(built, tmp_path / "p")
    cfg = root / "configs/T/20_split.json"
    data = json.loads(cfg.read_text())
    data["duplicates"] = "mean"
    cfg.write_text(json.dumps(data, indent=2))
    assert jobs_without_all(planned_jobs(root)) == {"s20_split": 4}
    # whitespace-only edits change nothing: the digest is of the parsed config
    cfg.write_text(json.dumps(data, indent=4))
    snakemake(root)
    cfg.write_text(json.dumps(data))
    assert planned_jobs(root) == {}
    # a parser change re-runs the parser and everything after it
    pcfg = root / "configs/T/10_parser.json"
    p = json.loads(pcfg.read_text())
    p["missing_values"] = ["", "NA"]
    pcfg.write_text(json.dumps(p))
    assert jobs_without_all(planned_jobs(root)) == {"s10_parser": 4, "s20_split": 4}


def test_window_selects_partitions_and_widening_reruns_nothing_done(tmp_path):
    make_project(tmp_path, "T", devices=1, days=3, hz=0.05)
    assert jobs_without_all(planned_jobs(tmp_path, "from=2026-01-21", "to=2026-01-21")) == \
        {"s10_parser": 1, "s20_split": 1}
    snakemake(tmp_path, config=("from=2026-01-21", "to=2026-01-21"))
    assert sorted(p.name for p in (tmp_path / "data/T/20_split/device_id=valve01").iterdir()) == ["day=2026-01-21"]
    # widening to the whole campaign builds only the two missing days
    assert jobs_without_all(planned_jobs(tmp_path, "from=2026-01-20", "to=2026-01-22")) == \
        {"s10_parser": 2, "s20_split": 2}
    # {NOW-...} bounds work through snakemake --config too (parsed back from YAML)
    assert jobs_without_all(planned_jobs(tmp_path, "from={NOW-1d}")) == {}


def test_drawer_dry_run_shows_the_plan_and_builds_nothing(tmp_path):
    make_project(tmp_path, "T", devices=1, days=1, hz=0.05)
    res = drawer(tmp_path, "run", "configs/T/pipeline.json", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        "would run: 10_parser T_valve01_2026-01-20.csv: missing output files",
        "would run: 20_split valve01 2026-01-20: missing output files; input files updated by another job",
        "PyJAMA: dry run: 2 jobs would run; nothing was changed"]
    assert not list((tmp_path / "data/T/20_split").rglob("*.parquet"))


def test_drawer_until_and_only(tmp_path):
    make_project(tmp_path, "T", devices=1, days=2, hz=0.05)
    res = drawer(tmp_path, "run", "configs/T/pipeline.json", "--until", "10_parser", "-q")
    assert res.returncode == 0, res.stderr
    assert list((tmp_path / "data/T/10_parsed").rglob("part.parquet"))
    assert not list((tmp_path / "data/T/20_split").rglob("part.parquet"))
    res = drawer(tmp_path, "run", "configs/T/pipeline.json", "-q")
    assert res.returncode == 0
    assert len(res.stderr.splitlines()) == 1     # -q: the final line only
    assert re.fullmatch(r"PyJAMA: done, 2 jobs in \d+\.\d s\. Step × day board with rows and rejects: "
                        r"python3 drawer\.py status configs/T/pipeline\.json\n", res.stderr)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "data/T").rglob("part.parquet")}
    res = drawer(tmp_path, "run", "configs/T/pipeline.json", "--only", "20_split",
                 "--from", "2026-01-21", "--to", "2026-01-21", "-q")
    assert res.returncode == 0, res.stderr
    changed = sorted(str(p.relative_to(tmp_path)) for p, m in before.items() if p.stat().st_mtime_ns != m)
    assert changed == ["data/T/20_split/device_id=valve01/day=2026-01-21/part.parquet"]


def test_pyjama_run_equals_the_workflow_byte_for_byte(built, tmp_path):
    root = tmp_path / "direct"
    root.mkdir()
    shutil.copytree(built / "configs", root / "configs")
    shutil.copytree(built / "data/T/00_raw", root / "data/T/00_raw")
    for script, cfg in (("10_parser.py", "10_parser"), ("20_split.py", "20_split")):
        res = pyjama(root, "run", script, "--with", f"configs/T/{cfg}.json")
        assert res.returncode == 0, res.stderr
    for stage in ("10_parsed", "20_split"):
        assert outputs(root, stage) == outputs(built, stage), stage


def test_pyjama_run_window_and_errors(built, tmp_path):
    root = copy_project(built, tmp_path / "p")
    res = pyjama(root, "run", "20_split.py", "--with", "configs/T/20_split.json", "--from", "2026-01-21",
                 "--to", "2026-01-21")
    assert res.returncode == 0 and res.stdout.startswith("20_split.py: 2 partition(s) written")
    res = pyjama(root, "run", "20_split.py", "--with", "configs/T/20_split.json", "--from", "2026-02-30")
    assert res.returncode == 2 and res.stderr.strip() == (
        "Error: --from: '2026-02-30' is not a valid date (day is out of range for month); allowed: "
        "YYYY-MM-DDTHH:MM:SSZ, YYYY-MM-DD (a whole UTC day), {NOW}, or {NOW-2d} (offset units s, m, h, d, w)")
    res = pyjama(root, "run", "20_split.py", "--with", "configs/T/nope.json")
    assert res.returncode == 2 and res.stderr.strip() == f"Error: {root}/configs/T/nope.json: file not found"
    res = pyjama(root, "run", "21_split.py", "--with", "configs/T/20_split.json")
    assert res.returncode == 2 and res.stderr.startswith("Error: unknown script '21_split.py'; allowed: 10_parser.py")
    assert "Traceback" not in res.stderr


def test_a_bad_config_stops_both_entry_points_with_one_line(built, tmp_path):
    root = copy_project(built, tmp_path / "p")
    cfg = root / "configs/T/20_split.json"
    cfg.write_text(cfg.read_text().replace('"duplicates"', '"duplicate"'))
    expected = ("Error: configs/T/20_split.json: $.duplicate: unknown key 'duplicate'; allowed keys: "
                "comment, duplicates, exposure, input_stage, output_stage, sort")
    res = drawer(root, "run", "configs/T/pipeline.json")
    assert res.returncode == 2 and res.stderr.strip() == expected
    res = snakemake(root, check=False)
    assert res.returncode != 0 and expected in res.stderr.splitlines()
    assert "Traceback" not in res.stderr


def test_determinism_two_fresh_builds_same_bytes(built, tmp_path):
    root = tmp_path / "again"
    root.mkdir()
    shutil.copytree(built / "configs", root / "configs")
    shutil.copytree(built / "data/T/00_raw", root / "data/T/00_raw")
    snakemake(root)
    for stage in ("10_parsed", "20_split"):
        assert outputs(root, stage) == outputs(built, stage)


def test_snakemake_lint_has_nothing_to_say(built):
    res = snakemake(built, "--lint", check=False)
    text = (res.stdout + res.stderr)
    assert res.returncode == 0, text
    assert "Lints for" not in text, text


def test_a_stray_raw_file_is_one_line_naming_it(tmp_path):
    """A raw file whose name gives no device id is named on every run (and in status); the
    other files are processed; exit 0, or 3 with --strict (pyjama.steps.parser.loss_warnings)."""
    make_project(tmp_path, "T", devices=1, days=1, hz=0.01)
    (tmp_path / "data/T/00_raw/notes.csv").write_text("hello\n")
    want = ("PyJAMA: warning: data/T/00_raw/notes.csv (configs/T/10_parser.json): not parsed: file name "
            "does not match $.device.pattern '^T_(?P<device>[^_]+)_\\\\d{4}-\\\\d{2}-\\\\d{2}\\\\.csv(\\\\.gz)?$'; "
            "move the file out of the raw folder or narrow $.files (now '*.csv*')")
    res = drawer(tmp_path, "run", "configs/T/pipeline.json", "--dry-run")
    assert res.returncode == 0 and res.stderr.strip().splitlines()[-1] == want
    res = drawer(tmp_path, "run", "configs/T/pipeline.json", "--quiet")
    assert res.returncode == 0 and res.stderr.strip().splitlines()[-1] == want
    assert sorted(p.name for p in (tmp_path / "data/T/10_parsed").iterdir()) == ["raw=T_valve01_2026-01-20.csv"]
    assert (tmp_path / "data/T/20_split/device_id=valve01/day=2026-01-20/part.parquet").exists()
    res = drawer(tmp_path, "run", "configs/T/pipeline.json", "--strict", "--quiet")
    assert res.returncode == 3 and res.stderr.strip().splitlines()[-1] == want
    status = drawer(tmp_path, "status", "configs/T/pipeline.json")
    assert status.stdout.strip().splitlines()[-1] == want.removeprefix("PyJAMA: ")


# ---------------------------------------------------------------- Snakemake's job-start limit

def test_a_local_run_drops_snakemakes_default_job_start_limit_only():
    """pyjama.workflow.drop_local_rate_limit (the Snakefile's onstart): a local run with the
    command line's default 100/1s loses the limit; SLURM (local_exec false), a user's own
    limit, a run without a limiter and a foreign object keep what they have."""
    from types import SimpleNamespace

    from snakemake.settings.types import MaxJobsPerTimespan

    from pyjama.workflow import drop_local_rate_limit

    def wf(local=True, limit="100/1s"):
        lim = MaxJobsPerTimespan.parse_choice(limit) if limit else None
        return SimpleNamespace(local_exec=local, scheduling_settings=SimpleNamespace(max_jobs_per_timespan=lim),
                               scheduler=SimpleNamespace(job_rate_limiter=object() if lim else None))

    w = wf()
    assert drop_local_rate_limit(w) is True and w.scheduler.job_rate_limiter is None
    for w in (wf(local=False), wf(limit="50/1s"), wf(limit="100/1m"), wf(limit=None)):
        kept = w.scheduler.job_rate_limiter
        assert drop_local_rate_limit(w) is False and w.scheduler.job_rate_limiter is kept
    assert drop_local_rate_limit(SimpleNamespace()) is False


def test_a_local_run_schedules_once_per_finished_job(tmp_path):
    """With Snakemake's default limit each round with ready jobs started a 1 s timer whose
    round started another: a 193-job build made 1,058-1,321 rounds. Now a round per job
    finished, at most (Snakemake's debug line 'Ready jobs: N' is one round with ready jobs)."""
    make_project(tmp_path, "T", devices=1, days=8, hz=1 / 600,
                 steps=("10_parser", "20_split", "30_clean", "40_resample"))
    snakemake(tmp_path, "--verbose")
    log = sorted((tmp_path / ".snakemake" / "log").glob("*.snakemake.log"))[-1].read_text()
    rounds, finished = log.count("Ready jobs:"), log.count("Finished jobid:")
    assert finished > 30 and rounds <= finished, (rounds, finished)
