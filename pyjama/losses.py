"""The lost-data lines of issue 11: one text, written here, for every place that shows it.

A raw file that lost more than its parser's ``warn_rejected_share`` of its lines, a file
rejected whole, a file whose name gives no device id, and a file with no readable time
each make ONE line. The lines are collected by :func:`pyjama.steps.parser.loss_warnings`
(from the raw index and the parser ledgers) and shown by :func:`render`, the one formatter
that ``drawer.py run`` (stderr), ``drawer.py status`` (stdout), the report (HTML) and the
Snakefile's ``onsuccess``/``onerror`` handlers (plain ``snakemake``, stderr) all call.

Exact texts (tests and docs/steps/parser.md quote them)::

    <raw>: <k> of <n> lines rejected (<p> %), mostly '<reason>' (<m>); rejects: <file>
    <raw> (<config>): not parsed: <why>; move the file out of the raw folder or narrow $.files (now '<glob>')
    <raw> (<config>): no line with a readable time; not parsed in a --from/--to window: run without one to see its rejects
    <raw>: <k> rows on days far from the file's others (<day>, <day>); declare $.deployment to reject them
"""
from __future__ import annotations

import html

SKIPPED = "skipped: "          # ledger reasons of skipped lines (not a loss)
VIEWS = {"run": "PyJAMA: warning: ", "status": "warning: "}
# set by `drawer.py run` for its Snakemake: drawer prints the lines itself after every run
# (dry runs and "nothing to do" too), so the Snakefile's handlers stay silent
SHOWN_BY = "PYJAMA_LOSS_LINES_BY"


def rejected_share(raw_path: str, ledger: dict, share: float, rejects_path: str):
    """The line of a parsed raw file that lost more than ``share`` [0–1] of its lines
    (rejected, not skipped), or None. ``ledger``: the file's parser ledger."""
    lost = {k: v for k, v in (ledger.get("rejected") or {}).items() if not k.startswith(SKIPPED)}
    n, k = int(ledger.get("rows_in", 0)), sum(lost.values())
    if not k or k <= share * n:
        return None
    reason, m = max(sorted(lost.items()), key=lambda kv: kv[1])
    return (f"{raw_path}: {k} of {n} lines rejected ({100 * k / n:.1f} %), mostly {reason!r} ({m}); "
            f"rejects: {rejects_path}")


def unmatched(raw_path: str, config_path: str, why: str, files_glob: str) -> str:
    """The line of a raw file that is not parsed because its name gives no device id."""
    return (f"{raw_path} ({config_path}): not parsed: {why}; move the file out of the raw folder "
            f"or narrow $.files (now {files_glob!r})")


def no_readable_time(raw_path: str, config_path: str) -> str:
    """The line of a raw file not parsed yet whose lines have no readable time (a window
    never selects it)."""
    return (f"{raw_path} ({config_path}): no line with a readable time; not parsed in a --from/--to "
            "window: run without one to see its rejects")


FAR_GAP_DAYS = 2       # days apart that still belong to one span of a file (parser.md)
FAR_DAYS_SHOWN = 5


def far_days(raw_path: str, ledger: dict):
    """The line of a parsed raw file with rows on days far from its other days, or None.

    From the ledger's partitions ({'<device>/<day>': rows}): the file's days, sorted, are cut
    into spans where two neighbouring days are more than FAR_GAP_DAYS apart; the file's span
    is the one holding its row-weighted median day; rows on the days of every other span are
    "far" (docs/steps/parser.md, "Order of times"). Only asked when no $.deployment span is
    declared (a declared span rejects such lines instead)."""
    from datetime import date
    from itertools import pairwise

    rows = {}
    for key, n in (ledger.get("partitions") or {}).items():
        day = key.rsplit("/", 1)[-1]
        rows[day] = rows.get(day, 0) + int(n)
    if len(rows) < 2:
        return None
    days = sorted(rows)
    ords = [date.fromisoformat(d).toordinal() for d in days]
    span = [0]
    for a, b in pairwise(ords):
        span.append(span[-1] + (b - a > FAR_GAP_DAYS))
    total, seen, median_span = sum(rows.values()), 0, 0
    for d, sp in zip(days, span):
        seen += rows[d]
        if 2 * seen >= total:
            median_span = sp
            break
    far = [d for d, sp in zip(days, span) if sp != median_span]
    if not far:
        return None
    k = sum(rows[d] for d in far)
    shown = ", ".join(far[:FAR_DAYS_SHOWN]) + (f", … ({len(far)} days)" if len(far) > FAR_DAYS_SHOWN else "")
    return (f"{raw_path}: {k} rows on days far from the file's others ({shown}); "
            "declare $.deployment to reject them")


def render(lines, view: str) -> list:
    """The lines as ``view`` shows them: ``run`` (``PyJAMA: warning: …``, stderr of
    ``drawer.py run`` and of plain ``snakemake``), ``status`` (``warning: …``) or ``html``
    (``<li>…</li>``, escaped, for the report)."""
    if view == "html":
        return [f"<li>{html.escape(str(w), quote=True)}</li>" for w in lines]
    return [VIEWS[view] + str(w) for w in lines]
