"""drawer.py dag: the rule graph and the job DAG, drawn with graphviz."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from wf import PY, REPO, drawer, make_project

from pyjama import dag

PIPE = "configs/T/pipeline.json"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed")


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    root = tmp_path_factory.mktemp("dag")
    make_project(root, "T", devices=1, days=2, hz=0.02, defects=False)
    return root


def test_missing_dot_is_one_line_and_exit_2(proj, tmp_path):
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(REPO)}      # a PATH with no dot on it
    res = subprocess.run([PY, str(REPO / "drawer.py"), "dag", PIPE, "-o", str(tmp_path / "g.svg")],
                         cwd=proj, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr == "Error: graphviz 'dot' not found; install it: apt-get install graphviz\n"
    assert not (tmp_path / "g.svg").exists()


def test_rule_graph_dot_names_steps_and_stages(proj):
    res = drawer(proj, "dag", PIPE, "-o", "-")
    assert res.returncode == 0, res.stderr
    # one node per step with its stages, the 'all' target left out, deterministic ids
    assert 'r0 [label="10_parser\\n00_raw → 10_parsed"' in res.stdout
    assert 'r1 [label="20_split\\n10_parsed → 20_split"' in res.stdout
    assert "r0 -> r1;" in res.stdout
    assert "all" not in res.stdout


@needs_dot
def test_rule_graph_svg_and_png_are_written(proj):
    res = drawer(proj, "dag", PIPE, "-o", "out/graph.svg")
    assert res.returncode == 0, res.stderr
    svg = (proj / "out" / "graph.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "10_parser" in svg and "20_split" in svg
    assert dag.svg_digest(svg) == dag.dot_digest(dag.pipeline_dot(PIPE, root=proj))
    res = drawer(proj, "dag", PIPE, "-o", "graph.png")
    assert res.returncode == 0, res.stderr
    assert (proj / "graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_job_dag_has_one_node_per_partition_in_the_window(proj):
    dot = dag.pipeline_dot(PIPE, jobs=True, start="2026-01-21", end="2026-01-21", root=proj)
    assert 'label="20_split\\nvalve01 2026-01-21"' in dot
    assert 'label="10_parser\\nT_valve01_2026-01-21.csv"' in dot
    assert "2026-01-20" not in dot           # the other day is outside the window


def test_unknown_picture_format_is_one_line(proj):
    res = drawer(proj, "dag", PIPE, "-o", "graph.gif")
    assert res.returncode == 2
    assert res.stderr == ("Error: -o graph.gif: unknown picture format 'gif'; allowed: .svg, .png, .pdf, "
                          ".dot, or - for the DOT source\n")


def test_docs_rulegraph_is_current(tmp_path):
    """docs/rulegraph.svg must be redrawn when the DEMO pipeline changes:
    python3 -m pyjama.dag docs/rulegraph.svg"""
    svg = (REPO / "docs" / "rulegraph.svg").read_text()
    dot = dag.demo_dot(tmp_path)
    assert dag.svg_digest(svg) == dag.dot_digest(dot), (
        "docs/rulegraph.svg is out of date; redraw it: python3 -m pyjama.dag docs/rulegraph.svg")
