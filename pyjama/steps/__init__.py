"""The step registry: one :class:`Step` per numbered script in ``scripts/``.

A step knows (a) its config kind (schema), (b) the stages it reads and writes, (c) the
shape of its Snakemake rule (which partitions, which input files per partition, which
output files), and (d) how to run one partition. The Snakefile, ``pyjama.py run`` and the
tests all go through this one object, so the workflow and the CLI run the same code.

Most steps are "partition" steps: one (device, day) of the input stage → one (device,
day) of the output stage. They only implement :meth:`Step.compute`, a pure function
from tidy frames and the config to tidy frames plus ledger counts.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import UserError
from .. import io
from ..rules import Rule, flat_files

# script name → "module:Class" (imported lazily: the Snakefile must stay cheap to parse)
REGISTRY = {
    "10_parser.py": "pyjama.steps.parser:ParserStep",
    "20_split.py": "pyjama.steps.split:SplitStep",
    "30_clean.py": "pyjama.steps.clean:CleanStep",
    "40_resample.py": "pyjama.steps.resample:ResampleStep",
    "50_transform.py": "pyjama.steps.transform:TransformStep",
    "50_normalise.py": "pyjama.steps.normalise:NormaliseStep",
    "60_behaviour.py": "pyjama.steps.behaviour:BehaviourStep",
    "70_aggregate.py": "pyjama.steps.aggregate:AggregateStep",
    "80_import_postgres.py": "pyjama.steps.import_postgres:ImportPostgresStep",
    "81_import_raw_postgres.py": "pyjama.steps.import_raw_postgres:ImportRawPostgresStep",
}


def register(script: str, target: str) -> None:
    REGISTRY[script] = target


def known_scripts():
    return sorted(REGISTRY)


_CACHE: dict = {}


def get_step(script: str) -> "Step":
    """The step object for ``script`` (``20_split.py``, ``20_split`` or ``scripts/20_split.py``)."""
    name = Path(str(script)).name
    if not name.endswith(".py"):
        name += ".py"
    if name not in REGISTRY:
        raise UserError(f"unknown script {script!r}; allowed: {', '.join(known_scripts())}")
    if name not in _CACHE:
        mod, cls = REGISTRY[name].split(":")
        _CACHE[name] = getattr(importlib.import_module(mod), cls)()
    return _CACHE[name]


DEVICE_RE = r"[^/=]+"
DAY_RE = r"\d{4}-\d{2}-\d{2}"


class Step:
    """Base class. Subclasses set ``script``, ``kind`` and implement :meth:`compute`."""

    script = ""
    kind = ""
    summary = ""
    granularity = "partition"   # "partition" (device, day) or "raw_file"

    # ---- config
    def check_config(self, params: dict, source: str) -> None:
        """Semantic checks the schema cannot express (raise UserError with the JSON path)."""

    def input_stages(self, st) -> list:
        return [st["input_stage"]]

    def output_stages(self, st) -> dict:
        """Output key → stage. The first key is the main output (it holds the ledger)."""
        return {"data": st["output_stage"]}

    # ---- the DAG
    def rule_name(self, st) -> str:
        return "s" + "".join(c if c.isalnum() else "_" for c in st.name)

    def input_files(self, project, st, device: str, day: str) -> dict:
        """Input files for one partition (key → path or list of paths)."""
        return {"data": io.partition_file(st.exposure, st["input_stage"], device, day)}

    def output_files(self, st, device="{device}", day="{day}") -> dict:
        outs = {}
        for i, (key, stage) in enumerate(self.output_stages(st).items()):
            outs[key] = io.partition_file(st.exposure, stage, device, day)
            if i == 0:
                outs["ledger"] = io.partition_file(st.exposure, stage, device, day, io.LEDGER)
        return outs

    def partitions(self, project, st, window):
        """The (device, day) pairs this step builds in the window (from the raw index)."""
        return [p for p in project.partitions(self.input_stages(st)) if window.contains_day(p[1])]

    def rules(self, project, st, window) -> list:
        """The workflow rule(s) of this step and their jobs in ``window``."""
        static = type(self).input_files is Step.input_files

        def inputs(device, day, _self=self, _st=st, _project=project):
            return _self.input_files(_project, _st, device, day)

        return [Rule(
            name=self.rule_name(st), step=st, outputs=self.output_files(st),
            log=f"logs/{st.exposure}/{st.name}/{{device}}/{{day}}.log",
            wildcard_sets=[{"device": d, "day": day} for d, day in self.partitions(project, st, window)],
            # plain patterns of the wildcards: Snakemake resolves them without calling (and
            # inspecting) a function per job, which matters for a year's DAG
            input_patterns=self.input_files(project, st, "{device}", "{day}") if static else {},
            input_function=None if static else inputs,
            wildcard_constraints={"device": DEVICE_RE, "day": DAY_RE},
        )]

    # ---- running
    def direct_partitions(self, project, st, window, devices=None):
        """Partitions for ``pyjama.py run`` alone: those present in the input stage."""
        found = io.list_partitions(st.exposure, st["input_stage"], project.root)
        return [(d, day) for d, day in found
                if window.contains_day(day) and (not devices or d in devices)]

    def run_partition(self, project, st, device: str, day: str) -> dict:
        """Read inputs, compute, write outputs + ledger. Returns the ledger entry."""
        files = self.input_files(project, st, device, day)
        frames = {}
        for key, path in files.items():
            if isinstance(path, (list, tuple)):
                frames[key] = [io.read_tidy(project.root / p, device) for p in path]
            else:
                frames[key] = io.read_tidy(project.root / path, device)
        tables, counts = self.compute(frames, st, device, day)
        all_inputs = flat_files(files)
        meta = io.provenance(self.script, st.path, st.digest, all_inputs)
        outs = self.output_files(st, device, day)
        for key in self.output_stages(st):
            io.write_tidy(project.root / outs[key], tables[key], meta)
        entry = io.ledger_entry(self.script, f"{device}/{day}", **counts)
        io.write_json(project.root / outs["ledger"], entry)
        return entry

    def compute(self, frames: dict, st, device: str, day: str):
        """Pure: input frames → (output frames by key, ledger counts). Override."""
        raise NotImplementedError
