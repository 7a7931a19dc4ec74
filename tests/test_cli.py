"""The command lines (issue 12): one version text, --help on every entry point without side
effects, the same short flags on drawer.py and pyjama.py, README examples that write only
untracked paths. Exact text throughout."""
from __future__ import annotations

import argparse
import re
import subprocess

import pytest

from pyjama import __version__, cli, drawer, io
from tests.wf import PY, REPO, make_project, pyjama, run

# every entry point and the first line of its --help (python3 -m pyjama.X: the modules
# with a __main__; bench/ and scripts/: the files with one). The benchmarks change their
# options often: their line is checked up to the prog name and -h.
HELP = {
    ("-m", "pyjama.dag"): "usage: python3 -m pyjama.dag [-h] output",
    ("-m", "pyjama.demo"): "usage: python3 -m pyjama.demo [-h] [--exposure EXPOSURE] [--devices DEVICES]",
    ("-m", "pyjama.docs_gen"): "usage: python3 -m pyjama.docs_gen [-h] [--check]",
    ("-m", "pyjama.manage"): "usage: manager.sh [-h] {create,archive,delete,demo} ...",
    ("-m", "pyjama.workers"): "usage: python3 -m pyjama.workers [-h] root pipeline",
    ("bench/alternate.py",): "usage: alternate.py [-h]",
    ("bench/bench_postgres.py",): "usage: bench_postgres.py [-h]",
    ("bench/grid_sizes.py",): "usage: grid_sizes.py [-h]",
    ("bench/compare_pyperun.py",): "usage: compare_pyperun.py [-h]",
    ("bench/g2_new_day.py",): "usage: g2_new_day.py [-h]",
    ("bench/run.py",): "usage: run.py [-h]",
    ("bench/validate.py",): "usage: validate.py [-h]",
    ("scripts/parquet_to_csv.py",): "usage: parquet_to_csv.py [-h] source dest",
    ("scripts/step.py",): "usage: python3 scripts/NN_name.py --with CONFIG [--from A] [--to B] "
                          "[options of the step]",
    ("scripts/30_clean.py",): "usage: pyjama.py run [-h] --with CONFIG [--from START] [--to END]",
    ("pyjama.py",): "usage: pyjama.py [-h] [--version] {run,list} ...",
    ("pyjama.py", "run"): "usage: pyjama.py run [-h] --with CONFIG [--from START] [--to END]",
    ("pyjama.py", "list"): "usage: pyjama.py list [-h]",
    ("drawer.py",): "usage: drawer.py [-h] [--version] {run,status,dag,report} ...",
    ("drawer.py", "run"): "usage: drawer.py run [-h] [--from START] [--to END] [--cores CORES]",
    ("drawer.py", "status"): "usage: drawer.py status [-h] [--from START] [--to END] [--json] pipeline",
    ("drawer.py", "dag"): "usage: drawer.py dag [-h] [--from START] [--to END] [--jobs] [-o OUTPUT]",
    ("drawer.py", "report"): "usage: drawer.py report [-h] [--from START] [--to END] [-o OUTPUT] pipeline",
}


def entry_points() -> set:
    """What HELP must cover: every module / bench / scripts file with a __main__ block."""
    out = set()
    for path in sorted((REPO / "pyjama").glob("*.py")):
        if 'if __name__ == "__main__":' in path.read_text():
            out.add(("-m", f"pyjama.{path.stem}"))
    for folder in ("bench", "scripts"):
        for path in sorted((REPO / folder).glob("*.py")):
            if not path.is_symlink() and 'if __name__ == "__main__":' in path.read_text():
                out.add((f"{folder}/{path.name}",))
    return out


def argv_of(key) -> list:
    if key[0] == "-m":
        return [PY, "-m", key[1]]
    return [PY, str(REPO / key[0]), *key[1:]]


def tracked_files() -> dict:
    """{tracked file: mtime}, plus the untracked files git does not ignore."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    return {n: (REPO / n).stat().st_mtime_ns for n in names if (REPO / n).exists()}


def test_every_entry_point_is_listed():
    assert entry_points() <= set(HELP), sorted(entry_points() - set(HELP))


def test_every_entry_point_answers_help_and_touches_nothing(tmp_path):
    before = tracked_files()
    for key, first_line in HELP.items():
        res = run([*argv_of(key), "--help"], tmp_path, check=False)
        assert (res.returncode, res.stderr) == (0, ""), (key, res.stderr)
        line = res.stdout.splitlines()[0]
        assert line == first_line or (key[0].startswith("bench/") and line.startswith(first_line + " ")), key
    assert list(tmp_path.iterdir()) == []
    assert tracked_files() == before      # e.g. docs_gen --help rewrote the docs once
    res = subprocess.run([str(REPO / "manager.sh"), "--help"], cwd=tmp_path, capture_output=True, text=True,
                         check=False)
    assert (res.returncode, res.stdout.splitlines()[0]) == (0, "PyJAMA exposure manager.")


def test_both_clis_print_the_package_version():
    for prog in ("pyjama.py", "drawer.py"):
        res = run([PY, str(REPO / prog), "--version"], REPO, check=False)
        assert (res.returncode, res.stdout, res.stderr) == (0, f"{prog} {__version__}\n", "")


def _flags(parser: argparse.ArgumentParser, command: str) -> dict:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.option_strings[0]: a.option_strings[1] for a in sub.choices[command]._actions
            if len(a.option_strings) == 2 and not a.option_strings[0].startswith("-h")}


def test_the_short_flags_mean_the_same_on_both_clis():
    want = {"--quiet": "-q", "--dry-run": "-n", "--verbose": "-v"}
    for parser in (drawer.build_parser(), cli.build_parser()):
        flags = _flags(parser, "run")
        assert {k: flags[k] for k in want} == want
    # a step's own dry run (the imports) is the same -n, not a second flag
    assert _flags(cli.build_parser(["80_import_postgres.py"]), "run")["--dry-run"] == "-n"


@pytest.fixture
def proj(tmp_path):
    make_project(tmp_path, "T", devices=1, days=2, hz=0.01, defects=False)
    return tmp_path


def test_pyjama_run_dry_run_lists_what_it_would_write_and_writes_nothing(proj):
    res = pyjama(proj, "run", "10_parser.py", "--with", "configs/T/10_parser.json", "-n")
    assert (res.returncode, res.stderr) == (0, "")
    assert res.stdout == ("would write: 10_parser.py raw=T_valve01_2026-01-20.csv\n"
                          "would write: 10_parser.py raw=T_valve01_2026-01-21.csv\n"
                          "10_parser.py: 2 partition(s) would be written (dry run: nothing changed)\n")
    assert not (proj / "data" / "T" / "10_parsed").exists()
    res = pyjama(proj, "run", "10_parser.py", "--with", "configs/T/10_parser.json", "-n", "-q",
                 "--from", "2026-01-21")
    assert res.stdout == "10_parser.py: 1 partition(s) would be written (dry run: nothing changed)\n"


def test_pyjama_run_verbose_prints_one_line_per_partition(proj):
    assert pyjama(proj, "run", "10_parser.py", "--with", "configs/T/10_parser.json", "-q").returncode == 0
    res = pyjama(proj, "run", "20_split.py", "--with", "configs/T/20_split.json", "-n", "--to", "2026-01-20")
    assert res.stdout == ("would write: 20_split.py valve01/2026-01-20\n"
                          "20_split.py: 1 partition(s) would be written (dry run: nothing changed)\n")
    assert not (proj / "data" / "T" / "20_split").exists()
    res = pyjama(proj, "run", "20_split.py", "--with", "configs/T/20_split.json", "-v")
    assert res.returncode == 0, res.stderr
    lines = []
    for day in ("2026-01-20", "2026-01-21"):
        led = io.read_ledger(proj / io.partition_file("T", "20_split", "valve01", day))
        lines.append(f"20_split.py valve01/{day}: rows in {led['rows_in']}, out {led['rows_out']}, "
                     f"set aside {sum(led['rejected'].values())}")
    assert res.stdout.splitlines()[:2] == lines
    assert re.fullmatch(r"20_split\.py: 2 partition\(s\) written, rows in \d+, out \d+, set aside \d+, "
                        r"in \d+\.\d s", res.stdout.splitlines()[2])


def test_dag_examples_write_only_untracked_ignored_paths():
    """The README's and drawer.py's `dag … -o X` examples must not overwrite a tracked file
    (docs/rulegraph.svg is redrawn by python3 -m pyjama.dag, tests/test_dag.py)."""
    text = "".join(p.read_text() for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")])
    text += drawer.DAG_EPILOG
    outputs = re.findall(r"drawer\.py dag [^\n`\[]*?-o ([\w./-]+)(?:\s|$)", text, re.MULTILINE)
    assert set(outputs) == {"rulegraph.svg", "jobs.png", "-"}, outputs
    for out in outputs:
        if out == "-":
            continue
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", out], cwd=REPO, capture_output=True,
                                 check=False)
        ignored = subprocess.run(["git", "check-ignore", "-q", out], cwd=REPO, check=False)
        assert (tracked.returncode, ignored.returncode) == (1, 0), out
