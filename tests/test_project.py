"""The project a job runs in is loaded once per process while nothing it depends on changes
(jobs run as threads of one Snakemake process), and reloaded as soon as something does."""
import os

from pyjama.project import Project
from tests.wf import make_project


def test_project_is_reused_until_a_config_or_raw_file_changes(tmp_path):
    make_project(tmp_path, "T", devices=1, days=1, hz=0.01, defects=False)
    first = Project.for_exposure("T", tmp_path)
    assert Project.for_exposure("T", tmp_path) is first
    # a config edit (mtime) → reloaded
    cfg = tmp_path / "configs/T/20_split.json"
    st = cfg.stat()
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = Project.for_exposure("T", tmp_path)
    assert second is not first
    # a raw file rewritten in place (same folder listing) → reloaded, and its new day is seen
    raw = tmp_path / "data/T/00_raw/T_valve01_2026-01-20.csv"
    raw.write_text(raw.read_text() + "2026-01-21T08:00:00.000000Z;m0:1;outdoor_temp:2.00\n")
    third = Project.for_exposure("T", tmp_path)
    assert third is not second
    assert ("valve01", "2026-01-21") in third.partitions()
    assert Project.for_exposure("T", tmp_path) is third
