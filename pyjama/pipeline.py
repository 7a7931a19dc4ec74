"""The pipeline model: step configs bound to their steps, and pipeline.json's wiring.

Above the step registry (it asks each step for its config kind, its semantic checks and
the stages it reads and writes); below the project, the plan and the runner.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import (StepConfig, check_exposure_name, check_regex, check_stage, digest, read_json, short,
                     validate)
from .errors import UserError
from .steps import get_step


def load_step_config(script: str, path, root: Path | None = None) -> StepConfig:
    """Load and validate the config ``path`` for ``script`` (e.g. ``30_clean.py``)."""
    step = get_step(script)
    root = Path(root or Path.cwd())
    full = Path(path) if Path(path).is_absolute() else root / path
    raw = read_json(full)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: $: expected a JSON object, got {short(raw)}")
    params = validate(step.kind, raw, str(path))
    check_exposure_name(params["exposure"], f"{path}: $.exposure")
    for key in ("input_stage", "output_stage"):
        if key in params:
            check_stage(params[key], f"{path}: $.{key}")
    if "keep" in params:
        check_regex(params["keep"], f"{path}: $.keep", "^(?!m\\d+$)")
    step.check_config(params, str(path))
    # A comment is for humans: editing it must not re-run anything. Nor must a keep that
    # says what the step did before the key existed (".*": pass everything on).
    meaning = {k: v for k, v in params.items() if k != "comment" and not (k == "keep" and v == ".*")}
    return StepConfig(script=step.script, path=str(path), params=params, digest=digest(meaning))


@dataclass
class Pipeline:
    """A validated pipeline.json: the exposure and its ordered step invocations."""

    path: str
    exposure: str
    steps: list = field(default_factory=list)   # list[StepConfig]
    partition: str = "day"                      # $.partition: day | week | month

    def producer_of(self, stage: str):
        for st in self.steps:
            if stage in _output_stages(st):
                return st
        return None

    def step_named(self, name: str) -> StepConfig:
        for st in self.steps:
            if name in (st.name, st.script, st.script.removesuffix(".py"), Path(st.path).name):
                return st
        allowed = ", ".join(st.name for st in self.steps)
        raise UserError(f"{self.path}: no step {name!r}; allowed: {allowed}")


def _output_stages(st: StepConfig) -> list:
    return list(get_step(st.script).output_stages(st).values())


LAYOUT = "partition"      # data/<EXPO>/.pyjama/partition: the period the data tree was built with


def check_layout(pipe: Pipeline, root: Path) -> None:
    """The data tree of an exposure holds one partition period: a pipeline that declares
    another than the one its files were written with is a one-line error (switching means
    rebuilding: the stages' files are moved aside first, nothing is mixed)."""
    marker = root / "data" / pipe.exposure / ".pyjama" / LAYOUT
    try:
        built = marker.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return
    if built and built != pipe.partition:
        raise UserError(f"{pipe.path}: $.partition: {pipe.partition!r} is not allowed; allowed: {built!r} "
                        f"(data/{pipe.exposure} was built with {built} partitions; to change the "
                        f"period, move the stage folders of data/{pipe.exposure} other than 00_raw "
                        f"aside, delete {marker.relative_to(root)} and rebuild)")


def record_layout(root: Path, st) -> None:
    """Write the marker :func:`check_layout` reads, once (the first partition a job of the
    step config ``st`` writes)."""
    marker = Path(root) / "data" / st.exposure / ".pyjama" / LAYOUT
    if not marker.exists():
        from . import io

        io.write_text(marker, st.partition + "\n")


def load_pipeline(path, root: Path | None = None) -> Pipeline:
    """Load pipeline.json and every step config it lists; check the DAG is connected.

    Checks: each entry names a known script and an existing, valid config; all configs
    name the pipeline's exposure; no two steps write the same stage; every input stage
    is 00_raw or written by an earlier step.
    """
    root = Path(root or Path.cwd())
    full = Path(path) if Path(path).is_absolute() else root / path
    raw = read_json(full)
    data = validate("pipeline", raw, str(path))
    expo = check_exposure_name(data["exposure"], f"{path}: $.exposure")
    pipe = Pipeline(path=str(path), exposure=expo, partition=data.get("partition", "day"))
    check_layout(pipe, root)
    written: dict = {}
    names: set = set()
    for i, entry in enumerate(data["steps"]):
        where = f"{path}: $.steps[{i}]"
        try:
            get_step(entry["script"])
        except UserError as exc:
            raise UserError(f"{where}.script: {exc}") from None
        st = replace(load_step_config(entry["script"], entry["with"], root), partition=pipe.partition)
        if st.exposure != expo:
            raise UserError(f"{st.path}: $.exposure: {st.exposure!r} is not allowed; allowed: "
                            f"{expo!r} (the exposure of {path})")
        if st.name in names:
            raise UserError(f"{where}.with: {entry['with']!r} is listed twice; each config file "
                            "may appear once (copy it under another name for a second invocation)")
        names.add(st.name)
        step = get_step(st.script)
        for stage in step.input_stages(st):
            if stage != "00_raw" and stage not in written:
                allowed = ", ".join(["00_raw"] + sorted(written)) 
                raise UserError(f"{st.path}: $.input_stage: {stage!r} is not written by any earlier "
                                f"step of {path}; allowed: {allowed}")
        for stage in step.output_stages(st).values():
            if stage in written or stage == "00_raw":
                raise UserError(f"{st.path}: $.output_stage: {stage!r} is already written by "
                                f"{written.get(stage, 'the raw files')}; each stage has one writer")
            written[stage] = st.path
        pipe.steps.append(st)
    return pipe
