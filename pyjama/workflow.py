"""The plan of a pipeline, made once: its rules, their jobs, and the files ``rule all`` wants.

The Snakefile declares its rules from :class:`WorkflowPlan`, and ``drawer.py run``,
``status``, ``dag`` and ``report`` read the same objects, so no view re-derives the plan.

API (the objects are in :mod:`pyjama.rules`)::

    plan = WorkflowPlan.for_pipeline("configs/DEMO/pipeline.json", start, end, root)
    plan.rules                 # [Rule]: one per Snakemake rule, pipeline order
    plan.rule(name)            # the Rule of a Snakemake rule name ("s30_clean")
    plan.jobs                  # [Job]: every job of the window (built on first use)
    plan.jobs_of(step_name)    # the jobs of one pipeline step ("30_clean")
    plan.job_for_output(path)  # the Job writing this file (also outside the window), or None
    plan.targets()             # the files rule all asks for (selected steps, window)

    Job: rule, step, script, config, wildcards, inputs (key → path or [paths]),
         outputs (key → path), log, params_digest, options, target,
         input_files, output_files, main_output, partition, command(), run_arguments()

Snakemake re-parses the Snakefile in every job process (not with the default profile's
threads), so building the plan must stay cheap and free of side effects (the raw index
cache aside, which is written only when a raw file is new): jobs are built lazily.
"""
from __future__ import annotations

import contextlib
import functools
import re
from pathlib import Path

from .errors import UserError
from .project import Project
from .timewindow import Window, iso, parse_window

WINDOW_KEYS = ("from", "to")


def window_from_config(config: dict, config_args=None) -> Window:
    """The window of a Snakemake run, parsed once from the text the user typed.

    ``snakemake --config from=… to=…`` (by hand, or by ``drawer.py``, which passes the exact
    instants it parsed) reaches the Snakefile twice: as Snakemake's YAML-typed ``config``
    (where ``{NOW-2d}`` has become a mapping) and as the raw ``name=value`` texts
    (``workflow.config_settings.config_args``). The bounds are read from the raw texts; a
    ``--configfile`` value (not on the command line) must be a YAML string. A bad bound is
    one line naming ``from=`` / ``to=``."""
    texts = {}
    for entry in config_args or ():
        key, sep, value = str(entry).partition("=")
        if sep and key in WINDOW_KEYS:
            texts[key] = value          # the last one wins, as in Snakemake's own config
    for key in WINDOW_KEYS:
        if key in texts or config.get(key) in (None, ""):
            continue
        value = config[key]
        if not isinstance(value, str):
            raise UserError(f"{key}: {value} in a --configfile is not text (YAML read a "
                            f"{type(value).__name__}); allowed: the bound in quotes, e.g. "
                            f"{key}: '2026-01-20' or {key}: '{{NOW-2d}}'")
        texts[key] = value
    return parse_window(texts.get("from"), texts.get("to"), style="config")


def pipeline_path_from_config(config: dict) -> str:
    if config.get("pipeline"):
        return str(config["pipeline"])
    if config.get("exposure"):
        return str(Path("configs") / str(config["exposure"]) / "pipeline.json")
    raise UserError("no pipeline given; allowed: --config exposure=<EXPO> "
                    "(reads configs/<EXPO>/pipeline.json) or --config pipeline=<path>")


CONFIG_SOURCE = "Snakemake config (config/config.yaml, --config)"


def check_config(config: dict) -> None:
    """Snakemake's config against workflow/schemas/config.schema.json: with a default
    config/config.yaml, a misspelled ``--config exposur=X`` would otherwise build the DEMO."""
    from .config import validate

    validate("config", dict(config), CONFIG_SOURCE)


GROUP = "pyjama"
GROUP_AFTER_FIT = "pyjama_fitted"


class WorkflowPlan:
    """The rules of one pipeline and the files that `rule all` asks for in the window."""

    def __init__(self, config: dict, root=None, window: Window | None = None, config_args=None):
        """``config``: Snakemake's config (pipeline or exposure, until, only); the window is
        ``window`` when the caller parsed it, else :func:`window_from_config`."""
        root = Path(root or Path.cwd())
        self.root = root
        check_config(config)
        self.config = {k: v for k, v in config.items() if k not in WINDOW_KEYS}
        self.project = Project.load(pipeline_path_from_config(config), root)
        self.window: Window = window if window is not None else window_from_config(config, config_args)
        from .steps import get_step

        self.rules = []          # list of pyjama.rules.Rule
        for st in self.project.pipeline.steps:
            self.rules.extend(get_step(st.script).rules(self.project, st, self.window))
        self._by_name = {r.name: r for r in self.rules}
        self.selected = self._selected_steps(config)
        self.groups = self._groups()

    @classmethod
    def for_pipeline(cls, pipeline: str, start=None, end=None, root=None, **extra) -> "WorkflowPlan":
        """The plan of ``pipeline`` (a path relative to ``root``) for the window [start, end],
        as drawer.py run/status/dag/report all need it (bad bound or config: one line)."""
        window = parse_window(start, end)          # the one parse of the user's bounds
        config = {"pipeline": pipeline, **{k: v for k, v in extra.items() if v}}
        return cls(config, Path(root or Path.cwd()), window=window)

    @property
    def config_args(self) -> list:
        """The ``--config name=value`` texts that give Snakemake this plan: the config, and
        the window as the exact instants parsed here (``{NOW}`` is not read again)."""
        bounds = {"from": iso(self.window.start), "to": iso(self.window.end)}
        return ([f"{k}={v}" for k, v in self.config.items()]
                + [f"{k}={v}" for k, v in bounds.items() if v is not None])

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

    def rule(self, name: str):
        return self._by_name[name]

    def _groups(self) -> dict:
        """rule name → group family: ``pyjama`` for the rules before a per-device fit,
        ``pyjama_fitted`` for the fitted step and those after it, none for the fit itself
        (a 50_normalise percentile fit reads a device's first days and feeds every day:
        inside a group it would make that group both feed it and need it)."""
        groups, name = {}, GROUP
        fitted_steps = {r.step.name for r in self.rules if r.name.endswith("_fit")}
        for r in self.rules:
            if r.step.name in fitted_steps:
                name = GROUP_AFTER_FIT
            if not r.name.endswith("_fit"):
                groups[r.name] = name
        return groups

    def group_function(self, rule_name: str, workflow):
        """The Snakefile's ``group:`` of a rule: a function of the job's wildcards, asked by
        Snakemake when it builds its DAG (docs/slurm.md, "Grouped jobs").

        No group unless the run names the knob, ``--group-components pyjama=N`` (the SLURM
        profile does): local runs, dry runs and ``drawer.py status`` build no groups. With
        N, a job's group is ``<family>_<device>_<block>``: N consecutive days of one device
        (:meth:`group_name`)."""
        if rule_name not in self.groups:
            return None

        def group(wildcards):
            settings = getattr(workflow, "group_settings", None)
            n = settings.group_components.get(GROUP) if settings is not None else None
            return self.group_name(rule_name, dict(wildcards), int(n)) if n else None

        return group

    def group_name(self, rule_name: str, wildcards: dict, days_per_job: int):
        """``pyjama_valve01_3``: the group of a job when a SLURM job runs ``days_per_job``
        consecutive days of a device. A partition job of day D goes to block
        ⌊(D − first day − s) / N⌋ (never below 0), where ``s`` is how many days ahead a
        later rule reads this rule's output (30 reads D+1 of 20: s = 1 for 20 and the
        parser): so no group needs a later group, and the groups form no cycle although
        30 and 60 read their neighbouring days. A raw-file job (the parser) goes to the
        group of the earliest job reading it."""
        job = self.job(rule_name, wildcards)
        if job is None:
            return None
        if job.partition is None:
            return self._raw_groups(days_per_job).get(job.key)
        return self._partition_group(job, days_per_job)

    def _partition_group(self, job, n: int) -> str:
        device, day = job.partition
        lead = self._days_ahead.get(job.rule, 0)
        block = max(0, (self._day_index(day) - lead) // n)
        return f"{self.groups[job.rule]}_{device}_{block}"

    def _day_index(self, day: str) -> int:
        """Partitions (days, weeks or months: the exposure's period) since the plan's first."""
        from .timewindow import key_ordinal

        return key_ordinal(day) - self._first_day

    @functools.cached_property
    def _first_day(self) -> int:
        from .timewindow import key_ordinal

        days = [job.partition[1] for job in self.jobs if job.partition]
        return key_ordinal(min(days)) if days else 0

    @functools.cached_property
    def _input_producers(self) -> list:
        """[(consumer job, producer job)] over the window's jobs' inputs."""
        pairs = []
        for job in self.jobs:
            for path in job.input_files:
                producer = self.job_for_output(path)
                if producer is not None:
                    pairs.append((job, producer))
        return pairs

    @functools.cached_property
    def _days_ahead(self) -> dict:
        """rule name → the most days ahead that later rules read its output (``s``)."""
        ahead = {}
        for _ in range(len(self.rules) + 1):          # a fixpoint over the chain
            changed = False
            for consumer, producer in self._input_producers:
                if consumer.partition is None or producer.partition is None:
                    continue
                gap = self._day_index(producer.partition[1]) - self._day_index(consumer.partition[1])
                need = ahead.get(consumer.rule, 0) + max(gap, 0)
                if need > ahead.get(producer.rule, 0):
                    ahead[producer.rule], changed = need, True
            if not changed:
                break
        return ahead

    @functools.lru_cache(maxsize=4)
    def _raw_groups(self, n: int) -> dict:
        """raw-file job key → the group of the earliest grouped partition job reading it."""
        best = {}
        for consumer, producer in self._input_producers:
            if producer.partition is not None or consumer.partition is None:
                continue
            if consumer.rule not in self.groups:
                continue
            rank = (self._day_index(consumer.partition[1]), consumer.partition[0])
            if producer.key not in best or rank < best[producer.key][0]:
                best[producer.key] = (rank, self._partition_group(consumer, n))
        return {key: group for key, (_, group) in best.items()}

    def group_of(self, rule_name: str):
        """The rule's group family (``pyjama``, ``pyjama_fitted``), None for a fit rule."""
        return self.groups.get(rule_name)

    def targets(self):
        names = {st.name for st in self.selected}
        out = []
        for rule in self.rules:
            if rule.step.name in names:
                out.extend(rule.targets())
        return out

    def rule_names(self, steps=None):
        names = {st.name for st in (steps or self.selected)}
        return [rule.name for rule in self.rules if rule.step.name in names]

    @functools.cached_property
    def jobs(self) -> list:
        """Every job of the window, rule by rule in pipeline order."""
        return [job for rule in self.rules for job in rule.jobs()]

    @functools.cached_property
    def _by_wildcards(self) -> dict:
        return {(job.rule, tuple(sorted(job.wildcards.items()))): job for job in self.jobs}

    def job(self, rule_name: str, wildcards):
        """The Job of ``rule_name`` with these wildcard values (a window's job, or one
        outside the window that a target needs), or None for a rule the plan has not
        (Snakemake's ``all``)."""
        wc = {k: str(v) for k, v in dict(wildcards).items()}
        hit = self._by_wildcards.get((rule_name, tuple(sorted(wc.items()))))
        if hit is not None or rule_name not in self._by_name:
            return hit
        return self._by_name[rule_name].job(wc)

    def jobs_of(self, step_name: str) -> list:
        return [job for job in self.jobs if job.step == step_name]

    @functools.cached_property
    def _producers(self) -> dict:
        return {path: job for job in self.jobs for path in job.output_files}

    @functools.cached_property
    def _output_prefixes(self) -> tuple:
        """The fixed beginnings of the rules' output patterns (a raw file matches none)."""
        return tuple({p.split("{", 1)[0] for rule in self.rules for p in rule.outputs.values()})

    def job_for_output(self, path: str):
        """The job writing ``path`` (relative to the root): from the window's jobs, else by
        matching the rules' output patterns (Snakemake may plan jobs outside the window,
        e.g. the neighbour days of a rolling normalise). None when no rule writes it."""
        path = str(path)
        hit = self._producers.get(path)
        if hit is not None or not path.startswith(self._output_prefixes):
            return hit
        for rule in self.rules:
            for pattern in rule.outputs.values():
                m = _pattern_regex(pattern, rule.wildcard_constraints).match(path)
                if m:
                    return rule.job(m.groupdict())
        return None


@functools.lru_cache(maxsize=None)
def _pattern_regex_cached(pattern: str, constraints: tuple):
    cons = dict(constraints)
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}", pattern):
        out += re.escape(pattern[pos:m.start()]) + f"(?P<{m.group(1)}>{cons.get(m.group(1), '[^/]+')})"
        pos = m.end()
    return re.compile(out + re.escape(pattern[pos:]) + "$")


def _pattern_regex(pattern: str, constraints: dict):
    """``.../device_id={device}/day={day}/part.parquet`` → a regex with named groups."""
    return _pattern_regex_cached(pattern, tuple(sorted(constraints.items())))


_PRELOADED: dict = {}     # (root, --config texts) → the plan a caller in this process built


@contextlib.contextmanager
def preloaded(plan: WorkflowPlan):
    """While inside, a Snakefile parsed in this process (``drawer.py status`` asking
    Snakemake's API for its verdict) with this plan's root and ``--config`` texts takes this
    plan instead of building it again."""
    key = (str(plan.project.root), tuple(plan.config_args))
    _PRELOADED[key] = plan
    try:
        yield plan
    finally:
        _PRELOADED.pop(key, None)


def load_plan_or_exit(config: dict, config_args=None) -> WorkflowPlan:
    """The Snakefile's plan (``config_args``: Snakemake's raw ``--config`` texts, where the
    window is read): a bad config or bound is one line on stderr and exit 2."""
    import sys

    hit = _PRELOADED.get((str(Path.cwd().resolve()), tuple(config_args or ())))
    if hit is not None:
        return hit
    from . import alloc, workers

    try:
        workers.asked()             # a bad PYJAMA_JOB_PROCESSES: one line before any job
        # freed arrays kept for the jobs of this process (a bad PYJAMA_MALLOC_TUNING: one line)
        alloc.tune_malloc()
        plan = WorkflowPlan(config, config_args=config_args)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)
    if not plan.targets():
        print(f"PyJAMA: no partitions in the window {plan.window} for {plan.project.pipeline.path} "
              "(no raw file has data there)", file=sys.stderr)
    return plan


# Snakemake's command line limits job starts to 100 a second (--max-jobs-per-timespan,
# default 100/1s). While a limit is set, each scheduling round that had ready jobs starts a
# 1 s timer thread, and each timer brings another round (which starts another timer): with
# hundreds of ready jobs the main thread spends the run in rounds that find no free core,
# each checking the size of every ready job's inputs. Measured on a slow logger's 193 jobs
# (1 device × 150 days hourly, month partitions, 2 cores): 1,058–1,321 rounds with the
# limit, 191–192 without; 13.2–15.2 s → 11.4–11.7 s. 2 cores never start 100 jobs a second.
DEFAULT_RATE = (100, 1)


def drop_local_rate_limit(workflow) -> bool:
    """The Snakefile's ``onstart`` (after Snakemake made its scheduler, before the first
    round): in a local run, drop Snakemake's default limit of job starts (100 a second). A
    cluster run (SLURM: the limit spares its scheduler), another limit given by the user,
    or ``--nohooks`` keeps it. Returns whether it dropped it."""
    try:
        limit = workflow.scheduling_settings.max_jobs_per_timespan
        scheduler = workflow.scheduler
        if (not workflow.local_exec or limit is None or scheduler is None
                or getattr(scheduler, "job_rate_limiter", None) is None
                or (limit.max_jobs, limit.timespan) != DEFAULT_RATE):
            return False
    except AttributeError:       # not a Snakemake workflow as this module knows it: leave it
        return False
    scheduler.job_rate_limiter = None
    return True


def run_rule_job(plan: WorkflowPlan, rule_name: str, wildcards, log: str, workflow=None) -> None:
    """A Snakefile ``run:`` block: the job of ``rule_name`` for ``wildcards``, in this process.

    With --force-use-threads (set in the default profile) Snakemake runs ``run:`` blocks as
    threads of the main process, so a job costs no interpreter start and no re-import of
    pandas/pyarrow; elsewhere (SLURM, other profiles) Snakemake starts a process per job."""
    from snakemake.exceptions import WorkflowError

    from . import workers
    from .runner import run_job

    try:
        run_job(plan.rule(rule_name).job(dict(wildcards.items())), log, plan.project.root, plan.project,
                workflow, workers.computer(workflow, plan.project))
    except UserError as exc:
        raise WorkflowError(f"Error: {exc}") from None


def print_loss_lines(plan: WorkflowPlan, log=None) -> None:
    """The Snakefile's ``onsuccess``/``onerror`` handler: the lost-data lines of the
    exposure (:func:`pyjama.steps.parser.loss_warnings`, shown by
    :func:`pyjama.losses.render`) on stderr, so plain ``snakemake`` tells them too. Silent
    under ``drawer.py run``, which prints them itself. ``log``: Snakemake's log file (unused)."""
    import os
    import sys

    from . import losses
    from .steps.parser import loss_warnings

    if os.environ.get(losses.SHOWN_BY):
        return
    try:
        lines = loss_warnings(plan.project)
    except UserError:
        return      # a config error has been told already
    for line in losses.render(lines, "run"):
        print(line, file=sys.stderr)

