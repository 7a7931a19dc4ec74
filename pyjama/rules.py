"""The plan as data: a :class:`Rule` per workflow rule and a :class:`Job` per concrete job.

A step declares its rule (:meth:`pyjama.steps.Step.rules`): output patterns with
wildcards, its inputs (plain patterns of the wildcards, or a function of them), its log
pattern, its params digest and the wildcard values of the jobs it has in the window. From
that one declaration come the Snakefile's rules, ``rule all``'s targets and the
:class:`Job` objects that ``drawer.py status``, ``dag`` and ``report`` read
(:class:`pyjama.workflow.WorkflowPlan`). Nothing here reads a file.
"""
from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass, field
from types import MappingProxyType


# the wildcards of a job, in the order its place is said: a partition (device, day) or a
# parser job (raw file, or batch of raw files with week or month partitions)
UNIT_KEYS = ("device", "day", "raw", "batch")


def job_key(rule: str, wildcards) -> str:
    """One text per job: ``rule`` plus its sorted wildcards (``s30_clean|day=…,device=…``)."""
    return rule + "|" + ",".join(f"{k}={v}" for k, v in sorted(dict(wildcards).items()))


def parse_wildcards(text: str) -> dict:
    """Snakemake's printed ``wildcards: device=valve01, day=2026-01-20`` (the part after the
    colon) → ``{"device": "valve01", "day": "2026-01-20"}``."""
    return dict(p.split("=", 1) for p in text.split(", ") if "=" in p)


class SnakemakeJobs:
    """The one reader of Snakemake's jobs onto the plan's :class:`Job`: a job of its DAG
    (``drawer.py status``'s verdict, :mod:`pyjama.verdict`) or a job block it prints
    (``drawer.py run``'s lines, :mod:`pyjama.progress`) is the plan's Job of the same rule
    and wildcards. ``plan_job(rule, wildcards)`` is the plan's lookup
    (:meth:`pyjama.workflow.WorkflowPlan.job`); None for a rule the plan has not (``all``).
    ``others``: rule name → the words for a rule outside the plan (the report's results)."""

    def __init__(self, plan_job, others=None):
        self.plan_job = plan_job
        self.others = dict(others or {})

    def name_of(self, rule: str) -> str:
        """The words for a job of a rule outside the plan: ``others``' text, else the rule."""
        return self.others.get(rule, rule)

    def of_dag_job(self, job):
        """A ``snakemake.jobs.Job`` of the DAG → the plan's Job, or None."""
        return self.plan_job(job.rule.name, job.wildcards_dict)

    def of_block(self, rule: str, wildcards_text: str):
        """A printed job block (``rule s30_clean:`` and its ``wildcards:`` line) → the plan's
        Job, or None."""
        return self.plan_job(rule, parse_wildcards(wildcards_text))


def flat_files(files) -> list:
    """``{"data": "a", "more": ["b", "c"]}`` → ``["a", "b", "c"]`` (inputs and outputs)."""
    out = []
    for v in files.values():
        out.extend(v if isinstance(v, (list, tuple)) else [v])
    return [str(p) for p in out]


@dataclass(frozen=True, eq=False)
class Job:
    """One concrete job of a rule: what Snakemake runs for one set of wildcard values.

    ``inputs`` and ``outputs`` map a key to a path (or, for inputs, a list of paths)
    relative to the project root. ``target``: ``rule all`` asks for its outputs (jobs such
    as a normalise fit are only built when a target needs them)."""

    rule: str                 # the Snakemake rule name, e.g. "s30_clean"
    step: str                 # the pipeline step (its config file's stem), e.g. "30_clean"
    script: str               # e.g. "30_clean.py"
    config: str               # the step config, relative to the project root
    wildcards: MappingProxyType    # e.g. {"device": "valve01", "day": "2026-01-20"}, {"raw": ...} or {"batch": ...}
    inputs: MappingProxyType
    outputs: MappingProxyType
    log: str
    params_digest: str        # the step config's digest (Snakemake's params: a change re-runs)
    options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    target: bool = True

    @functools.cached_property
    def input_files(self) -> list:
        return flat_files(self.inputs)

    @functools.cached_property
    def output_files(self) -> list:
        return flat_files(self.outputs)

    @property
    def main_output(self) -> str:
        """The first output: the file whose parquet footer holds the ledger."""
        return next(iter(self.outputs.values()))

    @functools.cached_property
    def key(self) -> str:
        """The same text for this job in the plan, in Snakemake's DAG and in the caches."""
        return job_key(self.rule, self.wildcards)

    @property
    def where(self) -> str:
        """The job's place in words: ``valve01 2026-01-20`` (device, day) or the raw file."""
        wc = self.wildcards
        order = [k for k in UNIT_KEYS if k in wc] + sorted(set(wc) - set(UNIT_KEYS))
        return " ".join(wc[k] for k in order)

    @property
    def partition(self):
        """(device, day) of a partition job, else None."""
        wc = self.wildcards
        return (wc["device"], wc["day"]) if "device" in wc and "day" in wc else None

    def run_arguments(self) -> dict:
        """Keyword arguments of :func:`pyjama.runner.run_step` for this job."""
        wc = self.wildcards
        return {"script": self.script, "config_path": self.config,
                "devices": [wc["device"]] if "device" in wc else None,
                "day": wc.get("day"), "raw": wc.get("raw"), "batch": wc.get("batch"),
                "options": dict(self.options)}

    def command(self) -> str:
        """The same job as a ``pyjama.py run`` command line (for logs and humans)."""
        parts = ["pyjama.py", "run", self.script, "--with", self.config]
        for flag, value in self.options.items():
            if value is True:
                parts.append(f"--{flag.replace('_', '-')}")
            elif value not in (None, False):
                parts += [f"--{flag.replace('_', '-')}", str(value)]
        for key in UNIT_KEYS:
            if key in self.wildcards:
                parts += [f"--{key}", self.wildcards[key]]
        return " ".join(shlex.quote(p) for p in parts)


@dataclass(eq=False)
class Rule:
    """One workflow rule of one pipeline step, and its jobs in the window."""

    name: str
    step: object                  # the StepConfig
    outputs: dict                 # key → path pattern with {device}/{day} or {raw}
    log: str
    wildcard_sets: list           # the wildcard values (dicts) of the rule's jobs in the window
    input_patterns: dict = field(default_factory=dict)   # key → pattern of the wildcards
    input_function: object = None  # callable(**wildcards) → key → path or list (when not patterns)
    wildcard_constraints: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)   # step options every job runs with (e.g. fit)
    target: bool = True           # rule all asks for its jobs' outputs

    @property
    def params_digest(self) -> str:
        return self.step.digest

    def inputs_for(self, wildcards: dict) -> dict:
        if self.input_function is not None:
            return self.input_function(**wildcards)
        return {k: v.format(**wildcards) for k, v in self.input_patterns.items()}

    def job(self, wildcards) -> Job:
        """The job of these wildcard values (also outside the window: Snakemake asks for
        the inputs of jobs a target needs, e.g. the neighbour days of a rolling normalise)."""
        wc = {k: str(v) for k, v in dict(wildcards).items()}
        return Job(rule=self.name, step=self.step.name, script=self.step.script, config=self.step.path,
                   wildcards=MappingProxyType(wc), inputs=MappingProxyType(self.inputs_for(wc)),
                   outputs=MappingProxyType({k: v.format(**wc) for k, v in self.outputs.items()}),
                   log=self.log.format(**wc), params_digest=self.params_digest,
                   options=MappingProxyType(dict(self.options)), target=self.target)

    def jobs(self) -> list:
        return [self.job(wc) for wc in self.wildcard_sets]

    def targets(self) -> list:
        """The output files ``rule all`` asks for (plain formatting: a year has thousands)."""
        if not self.target:
            return []
        pats = list(self.outputs.values())
        return [p.format(**wc) for wc in self.wildcard_sets for p in pats]

    def snakemake_inputs(self, wildcards) -> dict:
        """The input function the Snakefile unpacks (only for rules without patterns)."""
        return self.inputs_for(dict(wildcards))
