"""Step 20 split: merge files, cut at UTC midnight, sort, resolve duplicates by policy."""

import pandas as pd

from pyjama import tidy
from pyjama.steps.split import merge_duplicates, split_partition


def f(ts, sensor, value, flag=0):
    return tidy.frame(ts=ts, device_id="d", domain="bio_signal", sensor=sensor, value=value, quality_flag=flag)


A = f(["2026-01-20T00:00:00Z", "2026-01-20T00:00:01Z", "2026-01-20T00:00:01Z"], "m0", [1.0, 2.0, 4.0])


def test_first_last_mean_policies():
    out, merged = merge_duplicates(A, "first")
    assert list(out["value"]) == [1.0, 2.0] and merged == 1     # the 00:00:01 pair keeps 2.0 (first)
    out, merged = merge_duplicates(A, "last")
    assert sorted(out["value"]) == [1.0, 4.0] and merged == 1
    out, merged = merge_duplicates(A, "mean")
    assert sorted(out["value"]) == [1.0, 3.0] and merged == 1   # (2 + 4) / 2


def test_overlapping_files_are_merged_and_counted():
    # file 2 re-sends the last two samples of file 1 (a logger resend after a reconnect)
    f1 = f(["2026-01-20T10:00:00Z", "2026-01-20T10:00:01Z", "2026-01-20T10:00:02Z"], "m0", [1, 2, 3])
    f2 = f(["2026-01-20T10:00:01Z", "2026-01-20T10:00:02Z", "2026-01-20T10:00:03Z"], "m0", [20, 30, 4])
    out, counts = split_partition([f1, f2], "d", "2026-01-20", "first")
    assert list(out["value"]) == [1, 2, 3, 4]                   # file order decides "first"
    assert counts == {"rows_in": 6, "rows_out": 4, "input_files": 2,
                      "rejected": {"duplicate (sensor, ts) merged: first": 2}}


def test_sort_orders():
    df = pd.concat([f(["2026-01-20T00:00:01Z", "2026-01-20T00:00:00Z"], "m1", [1, 2]),
                    f(["2026-01-20T00:00:00Z"], "m0", [3])], ignore_index=True)
    out, _ = split_partition([df], "d", "2026-01-20", sort="sensor_ts")
    assert list(zip(out["sensor"], out["value"])) == [("m0", 3), ("m1", 2), ("m1", 1)]
    out, _ = split_partition([df], "d", "2026-01-20", sort="ts_sensor")
    assert list(zip(out["sensor"], out["value"])) == [("m0", 3), ("m1", 2), ("m1", 1)]


def test_empty_input():
    out, counts = split_partition([], "d", "2026-01-20")
    assert len(out) == 0 and counts["rows_in"] == 0 and list(out.columns) == tidy.COLUMNS


def test_midnight_edges_go_to_their_own_day(tmp_path):
    """A raw file named for day D with samples after midnight feeds day D+1's partition."""
    from tests.wf import make_project, pyjama

    make_project(tmp_path, "T", devices=1, days=1, hz=0.05, defects=False)
    raw = tmp_path / "data" / "T" / "00_raw" / "T_valve01_2026-01-20.csv"
    raw.write_text(raw.read_text() + "2026-01-21T00:00:00.000000Z;m0:999;outdoor_temp:1.00\n"
                   "2026-01-21T00:00:05.500000Z;m0:998;outdoor_temp:1.00\n")
    assert pyjama(tmp_path, "run", "10_parser.py", "--with", "configs/T/10_parser.json").returncode == 0
    assert pyjama(tmp_path, "run", "20_split.py", "--with", "configs/T/20_split.json").returncode == 0
    from pyjama.io import read_tidy

    d21 = read_tidy(tmp_path / "data/T/20_split/device_id=valve01/day=2026-01-21/part.parquet")
    assert sorted(d21["value"]) == [1.0, 1.0, 998.0, 999.0]
    d20 = read_tidy(tmp_path / "data/T/20_split/device_id=valve01/day=2026-01-20/part.parquet")
    assert d20["ts"].max() < pd.Timestamp("2026-01-21", tz="UTC")
    from pyjama import io

    led = io.read_ledger(tmp_path / "data/T/20_split/device_id=valve01/day=2026-01-21/part.parquet")
    assert led["rows_in"] == 4 and led["rows_out"] == 4


def test_a_line_whose_clock_went_backwards_is_sorted_into_place_and_keeps_flag_7():
    """Issue 11: backwards times are never re-sorted in silence — the parser flags the line 7
    (TIME_ORDER) and counts the event; step 20 sorts the row into place with its flag."""
    parsed = f(["2026-01-20T00:00:00Z", "2026-01-20T00:01:00Z", "2026-01-20T00:00:30Z"], "a",
               [10.0, 11.0, 12.0], [0, 0, 7])
    out, counts = split_partition([parsed], "d", "2026-01-20")
    assert [(t.strftime("%H:%M:%S"), v, q) for t, v, q in zip(out["ts"], out["value"], out["quality_flag"])] == [
        ("00:00:00", 10.0, 0), ("00:00:30", 12.0, 7), ("00:01:00", 11.0, 0)]
    assert counts["rows_in"] == counts["rows_out"] == 3


def _pandas_path(frames, duplicates, sort):
    """20_split's frame as merge_duplicates then sort_values make it (the oracle)."""
    frames = [x for x in frames if len(x)]
    df = pd.concat(frames, ignore_index=True)
    df, merged = merge_duplicates(df, duplicates)
    df = df.sort_values(["sensor", "ts"] if sort == "sensor_ts" else ["ts", "sensor"], kind="stable")
    df = df.reset_index(drop=True)
    df["quality_flag"] = df["quality_flag"].astype("uint8")
    return tidy.conform(df), merged


import pytest  # noqa: E402


@pytest.mark.parametrize("seed", range(12))
def test_the_sorted_path_equals_pandas_on_random_files(seed):
    """The one-sort path (first, last) gives merge_duplicates + sort_values' rows and order:
    files of different sensor sets (concat → strings) or one file (a categorical whose
    categories are not in label order), repeated (sensor, ts) within and across files."""
    import numpy as np

    rng = np.random.default_rng(seed)
    names = ["m1", "m0", "outdoor_temp", "m10", "a"]
    frames = []
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.integers(1, 60))
        sec = rng.integers(0, 20, n)
        sensors = rng.choice(names[: int(rng.integers(1, 6))], n)
        vals = np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 5, n).astype(float))
        fr = f([f"2026-01-20T00:00:{s:02d}Z" for s in sec], sensors, vals, rng.integers(0, 3, n))
        if rng.random() < 0.5:      # categories in an order that is not the labels'
            fr["sensor"] = fr["sensor"].cat.reorder_categories(list(fr["sensor"].cat.categories)[::-1])
        frames.append(fr)
    for duplicates in ("first", "last"):
        for sort in ("sensor_ts", "ts_sensor"):
            want, merged = _pandas_path(frames, duplicates, sort)
            got, counts = split_partition(frames, "d", "2026-01-20", duplicates, sort)
            pd.testing.assert_frame_equal(got, want)
            assert counts["rejected"] == {f"duplicate (sensor, ts) merged: {duplicates}": merged}
