"""``drawer.py status``: a step × day board of what is done, missing, stale, running or failed.

The verdict per job is Snakemake's own (:mod:`pyjama.verdict`): the workflow's DAG is built
in this process through Snakemake's API with the settings ``drawer.py run`` uses, and a job
is not done exactly when ``drawer.py run --dry-run`` would run it; the reasons are
Snakemake's (``output files have to be generated``, ``updated input files``, ``input files
updated by another job``, ``params have changed since last execution`` — a step config
edit —, ``incomplete output files``, …). Snakemake's answer is cached, keyed by the mtimes of
every file of its DAG (see :mod:`pyjama.verdict`), so a second status costs milliseconds.

On top of that verdict, the board says what Snakemake cannot:

- ``running``  the job's outputs carry Snakemake's incomplete marker
  (``.snakemake/incomplete``) and a live run holds them: ``drawer.py run``'s lock on the
  exposure (:mod:`pyjama.runlock`) is held, or Snakemake's ``.snakemake/locks`` list them;
- ``failed``   its log ends in an error (``Error: ...`` or a Python traceback) written after
  its outputs (a failed job's outputs are removed by Snakemake);
- ``missing``  an output does not exist (never built, or deleted);
- ``stale``    outputs exist and Snakemake would rebuild them (the reasons say why; an
  incomplete output left by a killed run is ``stale: incomplete output files``).

Rows, rejects and flags come from the ledgers and parquet footers. A cell takes the worst
state of its jobs: failed > running > missing > stale > done.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__, io
from .losses import SKIPPED
from .timewindow import iso, iso_seconds

STATES = ("done", "stale", "missing", "running", "failed")   # in order of severity
SEVERITY = {s: i for i, s in enumerate(STATES)}

# Snakemake's reason names (snakemake.jobs.Reason.get_names) in the board's words
REASON_WORDS = {
    "output files have to be generated": "output missing",
    "incomplete output files": "incomplete output (interrupted run)",
    "updated input files": "input newer",
    "input files updated by another job": "upstream job will run",
    "set of input files has changed since last execution": "set of inputs changed",
    "code has changed since last execution": "code changed",
    "params have changed since last execution": "config changed",
    "software environment definition has changed since last execution": "software environment changed",
}


# ---------------------------------------------------------------- the model

@dataclass
class Job:
    """One Snakemake job: a rule with concrete wildcards, its files and its state."""

    step: str                      # the step's name in the pipeline (its config file stem)
    rule: str
    wildcards: dict
    outputs: dict                  # key → path (relative to the project root)
    inputs: list
    log: str
    state: str = "done"
    reasons: list = field(default_factory=list)
    error: str = ""                # the error line of a failed job's log
    ledger: dict | None = None


@dataclass
class Cell:
    """One (step, device, day) square of the board."""

    step: str
    device: str
    day: str
    state: str = "done"
    reasons: list = field(default_factory=list)
    rows_in: int | None = None
    rows_out: int | None = None
    rejected: dict = field(default_factory=dict)
    flags: dict = field(default_factory=dict)
    logs: list = field(default_factory=list)     # log paths of failed jobs
    error: str = ""

    @property
    def flagged_share(self):
        return flagged_share(self.flags)


def flagged_share(flags: dict):
    """Share of rows whose quality_flag is not OK [0–1], from ledger ``flags`` counts
    (``{"OK": n, "SPIKE": m, ...}``); None when the ledger has no counts."""
    if not flags:
        return None
    total = sum(int(v) for v in flags.values())
    if total == 0:
        return None
    ok = int(flags.get("OK", flags.get("0", 0)))
    return (total - ok) / total


class _Files:
    """Cached stat of files (each is an output of one job and the input of others)."""

    def __init__(self, root: Path, seen=None):
        self.root = root
        self._root_s = str(root)
        self._mtime: dict = {p: (t[0] if t else None) for p, t in (seen or {}).items()}

    def mtime(self, rel: str):
        """mtime in ns, or None when the file does not exist."""
        if rel not in self._mtime:
            try:
                self._mtime[rel] = os.stat(os.path.join(self._root_s, rel)).st_mtime_ns
            except OSError:
                self._mtime[rel] = None
        return self._mtime[rel]


def incomplete_outputs(root: Path) -> set:
    """Output paths Snakemake marked incomplete (a job started and never finished)."""
    from .verdict import marker_paths

    return set(marker_paths(Path(root) / ".snakemake" / "incomplete"))


class Ledgers:
    """The ledgers of the jobs' main outputs, kept in ``data/<EXPO>/.pyjama/ledgers.json``
    by path, mtime and size: a year's board reads only the footers that changed."""

    def __init__(self, root: Path, exposure: str):
        self.root = str(root)
        self.path = Path(root) / io.data_dir(exposure) / ".pyjama" / "ledgers.json"
        try:
            self.known = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.seen: dict = {}

    def get(self, rel: str):
        try:
            st = os.stat(os.path.join(self.root, rel))
        except OSError:
            return None
        hit = self.known.get(rel)
        if hit and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
            self.seen[rel] = hit
            return hit[2]
        try:
            led = io.read_ledger(os.path.join(self.root, rel))
        except Exception:  # noqa: BLE001 - an unreadable output is Snakemake's to judge
            led = None
        self.seen[rel] = [st.st_mtime_ns, st.st_size, led]
        return led

    def save(self):
        if self.seen != self.known:
            try:
                io.write_json(self.path, self.seen)
            except OSError:
                pass


def log_error(path: Path) -> str:
    """The error line of a job log ("" when the log holds no error).

    ``pyjama.py run`` ends a failed job with one ``Error: ...`` line; an unexpected crash
    ends with a traceback, whose last unindented line is ``SomeError: message``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size == 0:
                return ""
            fh.seek(max(0, size - 8192))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    found, in_traceback = "", False
    for line in tail.splitlines():
        if line.startswith("Error: ") or line.startswith("Error "):
            found, in_traceback = line.strip(), False
        elif line.startswith("Traceback (most recent call last)"):
            found, in_traceback = "Python traceback", True
        elif in_traceback and line.strip() and not line[:1].isspace():
            found, in_traceback = line.strip(), False
    return found


# ---------------------------------------------------------------- building the board

class Board:
    """Jobs and cells of one pipeline in one window."""

    def __init__(self, plan, root: Path, use_cache: bool = True):
        self.plan = plan
        self.use_cache = use_cache
        self._root_s = str(root)
        self.root = Path(root)
        self.project = plan.project
        self.steps = [st.name for st in self.project.pipeline.steps]
        self.jobs: list = []
        self.cells: dict = {}        # (step, device, day) → Cell
        self.other: list = []        # jobs of no (device, day): per-exposure outputs
        self._incomplete = incomplete_outputs(self.root)
        self._build()

    def _build(self):
        from . import runlock, verdict

        steps = {rule.name: rule.step for rule in self.plan.rules}
        self.verdicts, self.how, stats = verdict.verdicts(self.root, self.plan, use_cache=self.use_cache)
        self.cached = self.how == "cache"
        self._files = _Files(self.root, stats)
        self._ledgers = Ledgers(self.root, self.project.exposure)
        self._live = runlock.holder(self.root, self.project.exposure)
        self._locked = runlock.locked_files(self.root)
        for planned, v in self.verdicts.items():      # planned: the plan's rules.Job
            st = steps[planned.rule]
            job = Job(step=planned.step, rule=planned.rule, wildcards=dict(planned.wildcards),
                      outputs=dict(planned.outputs), inputs=planned.input_files, log=planned.log)
            self._judge(st, job, v)
            self.jobs.append(job)
            self._place(st, job)
        self._ledgers.save()
        order = {rule.name: i for i, rule in enumerate(self.plan.rules)}
        self.jobs.sort(key=lambda j: (order.get(j.rule, 0), sorted(j.wildcards.items())))

    def _judge(self, st, job: Job, v: dict):
        self._read_ledger(job)
        if not v["needrun"]:
            job.state = "done"
            return
        files = self._files
        outs = list(job.outputs.values())
        mtimes = [files.mtime(p) for p in outs]
        missing = [p for p, t in zip(outs, mtimes) if t is None]
        job.reasons = [REASON_WORDS.get(r, r) for r in v["reasons"]]
        incomplete = [p for p in outs if p in self._incomplete]
        if incomplete and (self._live is not None or any(p in self._locked for p in incomplete)):
            job.state = "running"
            pid = (self._live or {}).get("pid")
            job.error = f"running (drawer.py run pid {pid})" if pid else "running"
            return
        log_t = files.mtime(job.log)
        err = log_error(self.root / job.log) if log_t is not None else ""
        present = [t for t in mtimes if t is not None]
        if err and not incomplete and (missing or log_t >= max(present)):
            job.state, job.error = "failed", err
            return
        job.state = "missing" if missing else "stale"

    def _read_ledger(self, job: Job):
        # the ledger is in the main output's footer (or the receipt of an import)
        job.ledger = self._ledgers.get(next(iter(job.outputs.values())))

    def _cell_keys(self, st, job: Job):
        wc = job.wildcards
        if "device" in wc and "day" in wc:
            return [(wc["device"], wc["day"])]
        if "raw" in wc or "batch" in wc:
            idx = self.project.raw_index(st)
            names = [wc["raw"]] if "raw" in wc else (idx.batches() or {}).get(wc["batch"], [])
            parts = [p for n in names for p in idx.files.get(n, {}).get("partitions", [])]
            if st.partition != "day":     # a week's or a month's column
                from .timewindow import period_key

                return sorted({(p[0], period_key(p[1], st.partition)) for p in parts
                               if self.plan.window.contains_day(p[1])})
            return [tuple(p) for p in parts if self.plan.window.contains_day(p[1])]
        return []

    def _place(self, st, job: Job):
        keys = self._cell_keys(st, job)
        if not keys:
            self.other.append(job)
            return
        for dev, day in keys:
            cell = self.cells.setdefault((job.step, dev, day), Cell(job.step, dev, day))
            if SEVERITY[job.state] > SEVERITY[cell.state]:
                cell.state = job.state
            for r in job.reasons:
                if r not in cell.reasons:
                    cell.reasons.append(r)
            if job.state == "failed":
                cell.logs.append(job.log)
                cell.error = cell.error or job.error
            _add_ledger(cell, job.ledger, dev, day)

    # -- views
    def devices(self):
        return sorted({d for _s, d, _day in self.cells})

    def days(self, device=None):
        return sorted({day for _s, d, day in self.cells if device is None or d == device})

    def step_summary(self):
        """Per step: job counts by state, rows and rejects summed over its jobs' ledgers."""
        out = []
        for name in self.steps:
            jobs = [j for j in self.jobs if j.step == name]
            s = {"step": name, "jobs": len(jobs), **{k: 0 for k in STATES},
                 "rows_in": 0, "rows_out": 0, "rejected": {}, "flags": {}, "unit": "rows"}
            for j in jobs:
                s[j.state] += 1
                led = j.ledger
                if not led:
                    continue
                s["rows_in"] += int(led.get("rows_in", 0))
                s["rows_out"] += io.ledger_rows_written(led)
                if led.get("unit"):
                    s["unit"] = led["unit"]
                for k, v in (led.get("rejected") or {}).items():
                    s["rejected"][k] = s["rejected"].get(k, 0) + int(v)
                for k, v in _flag_counts(led).items():
                    s["flags"][k] = s["flags"].get(k, 0) + int(v)
                if "cells_expected" in led:      # a grid step (40): cells expected vs written
                    for k, key in (("cells_expected", "cells_expected"), ("cells_missing", "missing"),
                                   ("cells_not_stored", "cells_not_stored")):
                        s[k] = s.get(k, 0) + int(led.get(key, 0))
            s["flagged_share"] = flagged_share(s["flags"])
            out.append(s)
        return out

    def attention(self):
        """Jobs that are not done, worst first, in pipeline order."""
        order = {n: i for i, n in enumerate(self.steps)}
        bad = [j for j in self.jobs if j.state != "done"]
        return sorted(bad, key=lambda j: (-SEVERITY[j.state], order[j.step],
                                          sorted(j.wildcards.items())))

    def to_json(self) -> dict:
        w = self.plan.window
        return {
            "exposure": self.project.exposure,
            "pipeline": self.project.pipeline.path,
            "window": {"from": iso(w.start), "to": iso(w.end)},
            "code_version": __version__,
            "verdict": self.how,      # Snakemake's verdict: "cache", "partial" (touched jobs) or "full"
            "steps": self.steps,
            "devices": self.devices(),
            "cells": [dict(asdict(c), flagged_share=c.flagged_share)
                      for c in sorted(self.cells.values(), key=self._cell_order)],
            "jobs": [{"step": j.step, "rule": j.rule, "wildcards": j.wildcards, "state": j.state,
                      "reasons": j.reasons, "error": j.error, "log": j.log,
                      "outputs": sorted(j.outputs.values())}
                     for j in self.jobs],
            "summary": self.step_summary(),
            "totals": {s: sum(1 for j in self.jobs if j.state == s) for s in STATES},
        }

    def _cell_order(self, c):
        return (c.device, c.day, self.steps.index(c.step))


def _flag_counts(led: dict) -> dict:
    f = led.get("flags")
    if isinstance(f, dict) and all(isinstance(v, (int, float)) for v in f.values()):
        return {str(k): int(v) for k, v in f.items()}
    return {}


def _add_ledger(cell: Cell, led, device, day):
    if not led:
        return
    if led.get("unit") == "lines":
        # a parser ledger counts the lines of one raw file; the values it wrote for this
        # (device, day) are in its "partitions" map
        n = (led.get("partitions") or {}).get(f"{device}/{day}")
        if n is not None:
            cell.rows_out = (cell.rows_out or 0) + int(n)
    else:
        cell.rows_in = (cell.rows_in or 0) + int(led.get("rows_in", 0))
        cell.rows_out = (cell.rows_out or 0) + io.ledger_rows_written(led)
    for k, v in (led.get("rejected") or {}).items():
        cell.rejected[k] = cell.rejected.get(k, 0) + int(v)
    for k, v in _flag_counts(led).items():
        cell.flags[k] = cell.flags.get(k, 0) + v


def build_board(pipeline: str, start=None, end=None, root=None) -> Board:
    """The board of ``pipeline`` (path relative to ``root``) for the window [start, end]."""
    from .workflow import WorkflowPlan

    root = Path(root or Path.cwd())
    return Board(WorkflowPlan.for_pipeline(pipeline, start, end, root), root)


# ---------------------------------------------------------------- text rendering

SYMBOL = {"done": "ok", "missing": "--", "stale": "S", "running": "RUN", "failed": "FAIL"}
# Snakemake's reason names (jobs.Reason.get_names) → one letter in a cell
REASON_CODE = [("config changed", "c"), ("input newer", "i"), ("upstream job will run", "u"),
               ("set of inputs changed", "s"), ("incomplete output", "x"), ("code changed", "v"),
               ("software environment", "e"), ("forced", "f")]


def _short_reason(reasons) -> str:
    codes = ""
    for r in reasons:
        for prefix, code in REASON_CODE:
            if r.startswith(prefix) and code not in codes:
                codes += code
    return codes


def _human(n) -> str:
    if n is None:
        return ""
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            v = n / div
            return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{int(n)}"


def _cell_text(cell: Cell | None, with_rows: bool) -> str:
    if cell is None:
        return ""
    if cell.state == "stale":
        text = "S:" + _short_reason(cell.reasons)
    else:
        text = SYMBOL[cell.state]
    if with_rows and cell.state == "done" and cell.rows_out is not None:
        text += " " + _human(cell.rows_out)
        if any(n for k, n in cell.rejected.items() if not k.startswith(SKIPPED)):
            text += "*"              # lines skipped as configured (a header) are not a loss
    return text


def render_text(board: Board, width: int = 100) -> str:
    """The board as plain text for a terminal ``width`` columns wide."""
    lines = []
    w = board.plan.window
    span = "all days" if w.start is None and w.end is None else str(w)
    lines.append(f"PyJAMA status · exposure {board.project.exposure} · {board.project.pipeline.path} "
                 f"· window {span}")
    lines.append("cells: ok done (rows out, * = rejected) · -- missing · RUN running · FAIL failed · "
                 "S:<why> stale")
    lines.append("why: c config changed · i input newer · u upstream runs · s inputs changed · "
                 "x interrupted")
    if not board.cells and not board.other:
        lines.append("")
        lines.append("nothing planned in this window: no raw file touches it "
                     f"(raw files go in data/{board.project.exposure}/00_raw/)")
        return "\n".join(lines) + "\n"

    steps = board.steps
    day_w = 12
    avail = max(width - day_w, 8 * len(steps))
    col_w = max(5, min(14, avail // max(1, len(steps))))
    with_rows = col_w >= 10
    if all(len(s) < col_w for s in steps):
        head_rows = ["".join(s.ljust(col_w) for s in steps)]
    else:
        # staggered on two lines: each name may then use two columns' width
        fit = [s if len(s) < 2 * col_w else s[: 2 * col_w - 2] + "…" for s in steps]
        head_rows = ["".join((s if i % 2 == k else "").ljust(col_w) for i, s in enumerate(fit))
                     for k in (0, 1)]
    truncated = any(len(s) >= 2 * col_w for s in steps)

    for dev in board.devices():
        lines.append("")
        lines.append(f"device {dev}")
        for i, head in enumerate(head_rows):
            lines.append(("day" if i == len(head_rows) - 1 else "").ljust(day_w) + head.rstrip())
        rows = []
        for day in board.days(dev):
            cells = [board.cells.get((s, dev, day)) for s in steps]
            rows.append((day, cells))
        for group in _runs(rows):
            if len(group) >= 4:
                first, last = group[0][0], group[-1][0]
                cells = group[0][1]
                text = "".join(_cell_text(c, False).ljust(col_w) for c in cells).rstrip()
                lines.append(f"{first} … {last} ({len(group)} days)")
                lines.append("".ljust(day_w) + text)
            else:
                for day, cells in group:
                    text = "".join(_cell_text(c, with_rows).ljust(col_w) for c in cells)
                    lines.append(day.ljust(day_w) + text.rstrip())
    if truncated:
        lines.append("")
        lines.append("columns: " + " · ".join(steps))

    lines.append("")
    lines.append("step                      jobs    done  stale  miss  fail     rows in    rows out"
                 "  rejected  flagged")
    for s in board.step_summary():
        rej = sum(s["rejected"].values())
        share = "" if s["flagged_share"] is None else f"{100 * s['flagged_share']:.1f}%"
        name = s["step"] + (f" ({s['unit']})" if s["unit"] != "rows" else "")
        name = name if len(name) <= 24 else name[:23] + "…"
        lines.append(f"{name:24s} {s['jobs']:5d} {s['done']:7d} {s['stale']:6d} {s['missing']:5d} "
                     f"{s['failed']:5d} {s['rows_in']:11,d} {s['rows_out']:11,d} {rej:9,d}  {share:>7s}")
    for s in board.step_summary():
        if s.get("cells_expected"):
            lines.append(f"grid cells ({s['step']}): {s['cells_expected']:,d} expected, {s['rows_out']:,d} written")
            lines.append(f"  {s['cells_missing']:,d} missing (1), {s['cells_not_stored']:,d} of them not stored "
                         "(inside gaps longer than sparse_after)")
    rejects = [(s["step"], k, v) for s in board.step_summary() for k, v in sorted(s["rejected"].items())]
    if rejects:
        lines.append("")
        lines.append("rejected, by reason (from the ledgers):")
        for step, reason, n in rejects:
            lines.append(f"  {step}: {reason}: {n:,d}")

    bad = board.attention()
    lines.append("")
    if not bad:
        lines.append(f"all {len(board.jobs)} jobs done")
    else:
        totals = {s: sum(1 for j in board.jobs if j.state == s) for s in STATES}
        lines.append("needs attention: " + ", ".join(f"{totals[s]} {s}" for s in reversed(STATES)
                                                     if totals[s] and s != "done"))
        shown = 0
        for j in bad:
            if shown >= 40:
                lines.append(f"  … and {len(bad) - shown} more (drawer.py status --json lists all)")
                break
            where = " ".join(str(v) for _k, v in sorted(j.wildcards.items(), key=_wc_order))
            text = f"  {j.state.upper():7s} {j.step} {where}"
            if j.state == "failed":
                text += f": {j.error}\n          log: {j.log}"
            elif j.state == "running":
                text += f": {j.error}"
            elif j.reasons:
                text += ": " + "; ".join(j.reasons)
            lines.append(text)
            shown += 1
        lines.append("rebuild: python3 drawer.py run " + board.project.pipeline.path
                     + (f" --from {_day_text(w.start)} --to {_day_text(w.end)}"
                        if w.start and w.end else ""))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _wc_order(item):
    from .rules import UNIT_KEYS

    return (UNIT_KEYS.index(item[0]) if item[0] in UNIT_KEYS else len(UNIT_KEYS)), item[0]


def _day_text(t):
    return iso_seconds(t)


def _runs(rows):
    """Group consecutive days whose cells have the same state text (rows ignored)."""
    groups = []
    for day, cells in rows:
        key = tuple(_cell_text(c, False) for c in cells)
        if groups and groups[-1][0] == key:
            groups[-1][1].append((day, cells))
        else:
            groups.append((key, [(day, cells)]))
    return [g for _k, g in groups]


def main_status(pipeline: str, start=None, end=None, as_json=False, root=None, width=None,
                board=None) -> str:
    board = board or build_board(pipeline, start, end, root)
    if as_json:
        return json.dumps(board.to_json(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    if width is None:
        import shutil

        width = min(shutil.get_terminal_size((100, 24)).columns, 140)
    return render_text(board, width)
