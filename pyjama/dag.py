"""``drawer.py dag``: the rule graph (or the job DAG) of a pipeline, drawn with graphviz.

Snakemake plans the graph (``--rulegraph``, or ``--dag`` for one node per job); this module
rewrites its DOT with readable labels — the step's name (its config file), the script, and
the stages it reads and writes — and a stable layout, then hands it to graphviz ``dot``.

The DOT we write depends only on the pipeline (never on data, paths or times), so it is
deterministic: ``docs/rulegraph.svg`` carries the digest of the DOT it was drawn from, and a
test redraws the DEMO graph and compares digests.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

from . import child_env, io
from .errors import UserError, one_line_errors
from .rules import SnakemakeJobs

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "workflow" / "Snakefile"
FORMATS = ("svg", "png", "pdf", "dot")
DOT_MISSING = "graphviz 'dot' not found; install it: apt-get install graphviz"
DOCS_SVG = REPO / "docs" / "rulegraph.svg"
REGENERATE = "python3 -m pyjama.dag docs/rulegraph.svg"

# one soft fill per step family (the number before the first '_'), colour-blind friendly
PALETTE = ["#dbe9f6", "#fde2c8", "#d5f0dc", "#f4d6e4", "#e5dcf2", "#fff3bf", "#d9f2f2",
           "#eadfd3", "#e9ecef", "#ffd8d8"]

NODE_RE = re.compile(r'^\s*(\d+)\[label = "((?:[^"\\]|\\.)*)".*?style="([^"]*)"\];\s*$')
EDGE_RE = re.compile(r"^\s*(\d+) -> (\d+)\s*$")


def snakemake_dot(plan, jobs: bool, root=None) -> str:
    """Snakemake's own DOT (``--rulegraph`` or ``--dag``) for the plan's pipeline and window."""
    root = Path(root or Path.cwd())
    config = plan.config_args
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(root),
           "--dag" if jobs else "--rulegraph", "--replace-workflow-config", "--config", *config]
    env = child_env()
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        err = [ln for ln in res.stderr.splitlines() if ln.startswith("Error")]
        raise UserError(err[-1].removeprefix("Error: ") if err else
                        f"snakemake could not plan the graph (exit {res.returncode}): "
                        f"{res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ''}")
    start_at = res.stdout.find("digraph")
    if start_at < 0:
        raise UserError("snakemake printed no graph")
    return res.stdout[start_at:]


def parse_dot(text: str):
    """(nodes {id: (label, style)}, edges [(src, dst)]) of Snakemake's DOT output."""
    nodes, edges = {}, []
    for line in text.splitlines():
        m = NODE_RE.match(line)
        if m:
            label = m.group(2).replace("\\n", "\n").replace('\\"', '"')
            nodes[m.group(1)] = (label, m.group(3))
            continue
        m = EDGE_RE.match(line)
        if m:
            edges.append((m.group(1), m.group(2)))
    return nodes, edges


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _step_info(plan):
    """rule name → (step name, label lines, colour) from the workflow's own plan."""
    from .steps import get_step

    info = {}
    for spec in plan.rules:
        st = spec.step
        step = get_step(st.script)
        ins = ", ".join(step.input_stages(st)) if "input_stage" in st.params else ""
        outs = ", ".join(step.output_stages(st).values()) if "output_stage" in st.params else \
            str(st.get("table", st.get("output_stage", "")))
        family = st.name.split("_", 1)[0]
        colour = PALETTE[int(family) // 10 % len(PALETTE)] if family.isdigit() else PALETTE[-2]
        main = step.rule_name(st)
        if spec.name == main:
            lines = [st.name]
            if st.name != st.script.removesuffix(".py"):
                lines.append(st.script)
            if ins or outs:
                lines.extend(_wrap(f"{ins} → {outs}"))
        else:
            # an extra rule of the step (e.g. the normalisation fit): name it by its suffix
            # and show what it writes, relative to data/<EXPO>/
            suffix = spec.name[len(main):].lstrip("_") if spec.name.startswith(main) else spec.name
            base = str(io.data_dir(st.exposure)) + "/"
            written = ", ".join(sorted(str(v).removeprefix(base) for v in spec.outputs.values()))
            lines = [f"{st.name}: {suffix}", f"→ {written}"]
        info[spec.name] = (st.name, lines, colour)
    return info


def _wrap(text: str, width: int = 40) -> list:
    """Split a long 'a → b, c, d' label at its commas into lines of about ``width``."""
    lines, cur = [], ""
    for part in text.split(", "):
        piece = part if not cur else cur + ", " + part
        if cur and len(piece) > width:
            lines.append(cur + ",")
            cur = part
        else:
            cur = piece
    return lines + [cur]


def rulegraph_dot(nodes, edges, plan) -> str:
    """A clean, deterministic DOT of the rule graph (the ``all`` target left out)."""
    info = _step_info(plan)
    order = {name: i for i, name in enumerate(info)}
    keep = {nid: lab for nid, (lab, _s) in nodes.items() if lab in info}
    ids = {lab: f"r{order[lab]}" for lab in keep.values()}
    out = [
        "digraph pyjama_rules {",
        '  graph [rankdir=TB, bgcolor="white", pad="0.2", nodesep="0.35", ranksep="0.5", '
        'fontname="Helvetica"];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, '
        'color="#555555", penwidth=1.2, margin="0.15,0.08"];',
        '  edge [color="#666666", penwidth=1.2, arrowsize=0.7];',
    ]
    for lab in sorted(keep.values(), key=lambda x: order[x]):
        _name, lines, colour = info[lab]
        text = "\\n".join(_esc(x) for x in lines)
        out.append(f'  {ids[lab]} [label="{text}", fillcolor="{colour}"];')
    return _close(out, {(ids[keep[a]], ids[keep[b]]) for a, b in edges if a in keep and b in keep})


def _close(out: list, pairs: set) -> str:
    """The DOT text: ``out``'s lines, the edges (ordered by node number), the closing brace."""
    for a, b in sorted(pairs, key=lambda e: (int(e[0][1:]), int(e[1][1:]))):
        out.append(f"  {a} -> {b};")
    out.append("}")
    return "\n".join(out) + "\n"


def jobgraph_dot(nodes, edges, plan) -> str:
    """A DOT of the job DAG: one node per job, labelled step + device/day (or raw file);
    jobs Snakemake would not run (up to date) are drawn dashed and grey."""
    info = _step_info(plan)
    order = {name: i for i, name in enumerate(info)}
    reader = SnakemakeJobs(plan.job)
    jobs = {}
    for nid, (label, style) in nodes.items():
        parts = label.split("\n")
        rule = parts[0]
        if rule not in info:
            continue
        wc = dict(p.split(": ", 1) for p in parts[1:] if ": " in p)
        job = reader.plan_job(rule, wc)          # the plan's Job of this node
        jobs[nid] = (order[rule], job.where, rule, "dashed" in style)
    ranked = sorted(jobs, key=lambda n: jobs[n][:2])
    ids = {n: f"j{i}" for i, n in enumerate(ranked)}
    out = [
        "digraph pyjama_jobs {",
        '  graph [rankdir=LR, bgcolor="white", pad="0.2", nodesep="0.12", ranksep="0.6", '
        'fontname="Helvetica"];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, '
        'color="#555555", penwidth=1.0, margin="0.1,0.04"];',
        '  edge [color="#888888", penwidth=0.8, arrowsize=0.5];',
        '  legend [shape=plaintext, style="", label="solid: will run · dashed grey: up to date"];',
    ]
    for n in ranked:
        _o, where, rule, done = jobs[n]
        name, _lines, colour = info[rule]
        text = _esc(name) + "\\n" + _esc(where)
        if done:
            out.append(f'  {ids[n]} [label="{text}", fillcolor="#f1f3f5", style="rounded,filled,dashed", '
                       f'fontcolor="#777777"];')
        else:
            out.append(f'  {ids[n]} [label="{text}", fillcolor="{colour}"];')
    return _close(out, {(ids[a], ids[b]) for a, b in edges if a in ids and b in ids})


def pipeline_dot(pipeline: str, jobs=False, start=None, end=None, root=None) -> str:
    """The DOT source ``drawer.py dag`` draws (deterministic for a given pipeline/window)."""
    from .workflow import WorkflowPlan

    root = Path(root or Path.cwd())
    plan = WorkflowPlan.for_pipeline(pipeline, start, end, root)   # one-line errors first
    nodes, edges = parse_dot(snakemake_dot(plan, jobs, root))
    if jobs:
        return jobgraph_dot(nodes, edges, plan)
    rules = [lab for lab, _s in nodes.values() if lab != "all"]
    if not rules:
        raise UserError(f"nothing to draw: no job is planned for {pipeline} "
                        f"(no raw files in data/{plan.project.exposure}/00_raw/ in this window)")
    return rulegraph_dot(nodes, edges, plan)


def dot_digest(dot: str) -> str:
    return hashlib.sha256(dot.encode("utf-8")).hexdigest()


def stamp_svg(svg: str, dot: str, command: str) -> str:
    """Add a comment with the DOT digest and the command that regenerates the picture."""
    note = (f"<!-- pyjama-dot-sha256: {dot_digest(dot)} -->\n"
            f"<!-- regenerate: {command} -->\n")
    at = svg.find("<svg")
    return svg[:at] + note + svg[at:] if at >= 0 else note + svg


def svg_digest(svg_text: str):
    m = re.search(r"pyjama-dot-sha256: ([0-9a-f]{64})", svg_text)
    return m.group(1) if m else None


def render(dot: str, fmt: str) -> bytes:
    """Run graphviz ``dot -T<fmt>`` on the DOT source."""
    exe = shutil.which("dot")
    if exe is None:
        raise UserError(DOT_MISSING)
    args = [exe, f"-T{fmt}"] + (["-Gdpi=144"] if fmt == "png" else [])
    res = subprocess.run(args, input=dot.encode("utf-8"), capture_output=True)
    if res.returncode != 0:
        raise UserError(f"graphviz dot failed: {res.stderr.decode(errors='replace').strip()}")
    return res.stdout


def draw(pipeline: str, output=None, jobs=False, start=None, end=None, root=None):
    """Write the picture (or the DOT source) of the pipeline; return the path written
    (None when the DOT went to stdout)."""
    output = output or ("jobs.svg" if jobs else "rulegraph.svg")
    fmt = "dot" if output == "-" else Path(output).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UserError(f"-o {output}: unknown picture format {fmt!r}; allowed: "
                        + ", ".join(f".{f}" for f in FORMATS) + ", or - for the DOT source")
    if fmt != "dot" and shutil.which("dot") is None:
        raise UserError(DOT_MISSING)   # before the (slower) planning
    dot = pipeline_dot(pipeline, jobs, start, end, root)
    if output == "-":
        sys.stdout.write(dot)
        return None
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        path.write_text(dot, encoding="utf-8")
        return path
    data = render(dot, fmt)
    if fmt == "svg":
        cmd = f"python3 drawer.py dag {pipeline}{' --jobs' if jobs else ''} -o {output}"
        data = stamp_svg(data.decode("utf-8"), dot, cmd).encode("utf-8")
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- the picture in the docs

def demo_dot(workdir) -> str:
    """The rule graph of a FRESH DEMO exposure (configs from configs/_template, as
    ``./manager.sh create DEMO`` makes them, and one tiny generated raw file).

    Drawn in a scratch folder so the picture does not depend on what ``data/`` holds:
    some rules exist only while their output is missing (e.g. the first normalisation
    fit), and the docs show the whole workflow a new user gets."""
    from .demo import generate
    from .manage import create

    workdir = Path(workdir)
    create("DEMO", workdir)
    generate(workdir / "data" / "DEMO" / "00_raw", "DEMO", devices=1, days=1, hz=0.01, defects=False)
    return pipeline_dot("configs/DEMO/pipeline.json", root=workdir)


def write_docs_svg(out=DOCS_SVG) -> Path:
    """Regenerate docs/rulegraph.svg (``python3 -m pyjama.dag docs/rulegraph.svg``)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pyjama-dag-") as tmp:
        dot = demo_dot(tmp)
    svg = render(dot, "svg").decode("utf-8")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(stamp_svg(svg, dot, REGENERATE), encoding="utf-8")
    return out


def build_parser():
    import argparse

    p = argparse.ArgumentParser(prog="python3 -m pyjama.dag",
                                description="Redraw the rule graph of a fresh DEMO exposure, the picture of\n"
                                "the docs (a test fails when docs/rulegraph.svg is stale). The graph of\n"
                                "your own pipeline: python3 drawer.py dag.",
                                epilog=f"example:\n  {REGENERATE}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", help="the SVG to write (docs/rulegraph.svg)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return one_line_errors(_redraw_docs, args.output)


def _redraw_docs(out) -> int:
    print(f"wrote {write_docs_svg(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
