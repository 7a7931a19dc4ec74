"""pyjama.alloc: glibc's malloc thresholds, set once per process unless the user set theirs."""
import platform
import subprocess
import sys

import pytest

from pyjama import alloc
from pyjama.errors import UserError
from tests.wf import REPO, make_project, snakemake

BAD = ("PYJAMA_MALLOC_TUNING='yes': not 0 or 1; allowed: 0 (glibc's own malloc settings) "
       "or 1 (unset: the thresholds of pyjama/alloc.py)")

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(alloc, "_DONE", {})


@pytest.mark.parametrize("environ, expected", [
    ({"PYJAMA_MALLOC_TUNING": "0"}, "off"),
    ({"MALLOC_ARENA_MAX": "2"}, "user"),
    ({"MALLOC_TRIM_THRESHOLD_": "0"}, "user"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, "user"),
    ({"PYJAMA_MALLOC_TUNING": "0", "MALLOC_ARENA_MAX": "2"}, "off"),
])
def test_the_users_own_settings_and_the_switch_leave_malloc_alone(fresh, environ, expected):
    assert alloc.tune_malloc(environ) == expected


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_a_bad_switch_is_refused_with_what_is_allowed(fresh):
    with pytest.raises(UserError) as exc:
        alloc.tune_malloc({"PYJAMA_MALLOC_TUNING": "yes"})
    assert str(exc.value) == BAD


@pytest.mark.skipif(not GLIBC, reason="glibc only")
@pytest.mark.parametrize("switch", ["1", " 1 ", ""])
def test_one_or_unset_sets_the_thresholds(fresh, switch):
    assert alloc.tune_malloc({"PYJAMA_MALLOC_TUNING": switch}) == "set"


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_set_once_and_a_second_call_gives_the_first_answer(fresh):
    assert alloc.tune_malloc({}) == "set"
    assert alloc.tune_malloc({"PYJAMA_MALLOC_TUNING": "0"}) == "set"     # once per process


# A fresh interpreter mallocs 16 MB (above glibc's default mmap threshold of 128 KB, below
# the 32 MB set): where does the block come from, an mmap of its own or the heap?
WHERE = """
import ctypes, sys
sys.path.insert(0, sys.argv[2])
if sys.argv[1] == "tune":
    from pyjama.alloc import tune_malloc
    assert tune_malloc({}) == "set"
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
p = libc.malloc(16 << 20)
heap = [ln.split()[0] for ln in open("/proc/self/maps") if ln.rstrip().endswith("[heap]")]
lo, hi = (int(x, 16) for x in heap[0].split("-")) if heap else (0, 0)
print("heap" if lo <= p < hi else "mmap")
"""


@pytest.mark.skipif(not GLIBC, reason="glibc only")
@pytest.mark.parametrize("mode, expected", [("default", "mmap"), ("tune", "heap")])
def test_a_16_mb_block_comes_from_the_heap_once_tuned(mode, expected):
    env = {"PATH": "/usr/bin:/bin"}                    # no MALLOC_* of the caller's
    res = subprocess.run([sys.executable, "-c", WHERE, mode, str(REPO)], capture_output=True,
                         text=True, env=env, check=True)
    assert res.stdout.strip() == expected


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_pyjama_py_tunes_its_process():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pyjama import alloc, cli\n"
            "try:\n    cli.main(['run'])\nexcept SystemExit:\n    pass\n"      # argparse: no script given
            "print(alloc._DONE['result'])")
    res = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, check=False)
    assert res.stdout.strip().splitlines()[-1] == "set", res.stderr


def test_a_bad_switch_is_one_line_from_pyjama_py(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "pyjama.py"), "list"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYJAMA_MALLOC_TUNING": "yes"}, cwd=tmp_path, check=False)
    assert res.returncode != 0
    assert res.stderr.strip() == f"Error: {BAD}"


@pytest.mark.slow
def test_a_bad_switch_is_one_line_from_snakemake_before_any_job(tmp_path, monkeypatch):
    make_project(tmp_path)
    monkeypatch.setenv("PYJAMA_MALLOC_TUNING", "yes")
    res = snakemake(tmp_path, check=False)
    assert res.returncode != 0
    assert f"Error: {BAD}" in res.stderr.splitlines()
    assert not (tmp_path / "logs" / "T").exists()
