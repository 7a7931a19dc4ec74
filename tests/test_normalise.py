"""50 normalise: per (device, sensor) percentile fit in a readable file, rolling min/max,
direction, clip, narrow-range warning; the fit file in the DAG (fit once, refit explicitly)."""
import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as hs
from numpy.testing import assert_allclose, assert_array_equal

from pyjama import tidy
from pyjama.runner import run_step
from pyjama.config import StepConfig
from pyjama.pipeline import load_step_config
from pyjama.errors import UserError
from pyjama.normalise import (build_fit, compute_rolling_bounds, detect_direction, fit_percentiles,
                              normalise_frame, normalise_values, select_fit_days, usable_mask)
from pyjama.steps import get_step

import wf

NAN = float("nan")
BASE = {"exposure": "E", "input_stage": "50_transformed", "output_stage": "50_normalised"}
PARAMS = {"sensors": r"^m\d+__cbrt_inv$", "mode": "add", "suffix": "norm", "method": "percentile",
          "p_low": 2, "p_high": 98, "fit": {"from": None, "to": None, "first_days": 2},
          "rolling": {"window_hours": 48},
          "direction": [{"sensors": r"^m\d+__cbrt_inv$", "direction": "up"}],
          "clip": True, "min_range": 0.002}


def seconds(n, start="2026-01-20T00:00:00Z", step="1s"):
    return pd.date_range(start, periods=n, freq=step, tz="UTC")


def series(values, flags=None, sensor="m0__cbrt_inv", start="2026-01-20T00:00:00Z", step="1s"):
    n = len(values)
    return tidy.frame(ts=seconds(n, start, step), device_id="valve01", domain="bio_signal",
                      sensor=sensor, value=values, quality_flag=flags if flags is not None else [0] * n)


def rows(df, sensor):
    return df[df["sensor"] == sensor].sort_values("ts")


# ---------------------------------------------------------------- the formulas

def test_fit_percentiles_known_values():
    # 0, 1, …, 100: P2 sits exactly on the value 2 and P98 on 98 (rank p/100 · 100)
    assert fit_percentiles(np.arange(101.0)) == (2.0, 98.0, 101)
    # linear interpolation between order statistics: 0..10, P2 at rank 0.2 → 0.2, P98 → 9.8
    low, high, n = fit_percentiles(np.arange(11.0))
    assert_allclose([low, high], [0.2, 9.8]) and n == 11
    # NaN is not a sample
    assert fit_percentiles([NAN, 5.0, NAN], 0, 100) == (5.0, 5.0, 1)
    assert fit_percentiles([NAN, NAN]) == (None, None, 0)
    assert fit_percentiles([]) == (None, None, 0)


def test_usable_samples_are_finite_ok_or_interpolated():
    mask = usable_mask([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, NAN],
                       [0, 1, 2, 3, 4, 5, 6, 0])
    # OK and INTERPOLATED count; missing, spike, out of range, flat line, excluded and NaN do not
    assert_array_equal(mask, [True, False, False, False, False, True, False, False])


def test_normalise_up_with_clip():
    y, undefined, below, above = normalise_values([2.0, 50.0, 98.0, 0.0, 100.0, NAN], 2.0, 98.0, "up", True)
    # (x − 2) / 96; 0 and 100 lie outside [low, high] and are clipped to 0 and 1; NaN stays NaN
    assert_allclose(y, [0.0, 0.5, 1.0, 0.0, 1.0, NAN])
    assert not undefined.any() and (below, above) == (1, 1)


def test_normalise_down_inverts_the_direction():
    y, _, _, _ = normalise_values([2.0, 26.0, 98.0], 2.0, 98.0, "down", True)
    # (98 − x) / 96: the low end is the open one
    assert_allclose(y, [1.0, 0.75, 0.0])


def test_normalise_without_clip_keeps_values_outside_0_1():
    y, _, below, above = normalise_values([-46.0, 146.0], 2.0, 98.0, "up", False)
    assert_allclose(y, [-0.5, 1.5])            # (−46 − 2)/96, (146 − 2)/96
    assert (below, above) == (1, 1)


def test_normalise_undefined_scale_is_nan():
    y, undefined, _, _ = normalise_values([1.0, NAN], 5.0, 5.0, "up", True)   # high − low = 0
    assert_allclose(y, [NAN, NAN])
    assert_array_equal(undefined, [True, False])                           # NaN input: not "undefined"
    y, undefined, _, _ = normalise_values([1.0], None, None, "up", True)   # no fit at all
    assert np.isnan(y[0]) and undefined[0]


@given(hs.lists(hs.floats(-1e6, 1e6), min_size=1, max_size=50),
       hs.floats(-1e3, 1e3), hs.floats(1e-3, 1e3), hs.sampled_from(["up", "down"]))
def test_unclipped_normalisation_inverts_exactly(xs, low, span, direction):
    # property: without clip, x = low + y·(high − low) (up) or high − y·(high − low) (down)
    high = low + span
    y, undefined, _, _ = normalise_values(xs, low, high, direction, clip=False)
    back = low + y * span if direction == "up" else high - y * span
    assert_allclose(back, xs, rtol=1e-9, atol=1e-6)
    assert not undefined.any()


def test_detect_direction_from_where_the_bulk_lies():
    # open most of the time at high values, short closures at low values → up
    mostly_high = np.r_[np.full(90, 10.0), np.full(10, 0.0)]
    assert detect_direction(mostly_high, 0.0, 10.0) == ("up", 1.0)
    # raw Hall counts: open = low count most of the time → down
    mostly_low = np.r_[np.full(90, 200.0), np.full(10, 700.0)]
    assert detect_direction(mostly_low, 200.0, 700.0) == ("down", 0.0)
    assert detect_direction([1.0], None, None) == ("up", None)


def test_rolling_bounds_centred_window():
    # hourly values 0..9, window 4 h: the bounds at t are min/max over [t − 2 h, t + 2 h]
    low, high = compute_rolling_bounds(seconds(10, step="1h"), np.arange(10.0), np.zeros(10, np.uint8), 4)
    assert_allclose(low, [0, 0, 0, 1, 2, 3, 4, 5, 6, 7])
    assert_allclose(high, [2, 3, 4, 5, 6, 7, 8, 9, 9, 9])
    # a spike (flag 2) does not widen the range
    low, high = compute_rolling_bounds(seconds(3, step="1h"), [1.0, 99.0, 2.0], np.array([0, 2, 0], np.uint8), 4)
    assert_allclose(high, [2, 2, 2])


def test_select_fit_days():
    days = ["2026-01-22", "2026-01-20", "2026-01-21"]
    chosen, period = select_fit_days(days, {"from": None, "to": None, "first_days": 2})
    assert chosen == ["2026-01-20", "2026-01-21"] and period["complete"] is True
    chosen, period = select_fit_days(["2026-01-20"], {"from": None, "to": None, "first_days": 2})
    assert chosen == ["2026-01-20"] and period["complete"] is False   # only one day exists yet
    chosen, period = select_fit_days(days, {"from": "2026-01-21", "to": "2026-01-23", "first_days": 2})
    assert chosen == ["2026-01-21", "2026-01-22"] and period["complete"] is False   # 23 missing


# ---------------------------------------------------------------- fit → apply round trip

def test_fit_apply_round_trip_with_known_percentiles():
    values = np.arange(101.0)
    flags = np.zeros(101, np.uint8)
    values[50], flags[50] = 1000.0, 2          # a spike: kept out of the fit, flag kept in output
    df = series(values, flags)
    fit = build_fit(df, PARAMS, "valve01", {"from": "2026-01-20", "to": "2026-01-20"})
    e = fit["sensors"]["m0__cbrt_inv"]
    # 100 usable samples 0..49, 51..100: P2 at rank 1.98 → 1.98; P98 at rank 97.02 → 98.02
    assert_allclose([e["low"], e["high"]], [1.98, 98.02])
    assert e["n_samples"] == 100 and e["n_rows"] == 101
    assert e["range_ok"] is True and e["warning"] is None and e["direction"] == "up"
    bounds = {"m0__cbrt_inv": {"low": e["low"], "high": e["high"], "direction": "up"}}
    out, report = normalise_frame(df, PARAMS, bounds, "valve01")
    y = rows(out, "m0__cbrt_inv__norm")
    expect = np.clip((values - 1.98) / (98.02 - 1.98), 0, 1)
    assert_allclose(y["value"], expect)
    assert y["quality_flag"].iloc[50] == 2      # the spike's flag travels with it
    assert_allclose(rows(out, "m0__cbrt_inv")["value"], values)   # add mode keeps the source
    assert report["rows_added"] == 101
    assert report["clipped_low"] == 2 and report["clipped_high"] == 3   # 0, 1 / 99, 100, 1000


def test_replace_mode_and_untouched_other_sensors():
    df = tidy.conform(pd.concat([series([0.0, 10.0]), series([5.0, 6.0], sensor="outdoor_temp")]))
    params = {**PARAMS, "mode": "replace"}
    bounds = {"m0__cbrt_inv": {"low": 0.0, "high": 10.0, "direction": "up"}}
    out, report = normalise_frame(df, params, bounds, "valve01")
    assert sorted(out["sensor"].astype(str).unique()) == ["m0__cbrt_inv__norm", "outdoor_temp"]
    assert_allclose(rows(out, "m0__cbrt_inv__norm")["value"], [0.0, 1.0])
    assert_allclose(rows(out, "outdoor_temp")["value"], [5.0, 6.0])
    assert len(out) == 4 and report["rows_added"] == 0


def test_auto_direction_recorded_in_the_fit():
    values = np.r_[np.full(90, 700.0), np.full(10, 200.0)]     # mostly high → up
    params = {**PARAMS, "sensors": "^m0$", "direction": [{"sensors": ".*", "direction": "auto"}]}
    fit = build_fit(series(values, sensor="m0"), params, "valve01", {"from": "a", "to": "b"})
    e = fit["sensors"]["m0"]
    assert e["direction"] == "up" and e["direction_declared"] == "auto" and e["median_position"] == 1.0


def test_narrow_range_is_reported():
    values = [0.1000, 0.1001, 0.1002]            # range 0.0002 < 0.002 (a dead sensor)
    fit = build_fit(series(values), {**PARAMS, "p_low": 0, "p_high": 100}, "valve01", {"from": "a", "to": "b"})
    e = fit["sensors"]["m0__cbrt_inv"]
    assert e["range_ok"] is False
    assert e["span_ok"] is False
    assert e["warning"] == ("valve01/m0__cbrt_inv: span unknown / not closing: fitted span 0.0002 is below "
                            "the required 0.002 ($.min_range 0.002) in the fit period a..b; its opening is "
                            "not normalised (NaN, flag 3) and its closures are not counted")
    # all samples flagged: no fit, reported, and applying it gives NaN flagged 3
    fit = build_fit(series([1.0, 2.0], flags=[4, 4]), PARAMS, "valve01", {"from": "a", "to": "b"})
    e = fit["sensors"]["m0__cbrt_inv"]
    assert (e["low"], e["high"], e["n_samples"], e["range_ok"]) == (None, None, 0, False)
    assert e["warning"] == ("valve01/m0__cbrt_inv: no usable sample in the fit period; its "
                            "normalised values are NaN (flag 3)")
    bounds = {"m0__cbrt_inv": {"low": None, "high": None, "direction": "up"}}
    out, report = normalise_frame(series([1.0, 2.0], flags=[4, 0]), PARAMS, bounds, "valve01")
    y = rows(out, "m0__cbrt_inv__norm")
    assert y["value"].isna().all()
    assert_array_equal(y["quality_flag"], [3, 3])   # undefined scale (3) outranks flat line (4)
    assert report["undefined"] == 2


def test_a_fit_on_too_few_usable_samples_is_span_unknown_not_a_scale():
    # bad input (issue 10): one day at 1 Hz of which only 3 samples are usable (the rest
    # flat-lined, flag 4), spread 0.100 .. 0.110 (P2 0.1002, P98 0.1098: span 0.0096);
    # percentiles of 3 samples would look like a scale. With the template's closure evidence
    # the fit sees no closure in them: span unknown, one warning line naming device, sensor
    # and the figure
    n = 3600
    values = np.full(n, 0.105)
    flags = np.full(n, 4)
    flags[[0, 1800, 3599]] = 0
    values[[0, 1800, 3599]] = [0.100, 0.110, 0.105]
    params = {**PARAMS, "closure_evidence": {"within": "5min", "hold": "2min"}}
    fit = build_fit(series(values, flags=flags), params, "valve01", {"from": "a", "to": "b"})
    e = fit["sensors"]["m0__cbrt_inv"]
    assert (e["n_samples"], e["closures_seen"], e["span_ok"]) == (3, 0, False)
    assert e["warning"] == (
        "valve01/m0__cbrt_inv: span unknown / not closing: no closure in the fit period a..b (0 falls "
        "from >= 0.5 to <= 0.1 of the fitted span 0.0096 within $.closure_evidence.within that stay closed "
        "for $.closure_evidence.hold); its opening is not normalised (NaN, flag 3) and its closures are "
        "not counted")
    bounds = {"m0__cbrt_inv": {"low": e["low"], "high": e["high"], "direction": "up", "span_ok": e["span_ok"]}}
    out, report = normalise_frame(series(values, flags=flags), params, bounds, "valve01")
    y = rows(out, "m0__cbrt_inv__norm")
    assert y["value"].isna().all() and (y["quality_flag"] == 3).all() and report["undefined"] == n


def test_empty_partition():
    out, report = normalise_frame(tidy.empty(), PARAMS, {}, "valve01")
    assert len(out) == 0 and report["rows_added"] == 0


def test_step_compute_rolling_with_neighbours_and_warning():
    step = get_step("50_normalise.py")
    st = StepConfig("50_normalise.py", "configs/E/50_normalise.json",
                    {**BASE, **PARAMS, "method": "rolling_minmax"}, "0")
    day = series([5.0, 6.0], start="2026-01-21T00:00:00Z", step="12h")       # 00:00, 12:00
    before = series([1.0], start="2026-01-20T00:00:00Z")                     # 24 h before the first
    after = series([9.0], start="2026-01-22T12:00:00Z")                      # 24 h after the second
    tables, counts = step.compute({"data": day, "neighbours": [before, after]}, st, "valve01", "2026-01-21")
    y = rows(tables["data"], "m0__cbrt_inv__norm")
    # at 00:00 the window [−24 h, +24 h] holds 1, 5, 6 → (5 − 1)/(6 − 1) = 0.8;
    # at 12:00 it holds 5, 6, 9 (the 1 is 36 h away) → (6 − 5)/(9 − 5) = 0.25
    assert_allclose(y["value"], [0.8, 0.25])
    assert len(tables["data"]) == 4                       # only this day's rows are written
    assert counts["rows_in"] == 2 and counts["rows_out"] == 2 and counts["rows_added"] == 2
    # a flat neighbourhood: range 0 < min_range → warning in the ledger counts
    flat = series([5.0, 5.0], start="2026-01-21T00:00:00Z", step="12h")
    _, counts = step.compute({"data": flat, "neighbours": []}, st, "valve01", "2026-01-21")
    assert counts["warnings"] == ["valve01/m0__cbrt_inv: rolling range below $.min_range 0.002 "
                                  "for 2 of 2 sample(s)"]


# ---------------------------------------------------------------- config errors

def write(tmp_path, obj, name="50_normalise.json"):
    p = tmp_path / "configs" / "E" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj))
    return f"configs/E/{name}"


def err(tmp_path, **kw):
    with pytest.raises(UserError) as e:
        load_step_config("50_normalise.py", write(tmp_path, {**BASE, **kw}), tmp_path)
    return str(e.value)


def test_defaults_and_template(tmp_path):
    st = load_step_config("50_normalise.py", write(tmp_path, BASE), tmp_path)
    assert {k: st[k] for k in PARAMS} == PARAMS
    from pyjama.config import REPO
    text = (REPO / "configs" / "_template" / "50_normalise.json").read_text().replace("{{EXPOSURE}}", "E")
    (tmp_path / "configs" / "E" / "t.json").write_text(text)
    st = load_step_config("50_normalise.py", "configs/E/t.json", tmp_path)
    assert {k: st[k] for k in PARAMS} == PARAMS


def test_config_errors_have_exact_text(tmp_path):
    f = "configs/E/50_normalise.json"
    assert err(tmp_path, p_low=50, p_high=50) == (
        f"{f}: $.p_high: 50 is not allowed; allowed: a percentile above $.p_low (50)")
    assert err(tmp_path, p_high=101) == f"{f}: $.p_high: 101 is out of range; allowed: <= 100"
    assert err(tmp_path, fit={"from": "2026-01-20"}) == (
        f"{f}: $.fit.to: null is not allowed when $.fit.from is set; allowed: both from and to "
        "(a fixed period) or both null (the first $.fit.first_days days)")
    assert err(tmp_path, fit={"from": "{NOW-2d}", "to": "{NOW}"}) == (
        f"{f}: $.fit.from: '{{NOW-2d}}' is not allowed; allowed: a fixed YYYY-MM-DD or "
        "YYYY-MM-DDTHH:MM:SSZ (a fit period must not move)")
    assert err(tmp_path, fit={"from": "2026-01-22", "to": "2026-01-20"}) == (
        f"{f}: $.fit.to: '2026-01-20' is not allowed; allowed: a bound at or after $.fit.from "
        "('2026-01-22')")
    assert err(tmp_path, fit={"from": "20/01/2026", "to": "2026-01-20"}) == (
        f"{f}: $.fit.from: '20/01/2026' is not a time bound; allowed: YYYY-MM-DDTHH:MM:SSZ, "
        "YYYY-MM-DD (a whole UTC day), {NOW}, or {NOW-2d} (offset units s, m, h, d, w)")
    assert err(tmp_path, fit={"first_day": 2}) == (
        f"{f}: $.fit.first_day: unknown key 'first_day'; allowed keys: first_days, from, to")
    assert err(tmp_path, method="rolling_minmax", direction=[{"sensors": ".*", "direction": "auto"}]) == (
        f"{f}: $.direction[0].direction: 'auto' is not allowed with method 'rolling_minmax'; allowed: "
        "'up' or 'down' ('auto' is decided at fit time, method 'percentile' only)")
    assert err(tmp_path, direction=[{"sensors": ".*", "direction": "open"}]) == (
        f'{f}: $.direction[0].direction: "open" is not allowed; allowed: "up", "down", "auto"')
    assert err(tmp_path, sensors="m[") == (
        f"{f}: $.sensors: 'm[' is not a regular expression (unterminated character set at position 1); "
        "allowed: a Python regular expression such as '^m\\d+__cbrt_inv$'")


# ---------------------------------------------------------------- the fit file on disk (in process)

T50 = {"exposure": "T", "input_stage": "20_split", "output_stage": "50_transformed"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Tiny exposure T: 1 device × 2 days, parsed, split and transformed (50_transform reads
    20_split here, so the test does not depend on 30/40)."""
    root = tmp_path_factory.mktemp("norm")
    wf.make_project(root, "T", devices=1, days=2, hz=0.02)
    setup_pipeline(root, {"fit": {"from": None, "to": None, "first_days": 1}})
    for script, cfg in (("10_parser.py", "10_parser"), ("20_split.py", "20_split"),
                        ("50_transform.py", "50_transform")):
        run_step(script, f"configs/T/{cfg}.json", root=root)
    return root


def setup_pipeline(root, normalise):
    (root / "configs/T/50_transform.json").write_text(json.dumps(T50))
    cfg = {"exposure": "T", "input_stage": "50_transformed", "output_stage": "50_normalised", **normalise}
    (root / "configs/T/50_normalise.json").write_text(json.dumps(cfg))
    steps = ["10_parser", "20_split", "50_transform", "50_normalise"]
    pipe = {"exposure": "T", "steps": [{"script": f"{s}.py", "with": f"configs/T/{s}.json"} for s in steps]}
    (root / "configs/T/pipeline.json").write_text(json.dumps(pipe))


FIT = "data/T/_meta/50_normalised/fit/valve01.json"


def test_fit_file_is_deterministic_readable_and_never_rewritten_by_a_normal_run(project, capsys):
    fit_path = project / FIT
    if fit_path.exists():
        fit_path.unlink()
    # a normal run with no fit file fits first (a fresh exposure needs no manual step)
    entries = run_step("50_normalise.py", "configs/T/50_normalise.json", root=project)
    assert [e["partition"] for e in entries] == ["valve01/2026-01-20", "valve01/2026-01-21"]
    first = fit_path.read_bytes()
    fit = json.loads(first)
    assert first.decode() == json.dumps(fit, indent=2, sort_keys=True) + "\n"    # sorted keys
    assert fit["period"]["days"] == ["2026-01-20"]                               # first_days = 1
    e = fit["sensors"]["m0__cbrt_inv"]
    assert set(e) >= {"method", "p_low", "p_high", "low", "high", "fit_from", "fit_to", "n_samples",
                      "direction", "range_ok", "warning"}
    assert e["fit_from"] == e["fit_to"] == "2026-01-20" and e["n_samples"] > 1000
    assert sorted(fit["sensors"]) == sorted(f"m{i}__cbrt_inv" for i in range(12))
    # a normal run leaves the fit alone (same bytes, same mtime)
    os.utime(fit_path, ns=(1_000_000_000, 1_000_000_000))
    run_step("50_normalise.py", "configs/T/50_normalise.json", root=project)
    assert fit_path.read_bytes() == first and fit_path.stat().st_mtime_ns == 1_000_000_000
    # --fit rewrites it (same data → same bytes: the fit is deterministic)
    entries = run_step("50_normalise.py", "configs/T/50_normalise.json", root=project, options={"fit": True})
    assert [e["partition"] for e in entries] == ["valve01/fit"]
    assert fit_path.stat().st_mtime_ns != 1_000_000_000 and fit_path.read_bytes() == first
    # the output of a day: normalised sensors in [0, 1] with the ledger balanced
    out = pd.read_parquet(project / "data/T/50_normalised/device_id=valve01/day=2026-01-21/part.parquet")
    norm = out[out["sensor"].astype(str).str.endswith("__norm")]["value"].dropna()
    assert len(norm) and norm.min() >= 0.0 and norm.max() <= 1.0


def test_changed_fit_keys_ask_for_a_refit(project):
    cfg = "configs/T/50_normalise_p1.json"
    shutil.copy(project / "configs/T/50_normalise.json", project / cfg)
    data = json.loads((project / cfg).read_text())
    data["p_low"] = 1
    (project / cfg).write_text(json.dumps(data))
    if not (project / FIT).exists():
        run_step("50_normalise.py", "configs/T/50_normalise.json", root=project, options={"fit": True})
    with pytest.raises(UserError) as e:
        run_step("50_normalise.py", cfg, root=project, devices=["valve01"], day="2026-01-20")
    assert str(e.value) == (
        f"50_normalise.py valve01/2026-01-20: {cfg}: $.p_low: 1 differs from the fit in {FIT} (2); "
        f"refit: python3 pyjama.py run 50_normalise.py --with {cfg} --fit --device valve01")


def test_fit_period_without_data_is_one_line_error(project):
    cfg = "configs/T/50_normalise_later.json"
    data = json.loads((project / "configs/T/50_normalise.json").read_text())
    data["fit"] = {"from": "2026-03-01", "to": "2026-03-02", "first_days": 2}
    (project / cfg).write_text(json.dumps(data))
    with pytest.raises(UserError) as e:
        run_step("50_normalise.py", cfg, root=project, devices=["valve01"], options={"fit": True})
    assert str(e.value) == (
        f"{cfg}: $.fit: device 'valve01' has no data in the fit period 2026-03-01 .. 2026-03-02 (it has "
        "2026-01-20..2026-01-21); allowed: a period that overlaps the device's data")


def test_missing_sensor_in_fit_is_an_error(project):
    if not (project / FIT).exists():
        run_step("50_normalise.py", "configs/T/50_normalise.json", root=project, options={"fit": True})
    step = get_step("50_normalise.py")
    st = load_step_config("50_normalise.py", "configs/T/50_normalise.json", project)
    from pyjama.project import Project
    fit = step.read_fit(Project.for_exposure("T", project), st, "valve01")
    del fit["sensors"]["m3__cbrt_inv"]
    data = tidy.frame(ts=["2026-01-20T00:00:00Z"], device_id="valve01", domain="bio_signal",
                      sensor="m3__cbrt_inv", value=[0.1])
    with pytest.raises(UserError) as e:
        step.compute({"data": data, "params": fit}, st, "valve01", "2026-01-20")
    assert str(e.value) == (
        f"{FIT}: no fit for sensor 'm3__cbrt_inv' of device 'valve01'; refit: python3 pyjama.py run "
        "50_normalise.py --with configs/T/50_normalise.json --fit --device valve01")


def test_fit_rule_exists_only_for_devices_without_a_fit_file(project):
    from pyjama.project import Project
    from pyjama.timewindow import parse_window
    step = get_step("50_normalise.py")
    st = load_step_config("50_normalise.py", "configs/T/50_normalise.json", project)
    proj = Project.for_exposure("T", project)
    if not (project / FIT).exists():
        run_step("50_normalise.py", "configs/T/50_normalise.json", root=project, options={"fit": True})
    saved = (project / FIT).read_bytes()
    assert [r.name for r in step.rules(proj, st, parse_window(None, None))] == ["s50_normalise"]
    (project / FIT).unlink()
    try:
        specs = step.rules(proj, st, parse_window(None, None))
        fit = specs[1]
        assert fit.name == "s50_normalise_fit" and fit.targets() == []
        assert fit.outputs == {"params": "data/T/_meta/50_normalised/fit/{device}.json"}
        assert fit.wildcard_constraints == {"device": "valve01"}     # never an existing fit
        assert fit.log == "logs/T/50_normalise/fit_{device}.log"
        assert fit.job({"device": "valve01"}).command() == (
            "pyjama.py run 50_normalise.py --with configs/T/50_normalise.json --fit --device valve01")
        # first_days = 1: the fit reads the first day only
        assert dict(fit.job({"device": "valve01"}).inputs) == {
            "data": ["data/T/50_transformed/device_id=valve01/day=2026-01-20/part.parquet"]}
        # every normalise partition lists its device's fit file as an input
        assert step.input_files(proj, st, "valve01", "2026-01-21")["params"] == FIT
    finally:
        (project / FIT).write_bytes(saved)


def test_rolling_method_reads_neighbouring_days(project):
    cfg = "configs/T/50_normalise_rolling.json"
    (project / cfg).write_text(json.dumps({
        "exposure": "T", "input_stage": "50_transformed", "output_stage": "50_normalised_rolling",
        "method": "rolling_minmax", "rolling": {"window_hours": 48}}))
    step = get_step("50_normalise.py")
    st = load_step_config("50_normalise.py", cfg, project)
    from pyjama.project import Project
    files = step.input_files(Project.for_exposure("T", project), st, "valve01", "2026-01-20")
    assert files == {"data": "data/T/50_transformed/device_id=valve01/day=2026-01-20/part.parquet",
                     "neighbours": ["data/T/50_transformed/device_id=valve01/day=2026-01-21/part.parquet"]}
    entries = run_step("50_normalise.py", cfg, root=project)
    assert [e["partition"] for e in entries] == ["valve01/2026-01-20", "valve01/2026-01-21"]
    assert not (project / "data/T/_meta/50_normalised_rolling").exists()      # nothing to fit
    out = pd.read_parquet(project / "data/T/50_normalised_rolling/device_id=valve01/day=2026-01-20/part.parquet")
    norm = out[out["sensor"].astype(str) == "m0__cbrt_inv__norm"]["value"].dropna()
    assert norm.min() == 0.0 and norm.max() == 1.0     # the window's own min and max are in it


def test_fit_refuses_a_window_and_the_rolling_method(project):
    with pytest.raises(UserError) as e:
        run_step("50_normalise.py", "configs/T/50_normalise.json", start="2026-01-20", root=project,
                 options={"fit": True})
    assert str(e.value) == ("--fit reads the fit period declared in configs/T/50_normalise.json ($.fit); "
                            "--from/--to/--day are not allowed with it")
    cfg = "configs/T/50_normalise_rolling.json"
    (project / cfg).write_text(json.dumps({
        "exposure": "T", "input_stage": "50_transformed", "output_stage": "50_normalised_rolling",
        "method": "rolling_minmax"}))
    with pytest.raises(UserError) as e:
        run_step("50_normalise.py", cfg, root=project, options={"fit": True})
    assert str(e.value) == (f"--fit: {cfg}: $.method is 'rolling_minmax'; allowed: --fit only with "
                            "method 'percentile' (rolling_minmax has nothing to fit)")


# ---------------------------------------------------------------- the real workflow

def jobs_run(res) -> dict:
    """{rule: count} from the "Job stats" table a real Snakemake run prints before it starts."""
    m = re.search(r"Job stats:\n(.*?)\n\n", res.stdout + res.stderr + "\n\n", re.S)
    jobs = {}
    for line in (m.group(1).splitlines() if m else []):
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            jobs[parts[0]] = int(parts[1])
    return jobs


def test_workflow_fits_once_never_refits_on_new_days_and_refits_on_request(tmp_path):
    wf.make_project(tmp_path, "T", devices=1, days=1, hz=0.05)   # a fresh exposure: day 20 only
    setup_pipeline(tmp_path, {"fit": {"from": "2026-01-20", "to": "2026-01-21", "first_days": 2}})
    # 1. fresh exposure: the fit rule runs once, then normalise; no manual step
    assert jobs_run(wf.snakemake(tmp_path)) == {
        "s10_parser": 1, "s20_split": 1, "s50_transform": 1, "s50_normalise_fit": 1,
        "s50_normalise": 1, "all": 1}
    fit_path = tmp_path / FIT
    first = fit_path.read_bytes()
    assert json.loads(first)["period"]["days"] == ["2026-01-20"]
    # 2. nothing changed: nothing to do
    assert wf.planned_jobs(tmp_path) == {}
    # 3. new raw days, one inside the declared fit period (21) and one after it (22): the new
    #    days are built, the fit is NOT redone (it exists: refitting is explicit)
    from pyjama.demo import generate
    generate(tmp_path / "data/T/00_raw", "T", devices=1, days=2, hz=0.05, start="2026-01-21")
    assert jobs_run(wf.snakemake(tmp_path)) == {
        "s10_parser": 2, "s20_split": 2, "s50_transform": 2, "s50_normalise": 2, "all": 1}
    assert fit_path.read_bytes() == first
    # 4. an explicit refit rewrites the file (now from days 20 and 21) …
    res = wf.pyjama(tmp_path, "run", "50_normalise.py", "--with", "configs/T/50_normalise.json", "--fit")
    assert res.returncode == 0, res.stderr
    assert "fitted data/T/_meta/50_normalised/fit/valve01.json (changed)" in res.stdout
    assert json.loads(fit_path.read_bytes())["period"]["days"] == ["2026-01-20", "2026-01-21"]
    # … and the next workflow run redoes exactly the normalise partitions, nothing upstream
    assert wf.planned_jobs(tmp_path) == {"s50_normalise": 3, "all": 1}


def test_an_animal_that_did_not_close_in_the_fit_period_is_not_stretched():
    # m0 closes (span 1.0); m1 drifts between half and fully open (span 0.5 < 0.65 × 1.0)
    t = pd.date_range("2026-01-20", periods=1000, freq="1s", tz="UTC")
    closing = np.where(np.arange(1000) % 200 < 40, 0.0, 1.0)
    drifting = 0.5 + 0.5 * (np.arange(1000) % 500) / 500
    df = tidy.concat([tidy.frame(ts=t, device_id="v", domain="bio_signal", sensor=s, value=v, quality_flag=0)
                      for s, v in (("m0__cbrt_inv", closing), ("m1__cbrt_inv", drifting))])
    params = {**PARAMS, "p_low": 0, "p_high": 100, "min_span_share": 0.65}
    fit = build_fit(df, params, "v", {"from": "2026-01-20", "to": "2026-01-20"})
    assert fit["sensors"]["m0__cbrt_inv"]["span_ok"] is True
    e = fit["sensors"]["m1__cbrt_inv"]
    assert e["span_ok"] is False
    assert e["warning"].startswith("v/m1__cbrt_inv: span unknown / not closing: fitted span 0.499 is below "
                                   "the required 0.65 ($.min_span_share 0.65 x the device's widest 1)")
    from pyjama.normalise import normalise_frame
    bounds = {n: {"low": fit["sensors"][n]["low"], "high": fit["sensors"][n]["high"], "direction": "up",
                  "span_ok": fit["sensors"][n]["span_ok"]} for n in fit["sensors"]}
    out, rep = normalise_frame(df, params, bounds, "v")
    m1 = out[out["sensor"] == "m1__cbrt_inv__norm"]
    assert m1["value"].isna().all() and (m1["quality_flag"] == 3).all()      # never stretched to 0–1
    assert rep["undefined"] == 1000


def test_the_fit_must_see_the_animal_close_fast_and_stay_closed():
    # 2 h at 1 Hz. m0: open 1.0, closes in 3 s to 0.0 for 10 min (a closure); m1: drifts
    # slowly 0.5 → 1.0 → 0.5 (its bottom is reached in an hour: no closure); m2: fast
    # one-second drops to 0 that recover within 5 s (adductions: they do not stay closed)
    n = 7200
    t = pd.date_range("2026-01-20", periods=n, freq="1s", tz="UTC")
    i = np.arange(n)
    closing = np.where((i >= 3000) & (i < 3600), 0.0, 1.0)
    closing[2997:3000] = [0.75, 0.5, 0.25]
    drifting = 0.75 + 0.25 * np.cos(2 * np.pi * i / n)
    adducting = np.ones(n)
    for k in range(300, n, 600):
        adducting[k:k + 5] = [0.0, 0.2, 0.4, 0.6, 0.8]
    df = tidy.concat([tidy.frame(ts=t, device_id="v", domain="bio_signal", sensor=s, value=v, quality_flag=0)
                      for s, v in (("m0__cbrt_inv", closing), ("m1__cbrt_inv", drifting),
                                   ("m2__cbrt_inv", adducting))])
    params = {**PARAMS, "p_low": 0, "p_high": 100, "closure_evidence": {"within": "5min", "hold": "2min"}}
    fit = build_fit(df, params, "v", {"from": "2026-01-20", "to": "2026-01-20"})
    seen = {k: (e["closures_seen"], e["span_ok"]) for k, e in fit["sensors"].items()}
    assert seen == {"m0__cbrt_inv": (1, True), "m1__cbrt_inv": (0, False), "m2__cbrt_inv": (0, False)}
    assert fit["sensors"]["m1__cbrt_inv"]["warning"].startswith(
        "v/m1__cbrt_inv: span unknown / not closing: no closure in the fit period 2026-01-20..2026-01-20")


def test_a_level_shift_inside_the_day_moves_the_fit_by_the_measured_step():
    # 4 h at 1 Hz, fitted scale low 0, high 1 (direction up). Open at 0.9; a closure to 0.0
    # from 00:30 to 00:40 (it reopens: not a shift); at 02:00:00 the magnet moves and the
    # whole signal drops by 0.3 for the rest of the record: open 0.6, and a closure to -0.3
    # (closed 0.0 moved by the same step: a distance change moves x^(-1/3) alike at both ends)
    n = 4 * 3600
    i = np.arange(n)
    x = np.where(i >= 7200, 0.6, 0.9)
    x[1800:2400] = 0.0
    x[10800:11400] = -0.3
    df = series(x)
    bounds = {"m0__cbrt_inv": {"low": 0.0, "high": 1.0, "direction": "up"}}
    params = {**PARAMS, "clip": False, "shift": {"min_size": 0.2, "min_segment": "30min"}}
    out, rep = normalise_frame(df, params, bounds, "valve01")
    y = rows(out, "m0__cbrt_inv__norm")
    assert_allclose(y["value"].iloc[:7200], x[:7200])                 # before: normalised as fitted
    assert_allclose(y["value"].iloc[7200:], x[7200:] + 0.3, atol=1e-12)  # after: y - J, J = -0.3
    assert_allclose(y["value"].iloc[[7200, 10800, 11400]], [0.9, 0.0, 0.9], atol=1e-12)   # open, closed again
    assert (y["quality_flag"] == 0).all()
    assert_allclose(rows(out, "m0__cbrt_inv")["value"], x)            # the source is kept
    assert rep["level_shifts"] == [{"sensor": "m0__cbrt_inv", "ts": "2026-01-20T02:00:00Z", "size": -0.3,
                                    "samples_after": 7200, "found_by": "day", "action": "correct"}]
    assert rep["warnings"] == [(
        "valve01/m0__cbrt_inv: level shift of -0.3 of the fitted span at 2026-01-20T02:00:00Z; the 7200 "
        "samples after it are normalised with the fit moved by it (opening - (-0.3)); the next days keep "
        "the fit as it is: refit from the next day (--fit with $.fit.from) if the shift stays")]
    assert rep["undefined"] == 0
    # action "flag": the rest of the day has no opening (NaN, flag 3)
    out, rep = normalise_frame(df, {**params, "shift": {**params["shift"], "action": "flag"}}, bounds, "valve01")
    y = rows(out, "m0__cbrt_inv__norm")
    assert_allclose(y["value"].iloc[:7200], x[:7200])
    assert y["value"].iloc[7200:].isna().all() and (y["quality_flag"].iloc[7200:] == 3).all()
    assert rep["undefined"] == 7200 and rep["level_shifts"][0]["action"] == "flag"
    assert rep["warnings"] == [(
        "valve01/m0__cbrt_inv: level shift of -0.3 of the fitted span at 2026-01-20T02:00:00Z; the 7200 "
        "samples after it are not normalised (NaN, flag 3): the fit does not hold there; refit from the "
        "next day (--fit with $.fit.from) if the shift stays")]
    # a step smaller than min_size, the closure alone, a day that starts closed (a closure
    # across midnight) and reopens at 01:00, or the check off: nothing changes
    for xs, p in ((np.where(i >= 7200, 0.75, 0.9), params), (np.where((i >= 1800) & (i < 2400), 0.0, 0.9), params),
                  (np.where(i < 3600, 0.02, 0.9), params), (x, {**params, "shift": None})):
        out, rep = normalise_frame(series(xs), p, bounds, "valve01")
        assert rep["level_shifts"] == []
        assert_allclose(rows(out, "m0__cbrt_inv__norm")["value"], xs)


def test_a_level_shift_in_the_fit_period_is_fitted_around_and_moves_later_days():
    # the fit period (one day at 1 Hz, cbrt_inv units): closed 0.100, open 0.110; a
    # 10-min closure at 01:00, then at 06:00 the magnet moves: everything + 0.003 (open 0.113),
    # and a 10-min closure at 12:00 to 0.103
    n = 86400
    i = np.arange(n)
    x = np.where(i >= 6 * 3600, 0.113, 0.110)
    x[3600:4200] = 0.100
    x[12 * 3600:12 * 3600 + 600] = 0.103
    params = {**PARAMS, "p_low": 0, "p_high": 100, "shift": {"min_size": 0.2, "min_segment": "30min"}}
    fit = build_fit(series(x), params, "valve01", {"from": "2026-01-20", "to": "2026-01-20"})
    e = fit["sensors"]["m0__cbrt_inv"]
    # percentiles of the signal moved back by the shift: P0 0.100, P100 0.110 (without: 0.113)
    assert_allclose([e["low"], e["high"]], [0.100, 0.110])
    assert e["level_shifts"] == [{"ts": "2026-01-20T06:00:00.000000Z", "size": 0.003}]
    assert e["shift_warning"] == (
        "valve01/m0__cbrt_inv: 1 level shift(s) in the fit period (+0.003 at 2026-01-20T06:00:00Z "
        "[input unit]); the percentiles are of the signal moved back by them, and every sample after "
        "a shift is normalised with the fit moved by it")
    bounds = {"m0__cbrt_inv": {"low": e["low"], "high": e["high"], "direction": "up",
                               "shifts": [(pd.Timestamp(s["ts"]).value, s["size"]) for s in e["level_shifts"]]}}
    # the fit day itself: 0.9 open before and after 06:00, closures at 0.0
    out, rep = normalise_frame(series(x), params, bounds, "valve01")
    y = rows(out, "m0__cbrt_inv__norm")["value"].to_numpy()
    assert_allclose(y[[0, 3600, 6 * 3600, 12 * 3600, n - 1]], [1.0, 0.0, 1.0, 0.0, 1.0], atol=1e-9)
    assert [(s["ts"], s["size"], s["found_by"]) for s in rep["level_shifts"]] == [("2026-01-20T06:00:00Z", 0.3, "fit")]
    # a later day (the magnet still moved): every sample moved back by 0.3 of the span
    later = np.full(3600, 0.113)
    later[600:1200] = 0.103
    out, rep = normalise_frame(series(later, start="2026-01-22T00:00:00Z"), params, bounds, "valve01")
    assert_allclose(rows(out, "m0__cbrt_inv__norm")["value"].to_numpy()[[0, 600, 1200]], [1.0, 0.0, 1.0], atol=1e-9)
    assert rep["level_shifts"] == [] and rep["warnings"] == []


def test_the_step_reports_level_shifts_in_its_ledger(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(BASE))
    assert load_step_config("50_normalise.py", "c.json", tmp_path)["shift"] is None   # off by default
    (tmp_path / "c.json").write_text(json.dumps({**BASE, "shift": {"min_size": 0.2, "min_segment": "30min"}}))
    st = load_step_config("50_normalise.py", "c.json", tmp_path)
    i = np.arange(4 * 3600)
    x = np.where(i >= 7200, 0.107, 0.11)       # cbrt_inv units: closed 0.100, open 0.110
    x[1800:2400] = 0.1                         # a 10-min closure, then a shift of -0.3 x span
    df = series(x)
    fit = build_fit(df, st.params, "valve01", {"from": "2026-01-20", "to": "2026-01-20", "complete": True})
    assert_allclose([fit["sensors"]["m0__cbrt_inv"][k] for k in ("low", "high")], [0.1, 0.11])
    # the fit period holds the shift: the fit found it (in the input unit, -0.3 x span) ...
    assert fit["sensors"]["m0__cbrt_inv"]["level_shifts"] == [{"ts": "2026-01-20T02:00:00.000000Z", "size": -0.003}]
    _, counts = get_step("50_normalise.py").compute({"data": df, "params": fit}, st, "valve01", "2026-01-20")
    # ... and the day's ledger lists it as applied from the fit; every sample has an opening
    assert [(s["ts"], s["size"], s["found_by"]) for s in counts["level_shifts"]] == [
        ("2026-01-20T02:00:00Z", -0.3, "fit")]
    assert counts["undefined_flagged_out_of_range"] == 0


# ---------------------------------------------------------------- the array normalise_frame
# normalise_frame works on the columns as arrays, all selected sensors at once, and builds
# the frame once. The per-sensor pandas version it replaced is kept here, as written, as
# the reference: both must give the same frame (values, NaN, flags, order, categories) and
# the same report, on sparse (a slow logger) and dense (1 Hz) days.

def normalise_frame_pandas(df, params, bounds, device):
    from pyjama.flags import Flag, combine
    from pyjama.normalise import apply_level_shifts, selected_sensors, sort_sensor_ts
    from pyjama.transform import rename_sensors

    df = sort_sensor_ts(tidy.conform(df))
    names = selected_sensors(df, params["sensors"])
    report = {"rows_added": 0, "undefined": 0, "clipped_low": 0, "clipped_high": 0,
              "level_shifts": [], "warnings": []}
    codes = df["sensor"].cat.codes.to_numpy()
    cats = [str(c) for c in df["sensor"].cat.categories]
    values = df["value"].to_numpy()
    flags = df["quality_flag"].to_numpy()
    idxs, ys, fs = [], [], []
    for name in names:
        idx = np.flatnonzero(codes == cats.index(name))
        b = bounds[name]
        ok = b.get("span_ok", True)
        y, bad, _, _ = normalise_values(values[idx], b["low"] if ok else None, b["high"] if ok else None,
                                        b["direction"], clip=False)
        ts_ns = pd.DatetimeIndex(df["ts"].iloc[idx]).as_unit("ns").asi8
        y, bad = apply_level_shifts(ts_ns, y, bad, flags[idx], b, params, device, name, report)
        below, above = int(np.sum(y < 0)), int(np.sum(y > 1))
        if params["clip"]:
            y = np.clip(y, 0.0, 1.0)
        idxs.append(idx)
        ys.append(y)
        fs.append(combine(flags[idx], np.where(bad, np.uint8(Flag.OUT_OF_RANGE),
                                               np.uint8(Flag.OK)).astype(np.uint8)))
        report["undefined"] += int(bad.sum())
        if params["clip"]:
            report["clipped_low"] += below
            report["clipped_high"] += above
    if idxs:
        idx = np.concatenate(idxs)
        derived = df.iloc[idx].copy()
        derived["sensor"] = rename_sensors(derived["sensor"],
                                           {n: f"{n}__{params['suffix']}" for n in names})
        derived["value"] = np.concatenate(ys)
        derived["quality_flag"] = np.concatenate(fs)
    else:
        idx, derived = np.array([], dtype=np.int64), tidy.empty()
    if params["mode"] == "add":
        keep = df
        report["rows_added"] = int(len(idx))
    else:
        keep = df.drop(index=idx)
    out = sort_sensor_ts(tidy.concat([keep, derived]))
    return tidy.conform(out), report


def content_digest(table):
    from pyjama.io import content_digest

    return content_digest(table)


def assert_same_normalised(got, want):
    """Same frame (dtypes, categories in order, values with NaN in place, flags), same
    report, and the same arrow table (what is written)."""
    pd.testing.assert_frame_equal(got[0], want[0], check_exact=True)
    for c in ("device_id", "domain", "sensor"):
        assert list(got[0][c].cat.categories) == list(want[0][c].cat.categories)
        assert_array_equal(got[0][c].cat.codes, want[0][c].cat.codes)
    if not (got[0]["sensor"].cat.codes < 0).any():      # a row without a sensor cannot be written
        assert content_digest(tidy.to_arrow(got[0])) == content_digest(tidy.to_arrow(want[0]))
    assert got[1] == want[1]


def random_day(rng, dense: bool):
    """A device-day: ~13 series of a slow logger (an hourly sample plus the missing cells
    40 writes around it) or 4 series at 1 Hz for 3 h with a level shift; random flags, NaN,
    repeated times, rows in any order, unused and shuffled categories."""
    names = [f"m{k}__cbrt_inv" for k in range(12 if not dense else 3)] + ["outdoor_temp"]
    if dense:
        t = pd.date_range("2026-03-15T06:00:00Z", periods=3 * 3600, freq="1s")
    else:
        hours = pd.date_range("2026-03-15", periods=24, freq="1h", tz="UTC")
        t = hours.append([hours + pd.Timedelta("1s"), hours + pd.Timedelta("59min59s")]).sort_values()
    parts = []
    for k, name in enumerate(names):
        x = 0.104 + 0.002 * rng.random(len(t))              # opening ~0.45 of a 0.1 .. 0.11 fit
        if dense:
            x[len(t) // 2:] += 0.004                         # a step of the level at 07:30 (+0.4)
        flags = rng.choice(np.array([0, 0, 0, 0, 1, 2, 3, 4, 5], dtype=np.uint8), len(t))
        x[flags == 1] = NAN
        x[rng.random(len(t)) < 0.02] = NAN
        parts.append(tidy.frame(ts=t, device_id="valve01", domain="environment" if name == "outdoor_temp"
                                else "bio_signal", sensor=name, value=x, quality_flag=flags))
    df = pd.concat(parts, ignore_index=True)
    df = pd.concat([df, df.iloc[rng.choice(len(df), 5)]], ignore_index=True)     # repeated keys
    df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    df["sensor"] = df["sensor"].astype(str).astype(pd.CategoricalDtype(
        list(rng.permutation(names + ["m99__cbrt_inv", "zz_unused"]))))   # category order, not names
    df["device_id"] = df["device_id"].astype(str).astype(pd.CategoricalDtype(["valve01", "valve00"]))
    return df, names


def random_bounds(rng, names, df, rolling):
    bounds = {}
    for name in names:
        n = int((df["sensor"] == name).sum())
        lo, hi = 0.1 + 0.001 * rng.random(), 0.11 + 0.001 * rng.random()
        b = {"low": lo, "high": hi, "direction": rng.choice(["up", "down"])}
        case = rng.integers(6)
        if rolling:             # arrays aligned with the sensor's rows by time, some NaN / empty span
            b["low"], b["high"] = lo + 0.001 * rng.random(n), hi + 0.001 * rng.random(n)
            b["low"][rng.random(n) < 0.05] = NAN
            flat = rng.random(n) < 0.05
            b["high"][flat] = b["low"][flat]                  # an empty range here and there
        elif case == 0:
            b["low"] = b["high"] = None                       # no fit
        elif case == 1:
            b["span_ok"] = False                              # span unknown / not closing
        elif case == 2:
            b["high"] = b["low"]                              # empty range
        elif case == 3:
            b["shifts"] = [(int(pd.Timestamp("2026-03-15T07:00:00Z").value), 0.002)]   # found by the fit
        bounds[name] = b
    return bounds


@pytest.mark.parametrize("dense", [False, True])
def test_normalise_frame_equals_the_per_sensor_pandas_version(dense):
    rng = np.random.default_rng(50 + dense)
    shifts = (None, {"min_size": 0.2, "min_segment": "30min"},
              {"min_size": 0.2, "min_segment": "30min", "action": "flag"})
    found = 0
    for trial in range(12 if dense else 48):
        df, names = random_day(rng, dense)
        bounds = random_bounds(rng, names, df, rolling=trial % 4 == 3)
        params = {**PARAMS, "mode": ["add", "replace"][trial % 2], "clip": trial % 4 < 2,
                  "sensors": [r"^m\d+__cbrt_inv$", r"^m1__cbrt_inv$", "^nothing$", ".*"][(trial // 3) % 4],
                  "shift": shifts[trial % 3]}
        if params["sensors"] == ".*":
            bounds["outdoor_temp"] = {"low": 5.0, "high": 25.0, "direction": "up"}
        got = normalise_frame(df, params, bounds, "valve01")
        want = normalise_frame_pandas(df, params, bounds, "valve01")
        assert_same_normalised(got, want)
        found += len(got[1]["level_shifts"])
    if dense:
        assert found > 0         # the level shifts were exercised


def test_normalise_frame_edge_rows_equal_the_pandas_version():
    # rows without a sensor or a time sort last (pandas' na_position), a derived name that
    # already exists in the input, an empty frame, every row replaced
    t = pd.to_datetime(["2026-01-20T00:00:02Z", "2026-01-20T00:00:01Z", None, "2026-01-20T00:00:01Z",
                        "2026-01-20T00:00:01Z", "2026-01-20T00:00:03Z"], utc=True)
    df = tidy.frame(ts=t, device_id="v", domain="bio_signal",
                    sensor=["m0__cbrt_inv", "m0__cbrt_inv", "m0__cbrt_inv", "m0__cbrt_inv__norm",
                            "m1__cbrt_inv", "m0__cbrt_inv"],
                    value=[0.5, 0.25, 0.75, 9.0, 0.5, 2.0], quality_flag=[0, 0, 0, 0, 2, 0])
    bounds = {"m0__cbrt_inv": {"low": 0.0, "high": 1.0, "direction": "up"},
              "m1__cbrt_inv": {"low": 0.0, "high": 1.0, "direction": "down"}}
    no_sensor = df.copy()
    no_sensor.loc[4, "sensor"] = np.nan
    for frame in (df, no_sensor, df.iloc[:0], df[df["sensor"] != "m0__cbrt_inv__norm"]):
        for mode in ("add", "replace"):
            params = {**PARAMS, "mode": mode}
            assert_same_normalised(normalise_frame(frame, params, bounds, "v"),
                                   normalise_frame_pandas(frame, params, bounds, "v"))
    out, rep = normalise_frame(df, PARAMS, bounds, "v")
    # spelled out: by sensor name, then time (NaT last), the input's m0__cbrt_inv__norm row
    # before the derived one at the same time
    assert out["sensor"].astype(str).tolist() == (
        ["m0__cbrt_inv"] * 4 + ["m0__cbrt_inv__norm"] * 5 + ["m1__cbrt_inv", "m1__cbrt_inv__norm"])
    assert_array_equal(out["value"].to_numpy(), [0.25, 0.5, 2.0, 0.75,          # m0: 01, 02, 03, NaT
                                                 9.0, 0.25, 0.5, 1.0, 0.75,     # the input's at 01 first
                                                 0.5, 0.5])                     # m1 (down: 1 - 0.5)
    assert out["quality_flag"].tolist() == [0] * 9 + [2, 2]
    assert out["ts"].isna().tolist() == [False] * 3 + [True] + [False] * 4 + [True, False, False]
    assert (rep["rows_added"], rep["clipped_low"], rep["clipped_high"]) == (5, 0, 1)
