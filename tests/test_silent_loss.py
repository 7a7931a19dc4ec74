"""No silent loss (issue 11): bad files through the real workflow end in one warning line
per file that lost more than $.warn_rejected_share of its lines, with its exact text, and
every ledger still balances (lines in = parsed + set aside)."""
import json

import pytest

from tests.wf import drawer, make_project

pytestmark = pytest.mark.slow

GOOD = "".join(f"2026-01-20T00:00:{i:02d}Z;m0:{i}\n" for i in range(10))


def ledger(root, name):
    from pyjama import io

    return io.read_ledger(root / f"data/T/10_parsed/raw={name}/part.parquet")


def test_bad_files_are_named_at_the_end_of_the_run(tmp_path):
    make_project(tmp_path, "T", devices=1, days=1, hz=0.01)
    raw = tmp_path / "data/T/00_raw"
    (raw / "T_u16_2026-01-20.csv").write_bytes(GOOD.encode("utf-16-le"))          # no BOM, not declared
    (raw / "T_bom_2026-01-20.csv").write_bytes(b"\xff\xfe" + GOOD.encode("utf-16-le"))  # BOM: read fine
    (raw / "T_lat_2026-01-20.csv").write_bytes((GOOD + "2026-01-20T00:00:10Z;m0:1;lieu:Sète\n").encode("latin-1"))
    (raw / "T_far_2026-01-20.csv").write_text("1970-01-01T00:00:00Z;m0:1\n2100-01-01T00:00:00Z;m0:2\n" + GOOD)
    cfg_path = tmp_path / "configs/T/10_parser.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["deployment"] = {"start": "2026-01-01", "end": "2026-12-31"}
    cfg_path.write_text(json.dumps(cfg))
    res = drawer(tmp_path, "run", "configs/T/pipeline.json", "--quiet")
    assert res.returncode == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("PyJAMA: warning: ")]
    assert warnings == [
        "PyJAMA: warning: data/T/00_raw/T_far_2026-01-20.csv: 2 of 12 lines rejected (16.7 %), mostly "
        "'timestamp outside the deployment span' (2); rejects: data/T/_meta/10_parsed/raw=T_far_2026-01-20.csv/rejects.csv",
        "PyJAMA: warning: data/T/00_raw/T_lat_2026-01-20.csv: 1 of 11 lines rejected (9.1 %), mostly "
        "'not valid utf-8 (set $.encoding, e.g. latin-1 or utf-16)' (1); rejects: "
        "data/T/_meta/10_parsed/raw=T_lat_2026-01-20.csv/rejects.csv",
        "PyJAMA: warning: data/T/00_raw/T_u16_2026-01-20.csv: 10 of 10 lines rejected (100.0 %), mostly "
        "'looks like UTF-16 without a byte-order mark (NUL bytes every other byte); set $.encoding to "
        "utf-16-le or utf-16-be' (10); rejects: data/T/_meta/10_parsed/raw=T_u16_2026-01-20.csv/rejects.csv"]
    for name in ("T_u16", "T_bom", "T_lat", "T_far", "T_valve01"):
        led = ledger(tmp_path, f"{name}_2026-01-20.csv")
        assert led["rows_in"] == led["rows_out"] + sum(led["rejected"].values())
    assert ledger(tmp_path, "T_bom_2026-01-20.csv")["rows_out"] == 10
    assert ledger(tmp_path, "T_u16_2026-01-20.csv")["warning"] == warnings[2].removeprefix("PyJAMA: warning: ")
    days = sorted(p.name for p in (tmp_path / "data/T/20_split").glob("device_id=*/day=*"))
    assert set(days) == {"day=2026-01-20"}            # no day=1970-01-01, no day=2100-01-01
    status = drawer(tmp_path, "status", "configs/T/pipeline.json")
    assert [ln for ln in status.stdout.splitlines() if ln.startswith("warning: ")] == \
        [w.removeprefix("PyJAMA: ") for w in warnings]
    # a declared share: 20 % lets the 1970/2100 file and the Latin-1 file pass
    cfg["warn_rejected_share"] = 0.2
    cfg_path.write_text(json.dumps(cfg))
    res = drawer(tmp_path, "run", "configs/T/pipeline.json", "--quiet")
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("PyJAMA: warning: ")] == warnings[2:]


def test_a_file_with_no_readable_time_is_named_in_a_windowed_run(tmp_path):
    make_project(tmp_path, "T", devices=1, days=1, hz=0.01)
    (tmp_path / "data/T/00_raw/T_u16_2026-01-20.csv").write_bytes(GOOD.encode("utf-16-le"))
    res = drawer(tmp_path, "run", "configs/T/pipeline.json", "--quiet", "--from", "2026-01-20", "--to", "2026-01-20")
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "PyJAMA: warning: data/T/00_raw/T_u16_2026-01-20.csv (configs/T/10_parser.json): no line with a "
        "readable time; not parsed in a --from/--to window: run without one to see its rejects")


def test_plain_snakemake_prints_the_same_lost_data_lines(tmp_path):
    """`snakemake --config exposure=T` ends with the lines drawer.py prints (the Snakefile's
    onsuccess/onerror handlers, pyjama.losses.render); under drawer.py they come once."""
    from tests.wf import snakemake

    make_project(tmp_path, "T", devices=1, days=1, hz=0.01)
    raw = tmp_path / "data/T/00_raw"
    (raw / "T_lat_2026-01-20.csv").write_bytes((GOOD + "2026-01-20T00:00:10Z;m0:1;lieu:Sète\n").encode("latin-1"))
    (raw / "notes.csv").write_text("hello\n")
    want = [
        ("PyJAMA: warning: data/T/00_raw/notes.csv (configs/T/10_parser.json): not parsed: file name does "
         "not match $.device.pattern '^T_(?P<device>[^_]+)_\\\\d{4}-\\\\d{2}-\\\\d{2}\\\\.csv(\\\\.gz)?$'; "
         "move the file out of the raw folder or narrow $.files (now '*.csv*')"),
        ("PyJAMA: warning: data/T/00_raw/T_lat_2026-01-20.csv: 1 of 11 lines rejected (9.1 %), mostly "
         "'not valid utf-8 (set $.encoding, e.g. latin-1 or utf-16)' (1); rejects: "
         "data/T/_meta/10_parsed/raw=T_lat_2026-01-20.csv/rejects.csv")]
    res = snakemake(tmp_path)
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("PyJAMA: warning: ")] == want
    # a run that fails (a damaged parser output re-read by 20_split) ends with them too (onerror)
    part = tmp_path / "data/T/10_parsed/raw=T_valve01_2026-01-20.csv/part.parquet"
    part.write_bytes(b"not parquet")
    failed = snakemake(tmp_path, check=False)
    assert failed.returncode != 0
    assert [ln for ln in failed.stderr.splitlines() if ln.startswith("PyJAMA: warning: ")] == want
    res = drawer(tmp_path, "run", "configs/T/pipeline.json", "--verbose", "--", "--forceall")
    assert res.returncode == 0, res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("PyJAMA: warning: ")] == want
    status = drawer(tmp_path, "status", "configs/T/pipeline.json")
    assert [ln for ln in status.stdout.splitlines() if ln.startswith("warning: ")] == \
        [w.removeprefix("PyJAMA: ") for w in want]


def test_one_formatter_renders_the_lost_data_lines_for_every_view():
    from pyjama import losses

    line = losses.rejected_share("data/T/00_raw/a.csv", {"rows_in": 4, "rejected": {
        "unparsable number": 1, "wrong field count": 2, "skipped: header line": 1}}, 0.01, "r.csv")
    assert line == ("data/T/00_raw/a.csv: 3 of 4 lines rejected (75.0 %), mostly 'wrong field count' (2); "
                    "rejects: r.csv")
    assert losses.rejected_share("a.csv", {"rows_in": 200, "rejected": {"unparsable number": 2}}, 0.01, "r") is None
    assert losses.render([line], "run") == ["PyJAMA: warning: " + line]
    assert losses.render([line], "status") == ["warning: " + line]
    assert losses.render(["a <b> & 'c'"], "html") == ["<li>a &lt;b&gt; &amp; &#x27;c&#x27;</li>"]


def test_rows_on_days_far_from_the_files_others_are_named_when_no_span_is_declared(tmp_path):
    """Acceptance D1: with the template config (no $.deployment), a 1970 and a 2100 line in
    a file of 2026-01-20 are flagged 7 alone (not the 94 lines after them) and named in one
    line; before the fix, run and status said nothing (exit 0)."""
    make_project(tmp_path, "T", devices=1, days=1, hz=0.01)
    lines = [f"2026-01-20T00:{i // 60:02d}:{i % 60:02d}Z;m0:{i}" for i in range(100)]
    lines[3], lines[5] = "1970-01-01T00:00:00Z;m0:3", "2100-01-01T00:00:00Z;m0:5"
    (tmp_path / "data/T/00_raw/T_far_2026-01-20.csv").write_text("\n".join(lines) + "\n")
    res = drawer(tmp_path, "run", "configs/T/pipeline.json", "--quiet")
    assert res.returncode == 0, res.stderr
    line = ("data/T/00_raw/T_far_2026-01-20.csv: 2 rows on days far from the file's others "
            "(1970-01-01, 2100-01-01); declare $.deployment to reject them")
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("PyJAMA: warning: ")] == \
        ["PyJAMA: warning: " + line]
    status = drawer(tmp_path, "status", "configs/T/pipeline.json")
    assert [ln for ln in status.stdout.splitlines() if ln.startswith("warning: ")] == ["warning: " + line]
    led = ledger(tmp_path, "T_far_2026-01-20.csv")
    assert led["rows_in"] == 100 == led["rows_out"] + sum(led["rejected"].values())
    assert led["partitions"] == {"far/1970-01-01": 1, "far/2026-01-20": 98, "far/2100-01-01": 1}


def test_far_days_rule_on_ledger_partitions():
    from pyjama import losses

    far = losses.far_days
    led = {"partitions": {"d/2026-01-19": 5, "d/2026-01-20": 90, "d/2026-01-22": 5, "d/2026-01-30": 1,
                          "e/2026-01-21": 3}}
    # 19, 20, 21, 22 are one span (neighbours at most 2 days apart); 30 is 8 days after 22
    assert far("a.csv", led) == ("a.csv: 1 rows on days far from the file's others (2026-01-30); "
                                 "declare $.deployment to reject them")
    assert far("a.csv", {"partitions": {"d/2026-01-20": 1, "d/2026-01-22": 1}}) is None
    assert far("a.csv", {"partitions": {"d/2026-01-20": 1}}) is None and far("a.csv", {}) is None
