"""What the Snakefile asks of the library: the project, the rules and the targets.

Kept here (not in the Snakefile) so it is importable, testable and shared with drawer.py.
Snakemake re-parses the Snakefile in every job, so this must stay cheap and free of side
effects (the raw index cache aside, which is written only when a raw file is new).
"""
from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .project import Project
from .timewindow import Window, parse_window


def bound_from_config(value):
    """A window bound as Snakemake's --config parsed it back to the text the user typed.

    ``--config from={NOW-2d}`` reaches us as the YAML mapping {"NOW-2d": ""}.
    """
    if value is None or value == "":
        return None
    if isinstance(value, dict) and len(value) == 1:
        return "{" + next(iter(value)) + "}"
    return str(value)


def pipeline_path_from_config(config: dict) -> str:
    if config.get("pipeline"):
        return str(config["pipeline"])
    if config.get("exposure"):
        return str(Path("configs") / str(config["exposure"]) / "pipeline.json")
    raise UserError("no pipeline given; allowed: --config exposure=<EXPO> "
                    "(reads configs/<EXPO>/pipeline.json) or --config pipeline=<path>")


class WorkflowPlan:
    """The rules of one pipeline and the files that `rule all` asks for in the window."""

    def __init__(self, config: dict, root=None):
        root = Path(root or Path.cwd())
        self.config = config
        self.project = Project.load(pipeline_path_from_config(config), root)
        self.window: Window = parse_window(bound_from_config(config.get("from")),
                                           bound_from_config(config.get("to")))
        from .steps import get_step

        self.rules = []          # list of (StepConfig, RuleSpec)
        for st in self.project.pipeline.steps:
            for spec in get_step(st.script).rule_specs(self.project, st, self.window):
                self.rules.append((st, spec))
        self.selected = self._selected_steps(config)

    @classmethod
    def for_pipeline(cls, pipeline: str, start=None, end=None, root=None, **extra) -> "WorkflowPlan":
        """The plan of ``pipeline`` (a path relative to ``root``) for the window [start, end],
        as drawer.py run/status/dag/report all need it (bad bound or config: one line)."""
        config = {"pipeline": pipeline, **{k: v for k, v in extra.items() if v}}
        if start:
            config["from"] = start
        if end:
            config["to"] = end
        parse_window(start, end)
        return cls(config, Path(root or Path.cwd()))

    def _selected_steps(self, config):
        steps = self.project.pipeline.steps
        until, only = config.get("until"), config.get("only")
        if until and only:
            raise UserError("--until and --only cannot be combined")
        if until:
            st = self.project.pipeline.step_named(str(until))
            return steps[: steps.index(st) + 1]
        if only:
            return [self.project.pipeline.step_named(str(only))]
        return steps

    def targets(self):
        names = {st.name for st in self.selected}
        out = []
        for st, spec in self.rules:
            if st.name in names:
                out.extend(spec.targets)
        return out

    def rule_names(self, steps=None):
        names = {st.name for st in (steps or self.selected)}
        return [spec.name for st, spec in self.rules if st.name in names]
