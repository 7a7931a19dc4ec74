"""Progress: the one progress bar of the project (tqdm on a terminal, shown only when the
work lasts more than 2 s; nothing when quiet, when stderr is not a terminal, or for a single
item), and :class:`RunMonitor`, which turns Snakemake's output into ``drawer.py run``'s lines."""
from __future__ import annotations

import re
import sys
import time

from .rules import parse_wildcards


def progress_bar(total: int, desc: str, unit: str = "part", quiet: bool = False):
    """A tqdm bar (``update(n)``, ``close()``), or None when no bar should be shown."""
    if quiet or total < 2 or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in requirements.txt
        return None
    return tqdm(total=total, desc=desc, unit=unit, delay=2)


def iterate(items, desc: str, unit: str = "part", quiet: bool = False):
    """Yield ``items`` while advancing a bar (see :func:`progress_bar`)."""
    bar = progress_bar(len(items), desc, unit, quiet)
    try:
        for item in items:
            yield item
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


# ---------------------------------------------------------------- drawer.py run's lines


_RULE = re.compile(r"^\s*(?:local)?rule (\w+):$")   # indented: a job inside a group job
_ERROR_RULE = re.compile(r"^Error in rule (\w+):$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")
_FIELD = re.compile(r"^\s+(jobid|wildcards|log|reason): (.*)$")
_STATS_TOTAL = re.compile(r"^total\s+(\d+)$")
_STATS_ALL = re.compile(r"^all\s+(\d+)$")


def _duration(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def short_reasons(text: str) -> str:
    """Snakemake's ``reason:`` line without its file lists: ``missing output files;
    input files updated by another job``."""
    return "; ".join(p.split(":", 1)[0].strip().lower() for p in text.split("; ") if p.strip())


class RunMonitor:
    """Reads Snakemake's output line by line and prints PyJAMA's instead.

    Default: one line per finished job (step, device, day, how long, running count and an
    estimate of the time left), one line per failed job (step, partition, cause, log);
    ``quiet``: failures only; ``verbose``: Snakemake's own lines, unchanged. Dry run: one
    line per job that would run, with Snakemake's reasons. ``jobs`` (a
    :class:`pyjama.rules.SnakemakeJobs`) maps each job block to the plan's Job, whose step
    and place the lines name; ``cause_of(log_path)`` gives the error line of a failed job's log.
    """

    def __init__(self, jobs, cause_of, out, quiet=False, verbose=False, dry_run=False,
                 clock=time.monotonic):
        self.reader = jobs            # rules.SnakemakeJobs: a printed job block → the plan's Job
        self.cause_of, self.out = cause_of, out
        self.quiet, self.verbose, self.dry_run = quiet, verbose, dry_run
        self.clock = clock
        self.t0 = clock()
        self.total = None
        self.jobs: dict = {}          # jobid → {"rule", "job", "step", "where", "start", "log", "reason"}
        self.finished = 0
        self.failed: list = []        # (step, where, cause, log)
        self.planned: list = []       # (step, where, reasons) of a dry run
        self.errors: list = []        # error lines that are not a job's
        self._block = None            # the job block being read
        self._in_stats = False
        self._in_error = None
        self.first_start = None       # when Snakemake started the first job

    def _say(self, text: str):
        self.out.write(text + "\n")
        self.out.flush()

    def _describe(self, block: dict) -> None:
        """The block's step and place, from the plan's Job of its rule and wildcards."""
        job = self.reader.of_block(block["rule"], block.get("wildcards", ""))
        block["job"] = job
        block["step"] = job.step if job is not None else self.reader.name_of(block["rule"])
        block["where"] = job.where if job is not None else " ".join(
            parse_wildcards(block.get("wildcards", "")).values())

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        if self.verbose:
            self._say(line)
        if line == "Job stats:":
            self._in_stats = True
            return
        if self._in_stats:
            m = _STATS_TOTAL.match(line)
            if m:
                self.total = int(m.group(1)) - getattr(self, "_all", 0)
                self._in_stats = False
                return
            m = _STATS_ALL.match(line)
            if m:
                self._all = int(m.group(1))
            return
        m = _RULE.match(line)
        if m:
            self._close_block()
            self._block = {"rule": m.group(1), "where": "", "start": self.clock(), "log": "",
                           "reason": ""}
            if self.first_start is None:
                self.first_start = self._block["start"]
            return
        m = _ERROR_RULE.match(line)
        if m:
            self._close_block()
            self._in_error = {"rule": m.group(1), "jobid": None, "log": ""}
            return
        fm = _FIELD.match(line)
        if fm and (self._block is not None or self._in_error is not None):
            key, value = fm.groups()
            target = self._block if self._block is not None else self._in_error
            if key == "log":
                value = value.split(" (check log", 1)[0]
            target[key] = value
            return
        if line.startswith("    ") and (self._block is not None or self._in_error is not None):
            return   # input:, output:, resources: … of the block
        self._close_block()
        m = _FINISHED.match(line)
        if m:
            self._finished(m.group(1), m.group(2))
            return
        if line.startswith("Error: ") or line.startswith("Error "):
            if line not in self.errors:
                self.errors.append(line)
        elif re.match(r"^\w*(Error|Exception)\b", line) and not line.startswith(
                ("RuleException", "WorkflowError in file", "WorkflowError:")):
            self.errors.append(line)

    def _close_block(self):
        b, self._block = self._block, None
        if b is not None and b.get("jobid") is not None and b["rule"] != "all":
            self._describe(b)
            self.jobs[b["jobid"]] = b
            if self.dry_run:
                step = b["step"]
                self.planned.append((step, b["where"], short_reasons(b.get("reason", ""))))
                if not self.quiet:
                    what = " ".join(x for x in (step, b["where"]) if x)   # a result job has no wildcards
                    self._say(f"would run: {what}: {self.planned[-1][2]}".rstrip(": "))
        e, self._in_error = self._in_error, None
        if e is not None and e["rule"] != "all":
            job = self.jobs.get(e.get("jobid")) or {}
            step = job.get("step", e["rule"])
            where = job.get("where", "")
            log = e.get("log") or job.get("log", "")
            cause = self.cause_of(log) if log else ""
            cause = cause.removeprefix("Error: ")
            for prefix in (f"{step}.py {where.replace(' ', '/')}: ", f"{step}.py {where}: "):
                cause = cause.removeprefix(prefix)
            if " (log: " in cause:
                cause = cause.rsplit(" (log: ", 1)[0]
            self.failed.append((step, where, cause or "see the log", log))
            if not self.verbose:
                what = " ".join(x for x in (step, where) if x)
                self._say(f"FAILED {what}: {cause or 'see the log'} (log: {log})")

    def _finished(self, jobid: str, rule: str):
        if rule == "all":
            return
        job = self.jobs.get(jobid, {"where": "", "start": self.t0})
        self.finished += 1
        if self.quiet or self.verbose:
            return
        now = self.clock()
        took = now - job["start"]
        step = job.get("step", rule)
        count = f"[{self.finished}/{self.total}]" if self.total else f"[{self.finished}]"
        left = ""
        if self.total and self.finished < self.total:
            rate = (now - (self.first_start or self.t0)) / self.finished
            left = f" · about {_duration(rate * (self.total - self.finished))} left"
        self._say(f"{count} {step} {job['where']} done in {_duration(took)}{left}".replace("  ", " "))

    def close(self):
        self._close_block()
