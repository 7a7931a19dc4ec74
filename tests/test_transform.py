"""50 transform: declared transforms on tiny hand-made series (pyjama.transform, TransformStep)."""
import json
import math

import pytest
from numpy.testing import assert_allclose, assert_array_equal

from pyjama import tidy
from pyjama.config import StepConfig
from pyjama.pipeline import load_step_config
from pyjama.errors import UserError
from pyjama.steps import get_step
from pyjama.transform import (calibrate_linear, compute_cbrt_inv, compute_log, compute_sqrt_inv,
                              transform_frame)

NAN = float("nan")
TS = ["2026-01-20T00:00:00Z", "2026-01-20T00:00:01Z", "2026-01-20T00:00:02Z",
      "2026-01-20T00:00:03Z", "2026-01-20T00:00:04Z"]
BASE = {"exposure": "E", "input_stage": "40_resampled", "output_stage": "50_transformed"}


def rule(**kw):
    out = {"sensors": r"^m\d+$", "transform": "cbrt_inv", "mode": "add", "suffix": None,
           "gain": 1.0, "offset": 0.0}
    out.update(kw)
    return out


def series(values, flags=None, sensor="m0", domain="bio_signal"):
    n = len(values)
    return tidy.frame(ts=TS[:n], device_id="valve01", domain=domain, sensor=sensor,
                      value=values, quality_flag=flags if flags is not None else [0] * n)


def rows(df, sensor):
    return df[df["sensor"] == sensor].sort_values("ts")


# ---------------------------------------------------------------- the formulas

def test_cbrt_inv_on_values_including_zero_negative_and_nan():
    y, undefined = compute_cbrt_inv([8.0, 1000.0, 0.0, -27.0, NAN])
    # 8^(-1/3) = 1/2; 1000^(-1/3) = 1/10; 0 and -27 undefined; NaN stays NaN but is not "undefined"
    assert_allclose(y, [0.5, 0.1, NAN, NAN, NAN])
    assert_array_equal(undefined, [False, False, True, True, False])


def test_sqrt_inv_and_log():
    y, undefined = compute_sqrt_inv([4.0, 0.25, 0.0, -1.0])
    assert_allclose(y, [0.5, 2.0, NAN, NAN])          # 4^(-1/2) = 1/2; 0.25^(-1/2) = 2
    assert_array_equal(undefined, [False, False, True, True])
    y, undefined = compute_log([1.0, math.e, 0.0, -5.0, NAN])
    assert_allclose(y, [0.0, 1.0, NAN, NAN, NAN])     # ln 1 = 0; ln e = 1
    assert_array_equal(undefined, [False, False, True, True, False])


def test_linear_calibration_is_defined_everywhere():
    y, undefined = calibrate_linear([0.0, -10.0, 100.0, NAN], gain=0.5, offset=-2.0)
    assert_allclose(y, [-2.0, -7.0, 48.0, NAN])       # y = 0.5 x - 2
    assert not undefined.any()


# ---------------------------------------------------------------- the frame rule

def test_add_mode_keeps_source_and_adds_named_sensor_with_flags():
    df = series([8.0, 0.0, -1.0, NAN, 27.0], flags=[0, 0, 6, 1, 5])
    out, report = transform_frame(df, [rule()])
    src = rows(out, "m0")
    assert_allclose(src["value"], [8.0, 0.0, -1.0, NAN, 27.0])   # untouched
    assert_array_equal(src["quality_flag"], [0, 0, 6, 1, 5])
    new = rows(out, "m0__cbrt_inv")
    assert_allclose(new["value"], [0.5, NAN, NAN, NAN, 1 / 3])
    # 0 → undefined → 3; -1 is EXCLUDED (6) which outranks 3; missing stays 1; interpolated stays 5
    assert_array_equal(new["quality_flag"], [0, 3, 6, 1, 5])
    assert (new["domain"] == "bio_signal").all()
    assert report["rows_added"] == 5 and report["undefined"] == 2


def test_replace_mode_puts_derived_rows_in_place_of_the_source():
    df = tidy.conform(__import__("pandas").concat(
        [series([8.0, 64.0]), series([12.5, 13.0], sensor="outdoor_temp", domain="environment")]))
    out, report = transform_frame(df, [rule(mode="replace")])
    assert sorted(out["sensor"].astype(str).unique()) == ["m0__cbrt_inv", "outdoor_temp"]
    assert_allclose(rows(out, "m0__cbrt_inv")["value"], [0.5, 0.25])   # 64^(-1/3) = 1/4
    assert_allclose(rows(out, "outdoor_temp")["value"], [12.5, 13.0])  # not matched: unchanged
    assert len(out) == len(df) and report["rows_added"] == 0


def test_rules_chain_calibration_then_cbrt_inv():
    df = series([3.0, 31.0])
    out, _ = transform_frame(df, [rule(transform="linear", gain=2.0, offset=2.0, mode="replace", suffix=""),
                                  rule()])
    # 2*3+2 = 8 → 8^(-1/3) = 0.5; 2*31+2 = 64 → 0.25; the calibrated m0 keeps its name
    assert_allclose(rows(out, "m0")["value"], [8.0, 64.0])
    assert_allclose(rows(out, "m0__cbrt_inv")["value"], [0.5, 0.25])


def test_linear_add_default_suffix_is_cal_and_custom_suffix():
    out, _ = transform_frame(series([10.0]), [rule(transform="linear", gain=0.1),
                                              rule(transform="log", suffix="ln")])
    assert sorted(out["sensor"].astype(str).unique()) == ["m0", "m0__cal", "m0__ln"]
    assert_allclose(rows(out, "m0__cal")["value"], [1.0])
    assert_allclose(rows(out, "m0__ln")["value"], [math.log(10.0)])


def test_empty_frame_and_unmatched_rule():
    out, report = transform_frame(tidy.empty(), [rule()])
    assert len(out) == 0 and report["rows_added"] == 0
    out, report = transform_frame(series([1.0], sensor="outdoor_temp"), [rule()])
    assert len(out) == 1 and report["per_rule"] == [{"rule": 0, "sensors": 0, "rows": 0, "undefined": 0}]


def test_single_value():
    out, _ = transform_frame(series([1.0]), [rule(transform="sqrt_inv")])
    assert_allclose(rows(out, "m0__sqrt_inv")["value"], [1.0])


def test_a_derived_name_that_exists_is_an_error():
    df = tidy.conform(__import__("pandas").concat([series([8.0]), series([1.0], sensor="m0__cbrt_inv")]))
    with pytest.raises(UserError) as e:
        transform_frame(df, [rule(sensors="^m0$")])
    assert str(e.value) == ("$.transforms[0]: derived sensor 'm0__cbrt_inv' already exists; allowed: "
                            "a suffix that makes a new name (set $.transforms[0].suffix)")


def test_step_compute_ledger_balances_and_counts_added_rows():
    step = get_step("50_transform.py")
    st = StepConfig("50_transform.py", "configs/E/50_transform.json", {**BASE, "transforms": [rule()]}, "0")
    tables, counts = step.compute({"data": series([8.0, 0.0, NAN], flags=[0, 0, 1])}, st, "valve01", "2026-01-20")
    assert counts["rows_in"] == 3 and counts["rows_out"] == 3 and counts["rejected"] == {}
    assert counts["rows_added"] == 3 and counts["rows_written"] == 6 == len(tables["data"])
    assert counts["undefined_flagged_out_of_range"] == 1


# ---------------------------------------------------------------- config errors

def write(tmp_path, obj):
    p = tmp_path / "configs" / "E" / "50_transform.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj))
    return "configs/E/50_transform.json"


def err(tmp_path, transforms):
    with pytest.raises(UserError) as e:
        load_step_config("50_transform.py", write(tmp_path, {**BASE, "transforms": transforms}), tmp_path)
    return str(e.value)


def test_defaults(tmp_path):
    st = load_step_config("50_transform.py", write(tmp_path, BASE), tmp_path)
    assert st["transforms"] == [rule()]


def test_unknown_transform(tmp_path):
    assert err(tmp_path, [{"sensors": "^m0$", "transform": "cube"}]) == (
        'configs/E/50_transform.json: $.transforms[0].transform: "cube" is not allowed; allowed: '
        '"cbrt_inv", "sqrt_inv", "log", "identity", "linear"')


def test_misspelled_key(tmp_path):
    assert err(tmp_path, [{"sensors": "^m0$", "transform": "linear", "gian": 2}]) == (
        "configs/E/50_transform.json: $.transforms[0].gian: unknown key 'gian'; allowed keys: gain, "
        "mode, offset, sensors, suffix, transform")


def test_bad_regex(tmp_path):
    assert err(tmp_path, [{"sensors": "^m(", "transform": "log"}]) == (
        "configs/E/50_transform.json: $.transforms[0].sensors: '^m(' is not a regular expression "
        "(missing ), unterminated subpattern at position 2); allowed: a Python regular expression "
        "such as '^m\\d+$'")


def test_gain_on_a_non_linear_transform(tmp_path):
    assert err(tmp_path, [{"sensors": "^m0$", "transform": "cbrt_inv", "gain": 2}]) == (
        "configs/E/50_transform.json: $.transforms[0].gain: 2 is not allowed with transform "
        "'cbrt_inv'; allowed: gain only with transform 'linear'")


def test_empty_suffix_in_add_mode(tmp_path):
    assert err(tmp_path, [{"sensors": "^m0$", "transform": "linear", "suffix": ""}]) == (
        "configs/E/50_transform.json: $.transforms[0].suffix: '' is not allowed with mode 'add' (the "
        "derived sensor would replace its source); allowed: a non-empty suffix, or mode 'replace'")


def test_template_config_is_valid(tmp_path):
    from pyjama.config import REPO
    text = (REPO / "configs" / "_template" / "50_transform.json").read_text().replace("{{EXPOSURE}}", "E")
    p = tmp_path / "configs" / "E" / "50_transform.json"
    p.parent.mkdir(parents=True)
    p.write_text(text)
    st = load_step_config("50_transform.py", "configs/E/50_transform.json", tmp_path)
    assert st["transforms"][0]["transform"] == "cbrt_inv"


# ---------------------------------------------------------------- $.keep: which input series go on

def three_series():
    return tidy.concat([series([8.0, 27.0]), series([1.0, 64.0], sensor="m1"),
                        series([12.5, 12.6], sensor="outdoor_temp", domain="environment")])


def keep_run(keep, transforms=None):
    step = get_step("50_transform.py")
    params = {**BASE, "transforms": transforms or [rule()], "keep": keep}
    st = StepConfig("50_transform.py", "configs/E/50_transform.json", params, "0")
    frames = {"data": three_series()}
    tables, counts = step.compute(frames, st, "valve01", "2026-01-20")
    return step.pass_on(st, frames, tables, counts)


def test_keep_default_passes_every_input_series_on():
    tables, counts = keep_run(".*")
    assert sorted(set(tables["data"]["sensor"].astype(str))) == [
        "m0", "m0__cbrt_inv", "m1", "m1__cbrt_inv", "outdoor_temp"]
    assert counts["rows_out"] == 6 and counts["rows_written"] == 10 and counts["rejected"] == {}


def test_keep_leaves_out_input_series_it_does_not_match_and_counts_them():
    tables, counts = keep_run(r"^(?!m\d+$)")          # every series but the raw counts
    out = tables["data"]
    assert list(out["sensor"].astype(str)) == ["m0__cbrt_inv"] * 2 + ["m1__cbrt_inv"] * 2 + ["outdoor_temp"] * 2
    assert_allclose(out["value"], [0.5, 1 / 3, 1.0, 0.25, 12.5, 12.6])
    assert list(out["sensor"].cat.categories) == ["m0__cbrt_inv", "m1__cbrt_inv", "outdoor_temp"]
    # rows in (6) = passed on (2: outdoor_temp) + not passed on (4: m0, m1); 4 rows made here
    assert counts["rows_in"] == 6 and counts["rows_out"] == 2 and counts["rows_written"] == 6 == len(out)
    assert counts["rejected"] == {"not passed on: not matched by $.keep": 4}
    from pyjama import io

    io.ledger_entry("50_transform.py", "valve01/2026-01-20", **{k: v for k, v in counts.items()
                                                                  if k in ("rows_in", "rows_out", "rejected")})


def test_keep_never_leaves_out_what_the_step_makes():
    # nothing of the input matched: only the derived series are written
    tables, counts = keep_run("^$")
    assert sorted(set(tables["data"]["sensor"].astype(str))) == ["m0__cbrt_inv", "m1__cbrt_inv"]
    assert counts["rows_out"] == 0 and counts["rejected"] == {"not passed on: not matched by $.keep": 6}
    # a replace rule with suffix "" rewrites m0 under its own name: made here, so written
    calib = [rule(sensors="^m0$", transform="linear", mode="replace", suffix="", gain=2.0)]
    tables, counts = keep_run("^$", calib)
    out = tables["data"]
    assert list(out["sensor"].astype(str)) == ["m0", "m0"]
    assert_allclose(out["value"], [16.0, 54.0])
    assert counts["rejected"] == {"not passed on: not matched by $.keep": 4}


def test_bad_keep_is_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        load_step_config("50_transform.py", write(tmp_path, {**BASE, "keep": "^m("}), tmp_path)
    assert str(e.value) == ("configs/E/50_transform.json: $.keep: '^m(' is not a regular expression "
                            "(missing ), unterminated subpattern at position 2); allowed: a Python regular "
                            "expression such as '^(?!m\\d+$)'")
    st = load_step_config("50_transform.py", write(tmp_path, BASE), tmp_path)
    assert st["keep"] == ".*"


# ---------------------------------------------------------------- the array kernel = the pandas reference

def same_frame(a, b):
    """Equal tidy frames: same rows in the same order, same categories, NaN in the same places."""
    import pandas as pd

    assert list(a.columns) == list(b.columns)
    for c in ("device_id", "domain", "sensor"):
        assert [str(x) for x in a[c].cat.categories] == [str(x) for x in b[c].cat.categories], c
        assert list(a[c].astype(str)) == list(b[c].astype(str)), c
    pd.testing.assert_series_equal(a["ts"], b["ts"])
    assert_array_equal(a["value"].to_numpy(), b["value"].to_numpy())     # NaN == NaN here
    assert_array_equal(a["quality_flag"].to_numpy(), b["quality_flag"].to_numpy())


@pytest.mark.parametrize("rules", [
    [rule()],
    [rule(sensors="^m0$", transform="linear", mode="replace", suffix="", gain=2.0, offset=1.0), rule()],
    [rule(mode="replace")],
    [rule(sensors=".*", transform="log", mode="replace")],          # every row replaced
    [rule(sensors="^nothing$")],
    [rule(transform="sqrt_inv"), rule(sensors=r"^m\d+__sqrt_inv$", transform="linear", suffix="x")],
])
def test_array_kernel_equals_the_pandas_reference(rules):
    from pyjama.transform import transform_frame_pandas

    # out of (sensor, ts) order on purpose, with 0, negative, NaN and flags
    df = tidy.concat([
        series([8.0, 0.0, NAN, -1.0], flags=[0, 0, 1, 6], sensor="m1"),
        series([27.0, 1.0], flags=[5, 2]),
        series([12.5, NAN, 12.7], flags=[0, 1, 0], sensor="outdoor_temp", domain="environment"),
    ]).iloc[[5, 0, 6, 1, 2, 7, 3, 4, 8]].reset_index(drop=True)
    got, rep = transform_frame(df, rules)
    want, rep_want = transform_frame_pandas(df, rules)
    same_frame(got, want)
    assert rep == rep_want


def test_array_kernel_spelled_out():
    df = tidy.concat([series([8.0, 0.0, NAN], flags=[0, 0, 1]),
                      series([1.0], sensor="outdoor_temp", domain="environment")])
    out, rep = transform_frame(df, [rule(sensors="^m0$")])
    assert list(out["sensor"].astype(str)) == ["m0"] * 3 + ["m0__cbrt_inv"] * 3 + ["outdoor_temp"]
    assert_array_equal(out["value"], [8.0, 0.0, NAN, 0.5, NAN, NAN, 1.0])
    assert_array_equal(out["quality_flag"], [0, 0, 1, 0, 3, 1, 0])   # 0 → undefined (3); NaN keeps 1
    assert list(out["domain"].astype(str)) == ["bio_signal"] * 6 + ["environment"]
    assert rep == {"rows_added": 3, "undefined": 1, "per_rule": [{"rule": 0, "sensors": 1, "rows": 3, "undefined": 1}]}


def test_keep_everything_has_the_digest_of_a_config_without_keep(tmp_path):
    # an exposure made before $.keep existed re-runs nothing when the code learns the key
    without = load_step_config("50_transform.py", write(tmp_path, BASE), tmp_path).digest
    every = load_step_config("50_transform.py", write(tmp_path, {**BASE, "keep": ".*"}), tmp_path).digest
    narrow = load_step_config("50_transform.py", write(tmp_path, {**BASE, "keep": "^x"}), tmp_path).digest
    assert without == every != narrow
