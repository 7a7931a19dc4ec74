"""The one loader for configs: pipeline.json and step configs, validated by JSON Schema.

Every config kind has a schema ``workflow/schemas/<kind>.schema.json`` with
``additionalProperties: false`` and a ``description`` + ``default`` for every key.
The keys every step config shares (``exposure``, ``input_stage``, ``output_stage``,
``comment``) are declared once in ``workflow/schemas/common.schema.json`` and merged
into each step schema here, so they cannot drift between steps; so is ``keep`` (which
input series a step passes on), merged into the schemas that set ``"x-keep"``.

A bad config raises :class:`~pyjama.errors.UserError` with one line naming the file, the
JSON path, the bad value and what is allowed.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

REPO = Path(__file__).resolve().parent.parent
SCHEMA_DIR = REPO / "workflow" / "schemas"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_exposure_name(name: str, where: str = "exposure name") -> str:
    """Refuse names that would escape data/ or configs/ or break shell use."""
    if not isinstance(name, str) or not name:
        raise UserError(f"{where}: empty; allowed: letters, digits, '_', '-', '.' (not first)")
    if not NAME_RE.match(name) or ".." in name:
        raise UserError(f"{where}: {name!r} is not allowed; allowed: letters, digits, '_', '-', "
                        "'.' (not first, no '..'), at most 64 characters")
    return name


# ---------------------------------------------------------------- JSON files and schemas

def read_json(path: Path) -> object:
    """Read a JSON file; a missing file or a syntax error is a one-line UserError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a JSON file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}") from None


@functools.lru_cache(maxsize=None)
def schema(kind: str) -> dict:
    """The JSON Schema of a config kind, with the common step keys merged in."""
    path = SCHEMA_DIR / f"{kind}.schema.json"
    if not path.exists():
        raise UserError(f"no schema for config kind {kind!r} ({path} missing)")
    sch = read_json(path)
    if sch.get("x-step", False):
        common = read_json(SCHEMA_DIR / "common.schema.json")
        sch = copy.deepcopy(sch)
        props = dict(common["properties"])
        if sch.get("x-keep"):
            # a step that passes its input series on declares the shared ``keep`` key;
            # the text of ``x-keep`` says what it means for that step
            keep = dict(common["x-keep"])
            keep["description"] = f"{keep['description']} {sch['x-keep']}"
            props["keep"] = keep
        props.update(sch.get("properties", {}))
        sch["properties"] = props
        sch["required"] = sorted(set(common.get("required", [])) | set(sch.get("required", [])))
    return sch


def _fmt_path(path) -> str:
    out = "$"
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def short(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error) -> str:
    """One readable sentence for a jsonschema error: bad value and what is allowed."""
    v = error.validator
    inst = error.instance
    sch = error.schema
    if v == "additionalProperties":
        allowed = sorted(sch.get("properties", {}))
        extra = sorted(set(inst) - set(allowed))
        key = extra[0] if extra else "?"
        return (f"{_fmt_path(list(error.absolute_path) + [key])}: unknown key {key!r}; "
                f"allowed keys: {', '.join(allowed)}")
    where = _fmt_path(error.absolute_path)
    if v == "enum":
        return f"{where}: {short(inst)} is not allowed; allowed: {', '.join(short(x) for x in sch['enum'])}"
    if v == "const":
        return f"{where}: {short(inst)} is not allowed; allowed: {short(sch['const'])}"
    if v == "type":
        want = sch["type"] if isinstance(sch["type"], str) else " or ".join(sch["type"])
        return f"{where}: {short(inst)} has the wrong type; allowed: {want}"
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"{_fmt_path(list(error.absolute_path) + [missing])}: required key is missing"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        ops = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
        return f"{where}: {short(inst)} is out of range; allowed: {ops[v]} {sch[v]}"
    if v == "pattern":
        hint = sch.get("x-pattern-hint", f"text matching {sch['pattern']}")
        return f"{where}: {short(inst)} is not allowed; allowed: {hint}"
    if v in ("minItems", "maxItems", "minLength", "maxLength"):
        return f"{where}: {short(inst)} is not allowed; {error.message}"
    if v in ("oneOf", "anyOf"):
        opts = []
        for sub in sch.get(v, []):
            opts.append(sub.get("title") or sub.get("description", "").split(".")[0] or "?")
        return f"{where}: {short(inst)} matches none of the allowed forms: {'; '.join(opts)}"
    return f"{where}: {short(inst)}: {error.message}"


def _best_error(errors):
    import jsonschema

    # Prefer errors deep in the document, and unknown keys over the rest.
    return jsonschema.exceptions.best_match(errors)


def fill_defaults(sch: dict, inst):
    """Return a copy of ``inst`` with every absent key that has a ``default`` filled in."""
    if isinstance(inst, dict) and sch.get("type") == "object":
        out = dict(inst)
        for key, sub in sch.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = fill_defaults(sub, out[key])
        if isinstance(sch.get("additionalProperties"), dict):
            for key in out:
                if key not in sch.get("properties", {}):
                    out[key] = fill_defaults(sch["additionalProperties"], out[key])
        return out
    if isinstance(inst, list) and isinstance(sch.get("items"), dict):
        return [fill_defaults(sch["items"], x) for x in inst]
    return inst


@functools.cache
def validator(kind: str):
    """The JSON Schema validator of a config kind, built once per process (a year of jobs
    as threads of one Snakemake process would build it per job)."""
    import jsonschema

    return jsonschema.Draft202012Validator(schema(kind))


def validate(kind: str, inst, source: str) -> dict:
    """Validate ``inst`` against the schema of ``kind``; return it with defaults filled."""
    sch = schema(kind)
    errors = list(validator(kind).iter_errors(inst))
    if errors:
        raise UserError(f"{source}: {_describe(_best_error(errors))}")
    return fill_defaults(sch, inst)


def digest(obj) -> str:
    """Stable short digest of a JSON-able object (canonical JSON, sha256, 16 hex)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------- step configs and pipelines

@dataclass(frozen=True)
class StepConfig:
    """A validated step config: which script runs, with what, from which file."""

    script: str          # e.g. "20_split.py"
    path: str            # the config file, as given (relative to the project root)
    params: dict         # validated, defaults filled
    digest: str          # digest of params: a change re-runs this step and its dependants
    partition: str = "day"   # the exposure's partition period (pipeline.json $.partition)

    @property
    def exposure(self) -> str:
        return self.params["exposure"]

    @functools.cached_property
    def name(self) -> str:
        """The invocation name: the config file's stem (unique within a pipeline)."""
        return Path(self.path).name.removesuffix(".json")

    def __getitem__(self, key):
        return self.params[key]

    def get(self, key, default=None):
        return self.params.get(key, default)


def check_regex(pattern: str, where: str, example: str = ".*"):
    """Compile a regular expression from a config; a bad one is a one-line UserError.
    ``where`` is "<file>: $.json.path"."""
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise UserError(f"{where}: {pattern!r} is not a regular expression ({exc}); allowed: a Python "
                        f"regular expression such as '{example}'") from None


STAGE_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,63}$")


def check_stage(stage: str, where: str) -> None:
    """A stage name from a config: folders under data/<EXPO>/ (a bad one is a one-line UserError)."""
    parts = stage.split("/")
    if not stage or any(not STAGE_PART_RE.match(p) or ".." in p for p in parts):
        raise UserError(f"{where}: {stage!r} is not allowed; allowed: a folder under data/<EXPO>/ "
                        "such as '20_split' or '70_aggregated/window=10s' (letters, digits, '_', '-', "
                        "'.', '=', and '/' between folders)")
