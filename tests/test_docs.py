"""The docs cannot drift from the code: flag table, config reference, CLI help."""
import re

from pyjama.flags import PRECEDENCE, Flag
from tests.wf import REPO


def test_flag_table_matches_the_enum():
    text = (REPO / "docs" / "data-conventions.md").read_text()
    rows = re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", text, re.M)
    assert [(int(c), n) for c, n in rows] == [(int(f), f.name) for f in Flag]
    order = re.search(r"\*\*Precedence\*\*.*?:\n(.*?)\n", text, re.S).group(1)
    names = re.findall(r"([A-Z_]+) \(\d\)", order)
    assert names == [f.name for f in PRECEDENCE]


def test_config_reference_is_current():
    from pyjama.docs_gen import render

    current = (REPO / "docs" / "config-reference.md").read_text()
    assert current == render(), "docs/config-reference.md is stale: run python3 -m pyjama.docs_gen"


def test_every_cli_command_is_in_the_readme():
    import argparse

    from pyjama import cli, drawer

    readme = (REPO / "README.md").read_text()
    for prog, parser in (("pyjama.py", cli.build_parser()), ("drawer.py", drawer.build_parser())):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name in sub.choices:
            assert f"{prog} {name}" in readme, f"README lacks an example of `{prog} {name}`"
    for cmd in ("install", "create", "archive", "delete", "demo"):
        assert f"manager.sh {cmd}" in readme, f"README lacks `manager.sh {cmd}`"
    for script in ("scripts/parquet_to_csv.py", "snakemake --cores"):
        assert script in readme


def test_code_has_no_unused_names_or_syntax_errors():
    """pyflakes-level checks (ruff F, E9) over the code: dead imports and variables rot fast."""
    import shutil
    import subprocess

    ruff = shutil.which("ruff") or str(REPO / ".venv" / "bin" / "ruff")
    res = subprocess.run([ruff, "check", "--select", "F,E9", "--target-version", "py311", "--quiet",
                          "pyjama", "tests", "bench", "scripts", "pyjama.py", "drawer.py"],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
