"""Unattended runs (issue 13): a SIGKILL at several moments of a small build, then the plain
command, gives the same bytes as a clean build with no temp file left; two runs at once:
the second refuses with one line and touches nothing."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from tests.wf import PY, REPO, drawer, make_project, outputs

pytestmark = pytest.mark.slow

PIPE = "configs/T/pipeline.json"
STAGES = ("10_parsed", "20_split", "30_clean")
STEPS = ("10_parser", "20_split", "30_clean")


def start(root):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([PY, str(REPO / "drawer.py"), "run", PIPE, "--cores", "1"], cwd=root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def kill_after(proc, root, finished: int):
    """SIGKILL the run (drawer.py and Snakemake) once ``finished`` jobs are done and the
    next one has started (its incomplete marker exists)."""
    done = 0
    inc = root / ".snakemake" / "incomplete"
    for line in proc.stderr:
        if re.match(r"^\[\d+/\d+\] ", line):
            done += 1
        if done >= finished:
            break
    end = time.monotonic() + 60
    while time.monotonic() < end and proc.poll() is None:
        if inc.is_dir() and any(p.is_file() for p in inc.rglob("*")):
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return done


def test_sigkill_at_three_moments_then_the_plain_command_recovers(tmp_path):
    clean, root = tmp_path / "clean", tmp_path / "killed"
    for r in (clean, root):
        r.mkdir()
        make_project(r, days=2, steps=STEPS, defects=False)
    assert drawer(clean, "run", PIPE).returncode == 0
    expected = {s: outputs(clean, s) for s in STAGES}

    notes = []
    for finished in (0, 2, 4):
        proc = start(root)
        kill_after(proc, root, finished)
        locks = root / ".snakemake" / "locks"
        had_lock = locks.is_dir() and any(locks.iterdir())
        res = drawer(root, "run", PIPE)
        assert res.returncode == 0, res.stderr
        lines = res.stderr.splitlines()
        removed = [ln for ln in lines if ln.startswith("PyJAMA: removed the Snakemake lock")]
        if had_lock:
            assert removed == ["PyJAMA: removed the Snakemake lock left by a run that is no longer "
                               "alive (.snakemake/locks, 2 files)"]
        notes.append((finished, had_lock))
        assert lines[-1].startswith("PyJAMA: done, ") or lines[-1].startswith("PyJAMA: nothing to do")
        assert not list((root / "data").rglob("*.tmp"))
        assert {s: outputs(root, s) for s in STAGES} == expected
        # back to a fresh start for the next moment: delete what was built
        for s in STAGES:
            for f in sorted((root / "data/T" / s).rglob("*"), reverse=True):
                f.unlink() if f.is_file() else f.rmdir()
    assert any(had for _f, had in notes), notes    # at least one kill left Snakemake's lock


def test_two_runs_at_once_the_second_refuses_and_touches_nothing(tmp_path):
    make_project(tmp_path, days=2, steps=STEPS, defects=False)
    a, b = start(tmp_path), start(tmp_path)
    (_oa, ea), (_ob, eb) = a.communicate(timeout=600), b.communicate(timeout=600)
    codes = sorted((a.returncode, b.returncode))
    assert codes == [0, 4], (ea, eb)
    winner, loser = (a, b) if a.returncode == 0 else (b, a)
    err = eb if loser is b else ea
    assert re.fullmatch(
        rf"Error: another drawer\.py run of exposure T is running \(pid {winner.pid}, started "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\); nothing was touched\. Wait for it to end "
        r"\(lock: data/T/\.pyjama/run\.lock\)\n", err)
    assert drawer(tmp_path, "status", PIPE).returncode == 0     # the winner built everything
