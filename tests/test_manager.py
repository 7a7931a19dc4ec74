"""manager.sh: create / archive / delete an exposure, with exact refusals."""
import json
import os
import subprocess

import pytest

from tests.wf import REPO

MANAGER = str(REPO / "manager.sh")


def sh(cwd, *args):
    env = dict(os.environ)
    return subprocess.run([MANAGER, *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_create_makes_stages_configs_and_brief(tmp_path):
    r = sh(tmp_path, "create", "MY_EXPO")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("created exposure MY_EXPO: configs/MY_EXPO/")
    # only the raw folder: each step makes its stage folder when it writes
    assert [p.name for p in (tmp_path / "data" / "MY_EXPO").iterdir()] == ["00_raw"]
    pipe = json.loads((tmp_path / "configs/MY_EXPO/pipeline.json").read_text())
    assert pipe["exposure"] == "MY_EXPO"
    for step in pipe["steps"]:
        assert step["with"].startswith("configs/MY_EXPO/")
        assert (tmp_path / step["with"]).exists()
        assert json.loads((tmp_path / step["with"]).read_text())["exposure"] == "MY_EXPO"
    parser = json.loads((tmp_path / "configs/MY_EXPO/10_parser.json").read_text())
    assert parser["device"]["pattern"].startswith("^MY_EXPO_(?P<device>")
    brief = (tmp_path / "configs/MY_EXPO/llm.txt").read_text()
    assert "data/MY_EXPO/00_raw" in brief and "quality_flag" in brief


def test_created_exposure_loads_and_parses_the_station_format(tmp_path):
    import sys

    sh(tmp_path, "create", "A.b-1")
    sys.path.insert(0, str(REPO))
    from pyjama.pipeline import load_pipeline
    from pyjama.parse import parse_bytes

    pipe = load_pipeline("configs/A.b-1/pipeline.json", tmp_path)
    parser = pipe.steps[0]
    res = parse_bytes(b"2026-01-20T09:07:58.142308Z;m0:10;m1:12;outdoor_temp:18.94\n", parser.params,
                      "A.b-1_valve01_2026-01-20.csv.gz")
    assert list(res.rows["domain"]) == ["bio_signal", "bio_signal", "environment"]
    assert set(res.rows["device_id"]) == {"valve01"}


@pytest.mark.parametrize("name, message", [
    ("../x", "Error: exposure name: '../x' is not allowed; allowed: letters, digits, '_', '-', '.' "
             "(not first, no '..'), at most 64 characters"),
    ("a/b", "Error: exposure name: 'a/b' is not allowed; allowed: letters, digits, '_', '-', '.' "
            "(not first, no '..'), at most 64 characters"),
    ("my expo", "Error: exposure name: 'my expo' is not allowed; allowed: letters, digits, '_', '-', '.' "
                "(not first, no '..'), at most 64 characters"),
    ("", "Error: exposure name: empty; allowed: letters, digits, '_', '-', '.' (not first)"),
])
def test_bad_names_are_refused(tmp_path, name, message):
    r = sh(tmp_path, "create", name)
    assert r.returncode == 2 and r.stderr.strip() == message
    assert not (tmp_path / "configs").exists() or not any((tmp_path / "configs").iterdir())


def test_create_twice_is_refused(tmp_path):
    sh(tmp_path, "create", "E1")
    r = sh(tmp_path, "create", "E1")
    assert r.returncode == 2
    assert r.stderr.strip() == f"Error: exposure 'E1' already exists ({tmp_path}/configs/E1); archive or delete it first"


def test_archive_then_delete(tmp_path):
    sh(tmp_path, "create", "E1")
    (tmp_path / "data/E1/00_raw/x.csv").write_text("keep me\n")
    r = sh(tmp_path, "delete", "E1")
    assert r.returncode == 2
    assert r.stderr.strip() == ("Error: exposure 'E1' is not archived; run ./manager.sh archive E1 first, "
                                "or add --force to delete it without an archive")
    r = sh(tmp_path, "archive", "E1")
    assert r.returncode == 0 and r.stdout.strip() == "archived exposure E1 to ARCHIVES/E1/"
    assert (tmp_path / "ARCHIVES/E1/data/00_raw/x.csv").read_text() == "keep me\n"
    assert (tmp_path / "ARCHIVES/E1/configs/pipeline.json").exists()
    assert not (tmp_path / "configs/E1").exists() and not (tmp_path / "data/E1").exists()
    # a second exposure of the same name cannot overwrite the archive
    sh(tmp_path, "create", "E2")
    os.rename(tmp_path / "configs/E2", tmp_path / "configs/E1")
    r = sh(tmp_path, "archive", "E1")
    assert r.returncode == 2 and r.stderr.strip() == "Error: ARCHIVES/E1 already exists; refusing to overwrite an archive"


def test_delete_force(tmp_path):
    sh(tmp_path, "create", "E1")
    r = sh(tmp_path, "delete", "E1", "--force")
    assert r.returncode == 0 and not (tmp_path / "configs/E1").exists()
    r = sh(tmp_path, "delete", "E1")
    assert r.returncode == 2 and r.stderr.strip() == "Error: exposure 'E1' not found"


def test_unknown_command_and_install_target(tmp_path):
    r = sh(tmp_path, "explode")
    assert r.returncode == 2
    assert r.stderr.strip() == "Error: unknown command 'explode'; allowed: install, create, archive, delete, demo"
    r = sh(tmp_path, "install", "numpy")
    assert r.returncode == 2
    assert r.stderr.strip() == "Error: install takes 'pyjama' (./manager.sh install pyjama); got 'numpy'"


def test_name_rule_is_the_same_in_manager_and_config():
    import sys

    sys.path.insert(0, str(REPO))
    from pyjama.config import NAME_RE
    from pyjama.manage import check_name, ManageError

    for name in ["ok", "A.b-1", "x" * 64, "x" * 65, ".hidden", "-x", "a..b", "é"]:
        try:
            check_name(name)
            manager_ok = True
        except ManageError:
            manager_ok = False
        assert manager_ok == (bool(NAME_RE.match(name)) and ".." not in name), name


def test_demo_configs_are_the_templates(tmp_path):
    """configs/DEMO is what `manager.sh create DEMO` makes: the templates cannot drift from
    the exposure the README runs. (Regenerate: rm -r configs/DEMO, then create it in a
    scratch folder and copy it back.)"""
    import sys

    sys.path.insert(0, str(REPO))
    from pyjama.manage import create

    create("DEMO", tmp_path)
    made = {p.name: p.read_text() for p in (tmp_path / "configs/DEMO").iterdir()}
    have = {p.name: p.read_text() for p in (REPO / "configs/DEMO").iterdir()}
    assert made == have
