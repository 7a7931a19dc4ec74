"""drawer.py report: one self-contained HTML page, rendered in headless Chromium.

The DEMO pipeline (configs from configs/_template, as ./manager.sh create DEMO makes them)
runs on tiny generated data; the report is written, opened in Chromium (screenshot + DOM
after load) and checked for its headings, its embedded pictures and the absence of errors.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from wf import PY, REPO, drawer, make_fast_demo, run

from pyjama.flags import Flag
from pyjama.report import flag_table, opening_matrix, shorten_sensors, worst_flag_per_bin

PIPE = "configs/DEMO/pipeline.json"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

HEADINGS = ["Summary", "Data completeness and QC flags", "Opening of each animal",
            "Closures, micro-closures and synchronised closures", "Temperature and environment sensors",
            "Daily metrics", "Ledger", "Configs used (provenance)"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_demo")
    make_fast_demo(root)
    run([PY, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--cores", "2",
         "--config", f"pipeline={PIPE}"], root)
    res = drawer(root, "report", PIPE, "-o", "report.html")
    assert res.returncode == 0, res.stderr
    return root


def test_report_is_one_self_contained_file(demo):
    text = (demo / "report.html").read_text()
    for h in HEADINGS:
        assert f">{h}</h" in text, h
    # nothing is fetched: no external link, script, stylesheet or image URL
    assert not re.search(r'(src|href)="(https?:|//|file:)', text)
    assert "<script" not in text and "<link" not in text
    assert text.count('src="data:image/png;base64,') >= 2
    assert "Traceback" not in text and "could not draw" not in text


def test_report_opens_in_headless_chromium(demo, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = (demo / "report.html").as_uri()
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1280,2000", url],
                   capture_output=True, timeout=120, check=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # a blank page compresses to a few kB; plots and tables make it far bigger
    assert len(data) > 50_000
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    for h in HEADINGS:
        assert f">{h}</h" in dom, h
    assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom)) >= 2
    assert "This page has no content" not in dom and "ERR_" not in dom


def test_report_says_which_stage_is_not_built(demo, tmp_path):
    # drop the behaviour outputs of the day: the page says so and draws the rest
    for stage in ("60_events", "60_daily", "60_device_daily", "60_behaviour"):
        shutil.rmtree(demo / "data" / "DEMO" / stage, ignore_errors=True)
    res = drawer(demo, "report", PIPE, "-o", str(tmp_path / "r.html"))
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "r.html").read_text()
    assert "stage 60_events not built yet for valve01 2026-01-20" in text
    assert "stage 60_daily not built yet for valve01 2026-01-20" in text
    assert 'alt="opening heat map valve01 2026-01-20"' in text


# ---------------------------------------------------------------- the summaries it draws

def _frame(sensors, seconds, values, flags):
    ts = pd.Timestamp("2026-01-20", tz="UTC") + pd.to_timedelta(seconds, unit="s")
    return pd.DataFrame({"ts": ts, "sensor": sensors, "value": values,
                         "quality_flag": np.array(flags, dtype=np.uint8)})


def test_worst_flag_per_minute_follows_precedence():
    df = _frame(["m0", "m0", "m0", "m1"], [0, 10, 70, 0], [1.0, 2.0, 3.0, 4.0],
                [Flag.OK, Flag.SPIKE, Flag.OK, Flag.EXCLUDED])
    sensors, mat = worst_flag_per_bin(df, "2026-01-20", 60)
    assert sensors == ["m0", "m1"]
    assert mat.shape == (2, 1440)
    assert mat[0, 0] == Flag.SPIKE      # OK and SPIKE in minute 0: the spike shows
    assert mat[0, 1] == Flag.OK         # minute 1 holds one OK value
    assert mat[0, 2] == Flag.MISSING    # no row at all in minute 2
    assert mat[1, 0] == Flag.EXCLUDED


def test_opening_matrix_averages_usable_values_only():
    df = _frame(["m0__n", "m0__n", "m0__n"], [0, 30, 60], [0.2, 0.9, 0.5],
                [Flag.OK, Flag.SPIKE, Flag.INTERPOLATED])
    sensors, mat = opening_matrix(df, "2026-01-20", 60)
    assert sensors == ["m0__n"]
    np.testing.assert_allclose(mat[0, :3], [0.2, 0.5, np.nan])   # the spike (0.9) is left out


def test_flag_table_counts_rows_per_code():
    df = _frame(["m1", "m1", "m10", "m2"], [0, 1, 0, 0], [1.0] * 4,
                [Flag.OK, Flag.MISSING, Flag.OK, Flag.OK])
    t = flag_table(df)
    assert list(t.index) == ["m1", "m2", "m10"]        # channels in natural order
    assert t.loc["m1"].to_dict() == {"rows": 2, "OK": 1, "MISSING": 1}


def test_sensor_lists_are_shortened_to_channels():
    assert shorten_sensors("m10__cbrt_inv__norm,m2__cbrt_inv__norm") == "m2, m10"


def test_report_lists_the_raw_files_that_lost_lines(tmp_path):
    """Issue 11: the report names the file, the count and the main reason, as the run does."""
    from wf import make_project

    make_project(tmp_path, days=1, defects=False)
    raw = tmp_path / "data/T/00_raw/T_valve01_2026-01-20.csv"
    with open(raw, "a") as fh:
        fh.writelines(f"garbage line {i}\n" for i in range(100))
    res = drawer(tmp_path, "run", "configs/T/pipeline.json", "-q")
    want = ("data/T/00_raw/T_valve01_2026-01-20.csv: 100 of 4420 lines rejected (2.3 %), mostly "
            "'no values' (100); rejects: data/T/_meta/10_parsed/raw=T_valve01_2026-01-20.csv/rejects.csv")
    assert res.returncode == 0 and res.stderr.splitlines()[-1] == f"PyJAMA: warning: {want}"
    res = drawer(tmp_path, "report", "configs/T/pipeline.json", "-o", "r.html")
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "r.html").read_text()
    assert f"<li>{want.replace(chr(39), '&#x27;')}</li>" in text
