"""Time bounds: the one window parser (pyjama.timewindow)."""
import datetime as dt

import pytest

from pyjama.errors import UserError
from pyjama.timewindow import Window, parse_bound, parse_window

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 2, 10, 12, 30, 0, tzinfo=UTC)


def test_instant_with_and_without_fraction():
    assert parse_bound("2026-01-20T09:07:58Z", "from") == dt.datetime(2026, 1, 20, 9, 7, 58, tzinfo=UTC)
    assert parse_bound("2026-01-20T09:07:58.142308Z", "from").microsecond == 142308
    assert parse_bound("2026-01-20T09:07:58.5Z", "to").microsecond == 500000


def test_bare_date_is_the_whole_day():
    # as --from: its first instant; as --to: its last microsecond (inclusive end)
    assert parse_bound("2026-01-20", "from") == dt.datetime(2026, 1, 20, tzinfo=UTC)
    assert parse_bound("2026-01-20", "to") == dt.datetime(2026, 1, 20, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.mark.parametrize("text, expected", [
    ("{NOW}", NOW),
    ("{NOW-2d}", NOW - dt.timedelta(days=2)),
    ("{NOW+3h}", NOW + dt.timedelta(hours=3)),
    ("{NOW-30m}", NOW - dt.timedelta(minutes=30)),
    ("{NOW-1w}", NOW - dt.timedelta(weeks=1)),
    ("{NOW-10s}", NOW - dt.timedelta(seconds=10)),
])
def test_now_and_offsets(text, expected):
    assert parse_bound(text, "from", now=NOW) == expected


ALLOWED = ("allowed: YYYY-MM-DDTHH:MM:SSZ, YYYY-MM-DD (a whole UTC day), {NOW}, "
           "or {NOW-2d} (offset units s, m, h, d, w)")


@pytest.mark.parametrize("text, message", [
    ("2026-13-45T99:99:99Z", "--from: '2026-13-45T99:99:99Z' is not a valid instant (month must be in 1..12); " + ALLOWED),
    ("2026-02-30", "--from: '2026-02-30' is not a valid date (day is out of range for month); " + ALLOWED),
    ("yesterday", "--from: 'yesterday' is not a time bound; " + ALLOWED),
    ("2026-01-20T09:07:58", "--from: '2026-01-20T09:07:58' is not a time bound; " + ALLOWED),  # no Z: not UTC
    ("2026-01-20T09:07:58+01:00", "--from: '2026-01-20T09:07:58+01:00' is not a time bound; " + ALLOWED),
    ("{NOW-2x}", "--from: '{NOW-2x}' is not a time bound; " + ALLOWED),
    ("", "--from: empty bound; " + ALLOWED),
])
def test_bad_bounds_are_one_line_errors(text, message):
    with pytest.raises(UserError) as err:
        parse_bound(text, "from")
    assert str(err.value) == message


def test_from_after_to_is_an_error():
    with pytest.raises(UserError) as err:
        parse_window("2026-01-22", "2026-01-21")
    assert str(err.value) == "--from 2026-01-22 is after --to 2026-01-21; the window would be empty"


def test_same_day_window_is_that_day():
    w = parse_window("2026-01-21", "2026-01-21")
    assert w.select_days(["2026-01-20", "2026-01-21", "2026-01-22"]) == ["2026-01-21"]


def test_window_selects_whole_days_never_trims():
    # --to D+1T00:00:00Z touches the first instant of D+1: day D+1 is selected WHOLE
    # (a peer tool keeps only its midnight row).
    w = parse_window("2026-01-20", "2026-01-21T00:00:00Z")
    assert w.select_days(["2026-01-19", "2026-01-20", "2026-01-21", "2026-01-22"]) == ["2026-01-20", "2026-01-21"]
    # a window inside one day selects that day
    w = parse_window("2026-01-20T10:00:00Z", "2026-01-20T11:00:00Z")
    assert w.select_days(["2026-01-19", "2026-01-20", "2026-01-21"]) == ["2026-01-20"]
    # an end at exactly midnight of D+1 with start inside D+1 — only D+1
    w = parse_window("2026-01-21T00:00:00Z", None)
    assert w.select_days(["2026-01-20", "2026-01-21"]) == ["2026-01-21"]


def test_open_ends():
    assert Window().select_days(["2026-01-20"]) == ["2026-01-20"]
    assert parse_window(None, "2026-01-20").select_days(["2026-01-20", "2026-01-21"]) == ["2026-01-20"]
    assert parse_window("", "").start is None


def test_iso_seconds_cuts_to_the_second_in_utc():
    import datetime as dt

    import numpy as np
    import pandas as pd

    from pyjama.timewindow import iso_seconds

    assert iso_seconds(pd.Timestamp(1_768_867_199_999_999_999, unit="ns", tz="UTC")) == "2026-01-19T23:59:59Z"
    assert iso_seconds(np.datetime64("2026-01-20T00:00:01.9", "ns")) == "2026-01-20T00:00:01Z"
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert iso_seconds(dt.datetime(2026, 1, 20, 2, 0, 5, tzinfo=plus2)) == "2026-01-20T00:00:05Z"
    assert iso_seconds(dt.datetime(2026, 1, 20, 0, 0, 5)) == "2026-01-20T00:00:05Z"   # naive = UTC
