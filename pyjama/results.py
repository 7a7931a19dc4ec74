"""The results ``snakemake --report report.html`` shows, built as rules of the workflow.

With ``--config results=true`` (config/config.yaml sets it for a bare ``snakemake``) and
the whole pipeline selected (no ``until``/``only``), ``rule all`` also asks for::

    data/<EXPO>/_report/pyjama_report.html     drawer.py report's page for the window
    data/<EXPO>/_report/rulegraph.svg          drawer.py dag's rule graph (needs graphviz)
    data/<EXPO>/_report/daily_ledger.html      rows in, created, out, combined, set aside per job
    data/<EXPO>/_report/daily_<stage>.html     each per-day table a step writes (60_daily, ...)

Each is marked with Snakemake's ``report()`` (category and caption from here), so
``snakemake --report report.html`` embeds them beside Snakemake's own run statistics. They
are per-exposure bookkeeping: they depend on every partition of the window and are rebuilt
when one changes (the PyJAMA page costs about 15 CPU-s for the DEMO's 6 device-days).
``drawer.py run`` asks for them only with ``--results`` (``drawer.py report`` / ``dag``
write the same pages on demand).
"""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import child_env, io

REPO = Path(__file__).resolve().parent.parent
REPORT_DIR = "_report"
CAPTIONS = "report"          # workflow/report/<name>.rst, relative to the Snakefile


@dataclass(frozen=True)
class Result:
    """One result rule: its single output, what it reads, and how Snakemake's report files it."""

    name: str                # Snakemake rule name
    output: str              # relative to the project root
    inputs: tuple            # relative to the project root
    category: str
    caption: str             # .rst file relative to workflow/
    log: str
    kind: str                # "report", "rulegraph", "ledger" or "daily"
    stage: str = ""          # the stage of a "daily" table


def wanted(plan) -> bool:
    """Results are built when the config asks (``results``) and the whole pipeline runs."""
    cfg = plan.config
    return bool(cfg.get("results")) and not cfg.get("until") and not cfg.get("only")


def daily_stages(plan) -> list:
    """(step config, stage) of every per-day table a step writes (output keys ``*daily``)."""
    from .steps import get_step

    out = []
    for st in plan.project.pipeline.steps:
        if "output_stage" not in st.params:
            continue
        for key, stage in get_step(st.script).output_stages(st).items():
            if key.endswith("daily"):
                out.append((st, stage))
    return out


def results_of(plan) -> list:
    """The result rules of ``plan`` (empty unless :func:`wanted`)."""
    targets = tuple(plan.targets())
    if not wanted(plan) or not targets:     # no raw data in the window: nothing to show
        return []
    expo = plan.project.exposure
    base = f"data/{expo}/{REPORT_DIR}"
    logs = f"logs/{expo}/{REPORT_DIR}"
    configs = tuple(sorted({plan.project.pipeline.path} | {st.path for st in plan.project.pipeline.steps}))
    out = [
        Result("results_pyjama_report", f"{base}/pyjama_report.html", targets, "1. PyJAMA report",
               f"{CAPTIONS}/pyjama_report.rst", f"{logs}/pyjama_report.log", "report"),
        Result("results_rulegraph", f"{base}/rulegraph.svg", configs, "2. Rule graph",
               f"{CAPTIONS}/rulegraph.rst", f"{logs}/rulegraph.log", "rulegraph"),
        Result("results_daily_ledger", f"{base}/daily_ledger.html", targets, "3. Daily tables",
               f"{CAPTIONS}/daily_ledger.rst", f"{logs}/daily_ledger.log", "ledger"),
    ]
    for _st, stage in daily_stages(plan):
        prefix = f"data/{expo}/{stage}/"
        name = "results_daily_" + re.sub(r"\W", "_", stage)
        out.append(Result(name, f"{base}/daily_{stage.replace('/', '_')}.html",
                          tuple(t for t in targets if t.startswith(prefix)), "3. Daily tables",
                          f"{CAPTIONS}/daily_table.rst", f"{logs}/{name}.log", "daily", stage))
    return out


# ---------------------------------------------------------------- building them

def _cli(args: list, log: str, root: Path) -> None:
    """Run ``python3 drawer.py ARGS`` (its own process: the report builds a Snakemake DAG,
    which must not share this Snakemake's process); its output goes to the job's log."""
    from .errors import UserError

    env = child_env()
    res = subprocess.run([sys.executable, str(REPO / "drawer.py"), *args], cwd=root, env=env,
                         capture_output=True, text=True, check=False)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ python3 drawer.py {' '.join(args)}\n{res.stdout}{res.stderr}")
    if res.returncode != 0:
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error")]
        raise UserError(errors[-1].removeprefix("Error: ") if errors else
                        f"drawer.py {args[0]} exited with {res.returncode} (log: {log})")


def _page(title: str, intro: str, body: str) -> str:
    from .report import CSS, esc

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{esc(title)}</h1><p class=\"meta\">{esc(intro)}</p>{body}</main></body></html>\n")


LEDGER_COLUMNS = ["step", "partition", "rows_in", "created", "rows_out", "combined", "set_aside", "reasons"]


def ledger_rows(plan, root: Path) -> list:
    """One dict per job of the window: step, partition, rows in, created (grid cells a
    resample adds; rows of the series 50 and 60 add), rows out (rows written), combined (samples folded into a grid cell), set aside, and the
    reasons; rows in + created = rows out + combined + set aside (pyjama.io.ledger_entry)."""
    rows = []
    for job in plan.jobs:
        if not job.target:
            continue
        led = io.read_ledger(Path(root) / job.main_output)
        if led is None:
            continue
        rejected = led.get("rejected") or {}
        where = job.where                                        # as drawer.py run names jobs
        rows.append({"step": job.step, "partition": where, "rows_in": led.get("rows_in", 0),
                     "created": sum((led.get("created") or {}).values()) + int(led.get("rows_added", 0) or 0),
                     "rows_out": io.ledger_rows_written(led),
                     "combined": sum((led.get("combined") or {}).values()),
                     "set_aside": sum(rejected.values()),
                     "reasons": ", ".join(f"{k} {v}" for k, v in sorted(rejected.items()))})
    return rows


def ledger_page(plan, root: Path) -> str:
    import pandas as pd

    from .report import table

    df = pd.DataFrame(ledger_rows(plan, root), columns=LEDGER_COLUMNS)
    return _page(f"Daily ledger · exposure {plan.project.exposure}",
                 "rows in + created = rows out + combined + set aside, per step and partition "
                 f"(the parser counts lines), window {plan.window}",
                 table(df, left=("step", "partition", "reasons")))


def daily_page(plan, stage: str, root: Path) -> str:
    import pandas as pd

    from .report import table

    field = plan.project.pipeline.partition
    files = sorted((Path(root) / io.stage_dir(plan.project.exposure, stage)).glob(f"device_id=*/{field}=*/part.parquet"))
    frames = []
    for f in files:
        df = pd.read_parquet(f)
        if "day" not in df:       # a week's or a month's file has its rows' own day column
            df.insert(0, "day", f.parent.name.removeprefix("day="))
        df.insert(0, "device_id", f.parent.parent.name.removeprefix("device_id="))
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return _page(f"{stage} · exposure {plan.project.exposure}",
                 f"every row of data/{plan.project.exposure}/{stage}, {len(files)} partition(s)",
                 table(df, left=("device_id", "day", "sensor", "status")))


def run_result_job(plan, rule_name: str, log: str) -> None:
    """A Snakefile ``run:`` block: build the result ``rule_name`` (a bad outcome is one line)."""
    from snakemake.exceptions import WorkflowError

    from .errors import UserError
    from .timewindow import iso
    from .workflow import pipeline_path_from_config

    res = next(r for r in results_of(plan) if r.name == rule_name)
    root = Path(plan.project.root)
    pipeline = pipeline_path_from_config(plan.config)
    window = []     # the instants the plan parsed, not the text again ({NOW} stays put)
    for key, bound in (("from", plan.window.start), ("to", plan.window.end)):
        if bound is not None:
            window += [f"--{key}", iso(bound)]
    try:
        if res.kind == "report":
            _cli(["report", pipeline, *window, "-o", res.output], log, root)
        elif res.kind == "rulegraph":
            _cli(["dag", pipeline, "-o", res.output], log, root)
        elif res.kind == "ledger":
            io.write_text(root / res.output, ledger_page(plan, root))
        else:
            io.write_text(root / res.output, daily_page(plan, res.stage, root))
    except UserError as exc:
        raise WorkflowError(f"Error: {exc}") from None
