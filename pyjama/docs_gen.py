"""Generate what is derived from the code, so it cannot drift: docs/config-reference.md from
the JSON Schemas, and the links ``scripts/NN_name.py`` → ``scripts/step.py`` from the step
registry.

    python3 -m pyjama.docs_gen            # rewrite docs/config-reference.md, make missing links
    python3 -m pyjama.docs_gen --check    # exit 1 when either is not current (a test runs this)
"""
from __future__ import annotations

import json
import sys

from .config import REPO, SCHEMA_DIR, schema

OUT = REPO / "docs" / "config-reference.md"


def _type(sub: dict) -> str:
    if "enum" in sub:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in sub["enum"])
    if "oneOf" in sub:   # e.g. an object (a $ref) or null
        return " or ".join(str(alt.get("type", "object")) for alt in sub["oneOf"])
    t = sub.get("type", "")
    if isinstance(t, list):
        t = " or ".join(t)
    if t == "array" and isinstance(sub.get("items"), dict):
        it = sub["items"].get("type", "object")
        t = f"array of {it}"
    return t or "any"


def _deref(sub: dict, root: dict) -> dict:
    """Follow a local ``$ref`` (``#/$defs/<name>``); the referring object's own keys win."""
    ref = sub.get("$ref") if isinstance(sub, dict) else None
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = root.get("$defs", {}).get(ref.rsplit("/", 1)[1], {})
        return {**target, **{k: v for k, v in sub.items() if k != "$ref"}}
    return sub


def _object_part(sub: dict, root: dict) -> dict:
    """``sub`` itself, or its object branch when it is a oneOf/anyOf (e.g. object or null)."""
    for alt in sub.get("oneOf", []) + sub.get("anyOf", []):
        alt = _deref(alt, root)
        if "properties" in alt:
            return alt
    return sub


def _rows(sch: dict, prefix: str = "", root: dict | None = None):
    root = sch if root is None else root
    for key, sub in sch.get("properties", {}).items():
        sub = _deref(sub, root)
        path = f"{prefix}{key}"
        default = json.dumps(sub.get("default"), ensure_ascii=False)
        desc = sub.get("description", "").replace("|", "\\|").replace("\n", " ")
        yield f"| `{path}` | {_type(sub)} | `{default}` | {desc} |"
        obj = _object_part(sub, root)
        if obj.get("type") == "object" and "properties" in obj:
            yield from _rows(obj, path + ".", root)
        items = _deref(sub.get("items"), root)
        if isinstance(items, dict) and "properties" in items:
            yield from _rows(items, path + "[].", root)
        extra = _deref(sub.get("additionalProperties"), root)
        if isinstance(extra, dict) and "properties" in extra:
            yield from _rows(extra, path + ".<name>.", root)


def render() -> str:
    kinds = sorted(p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json")
                   if p.name != "common.schema.json")
    out = ["# Config reference", "",
           "Generated from `workflow/schemas/*.schema.json` by `python3 -m pyjama.docs_gen`; a test",
           "fails when this file is not current. Every key has a description and a default; an",
           "unknown key is an error that names the file, the JSON path and the allowed keys.",
           "The keys `exposure`, `input_stage`, `output_stage` and `comment` are shared by every",
           "step config (`workflow/schemas/common.schema.json`).", ""]
    for kind in ["pipeline"] + [k for k in kinds if k != "pipeline"]:
        sch = schema(kind)
        out += [f"## {kind}", "", sch.get("title", ""), "",
                "| key | type | default | meaning |", "|---|---|---|---|"]
        out += list(_rows(sch))
        out.append("")
    return "\n".join(out)


SCRIPTS = REPO / "scripts"
SHELL = "step.py"


def script_links() -> tuple:
    """(missing, stray): registered steps without their ``scripts/`` link, and numbered
    scripts that no step registers."""
    from .steps import known_scripts

    have = {p.name for p in SCRIPTS.glob("[0-9]*.py")}
    want = set(known_scripts())
    return sorted(want - have), sorted(have - want)


def build_parser():
    import argparse

    p = argparse.ArgumentParser(prog="python3 -m pyjama.docs_gen", description=__doc__.split("\n\n")[0],
                                epilog="example:\n  python3 -m pyjama.docs_gen --check",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when not current")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    text = render()
    missing, stray = script_links()
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print("docs/config-reference.md is not current: run python3 -m pyjama.docs_gen", file=sys.stderr)
            return 1
        if missing or stray:
            print(f"scripts/ does not match the step registry (missing: {', '.join(missing) or 'none'}; "
                  f"no such step: {', '.join(stray) or 'none'}): run python3 -m pyjama.docs_gen",
                  file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO)}")
    for name in missing:
        (SCRIPTS / name).symlink_to(SHELL)
        print(f"linked scripts/{name} -> {SHELL}")
    for name in stray:
        print(f"warning: scripts/{name} runs no registered step; remove it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
