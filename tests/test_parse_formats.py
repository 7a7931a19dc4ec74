"""Parser features of issue 11, each on a tiny hand-made file with its exact rows and
exact reject reasons (pyjama.parse)."""
import codecs

import numpy as np
import pytest

from pyjama.config import validate
from pyjama.errors import UserError
from pyjama.parse import parse_bytes
from pyjama.steps.parser import ParserStep

BASE = {"exposure": "E", "input_stage": "00_raw", "output_stage": "10_parsed"}
NAME = "E_d1_2026-01-20.csv"


def cfg(**extra):
    c = {**BASE, "format": "delimited", "delimiter": ",", "header": True,
         "device": {"from": "fixed", "value": "d1"},
         "timestamp": {"column": "t", "format": "unix"},
         "domains": {"rules": [], "default": "environment"}, **extra}
    c = validate("10_parser", c, "test")
    ParserStep().check_config(c, "test")
    return c


def parse(text, c, name=NAME):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return parse_bytes(data, c, name)


def rows(res):
    out = []
    for t, d, s, v, f in res.rows[["ts", "device_id", "sensor", "value", "quality_flag"]].astype(object) \
            .itertuples(index=False):
        v = None if v != v else (v if not np.isinf(v) else str(v))
        out.append((t.isoformat().replace("+00:00", "Z"), d, s, v, f))
    return out


def rejects(res):
    return [(r[0], r[1], r[2]) for r in res.rejects]


# ---------------------------------------------------------------- LoRa-like gateway log

LORA = ("Node, Message, Time, Temp C, Hum %, Status\n"
        "1, 5, 1768867200, 1850, 6500, 0x00\n"
        "# Start Log\n"
        "Node, Message, Time, Temp C, Hum %, Status\n"
        "time request, 7\n"
        "1, 6, 1768867260, 1851, 6501, 0x04\n"
        "1, 7, 1768867320, -1, 65535, 0x00\n")


def lora_cfg(**extra):
    base = {"timestamp": {"column": "Time", "format": "unix"}, "device": {"from": "column", "column": "Node"},
            "skip_patterns": ["^# Start Log", "^time request"],
            "column_types": {"Temp C": {"scale": 0.01}, "Hum %": {"type": "integer", "scale": 0.01},
                             "Status": {"type": "hex"}, "Message": {"type": "integer"}},
            "status_flags": [{"column": "Status", "bits": "0x04", "flag": "OUT_OF_RANGE", "sensors": ["Temp C"]},
                             {"column": "Hum %", "equals": [65535], "flag": "OUT_OF_RANGE",
                              "sensors": ["Temp C", "Hum %"]}]}
    return cfg(**{**base, **extra})


def test_repeated_header_with_spaces_hex_status_scale_and_cross_sensor_flags():
    res = parse(LORA, lora_cfg())
    assert res.skipped == {"header line": 2, "skip pattern '^# Start Log'": 1,
                           "skip pattern '^time request'": 1}
    assert res.rejected == {}
    got = rows(res)
    assert got[:5] == [
        ("2026-01-20T00:00:00Z", "1", "Message", 5.0, 0),
        ("2026-01-20T00:00:00Z", "1", "Temp C", 18.5, 0),
        ("2026-01-20T00:00:00Z", "1", "Hum %", 65.0, 0),
        ("2026-01-20T00:00:00Z", "1", "Status", 0.0, 0),
        ("2026-01-20T00:01:00Z", "1", "Message", 6.0, 0)]
    assert got[5] == ("2026-01-20T00:01:00Z", "1", "Temp C", pytest.approx(18.51), 3)   # status bit 0x04
    assert got[7] == ("2026-01-20T00:01:00Z", "1", "Status", 4.0, 0)                    # bits kept
    assert got[9:11] == [("2026-01-20T00:02:00Z", "1", "Temp C", -0.01, 3),             # −1 with 65535
                         ("2026-01-20T00:02:00Z", "1", "Hum %", 655.35, 3)]


def test_bad_hex_and_bad_integer_name_the_column():
    res = parse("Node,Message,Time,Temp C,Hum %,Status\n1,5,1768867200,1850,65.5,0x00\n"
                "1,6,1768867201,1850,6500,0xZZ\n", lora_cfg())
    assert rejects(res) == [(2, "unparsable number", "Hum %=65.5 (integer expected)"),
                            (3, "unparsable number", "Status=0xZZ (hex expected)")]


def test_text_status_column_codes_and_status_only():
    c = cfg(column_types={"state": {"type": "text", "codes": {"OK": 0, "ERR": 1}},
                          "note": {"type": "text"}},
            status_flags=[{"column": "note", "equals": ["reboot"], "flag": "EXCLUDED", "sensors": []}])
    res = parse("t,a,state,note\n1768867200,1,OK,\n1768867201,2,ERR,reboot\n1768867202,3,WHAT,\n", c)
    assert rows(res) == [
        ("2026-01-20T00:00:00Z", "d1", "a", 1.0, 0), ("2026-01-20T00:00:00Z", "d1", "state", 0.0, 0),
        ("2026-01-20T00:00:01Z", "d1", "a", 2.0, 6), ("2026-01-20T00:00:01Z", "d1", "state", 1.0, 6),
        ("2026-01-20T00:00:02Z", "d1", "a", 3.0, 0), ("2026-01-20T00:00:02Z", "d1", "state", None, 3)]


def test_inf_text_and_overflow_are_the_same_infinite_value_flagged_3():
    res = parse("t,a,b\n1768867200,inf,1e309\n1768867201,-Infinity,-1e400\n", cfg())
    assert rows(res) == [("2026-01-20T00:00:00Z", "d1", "a", "inf", 3),
                         ("2026-01-20T00:00:00Z", "d1", "b", "inf", 3),
                         ("2026-01-20T00:00:01Z", "d1", "a", "-inf", 3),
                         ("2026-01-20T00:00:01Z", "d1", "b", "-inf", 3)]
    assert res.rejected == {}


def test_adc_counts_to_millivolts():
    res = parse("t,hall\n1768867200,1023\n1768867201,0\n",
                cfg(column_types={"hall": {"type": "integer", "scale": 3300 / 1023}}))
    assert [r[3] for r in rows(res)] == [pytest.approx(3300.0), 0.0]


# ---------------------------------------------------------------- time and device from the file

def test_relative_time_with_a_declared_origin():
    c = cfg(timestamp={"column": "time", "format": "relative", "unit": "h", "origin": "2026-01-20T06:00:00Z"})
    res = parse("time,opening\n0.5,3.9\n24,4.0\nx,4.1\n", c)
    assert rows(res) == [("2026-01-20T06:30:00Z", "d1", "opening", 3.9, 0),
                         ("2026-01-21T06:00:00Z", "d1", "opening", 4.0, 0)]
    assert rejects(res) == [(4, "unparsable timestamp", "x")]


def test_relative_time_origin_from_head_lines_date_and_time_on_two_lines():
    c = cfg(skip_lines=3, timestamp={"column": "seconds", "format": "relative", "unit": "s",
                                     "origin_pattern": r"^Date: (?P<date>\S+)\nTime: (?P<time>\S+)$",
                                     "origin_format": "%d/%m/%Y %H:%M:%S"})
    res = parse("Logger X\nDate: 20/01/2026\nTime: 10:00:00\nseconds,CH_1\n0,1\n1.5,2\n", c)
    assert rows(res) == [("2026-01-20T10:00:00Z", "d1", "CH_1", 1.0, 0),
                         ("2026-01-20T10:00:01.500000Z", "d1", "CH_1", 2.0, 0)]
    none = parse("Logger X\nno date\n\nseconds,CH_1\n0,1\n", c)
    assert none.rejected == {"no time origin (timestamp.origin_pattern matched none of the head lines)": 5}


def test_device_id_from_a_head_line():
    c = cfg(skip_lines=1, device={"from": "header", "pattern": r"^(?P<device>SN\d+) "})
    res = parse("SN2015 Miller test unit,x\nt,p\n1768867200,1029.3\n", c)
    assert rows(res) == [("2026-01-20T00:00:00Z", "SN2015", "p", 1029.3, 0)]
    bad = parse("no serial here\nt,p\n1768867200,1029.3\n", c)
    assert bad.rejected == {"no device id (device.pattern matched none of the head lines)": 3}


def test_deployment_span_rejects_times_outside_per_device():
    c = cfg(device={"from": "column", "column": "id"},
            deployment={"start": "2026-01-20", "end": "2026-01-20",
                        "devices": {"late": {"start": "2026-01-20T12:00:00Z"}}})
    res = parse("t,id,a\n0,d1,1\n1768867200,d1,2\n4102444800,d1,3\n1768867200,late,4\n1768910400,late,5\n", c)
    assert rows(res) == [("2026-01-20T00:00:00Z", "d1", "a", 2.0, 0),
                         ("2026-01-20T12:00:00Z", "late", "a", 5.0, 0)]
    assert rejects(res) == [
        (2, "timestamp outside the deployment span",
         "1970-01-01T00:00:00Z not in 2026-01-20T00:00:00Z .. 2026-01-20T23:59:59.999999Z"),
        (4, "timestamp outside the deployment span",
         "2100-01-01T00:00:00Z not in 2026-01-20T00:00:00Z .. 2026-01-20T23:59:59.999999Z"),
        (5, "timestamp outside the deployment span",
         "2026-01-20T00:00:00Z not in 2026-01-20T12:00:00Z .. 2026-01-20T23:59:59.999999Z")]


def test_bad_deployment_bound_is_one_line_error():
    with pytest.raises(UserError) as e:
        cfg(deployment={"start": "20/01/2026"})
    assert str(e.value).startswith("test: $.deployment.start: '20/01/2026' is not a time bound")


# ---------------------------------------------------------------- encodings and odd lines

TEXT = "t,a\n1768867200,1\n1768867201,2\n"


@pytest.mark.parametrize("enc,data", [
    ("utf-8", codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le")),      # BOM detected
    ("utf-8", codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be")),
    ("utf-16-le", TEXT.encode("utf-16-le")),                         # declared, no BOM
    ("utf-8", codecs.BOM_UTF8 + TEXT.encode()),
])
def test_utf16_and_boms(enc, data):
    res = parse(data, cfg(encoding=enc))
    assert [r[3] for r in rows(res)] == [1.0, 2.0] and res.rejected == {}


def test_utf16_without_bom_and_undeclared_is_named_not_garbage():
    res = parse(TEXT.encode("utf-16-le"), cfg())
    assert res.rejected == {"looks like UTF-16 without a byte-order mark (NUL bytes every other byte); "
                            "set $.encoding to utf-16-le or utf-16-be": 3}


def test_latin1_declared_and_undeclared():
    data = "t,a,lieu\n1768867200,1,Brest\n1768867201,2,Sète\n".encode("latin-1")
    c = dict(column_types={"lieu": {"type": "text"}})
    assert rejects(parse(data, cfg(**c))) == [(3, "not valid utf-8 (set $.encoding, e.g. latin-1 or utf-16)", "")]
    res = parse(data, cfg(encoding="latin-1", **c))
    assert res.rejected == {} and [r[3] for r in rows(res)] == [1.0, 2.0]


def test_huge_single_line_is_rejected_whole_not_folded():
    huge = "2026-01-20T00:00:00Z;" + ";".join(f"m0:{i}" for i in range(200_000))
    c = validate("10_parser", {**BASE, "format": "keyvalue", "device": {"from": "fixed", "value": "d1"}}, "t")
    res = parse("2026-01-20T00:00:01Z;m0:1\n" + huge + "\n", c)
    assert rejects(res) == [(2, "line too long", f"{len(huge)} characters, max 100000")]
    assert len(res.rows) == 1


def test_a_name_twice_in_one_line_is_rejected():
    c = validate("10_parser", {**BASE, "format": "keyvalue", "device": {"from": "fixed", "value": "d1"}}, "t")
    res = parse("2026-01-20T00:00:00Z;m0:1;m0:2;m1:3\n2026-01-20T00:00:01Z;m0:4\n", c)
    assert rejects(res) == [(1, "name repeated in one record", "m0")]
    assert len(res.rows) == 1


def test_last_line_without_line_end_kept_when_it_parses_completely():
    res = parse("t,a,b\n1768867200,1,2\n1768867201,3,4", cfg())
    assert res.rejected == {} and res.parsed == 2
    cut = parse("t,a,b\n1768867200,1,2\n1768867201,3", cfg())
    assert rejects(cut) == [(3, "truncated last line (no line end)", "wrong field count: 2 fields, expected 3")]
    strict = parse("t,a,b\n1768867200,1,2\n1768867201,3,4", cfg(last_line_without_newline="reject"))
    assert rejects(strict) == [(3, "truncated last line (no line end)", "")]
    ended = parse("t,a,b\n1768867200,1,2\n1768867201,3\n", cfg())        # with a line end: not cut
    assert rejects(ended) == [(3, "wrong field count", "2 fields, expected 3")]


# ---------------------------------------------------------------- order of times

def test_backwards_times_flagged_jumps_and_counter_resets_recorded():
    c = cfg(sequence={"max_step": "1h", "counters": ["n"]})
    res = parse("t,n,a\n1768867200,1,10\n1768867260,2,11\n1768867230,3,12\n1768867320,4,13\n"
                "1768878000,1,14\n", c)
    assert [(r[0], r[2], r[3], r[4]) for r in rows(res) if r[2] == "a"] == [
        ("2026-01-20T00:00:00Z", "a", 10.0, 0), ("2026-01-20T00:01:00Z", "a", 11.0, 0),
        ("2026-01-20T00:00:30Z", "a", 12.0, 7), ("2026-01-20T00:02:00Z", "a", 13.0, 0),
        ("2026-01-20T03:00:00Z", "a", 14.0, 0)]
    assert res.events == {"time went backwards": 1, "clock jump": 1, "counter reset": 1}
    assert res.event_lines == [
        "line 4: time went backwards: 2026-01-20T00:01:00Z -> 2026-01-20T00:00:30Z",
        "line 6: clock jump: 2026-01-20T00:02:00Z -> 2026-01-20T03:00:00Z",
        "line 6: counter reset: n 4 -> 1"]


def test_backwards_can_be_kept_unflagged():
    res = parse("t,a\n1768867260,1\n1768867200,2\n", cfg(sequence={"backwards": "keep"}))
    assert [r[4] for r in rows(res)] == [0, 0] and res.events == {"time went backwards": 1}


def far_file():
    """100 lines at 1 Hz from 2026-01-20T00:00:00Z; line 4 says 1970, line 6 says 2100."""
    lines = [f"{pd_ts(i)};m0:{i}" for i in range(100)]
    lines[3] = "1970-01-01T00:00:00Z;m0:3"
    lines[5] = "2100-01-01T00:00:00Z;m0:5"
    return "\n".join(lines) + "\n"


def pd_ts(i):
    import pandas as pd

    return (pd.Timestamp("2026-01-20T00:00:00Z") + pd.Timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_one_wrong_future_time_flags_only_the_lines_out_of_place():
    """Acceptance D1: the 2100 line is ahead of both neighbours (flag 7), the 1970 line is
    earlier than the line before it (flag 7); lines 7-100 carry on from line 5 (flag 0).
    Before the fix, lines 7-100 were flagged 7 (later than nothing but the 2100 line) and
    the 2100 line 0."""
    res = parse(far_file(), kvcfg())
    flags = [r[4] for r in rows(res)]
    assert [i + 1 for i, f in enumerate(flags) if f] == [4, 6]
    assert flags.count(0) == 98 and res.lines == 100 == res.parsed + sum(res.rejected.values())
    assert res.events == {"time went backwards": 2}
    assert res.event_lines == [
        "line 4: time went backwards: 2026-01-20T00:00:02Z -> 1970-01-01T00:00:00Z",
        "line 7: time went backwards: 2100-01-01T00:00:00Z -> 2026-01-20T00:00:06Z"]


def test_a_run_of_up_to_three_lines_ahead_is_out_of_place_a_clock_step_back_is_not():
    c = cfg()
    times = [0, 1, 2, 90, 91, 5, 6, 7, 8]            # 90, 91: ahead of the 3 lines after them
    res = parse("t,a\n" + "".join(f"{1768867200 + x},{x}\n" for x in times), c)
    assert [r[4] for r in rows(res)] == [0, 0, 0, 7, 7, 0, 0, 0, 0]
    # a step back the clock carries on from: the lines earlier than the latest are flagged
    times = [0, 1, 2, 3, 4, 5, 2, 3, 4, 5, 6, 7]
    res = parse("t,a\n" + "".join(f"{1768867200 + x},{x}\n" for x in times), c)
    assert [r[4] for r in rows(res)] == [0, 0, 0, 0, 0, 0, 7, 7, 7, 0, 0, 0]
    # four lines ahead are not "a few lines": the clock stepped back after them
    times = [0, 1, 90, 91, 92, 93, 5, 6, 7, 8, 9, 10]
    res = parse("t,a\n" + "".join(f"{1768867200 + x},{x}\n" for x in times), c)
    assert [r[4] for r in rows(res)] == [0, 0, 0, 0, 0, 0, 7, 7, 7, 7, 7, 7]


# ---------------------------------------------------------------- multi-line records

def mcfg(**extra):
    c = validate("10_parser", {**BASE, "format": "multiline", "device": {"from": "fixed", "value": "d1"},
                               "record_start": r"^Time: (?P<ts>\S+)$",
                               "domains": {"rules": [], "default": "environment"}, **extra}, "t")
    ParserStep().check_config(c, "t")
    return c


def test_multiline_records():
    text = ("Sensor 1: 5\n"                      # 1 before any record
            "Time: 2026-01-20T00:00:00Z\n"       # 2
            "Sensor 1: 10\n"                     # 3
            "Sensor 2: 2.5\n"                    # 4
            "garbage here\n"                     # 5
            "Time: 2026-13-01T00:00:00Z\n"       # 6 bad time
            "Sensor 1: 11\n"                     # 7 belongs to the bad record
            "Time: 2026-01-20T00:00:10Z\n"       # 8
            "Sensor 1: x\n"                      # 9 bad number
            "Sensor 2: 3\n"                      # 10
            "Sensor 2: 4\n"                      # 11 repeated
            "Time: 2026-01-20T00:00:20Z\n")      # 12 no values
    res = parse(text, mcfg())
    assert rows(res) == [("2026-01-20T00:00:00Z", "d1", "Sensor 1", 10.0, 0),
                         ("2026-01-20T00:00:00Z", "d1", "Sensor 2", 2.5, 0),
                         ("2026-01-20T00:00:10Z", "d1", "Sensor 2", 3.0, 0)]
    assert rejects(res) == [(1, "value line before any record start", ""),
                            (5, "neither a record start nor a value line", ""),
                            (6, "unparsable timestamp", "2026-13-01T00:00:00Z"),
                            (7, "record start line rejected", ""),
                            (9, "unparsable number", "Sensor 1=x"),
                            (11, "name repeated in one record", "Sensor 2"),
                            (12, "no values", "")]
    assert res.parsed == 5 and res.lines == 12


def test_multiline_needs_a_ts_group():
    with pytest.raises(UserError) as e:
        mcfg(record_start="^Time: .*$")
    assert str(e.value) == ("t: $.record_start: '^Time: .*$' has no group ts; allowed: a regular "
                            "expression such as '^Time: (?P<ts>.+)$'")


# ---------------------------------------------------------------- status bits and counters: keyvalue, multiline

STATUS_RULES = [{"column": "Status", "bits": "0x04", "flag": "OUT_OF_RANGE", "sensors": ["t"]},
                {"column": "hum", "equals": [65535], "flag": "OUT_OF_RANGE", "sensors": ["t", "hum"]},
                {"column": "state", "equals": ["ERR"], "flag": "EXCLUDED", "sensors": []}]


def kvcfg(**extra):
    c = validate("10_parser", {**BASE, "format": "keyvalue", "device": {"from": "fixed", "value": "d1"},
                               "domains": {"rules": [], "default": "environment"}, **extra}, "t")
    ParserStep().check_config(c, "t")
    return c


def test_keyvalue_status_bits_sentinels_text_status_and_counter_resets():
    c = kvcfg(column_types={"Status": {"type": "hex"}, "state": {"type": "text"}, "n": {"type": "integer"}},
              status_flags=STATUS_RULES, sequence={"counters": ["n"]})
    res = parse("2026-01-20T00:00:00Z;n:5;Status:0x00;t:12.5;hum:40;state:OK\n"
                "2026-01-20T00:00:10Z;n:6;Status:0x04;t:12.6;hum:41\n"       # bit 2: t only
                "2026-01-20T00:00:20Z;n:7;Status:0x00;t:-1;hum:65535\n"      # failed read: t and hum
                "2026-01-20T00:00:30Z;n:2;Status:0xZZ;t:12.7;hum:42\n"       # bad hex: the line
                "2026-01-20T00:00:40Z;n:1;t:12.8;hum:43;state:ERR\n", c)     # reset; ERR: all sensors
    assert rows(res) == [            # each line's names in file order; the flag says why
        ("2026-01-20T00:00:00Z", "d1", "n", 5.0, 0), ("2026-01-20T00:00:00Z", "d1", "Status", 0.0, 0),
        ("2026-01-20T00:00:00Z", "d1", "t", 12.5, 0), ("2026-01-20T00:00:00Z", "d1", "hum", 40.0, 0),
        ("2026-01-20T00:00:10Z", "d1", "n", 6.0, 0), ("2026-01-20T00:00:10Z", "d1", "Status", 4.0, 0),
        ("2026-01-20T00:00:10Z", "d1", "t", 12.6, 3), ("2026-01-20T00:00:10Z", "d1", "hum", 41.0, 0),
        ("2026-01-20T00:00:20Z", "d1", "n", 7.0, 0), ("2026-01-20T00:00:20Z", "d1", "Status", 0.0, 0),
        ("2026-01-20T00:00:20Z", "d1", "t", -1.0, 3), ("2026-01-20T00:00:20Z", "d1", "hum", 65535.0, 3),
        ("2026-01-20T00:00:40Z", "d1", "n", 1.0, 6), ("2026-01-20T00:00:40Z", "d1", "t", 12.8, 6),
        ("2026-01-20T00:00:40Z", "d1", "hum", 43.0, 6)]
    # the text name `state` (no codes) makes no rows: it is read by status_flags only
    assert rejects(res) == [(4, "unparsable number", "Status:0xZZ (hex expected)")]
    assert res.events == {"counter reset": 1}
    assert res.event_lines == ["line 5: counter reset: n 7 -> 1"]    # line 4 (n:2) was rejected
    assert res.lines == res.parsed + sum(res.rejected.values()) + sum(res.skipped.values())


def test_multiline_status_bits_sentinels_and_counter_resets():
    c = mcfg(column_types={"Status": {"type": "hex"}, "Msg": {"type": "integer"}},
             status_flags=STATUS_RULES[:2], sequence={"counters": ["Msg"]})
    text = ("Time: 2026-01-20T00:00:00Z\n"      # 1
            "Msg: 1\nStatus: 0x04\nt: 12.5\nhum: 40\n"
            "Time: 2026-01-20T00:00:10Z\n"      # 6
            "Msg: 2\nStatus: 0x00\nt: -1\nhum: 65535\n"
            "Time: 2026-01-20T00:00:20Z\n"      # 11
            "Msg: 1\nStatus: 0xZZ\nt: 12.7\nhum: 42\n")   # reset; bad hex: its line only
    res = parse(text, c)
    assert rows(res) == [
        ("2026-01-20T00:00:00Z", "d1", "Msg", 1.0, 0), ("2026-01-20T00:00:00Z", "d1", "Status", 4.0, 0),
        ("2026-01-20T00:00:00Z", "d1", "t", 12.5, 3), ("2026-01-20T00:00:00Z", "d1", "hum", 40.0, 0),
        ("2026-01-20T00:00:10Z", "d1", "Msg", 2.0, 0), ("2026-01-20T00:00:10Z", "d1", "Status", 0.0, 0),
        ("2026-01-20T00:00:10Z", "d1", "t", -1.0, 3), ("2026-01-20T00:00:10Z", "d1", "hum", 65535.0, 3),
        ("2026-01-20T00:00:20Z", "d1", "Msg", 1.0, 0),     # its Status line is rejected: no status flags
        ("2026-01-20T00:00:20Z", "d1", "t", 12.7, 0), ("2026-01-20T00:00:20Z", "d1", "hum", 42.0, 0)]
    assert rejects(res) == [(13, "unparsable number", "Status=0xZZ (hex expected)")]
    assert res.event_lines == ["line 11: counter reset: Msg 2 -> 1"]
    assert res.lines == res.parsed + sum(res.rejected.values()) + sum(res.skipped.values())


def test_a_metadata_block_with_the_start_date_and_time_on_lines_5_and_6():
    """Issue 11: N lines of metadata, then `seconds,CH_1..CH_4`; the record's start on lines 5–6."""
    c = cfg(skip_lines=6, timestamp={"column": "seconds", "format": "relative", "unit": "s",
                                     "origin_pattern": r"^Start date: (?P<date>\S+)\nStart time: (?P<time>\S+)$",
                                     "origin_format": "%Y-%m-%d %H:%M:%S"})
    head = ("Logger: HOBO-like\nSerial: 20345\nChannels: 4\nUnits: mV\n"
            "Start date: 2026-01-20\nStart time: 06:30:00\n")
    res = parse(head + "seconds,CH_1,CH_2,CH_3,CH_4\n0,1,2,3,4\n0.5,5,6,7,8\n", c)
    assert rows(res) == [
        ("2026-01-20T06:30:00Z", "d1", "CH_1", 1.0, 0), ("2026-01-20T06:30:00Z", "d1", "CH_2", 2.0, 0),
        ("2026-01-20T06:30:00Z", "d1", "CH_3", 3.0, 0), ("2026-01-20T06:30:00Z", "d1", "CH_4", 4.0, 0),
        ("2026-01-20T06:30:00.500000Z", "d1", "CH_1", 5.0, 0), ("2026-01-20T06:30:00.500000Z", "d1", "CH_2", 6.0, 0),
        ("2026-01-20T06:30:00.500000Z", "d1", "CH_3", 7.0, 0), ("2026-01-20T06:30:00.500000Z", "d1", "CH_4", 8.0, 0)]
    assert res.skipped == {"skip_lines": 6, "header line": 1} and res.rejected == {}


def test_every_wall_of_issue_11_in_the_docs_names_tests_that_exist():
    """docs/steps/parser.md lists each wall of issue 11, what a user writes, and its tests."""
    import ast
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    text = (repo / "docs/steps/parser.md").read_text(encoding="utf-8")
    table = text[text.index("## Each wall of issue 11"):]
    rows = [r for r in table.splitlines() if r.startswith("| ") and not r.startswith("| wall")]
    assert len(rows) == 25          # 24 walls of issue 11 + the acceptance review D1
    for row in rows:
        named = re.findall(r"`(test_\w+\.py)::(\w+)`", row.rsplit(" | ", 1)[1])
        files = re.findall(r"`(test_\w+\.py)[ `]", row.rsplit(" | ", 1)[1])
        assert named or files, row
        for file, name in named:
            tree = ast.parse((repo / "tests" / file).read_text(encoding="utf-8"))
            assert name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, (file, name)


def test_a_status_rule_or_counter_naming_no_column_of_the_header_is_one_line():
    """A misspelled column in status_flags or sequence.counters would never apply: with a
    header the file says which columns exist, and the parser job stops on one line."""
    with pytest.raises(UserError) as e:
        parse(LORA, lora_cfg(status_flags=[{"column": "Statu", "bits": "0x04", "flag": "OUT_OF_RANGE"}]))
    assert str(e.value) == (f"{NAME}: $.status_flags[0].column: 'Statu' is not a column of this file's header; "
                            "allowed: Node, Message, Time, Temp C, Hum %, Status")
    with pytest.raises(UserError) as e:
        parse(LORA, lora_cfg(sequence={"counters": ["Msg"]}))
    assert str(e.value) == (f"{NAME}: $.sequence.counters: 'Msg' is not a column of this file's header; "
                            "allowed: Node, Message, Time, Temp C, Hum %, Status")


def test_every_reject_reason_is_in_the_data_conventions():
    from pathlib import Path

    from pyjama import parse as p

    text = (Path(__file__).resolve().parent.parent / "docs/data-conventions.md").read_text(encoding="utf-8")
    text = " ".join(text.split())
    reasons = [v for k, v in vars(p).items() if k.startswith(("R_", "S_", "E_")) and isinstance(v, str)]
    assert len(reasons) > 20
    missing = [r for r in reasons + [p.r_decode("<encoding>")] if f"`{r}" not in text]
    assert missing == []
