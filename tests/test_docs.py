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
