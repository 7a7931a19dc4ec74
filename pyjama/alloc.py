"""glibc's malloc settings for PyJAMA's processes: keep freed array memory for the next job.

A 1 Hz device-day's steps allocate and free many arrays of several MB (a float column of
60_behaviour's 3.1 M rows is 25 MB). With glibc's defaults an allocation above the *mmap threshold*
(128 KB, raised on the fly up to the size of the last freed block) gets fresh pages from
the kernel and gives them back when freed, and the heap's free top is given back above the
*trim threshold* (twice the mmap threshold): a new array often pays the kernel's fresh
zeroed pages again. :func:`tune_malloc` sets

- ``M_MMAP_THRESHOLD`` = 32 MB, glibc's largest on 64-bit systems (half of its 64 MB heap):
  arrays up to 32 MB come from the heap and are reused there;
- ``M_TRIM_THRESHOLD`` = 256 MB: up to that much freed memory stays in the process.

Measured (issue 14, session 13; the code before and after alternated, every output file
the same rows: 98 of 98 and 392 of 392):

- the chain 10 → 70 of a new 1 Hz device-day six times in one process (``pyjama.py run``
  per step), three pairs: warm 2.62–2.83 → 2.39–2.44 s of wall, the first run 3.1–4.1 →
  2.8–3.1 s;
- a new device-day in Snakemake (14 jobs in threads), five pairs: median 4.31 → 4.01 s,
  every pair faster;
- the full build of dataset M (227 jobs in worker processes), three pairs: 47.7, 45.9 and
  51.9 s → 41.7, 41.5 and 45.7 s of wall, 85.1, 86.1 and 96.3 → 77.8, 77.9 and 85.9 CPU-s;
  the largest process's peak 715 → 743 MB (third pair);
- peak memory of each step on a 10 Hz device-day: +1 to +6 % (the largest, 30_clean,
  1,901 → 1,914 MB).

Tried: the trim threshold alone is slower than glibc's defaults (it also freezes the mmap
threshold at 128 KB); 1 GB of trim threshold gains no more than 256 MB. The values
computed do not change: only where freed memory goes.

Called where PyJAMA's processes start: the Snakefile's plan
(:func:`pyjama.workflow.load_plan_or_exit`: the Snakemake process, whose job threads compute
runs under 100 jobs, and each SLURM job), each worker process (:mod:`pyjama.workers`) and
``pyjama.py``. Left alone: when the user set glibc's own ``MALLOC_*`` variables or
``GLIBC_TUNABLES`` (theirs win), when ``PYJAMA_MALLOC_TUNING=0``, and where the C library is
not glibc (macOS, musl). Any other value of ``PYJAMA_MALLOC_TUNING`` than 0 or 1 is one
line before any job.
"""
from __future__ import annotations

import os

from .errors import UserError

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # glibc's malloc.h
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 256 * 1024 * 1024
OFF_ENV = "PYJAMA_MALLOC_TUNING"
_DONE: dict = {}          # "result": the first call's answer (once per process)


def tune_malloc(environ=None) -> str:
    """Set the thresholds once per process. Returns what was done: ``"set"``; ``"off"``
    (``PYJAMA_MALLOC_TUNING=0``); ``"user"`` (the user's own ``MALLOC_*`` or
    ``GLIBC_TUNABLES``); ``"not glibc"``; ``"refused"`` (glibc said no: nothing changed).
    A second call returns the first call's answer. UserError for a value of
    ``PYJAMA_MALLOC_TUNING`` other than 0 or 1."""
    if "result" in _DONE:
        return _DONE["result"]
    env = os.environ if environ is None else environ
    switch = env.get(OFF_ENV, "").strip()
    if switch not in ("", "0", "1"):
        raise UserError(f"{OFF_ENV}={switch!r}: not 0 or 1; allowed: 0 (glibc's own malloc settings) "
                        "or 1 (unset: the thresholds of pyjama/alloc.py)")
    if switch == "0":
        result = "off"
    elif any(k.startswith("MALLOC_") for k in env) or "GLIBC_TUNABLES" in env:
        result = "user"
    else:
        result = _mallopt()
    _DONE["result"] = result
    return result


def _mallopt() -> str:
    import ctypes

    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return "not glibc"
    # glibc only: musl and macOS have no gnu_get_libc_version (macOS no mallopt either)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return "not glibc"
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return "set" if ok else "refused"
