"""The step registry and the three kinds of step.

A step class registers itself where it is defined: a subclass that sets ``script``
(``"30_clean.py"``) is in :data:`REGISTRY`. The modules of this package are found by that
line (``script = "NN_name.py"``, read from their source) and imported only when their step
is asked for, so ``pyjama.py`` starts without pandas. A new step is its pure module, its
class in a module here and its schema ``workflow/schemas/<NN_name>.schema.json`` (the
config kind is the script's stem).

The three kinds, each with one path through :mod:`pyjama.runner`:

- :class:`PartitionStep`: one (device, UTC day) in → one (device, day) per output. It
  declares its input files (:meth:`~PartitionStep.input_files`, with a reader per input
  in ``readers`` where the default :func:`pyjama.io.read_tidy` does not fit) and its output
  tables (:meth:`~PartitionStep.output_tables`: stage and Arrow schema, None = the tidy
  table), and implements only :meth:`~PartitionStep.compute`, a pure function;
- :class:`RawFileStep`: one raw file in → its parsed rows (the parser);
- :class:`ExternalStep`: writes outside the data tree (the 80/81 database imports) and
  implements :meth:`~ExternalStep.run` itself.

Options of one step on the command line (``--fit``, ``--mode``, ``--dry-run``) are
declared by the step (``options``) and added to ``pyjama.py run`` from the registry.
"""
from __future__ import annotations

import functools

import importlib
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

from .. import io
from ..errors import UserError
from ..rules import Rule
from ..timewindow import PERIOD_RE, day_bounds, key_days, period_key, shift_day

REGISTRY: dict = {}        # script name → Step subclass (filled where each is defined)
_INSTANCES: dict = {}
_WHERE: dict = {}          # script name → module defining it (from the sources, no import)
_SCRIPT_LINE = re.compile(r'^ {4}script = "([^"]+)"', re.M)

DEVICE_RE = r"[^/=]+"
DAY_RE = PERIOD_RE["day"]


@dataclass(frozen=True)
class Option:
    """A command-line option of one step: ``--fit`` (a switch) or ``--mode auto`` (a choice)."""

    flag: str                       # "--fit"
    help: str
    choices: tuple = ()             # empty: a switch (store_true)
    default: object = None
    short: str = ""                 # e.g. "-n" (the same letter drawer.py uses)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Output:
    """One output table of a partition step: its stage and its Arrow schema (None: tidy)."""

    stage: str
    schema: object = None


@dataclass(frozen=True)
class Selection:
    """What ``pyjama.py run`` (or a workflow job) asked for: a window, devices, one day or
    one raw file."""

    window: object
    devices: tuple = ()
    day: str | None = None
    raw: str | None = None


def _where() -> dict:
    if not _WHERE:
        for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
            text = (Path(__path__[0]) / f"{mod}.py").read_text(encoding="utf-8")
            for script in _SCRIPT_LINE.findall(text):
                _WHERE[script] = f"{__name__}.{mod}"
    return _WHERE


def known_scripts() -> list:
    return sorted(set(_where()) | set(REGISTRY))


def get_step(script: str) -> "Step":
    """The step object for ``script`` (``20_split.py``, ``20_split`` or ``scripts/20_split.py``)."""
    name = Path(str(script)).name
    if not name.endswith(".py"):
        name += ".py"
    if name not in REGISTRY and name in _where():
        importlib.import_module(_where()[name])
    if name not in REGISTRY:
        raise UserError(f"unknown script {script!r}; allowed: {', '.join(known_scripts())}")
    if name not in _INSTANCES:
        _INSTANCES[name] = REGISTRY[name]()
    return _INSTANCES[name]


def all_options(scripts=None) -> list:
    """(option, [scripts]) for every option of ``scripts`` (default: every step), one entry
    per flag."""
    out: dict = {}
    for script in (known_scripts() if scripts is None else scripts):
        for opt in type(get_step(script)).options:
            out.setdefault(opt.flag, (opt, []))[1].append(script)
    return list(out.values())


class Step:
    """What every step has: a script name, a config kind, its stages and its rules."""

    script = ""
    summary = ""
    options: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("script"):
            if cls.script in REGISTRY and REGISTRY[cls.script].__qualname__ != cls.__qualname__:
                raise TypeError(f"two steps register {cls.script}: {REGISTRY[cls.script]} and {cls}")
            REGISTRY[cls.script] = cls

    @property
    def kind(self) -> str:
        """The config kind: ``workflow/schemas/<kind>.schema.json``."""
        return self.script.removesuffix(".py")

    # ---- config
    def check_config(self, params: dict, source: str) -> None:
        """Semantic checks the schema cannot express (raise UserError with the JSON path)."""

    def input_stages(self, st) -> list:
        return [st["input_stage"]]

    def output_stages(self, st) -> dict:
        """Output key → stage it writes (the stages this step owns)."""
        return {"data": st["output_stage"]}

    # ---- the DAG
    def rule_name(self, st) -> str:
        return "s" + "".join(c if c.isalnum() else "_" for c in st.name)

    def rules(self, project, st, window) -> list:
        """The workflow rule(s) of this step and their jobs in ``window``."""
        return []

    def partition_rule(self, project, st, window, outputs: dict, input_files=None) -> Rule:
        """A rule with one job per (device, day) of the raw index in ``window`` — per
        (device, week or month) when the exposure's ``$.partition`` says so (the wildcard
        ``day`` then holds the period's key, :mod:`pyjama.timewindow`).
        ``input_files``: callable(device, day) → inputs, or None for none."""
        return Rule(
            name=self.rule_name(st), step=st, outputs=outputs,
            log=f"logs/{st.exposure}/{st.name}/{{device}}/{{day}}.log",
            wildcard_sets=[{"device": d, "day": key} for d, key in self.job_partitions(project, st)
                           if window.contains_day(key)],
            input_function=input_files,
            wildcard_constraints={"device": DEVICE_RE, "day": PERIOD_RE[st.partition]},
        )

    def job_partitions(self, project, st) -> list:
        """Sorted (device, key) of this step's jobs: the (device, day) pairs of the raw index of
        its chain, or their weeks or months."""
        pairs = project.partitions(self.input_stages(st))
        if st.partition == "day":
            return pairs
        return sorted({(d, period_key(day, st.partition)) for d, day in pairs})

    def days_of(self, project, st, device: str, key: str) -> list:
        """The days a job of ``key`` computes: ``[key]`` for a day; for a week or a month,
        its days the raw index of the step's chain has data for (as many as the day jobs
        there would be)."""
        if st.partition == "day" or len(key) == 10:
            return [key]
        known = self._known_days(project, st)
        return [d for d in key_days(key) if (device, d) in known]

    def direct_partitions(self, project, st, sel: Selection) -> list:
        """Partitions for ``pyjama.py run`` alone: those present in the input stage."""
        if sel.day:
            if not sel.devices:
                raise UserError("--day needs --device")
            return [(d, period_key(sel.day, st.partition)) for d in sel.devices]
        found = io.list_partitions(st.exposure, st["input_stage"], project.root)
        return [(d, day) for d, day in found
                if sel.window.contains_day(day) and (not sel.devices or d in sel.devices)]


class PartitionStep(Step):
    """One (device, day) of the input stage → one (device, day) of each output stage."""

    readers: dict = {}     # input key → reader(path, device, day); default io.read_tidy
    # True: compute(frames, st, device, days) takes a week's or a month's days at once (a
    # list, their rows in day order in one frame per input) and gives what the days one by
    # one give, concatenated; for steps with one input per day, read whole, and no $.keep
    whole_period = False

    def one_pass(self, project, st, device: str, key: str) -> bool:
        """Whether a whole_period step computes this week's or month's job in one pass (True)
        or day by day (the same values). Default: one pass."""
        return True

    def input_files(self, project, st, device: str, day: str) -> dict:
        """Input files of one partition (key → path or list of paths, relative)."""
        return {"data": io.partition_file(st.exposure, st["input_stage"], device, day, period=st.partition)}

    def adjacent_inputs(self, project, st, device: str, day: str) -> dict:
        """``{"previous": [D−1], "next": [D+1]}``: the input-stage files of the days before
        and after ``day``, each list empty when the plan has no such partition (the raw
        index of the step's chain says which (device, day) exist; nothing is globbed at run
        time). A step that reads its neighbours' edges (30 spikes at midnight, 60 velocity)
        adds these to :meth:`input_files` with an edge reader (:func:`edge_reader`)."""
        known = self._known_days(project, st)
        out = {}
        for key, n in (("previous", -1), ("next", 1)):
            other = shift_day(day, n)
            out[key] = ([io.partition_file(st.exposure, st["input_stage"], device, other, period=st.partition)]
                        if (device, other) in known else [])
        return out

    def _known_days(self, project, st) -> set:
        cache = getattr(self, "_known_cache", None)
        key = (id(project), st.name)
        if cache is None or cache[0] != key or cache[1] is not project:
            cache = (key, project, set(project.partitions(self.input_stages(st))))
            self._known_cache = cache
        return cache[2]

    def output_tables(self, st) -> dict:
        """Output key → :class:`Output`. The first is the main output: its footer holds the
        ledger."""
        return {"data": Output(st["output_stage"])}

    def output_stages(self, st) -> dict:
        return {k: o.stage for k, o in self.output_tables(st).items()}

    def output_files(self, st, device="{device}", day="{day}") -> dict:
        """Output key → file of the partition (``day``: the job's key or a wildcard)."""
        return {k: io.partition_file(st.exposure, o.stage, device, day, period=st.partition)
                for k, o in self.output_tables(st).items()}

    def rules(self, project, st, window) -> list:
        rule = self.partition_rule(project, st, window, self.output_files(st))
        if type(self).input_files is PartitionStep.input_files:
            # plain patterns of the wildcards: Snakemake resolves them without calling a
            # function per job, which matters for a year's DAG
            rule.input_patterns = self.input_files(project, st, "{device}", "{day}")
        else:
            rule.input_function = lambda device, day: self.job_input_files(project, st, device, day)
        return [rule]

    def job_input_files(self, project, st, device: str, key: str) -> dict:
        """The input files of the job of ``key``: :meth:`input_files` of its day, or the
        union over the days of a week or a month (each file once, in order)."""
        days = self.days_of(project, st, device, key)
        if len(days) == 1 and days[0] == key:
            return self.input_files(project, st, device, key)
        out: dict = {}
        for day in days:
            for k, rel in self.input_files(project, st, device, day).items():
                have = out.setdefault(k, [])
                for r in (rel if isinstance(rel, (list, tuple)) else [rel]):
                    if r not in have:
                        have.append(r)
        return out

    def prepare(self, project, st, sel: Selection, todo: list, options: dict, quiet: bool):
        """Called before the partitions run; a step may do per-device work first (the
        normalise fit) or, for one of its options, the whole run: then it returns the
        ledger entries and no partition runs. Default: nothing (None)."""
        return None

    def extra_meta(self, frames: dict) -> dict:
        """Footer metadata beyond the provenance (e.g. the digest of a fit file)."""
        return {}

    def key_extra(self, project, st) -> dict:
        """What else than its config, its code and its inputs' data a partition's result
        depends on (JSON-able; part of the key that lets an unchanged job keep its outputs,
        :mod:`pyjama.keep`). Default: nothing."""
        return {}

    def compute(self, frames: dict, st, device: str, day: str):
        """Pure: input frames by key → (output frames by key, ledger counts)."""
        raise NotImplementedError

    # ---- $.keep: which input series the main output carries on (steps whose schema sets x-keep)
    KEEP_REASON = "not passed on: not matched by $.keep"

    def made_series(self, st, input_names: set, output_names: set) -> set:
        """The main output's series this step makes (written whatever ``$.keep`` says); the
        others are input series passed on. Default: the names the input does not hold."""
        return output_names - input_names

    def pass_on(self, st, frames: dict, tables: dict, counts: dict):
        """Apply ``$.keep`` to the main output (``tables["data"]``, a tidy frame): rows of an
        input series that ``keep`` does not match (re.search) are left out, and counted in
        the ledger: ``rows_out`` (the input rows passed on) and ``rows_written`` lose them,
        ``rejected`` names them. ``".*"`` (or no key) leaves everything as computed."""
        pattern = st.get("keep", ".*")
        if pattern == ".*" or "data" not in tables or not len(tables["data"]):
            return tables, counts
        from .. import tidy

        out = tables["data"]
        in_names = set(tidy.present_sensors(frames["data"]))
        cats = [str(c) for c in out["sensor"].cat.categories]
        made = self.made_series(st, in_names, set(cats))
        rx = re.compile(pattern)
        drop_cat = [c in in_names and c not in made and not rx.search(c) for c in cats]
        if not any(drop_cat):
            return tables, counts
        import numpy as np

        codes = out["sensor"].cat.codes.to_numpy()
        drop = np.asarray(drop_cat + [False])[codes]          # code -1 (none) → the last: kept
        n = int(drop.sum())
        if not n:
            return tables, counts
        kept = out.loc[~drop].reset_index(drop=True)
        kept["sensor"] = tidy.remove_unused(kept["sensor"])
        kept["domain"] = tidy.remove_unused(kept["domain"])
        counts = dict(counts)
        counts["rows_out"] = int(counts["rows_out"]) - n
        rejected = dict(counts.get("rejected") or {})
        rejected[self.KEEP_REASON] = rejected.get(self.KEEP_REASON, 0) + n
        counts["rejected"] = rejected
        if "rows_written" in counts:
            counts["rows_written"] = int(counts["rows_written"]) - n
        return {**tables, "data": kept}, counts


def edge_bounds(day: str, side: str, length: str) -> tuple:
    """[lo, hi) of a neighbouring day's rows within ``length`` of ``day`` (datetimes): side
    "previous" [day start − length, day start), "next" [day end, day end + length)."""
    start, end = day_bounds(day)
    width = _duration(length)
    return (start - width, start) if side == "previous" else (end, end + width)


@functools.lru_cache(maxsize=16)
def _duration(length: str):
    import pandas as pd

    return pd.Timedelta(length).to_pytimedelta()


def edge_table(path, day: str, lo, hi):
    """The arrow rows of partition file ``path`` with ts in [lo, hi): filtered while
    reading, or (a week's or a month's file) cut from the table read once per job."""
    if io.multi_day(path):
        return io.read_day(path, day, lo, hi)
    import pyarrow as pa

    unit = pa.timestamp("us", tz="UTC")
    return io.read_parquet(path, filters=[("ts", ">=", pa.scalar(lo, unit)), ("ts", "<", pa.scalar(hi, unit))])


def edge_reader(side: str, length: str, wrap=None):
    """A reader (path, device, day) → the rows of a neighbouring day's file within
    ``length`` of ``day`` (:func:`edge_bounds`, :func:`edge_table`), as a tidy frame or, with
    ``wrap``, as ``wrap(table, device)`` (60_behaviour takes the arrow table as it is)."""
    def read(path, device, day):
        from .. import tidy

        table = edge_table(path, day, *edge_bounds(day, side, length))
        return wrap(table, device) if wrap is not None else tidy.from_arrow(table, device)

    read.__name__ = f"read_{side}_edge"
    return read


class RawFileStep(Step):
    """Raw files → their parsed rows. A job parses one raw file
    (``<stage>/raw=<file name>/part.parquet``) or, when the exposure's partition is a week or
    a month, one batch of raw files (``<stage>/batch=<device>_<period>/part.parquet``: the
    files whose first day falls in that device's period, :meth:`pyjama.project.RawIndex.batches`).
    The wildcard is ``raw`` or ``batch``: :meth:`unit_key`."""

    def unit_key(self, project, st) -> str:
        """``"raw"`` (a job per raw file: day partitions) or ``"batch"`` (week or month)."""
        return "raw" if project.raw_index(st).batches() is None else "batch"

    def output_files(self, st, raw="{raw}", key="raw") -> dict:
        return {"data": io.raw_partition_file(st.exposure, st["output_stage"], raw, key=key)}

    def raw_path(self, st, raw) -> str:
        return str(io.stage_dir(st.exposure, st["input_stage"]) / raw)

    def rules(self, project, st, window):
        key = self.unit_key(project, st)
        rule = Rule(
            name=self.rule_name(st), step=st, outputs=self.output_files(st, "{" + key + "}", key),
            log=f"logs/{st.exposure}/{st.name}/{{{key}}}.log",
            wildcard_sets=[{key: u} for u in self.selected_units(project, st, window)],
            wildcard_constraints={key: r"[^/]+"},
        )
        if key == "raw":
            rule.input_patterns = {"raw": self.raw_path(st, "{raw}")}
        else:
            rule.input_function = lambda batch: {"raw": [self.raw_path(st, n) for n in self.batch_files(project, st, batch)]}
        return [rule]

    def batch_files(self, project, st, batch: str) -> list:
        """The raw file names of ``batch`` (week or month partitions), or a one-line error."""
        names = (project.raw_index(st).batches() or {}).get(batch)
        if names is None:
            raise UserError(f"{st.path}: batch {batch!r} holds no raw file of "
                            f"{io.stage_dir(st.exposure, st['input_stage'])}; allowed: a batch "
                            "drawer.py status lists (<device>_<period> of a file's first day)")
        return names

    def selected_units(self, project, st, window, devices=()) -> list:
        """The jobs' wildcard values in ``window``: raw file names, or batch labels (a batch
        runs when any of its files is selected)."""
        names = self.selected_raw(project, st, window, devices)
        idx = project.raw_index(st)
        if idx.batches() is None:
            return names
        return sorted(dict.fromkeys(idx.unit_of(n) for n in names))

    def selected_raw(self, project, st, window, devices=()) -> list:
        raise NotImplementedError

    def run_unit(self, project, st, unit: str) -> dict:
        """Run one job's work: a raw file (day partitions) or a batch; the ledger entry."""
        if self.unit_key(project, st) == "raw":
            return self.run_raw(project, st, unit)
        return self.run_batch(project, st, unit)

    def run_raw(self, project, st, raw: str) -> dict:
        """Parse one raw file, write its outputs; return the ledger entry."""
        raise NotImplementedError

    def run_batch(self, project, st, batch: str) -> dict:
        """Parse the raw files of one batch, write its outputs; return the ledger entry."""
        raise NotImplementedError


class ExternalStep(Step):
    """A step whose work lands outside the data tree (a database): it runs itself."""

    def run(self, project, st, sel: Selection, options: dict, quiet: bool) -> list:
        raise NotImplementedError
