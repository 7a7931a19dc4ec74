"""Config loading: JSON Schema validation with one-line errors naming file, JSON path,
bad value and what is allowed (pyjama.config)."""
import json

import pytest

from pyjama.config import schema
from pyjama.pipeline import load_pipeline, load_step_config
from pyjama.errors import UserError
from pyjama.steps import REGISTRY

SPLIT = {"exposure": "E", "input_stage": "10_parsed", "output_stage": "20_split"}


def write(tmp_path, name, obj):
    p = tmp_path / "configs" / "E" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return f"configs/E/{name}"


def err(fn, *args):
    with pytest.raises(UserError) as e:
        fn(*args)
    return str(e.value)


def test_defaults_are_filled(tmp_path):
    st = load_step_config("20_split.py", write(tmp_path, "20_split.json", SPLIT), tmp_path)
    assert st["duplicates"] == "first" and st["sort"] == "sensor_ts"
    assert st.name == "20_split" and len(st.digest) == 16


def test_misspelled_key_names_file_path_and_allowed_keys(tmp_path):
    path = write(tmp_path, "20_split.json", {**SPLIT, "dupliactes": "first"})
    assert err(load_step_config, "20_split.py", path, tmp_path) == (
        "configs/E/20_split.json: $.dupliactes: unknown key 'dupliactes'; allowed keys: comment, "
        "duplicates, exposure, input_stage, output_stage, sort")


def test_bad_enum_value(tmp_path):
    path = write(tmp_path, "20_split.json", {**SPLIT, "duplicates": "frist"})
    assert err(load_step_config, "20_split.py", path, tmp_path) == (
        'configs/E/20_split.json: $.duplicates: "frist" is not allowed; allowed: "first", "last", "mean"')


def test_wrong_type_nested(tmp_path):
    cfg = {"exposure": "E", "input_stage": "00_raw", "output_stage": "10_parsed", "format": "keyvalue",
           "device": {"from": "filename", "pattern": "_(?P<device>[^_]+)_"}, "skip_lines": "1"}
    path = write(tmp_path, "10_parser.json", cfg)
    assert err(load_step_config, "10_parser.py", path, tmp_path) == (
        'configs/E/10_parser.json: $.skip_lines: "1" has the wrong type; allowed: integer')


def test_unknown_nested_key(tmp_path):
    cfg = {"exposure": "E", "input_stage": "00_raw", "output_stage": "10_parsed", "format": "keyvalue",
           "device": {"from": "filename", "patern": "x"}}
    path = write(tmp_path, "10_parser.json", cfg)
    assert err(load_step_config, "10_parser.py", path, tmp_path) == (
        "configs/E/10_parser.json: $.device.patern: unknown key 'patern'; allowed keys: column, from, pattern, value")


def test_device_pattern_without_group(tmp_path):
    cfg = {"exposure": "E", "input_stage": "00_raw", "output_stage": "10_parsed", "format": "keyvalue",
           "device": {"from": "filename", "pattern": "_([^_]+)_"}}
    path = write(tmp_path, "10_parser.json", cfg)
    assert err(load_step_config, "10_parser.py", path, tmp_path) == (
        "configs/E/10_parser.json: $.device.pattern: '_([^_]+)_' has no (?P<device>...) group; "
        "allowed: a regular expression with a named group `device`")


def test_missing_file_and_bad_json(tmp_path):
    assert err(load_step_config, "20_split.py", "configs/E/nope.json", tmp_path) == \
        f"{tmp_path}/configs/E/nope.json: file not found"
    path = write(tmp_path, "20_split.json", '{"exposure": "E",\n  "input_stage": }')
    assert err(load_step_config, "20_split.py", path, tmp_path) == (
        f"{tmp_path}/configs/E/20_split.json: line 2 column 18: invalid JSON: Expecting value")


def test_unknown_script():
    from pyjama.steps import get_step

    message = err(get_step, "25_magic.py")
    assert message.startswith("unknown script '25_magic.py'; allowed: 10_parser.py, 20_split.py, 30_clean.py")


def test_bad_exposure_and_stage_names(tmp_path):
    path = write(tmp_path, "20_split.json", {**SPLIT, "exposure": "../x"})
    assert err(load_step_config, "20_split.py", path, tmp_path) == (
        "configs/E/20_split.json: $.exposure: '../x' is not allowed; allowed: letters, digits, '_', '-', "
        "'.' (not first, no '..'), at most 64 characters")
    path = write(tmp_path, "20_split.json", {**SPLIT, "output_stage": "../../etc"})
    assert err(load_step_config, "20_split.py", path, tmp_path).startswith(
        "configs/E/20_split.json: $.output_stage: '../../etc' is not allowed; allowed: a folder under data/<EXPO>/")


def pipeline(tmp_path, steps, expo="E"):
    p = tmp_path / "configs" / "E" / "pipeline.json"
    p.write_text(json.dumps({"exposure": expo, "steps": steps}))
    return "configs/E/pipeline.json"


PARSER = {"exposure": "E", "input_stage": "00_raw", "output_stage": "10_parsed", "format": "keyvalue",
          "device": {"from": "fixed", "value": "d1"}}


def test_required_key_missing(tmp_path):
    path = write(tmp_path, "10_parser.json", {k: v for k, v in PARSER.items() if k != "format"})
    assert err(load_step_config, "10_parser.py", path, tmp_path) == (
        "configs/E/10_parser.json: $.format: required key is missing")


def test_pipeline_loads_and_orders(tmp_path):
    a = write(tmp_path, "10_parser.json", PARSER)
    b = write(tmp_path, "20_split.json", SPLIT)
    pipe = load_pipeline(pipeline(tmp_path, [{"script": "10_parser.py", "with": a},
                                             {"script": "20_split.py", "with": b}]), tmp_path)
    assert [s.name for s in pipe.steps] == ["10_parser", "20_split"]
    assert pipe.producer_of("20_split").name == "20_split"


def test_pipeline_stage_that_no_step_produces(tmp_path):
    b = write(tmp_path, "20_split.json", {**SPLIT, "input_stage": "15_nothing"})
    a = write(tmp_path, "10_parser.json", PARSER)
    path = pipeline(tmp_path, [{"script": "10_parser.py", "with": a}, {"script": "20_split.py", "with": b}])
    assert err(load_pipeline, path, tmp_path) == (
        "configs/E/20_split.json: $.input_stage: '15_nothing' is not written by any earlier step of "
        "configs/E/pipeline.json; allowed: 00_raw, 10_parsed")


def test_pipeline_unknown_script_and_key(tmp_path):
    a = write(tmp_path, "10_parser.json", PARSER)
    path = pipeline(tmp_path, [{"script": "11_parsre.py", "with": a}])
    assert err(load_pipeline, path, tmp_path).startswith(
        "configs/E/pipeline.json: $.steps[0].script: unknown script '11_parsre.py'; allowed: 10_parser.py")
    path = pipeline(tmp_path, [{"script": "10_parser.py", "whith": a}])
    assert err(load_pipeline, path, tmp_path) == (
        "configs/E/pipeline.json: $.steps[0].whith: unknown key 'whith'; allowed keys: script, with")


def test_pipeline_exposure_mismatch_and_double_writer(tmp_path):
    a = write(tmp_path, "10_parser.json", PARSER)
    path = pipeline(tmp_path, [{"script": "10_parser.py", "with": a}], expo="F")
    assert err(load_pipeline, path, tmp_path) == (
        "configs/E/10_parser.json: $.exposure: 'E' is not allowed; allowed: 'F' (the exposure of "
        "configs/E/pipeline.json)")
    b = write(tmp_path, "10_parser_b.json", PARSER)
    path = pipeline(tmp_path, [{"script": "10_parser.py", "with": a}, {"script": "10_parser.py", "with": b}])
    assert err(load_pipeline, path, tmp_path) == (
        "configs/E/10_parser_b.json: $.output_stage: '10_parsed' is already written by "
        "configs/E/10_parser.json; each stage has one writer")


def every_property(sch, path="$"):
    if sch.get("type") == "object" or "properties" in sch:
        for key, sub in sch.get("properties", {}).items():
            yield f"{path}.{key}", sub
            yield from every_property(sub, f"{path}.{key}")
    if isinstance(sch.get("items"), dict):
        yield from every_property(sch["items"], f"{path}[]")


@pytest.mark.parametrize("kind", sorted({s.removesuffix(".py") for s in REGISTRY}) + ["pipeline"])
def test_every_schema_key_has_description_and_default(kind):
    from pyjama.config import SCHEMA_DIR

    assert (SCHEMA_DIR / f"{kind}.schema.json").exists(), f"registered step {kind} has no schema"
    sch = schema(kind)
    assert sch.get("additionalProperties") is False
    for where, sub in every_property(sch):
        assert sub.get("description"), f"{kind} {where} lacks a description"
        assert "default" in sub, f"{kind} {where} lacks a default"
        if sub.get("type") == "object" and "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{kind} {where} allows unknown keys"
