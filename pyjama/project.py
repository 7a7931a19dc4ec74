"""A project = a root folder (with configs/ and data/), one exposure and its pipeline.

It owns the raw index: which (device, UTC day) partitions each raw file touches. The
Snakefile needs that before any job runs (to know the targets and which parsed files
feed each (device, day)), so it is computed by parsing only the timestamps (and device
ids) of each raw file with the exposure's own parser config, and cached in
``data/<EXPO>/.pyjama/raw_index.json`` keyed by file size, mtime and parser config
digest: a raw file is scanned once, a new file costs one scan.
"""
from __future__ import annotations

import fnmatch
import json
import os
import threading
from pathlib import Path

from . import io, losses
from .pipeline import Pipeline, load_pipeline
from .errors import UserError

INDEX_VERSION = 2


class RawIndex:
    """Raw files of one parser step and the (device, day) partitions each touches."""

    def __init__(self, root: Path, st):
        self.root = Path(root)
        self.st = st
        self.raw_dir = self.root / io.stage_dir(st.exposure, st["input_stage"])
        self.cache_path = self.root / io.data_dir(st.exposure) / ".pyjama" / f"raw_index.{st.name}.json"
        every = self._build()
        # files whose name gives no device id: named in warnings, never parsed
        self.unmatched = {k: v["unmatched"] for k, v in every.items() if v.get("unmatched")}
        self.files = {k: v for k, v in every.items() if not v.get("unmatched")}

    def raw_files(self):
        if not self.raw_dir.is_dir():
            return []
        pattern = self.st["files"]
        return sorted(p.name for p in self.raw_dir.iterdir()
                      if p.is_file() and not p.name.startswith(".") and fnmatch.fnmatch(p.name, pattern))

    def _build(self) -> dict:
        from .parse import parse_bytes, read_raw_bytes

        cache = {}
        if self.cache_path.exists():
            try:
                data = json.loads(self.cache_path.read_text())
                if data.get("version") == INDEX_VERSION and data.get("parser_digest") == self.st.digest:
                    cache = data.get("files", {})
            except (OSError, ValueError):
                cache = {}
        out, changed = {}, False
        for name in self.raw_files():
            stat = (self.raw_dir / name).stat()
            hit = cache.get(name)
            if hit and hit["size"] == stat.st_size and hit["mtime_ns"] == stat.st_mtime_ns:
                out[name] = hit
                continue
            try:
                res = parse_bytes(read_raw_bytes(self.raw_dir / name), self.st.params, name, values=False)
            except UserError as exc:   # e.g. a stray file whose name carries no device id
                # recorded, not raised: the other files are processed; every run and
                # `drawer.py status` name it (steps.parser.loss_warnings)
                rel = io.stage_dir(self.st.exposure, self.st["input_stage"]) / name
                why = str(exc).removeprefix(name + ": ").split("; allowed")[0]
                out[name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "partitions": [],
                             "unmatched": losses.unmatched(str(rel), self.st.path, why, self.st["files"])}
                changed = True
                continue
            rows = res.rows
            if len(rows):
                from .parse import day_counts

                pairs = sorted(day_counts(rows["ts"], rows["device_id"]))
            else:
                pairs = []
            out[name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                         "partitions": [list(p) for p in pairs]}
            changed = True
        if changed or set(out) != set(cache):
            try:
                io.write_json(self.cache_path, {"version": INDEX_VERSION, "parser": self.st.path,
                                                "parser_digest": self.st.digest, "files": out})
            except OSError:
                pass  # a read-only data folder still works, only slower
        return out

    def partitions(self):
        return sorted(self._by_partition())

    def files_for(self, device: str, day: str):
        return self._by_partition().get((device, day), [])

    def batches(self) -> dict:
        """Batch label → its raw file names (sorted), when the exposure's partition is a week
        or a month: one parser job parses the files of one batch, the files whose first
        (device, day) falls in one (device, period): label ``<device>_<period>``
        (``valve01_2026-01``). A file with no readable time is a batch of its own,
        ``untimed_<file name>``. With day partitions: None (a parser job per raw file)."""
        if self.st.partition == "day":
            return None
        if getattr(self, "_batches", None) is None:
            from .timewindow import period_key

            out: dict = {}
            for name in sorted(self.files):
                parts = self.files[name]["partitions"]
                if parts:
                    dev, day = min(tuple(p) for p in parts)
                    label = f"{dev}_{period_key(day, self.st.partition)}"
                else:
                    label = f"untimed_{name}"
                out.setdefault(label, []).append(name)
            self._batch_of = {n: b for b, names in out.items() for n in names}
            self._batches = out
        return self._batches

    def unit_of(self, name: str) -> str:
        """The parser job that parses raw file ``name``: its batch label (week or month
        partitions) or the file name itself (day partitions)."""
        if self.batches() is None:
            return name
        return self._batch_of[name]

    def _by_partition(self) -> dict:
        """(device, day) → raw file names, sorted (built once: the DAG asks per partition)."""
        if getattr(self, "_inverted", None) is None:
            inv: dict = {}
            for name in sorted(self.files):
                for dev, day in self.files[name]["partitions"]:
                    inv.setdefault((dev, day), []).append(name)
            self._inverted = inv
        return self._inverted


class Project:
    """Root folder + exposure + pipeline; the context every step runs in."""

    def __init__(self, root, pipeline: Pipeline):
        self.root = Path(root).resolve()
        self.pipeline = pipeline
        self.exposure = pipeline.exposure
        self._indexes: dict = {}

    @classmethod
    def load(cls, pipeline_path, root=None) -> "Project":
        root = Path(root or Path.cwd())
        return cls(root, load_pipeline(pipeline_path, root))

    @classmethod
    def for_exposure(cls, exposure: str, root=None) -> "Project":
        """The project of an exposure, from its ``configs/<EXPO>/pipeline.json``."""
        root = Path(root or Path.cwd())
        path = Path("configs") / exposure / "pipeline.json"
        if not (root / path).exists():
            raise UserError(f"{path}: file not found; every exposure needs one "
                            f"(./manager.sh create {exposure} makes it)")
        # Workflow jobs run as threads of one Snakemake process: each asks for the project
        # again. Re-validating every config and re-checking every raw file per job costs
        # ~20 ms on a year of files, so the project is kept while nothing it was built
        # from has changed (the pipeline, its configs, the raw folders' listings).
        key = (str(root.resolve()), str(path))
        with _MEMO_LOCK:
            hit = _MEMO.get(key)
        if hit is not None and hit[0] == _stamp(hit[1], root):
            return hit[1]
        project = cls.load(path, root)
        with _MEMO_LOCK:
            _MEMO[key] = (_stamp(project, root), project)
        return project

    def parser_steps(self):
        from .steps import RawFileStep, get_step

        return [st for st in self.pipeline.steps if isinstance(get_step(st.script), RawFileStep)]

    def raw_index(self, st) -> RawIndex:
        if st.name not in self._indexes:
            self._indexes[st.name] = RawIndex(self.root, st)
        return self._indexes[st.name]

    def partitions(self, stages=None):
        """Every (device, day) any raw file touches, sorted. With ``stages`` (the input
        stages of a step): only those of the parser steps its chain starts from, so with
        two parser chains in one pipeline (a logger and a barometer file) each chain builds
        only its own devices' partitions."""
        out = set()
        for st in (self.parser_steps() if stages is None else self.chain_parsers(stages)):
            out.update(self.raw_index(st).partitions())
        return sorted(out)

    def chain_parsers(self, stages) -> list:
        """The parser steps whose output feeds ``stages`` (following producers upstream)."""
        from .steps import RawFileStep, get_step

        found, seen, todo = [], set(), list(stages)
        while todo:
            stage = todo.pop()
            st = self.pipeline.producer_of(stage)
            if st is None or st.name in seen:
                continue
            seen.add(st.name)
            step = get_step(st.script)
            if isinstance(step, RawFileStep):
                found.append(st)
            else:
                todo.extend(step.input_stages(st))
        if not found and not any(self.pipeline.producer_of(s) for s in stages):
            return self.parser_steps()   # a stage no step writes (e.g. run alone): all
        return sorted(found, key=lambda st: st.name)

    def parsed_inputs(self, stage: str, device: str, day: str):
        """Parsed files (stage written by a parser step) that hold rows of (device, day)."""
        st = self.pipeline.producer_of(stage)
        if st is None:
            raise UserError(f"stage {stage!r} is not written by any step of {self.pipeline.path}")
        idx = self.raw_index(st)
        names = idx.files_for(device, day)
        if idx.batches() is None:
            return [io.raw_partition_file(st.exposure, stage, name) for name in names]
        # each batch once, in the order of its first file (files by name within a batch)
        units = list(dict.fromkeys(idx.unit_of(n) for n in names))
        return [io.raw_partition_file(st.exposure, stage, u, key="batch") for u in units]


_MEMO: dict = {}
_MEMO_LOCK = threading.Lock()


def _stamp(project: "Project", root: Path) -> tuple:
    """What a loaded project depends on: mtimes of its pipeline and config files, and the
    size and mtime of every raw file (one scandir per raw folder: cheap)."""
    out = []
    for p in [project.pipeline.path] + [st.path for st in project.pipeline.steps]:
        try:
            out.append((p, (root / p).stat().st_mtime_ns))
        except FileNotFoundError:
            out.append((p, None))
    for st in project.parser_steps():
        folder = root / io.stage_dir(st.exposure, st["input_stage"])
        try:
            with os.scandir(folder) as it:
                out.extend(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in it))
        except FileNotFoundError:
            out.append((str(folder), None))
    return tuple(out)

