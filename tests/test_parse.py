"""Step 10 parser: each format, each bad-line kind with its exact reason, and the real
logger files of ../shared/data/real (pyjama.parse)."""
import gzip

import numpy as np
import pandas as pd
import pytest

from pyjama.config import validate
from pyjama.errors import UserError
from pyjama.parse import parse_bytes, read_raw_bytes
from tests.wf import REAL

BASE = {"exposure": "E", "input_stage": "00_raw", "output_stage": "10_parsed"}


def kv_cfg(**extra):
    cfg = {**BASE, "format": "keyvalue",
           "device": {"from": "filename", "pattern": r"^E_(?P<device>[^_]+)_\d{4}-\d{2}-\d{2}\.csv(\.gz)?$"},
           **extra}
    return validate("10_parser", cfg, "test")


def parse(text, cfg=None, name="E_valve01_2026-01-20.csv"):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return parse_bytes(data, cfg or kv_cfg(), name)


def rows(res):
    return [(t.isoformat().replace("+00:00", "Z"), d, dom, s, v, f) for t, d, dom, s, v, f in
            res.rows[["ts", "device_id", "domain", "sensor", "value", "quality_flag"]].astype(object).itertuples(index=False)]


def test_keyvalue_good_lines():
    res = parse("2026-01-20T09:07:58.142308Z;m0:10;m1:12;outdoor_temp:18.94\n"
                "2026-01-20T09:07:59Z;m0:11;m1:12.5;outdoor_temp:18.95\n")
    assert rows(res) == [
        ("2026-01-20T09:07:58.142308Z", "valve01", "bio_signal", "m0", 10.0, 0),
        ("2026-01-20T09:07:58.142308Z", "valve01", "bio_signal", "m1", 12.0, 0),
        ("2026-01-20T09:07:58.142308Z", "valve01", "environment", "outdoor_temp", 18.94, 0),
        ("2026-01-20T09:07:59Z", "valve01", "bio_signal", "m0", 11.0, 0),
        ("2026-01-20T09:07:59Z", "valve01", "bio_signal", "m1", 12.5, 0),
        ("2026-01-20T09:07:59Z", "valve01", "environment", "outdoor_temp", 18.95, 0),
    ]
    assert (res.lines, res.parsed, res.rejected, res.skipped) == (2, 2, {}, {})
    assert str(res.rows["ts"].dtype) == "datetime64[us, UTC]"


def test_keyvalue_each_bad_line_kind_is_rejected_with_its_reason():
    text = ("2026-01-20T00:00:00Z;m0:1\n"             # 1 ok
            "2026-13-45T99:99:99Z;m0:2\n"             # 2 impossible timestamp
            "\n"                                      # 3 blank: skipped, not rejected
            "2026-01-20T00:00:02Z\n"                  # 4 no values
            "2026-01-20T00:00:03Z;m0\n"               # 5 a pair without ':'
            "2026-01-20T00:00:04Z;m0:abc\n"           # 6 not a number
            "2026-01-20T00:00:05Z;m0:5;m1:\x00\x07\n"  # 7 control bytes
            "2026-01-20T00:00:06Z;m0:6\n"             # 8 ok
            "2026-01-20T00:00:07Z;m0:7;m1:1")         # 9 cut by a power loss: no line end
    res = parse(text)
    assert [(r[0], r[1], r[2]) for r in res.rejects] == [
        (2, "unparsable timestamp", "2026-13-45T99:99:99Z"),
        (4, "no values", ""),
        (5, "malformed key:value pair", "m0"),
        (6, "unparsable number", "m0:abc"),
        (7, "garbage bytes", ""),
        (9, "truncated last line (no line end)", "names differ from the line before"),
    ]
    assert res.skipped == {"blank line": 1}
    assert res.parsed == 2 and res.lines == 9
    assert [r[3] for r in rows(res)] == ["m0", "m0"]
    assert list(res.rows["value"]) == [1.0, 6.0]


def test_invalid_utf8_is_named_not_a_crash():
    res = parse(b"2026-01-20T00:00:00Z;m0:1\n2026-01-20T00:00:01Z;m0:\xff\xfe\n")
    assert [(r[0], r[1]) for r in res.rejects] == [
        (2, "not valid utf-8 (set $.encoding, e.g. latin-1 or utf-16)")]


def test_last_line_without_newline_can_be_kept():
    res = parse("2026-01-20T00:00:00Z;m0:1", kv_cfg(last_line_without_newline="keep"))
    assert res.parsed == 1 and res.rejected == {}


def test_missing_tokens_become_nan_flagged_missing_and_sentinels_stay_values():
    res = parse("2026-01-20T00:00:00Z;m0:NA;m1:4095;m2:-4096;m3:nan\n")
    got = rows(res)
    assert got[0][3:] == ("m0", pytest.approx(np.nan, nan_ok=True), 1)   # declared missing → flag 1
    assert got[1][3:] == ("m1", 4095.0, 0)                             # sentinel kept: 30_clean flags it
    assert got[2][3:] == ("m2", -4096.0, 0)
    assert got[3][5] == 1


def test_crlf_and_gzip(tmp_path):
    data = b"2026-01-20T00:00:00Z;m0:1\r\n2026-01-20T00:00:01Z;m0:2\r\n"
    f = tmp_path / "E_valve01_2026-01-20.csv.gz"
    f.write_bytes(gzip.compress(data))
    res = parse_bytes(read_raw_bytes(f), kv_cfg(), f.name)
    assert list(res.rows["value"]) == [1.0, 2.0] and res.rejected == {}


def test_cut_gzip_keeps_what_it_can(tmp_path):
    data = gzip.compress(b"".join(b"2026-01-20T00:00:%02dZ;m0:%d\n" % (i, i) for i in range(60)))
    f = tmp_path / "E_valve01_2026-01-20.csv.gz"
    f.write_bytes(data[: len(data) - 12])  # the end of the stream is lost
    res = parse_bytes(read_raw_bytes(f), kv_cfg(), f.name)
    assert res.parsed > 0 and res.parsed + sum(res.rejected.values()) == res.lines


def test_file_name_not_matching_the_device_pattern():
    with pytest.raises(UserError) as e:
        parse("2026-01-20T00:00:00Z;m0:1\n", name="other.csv")
    assert str(e.value).startswith("other.csv: file name does not match $.device.pattern")


def test_local_time_to_utc_and_dst_gaps():
    cfg = validate("10_parser", {**BASE, "format": "delimited", "delimiter": ",",
                                 "columns": ["t", "m0"], "device": {"from": "fixed", "value": "d"},
                                 "timestamp": {"column": "t", "format": "%Y-%m-%d %H:%M:%S",
                                               "timezone": "Europe/Paris"}}, "test")
    res = parse("2026-01-20 10:00:00,1\n"      # winter: UTC+1 → 09:00Z
                "2026-03-29 02:30:00,2\n"      # does not exist (clocks jump 02:00 → 03:00)
                "2026-10-25 02:30:00,3\n"      # ambiguous (happens twice)
                "2026-07-01 12:00:00,4\n", cfg)  # summer: UTC+2 → 10:00Z
    assert [r[0] for r in rows(res)] == ["2026-01-20T09:00:00Z", "2026-07-01T10:00:00Z"]
    assert [(r[0], r[1]) for r in res.rejects] == [
        (2, "local time does not exist or is ambiguous (DST change)"),
        (3, "local time does not exist or is ambiguous (DST change)")]


def test_delimited_header_repeated_header_and_field_count():
    cfg = validate("10_parser", {**BASE, "format": "delimited", "delimiter": ",", "header": True,
                                 "device": {"from": "column", "column": "id"},
                                 "timestamp": {"column": "DateTime", "format": "ISO8601"},
                                 "rename": {"Hall0": "m0"}, "ignore_columns": ["POSIXt"]}, "test")
    res = parse("POSIXt,DateTime,id,Hall0,Battery.V\n"
                "1,2026-01-20T00:00:00Z,st1,500,3.7\n"
                "POSIXt,DateTime,id,Hall0,Battery.V\n"    # repeated after a restart: skipped
                "2,2026-01-20T00:00:01Z,st2,501\n"        # a field short
                "3,2026-01-20T00:00:02Z,,502,3.6\n", cfg)  # no device id
    assert rows(res) == [("2026-01-20T00:00:00Z", "st1", "bio_signal", "m0", 500.0, 0),
                         ("2026-01-20T00:00:00Z", "st1", "environment", "Battery.V", 3.7, 0)]
    assert res.skipped == {"header line": 2}
    assert [(r[0], r[1], r[2]) for r in res.rejects] == [
        (4, "wrong field count", "4 fields, expected 5"), (5, "no device id", "")]


def test_scan_mode_reads_only_times_and_devices():
    res = parse_bytes(b"2026-01-20T23:59:59Z;m0:1\n2026-01-21T00:00:00Z;m0:x\n", kv_cfg(),
                      "E_valve01_2026-01-20.csv", values=False)
    assert list(res.rows["ts"].dt.strftime("%Y-%m-%d")) == ["2026-01-20", "2026-01-21"]


# ---------------------------------------------------------------- real files

needs_real = pytest.mark.skipif(not REAL.exists(), reason=f"real logger files not found at {REAL}")

MT_CFG = {**BASE, "format": "delimited", "delimiter": "\t",
          "columns": ["datetime", "accel_x", "accel_y", "accel_z", "mag_x", "mag_y", "mag_z",
                      "supply_adc", "thermistor_adc", "hall"],
          "timestamp": {"column": "datetime", "format": "%y/%m/%d %H:%M:%S", "timezone": "UTC"},
          "device": {"from": "fixed", "value": "mt01"},
          "domains": {"rules": [{"pattern": "^hall$", "domain": "bio_signal"}], "default": "environment"}}


@needs_real
def test_real_musseltracker_hourly_files():
    cfg = validate("10_parser", MT_CFG, "test")
    d = REAL / "petersen_MusselTracker_raw"
    a = parse_bytes(read_raw_bytes(d / "MT061713.TXT"), cfg, "MT061713.TXT")
    b = parse_bytes(read_raw_bytes(d / "MT061714.TXT"), cfg, "MT061714.TXT")
    assert (a.lines, a.parsed, a.rejected) == (2098, 2098, {})   # tab-separated, CRLF, YY/MM/DD
    assert (b.lines, b.parsed, b.rejected) == (4418, 4418, {})
    assert a.rows["ts"].min() == pd.Timestamp("2014-06-17 13:40:01", tz="UTC")
    assert b.rows["ts"].max() == pd.Timestamp("2014-06-17 14:36:48", tz="UTC")
    mag = a.rows[a.rows["sensor"] == "mag_x"]["value"]
    assert (mag == -4096).all()           # the overflow sentinel is kept as a value
    assert len(a.rows) == 2098 * 9


@needs_real
def test_real_musseltracker_unclosed_file_ends_in_garbage():
    cfg = validate("10_parser", MT_CFG, "test")
    res = parse_bytes(read_raw_bytes(REAL / "petersen_MusselTracker_raw" / "MAGNETLG.TXT"), cfg, "MAGNETLG.TXT")
    assert res.lines == 855 and res.parsed == 854
    assert [(r[0], r[1]) for r in res.rejects] == [(855, "garbage bytes")]


@needs_real
def test_real_errorlog_is_all_rejected_not_crashing():
    cfg = validate("10_parser", MT_CFG, "test")
    res = parse_bytes(read_raw_bytes(REAL / "petersen_MusselTracker_raw" / "ERRORLOG.TXT"), cfg, "ERRORLOG.TXT")
    assert res.parsed == 0 and res.rejected == {"wrong field count": 8}


@needs_real
def test_real_owhl_free_text_line_header_and_fractional_seconds():
    cfg = validate("10_parser", {**BASE, "format": "delimited", "delimiter": ",", "header": True,
                                 "skip_lines": 1, "ignore_columns": ["DateTime"],
                                 "timestamp": {"column": "POSIXt", "format": "unix",
                                               "fraction_column": "frac.seconds", "fraction_scale": 0.01},
                                 "device": {"from": "fixed", "value": "owhl01"},
                                 "domains": {"rules": [], "default": "environment"}}, "test")
    res = parse_bytes(read_raw_bytes(REAL / "owhl_20160819_1820_00.csv"), cfg, "owhl.csv")
    assert res.skipped == {"skip_lines": 1, "header line": 1} and res.rejected == {}
    assert res.parsed == 9596
    ts = res.rows["ts"]
    assert ts.min() == pd.Timestamp("2016-08-19 18:20:00", tz="UTC")
    assert ts.max() == pd.Timestamp("2016-08-19 18:59:59.75", tz="UTC")
    assert sorted(res.rows["sensor"].unique()) == ["Pressure.mbar", "TempC"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 1000])
def test_block_parsing_gives_the_same_result_as_one_block(monkeypatch, chunk):
    """Files are parsed in blocks of lines (bounded memory); block edges change nothing:
    line numbers, skips, header state, the cut last line, rows and their order."""
    import pyjama.parse as parse_mod

    kv = ("2026-01-20T00:00:00Z;m0:1;t:2\n\n2026-13-45T99:99:99Z;m0:2\n2026-01-20T00:00:02Z;m0:abc\n"
          "2026-01-20T00:00:03Z;m0:3;x:4\n2026-01-20T00:00:04Z;m0:4")
    dl_cfg = validate("10_parser", {**BASE, "format": "delimited", "delimiter": ",", "header": True,
                                    "skip_lines": 1, "device": {"from": "fixed", "value": "d"},
                                    "timestamp": {"column": "t", "format": "ISO8601"}}, "test")
    dl = ("mission line\nt,a,b\n2026-01-20T00:00:00Z,1,2\nt,a,b\n2026-01-20T00:00:01Z,3\n"
          "2026-01-20T00:00:02Z,5,6\n")
    for text, cfg in ((kv, kv_cfg()), (dl, dl_cfg)):
        monkeypatch.setattr(parse_mod, "CHUNK_LINES", 10_000)
        whole = parse(text, cfg)
        monkeypatch.setattr(parse_mod, "CHUNK_LINES", chunk)
        blocks = parse(text, cfg)
        assert rows(blocks) == rows(whole)
        assert [r[:3] for r in blocks.rejects] == [r[:3] for r in whole.rejects]
        assert (blocks.skipped, blocks.rejected, blocks.parsed) == (whole.skipped, whole.rejected, whole.parsed)
    assert [(r[0], r[1]) for r in whole.rejects] == [(5, "wrong field count")]
