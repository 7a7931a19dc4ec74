"""One ``drawer.py run`` per exposure at a time, and recovery after a killed run.

``drawer.py run`` holds an OS lock (``fcntl.flock``) on ``data/<EXPO>/.pyjama/run.lock``
for the whole run. The kernel releases it when the process ends, however it ends (SIGKILL,
power loss of a node aside), so the lock can never be left behind. The file holds the pid,
the start time and the command of the run that holds it, so a second run can name it.

While it holds that lock, a Snakemake lock (``.snakemake/locks``) that covers only this
exposure's files can only have been left by a dead run: it is removed (and said in one
line) instead of stopping every later run with Snakemake's ``LockException``.
"""
from __future__ import annotations

import fcntl
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from . import io
from .timewindow import iso_seconds


class RunBusy(Exception):
    """Another live ``drawer.py run`` holds the exposure's lock."""

    def __init__(self, path: Path, holder: dict):
        self.path, self.holder = path, holder
        super().__init__(str(path))


def lock_path(root, exposure: str) -> Path:
    return Path(root) / io.data_dir(exposure) / ".pyjama" / "run.lock"


def _read_holder(path: Path) -> dict:
    info = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            k, _, v = line.partition("=")
            if k:
                info[k.strip()] = v.strip()
    except OSError:
        pass
    return info


def acquire(root, exposure: str, command: str, wait: float = 1.0):
    """Take the exposure's run lock; return the open file (keep it open for the run).
    Raises :class:`RunBusy` naming the holder when another live run has it. ``wait``
    seconds of retries cover a ``drawer.py status`` probing the lock at that instant."""
    path = lock_path(root, exposure)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+", encoding="utf-8")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                fh.close()
                raise RunBusy(path, _read_holder(path)) from None
            time.sleep(0.05)
    fh.seek(0)
    fh.truncate()
    started = iso_seconds(datetime.now(timezone.utc))
    fh.write(f"pid={os.getpid()}\nstarted={started}\ncommand={command}\n")
    fh.flush()
    return fh


def holder(root, exposure: str):
    """The holder (pid, started, command) of the exposure's run lock, or None when no live
    run holds it. Probes with a shared lock, released at once."""
    path = lock_path(root, exposure)
    if not path.exists():
        return None
    with open(path, "r", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(path) or {"pid": "?", "started": "?"}
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return None


def snakemake_locks(root):
    """{lock file: [paths it locks]} of Snakemake's ``.snakemake/locks``."""
    base = Path(root) / ".snakemake" / "locks"
    out = {}
    if not base.is_dir():
        return out
    for f in sorted(base.iterdir()):
        if f.suffix == ".lock":
            try:
                out[f] = [ln for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
            except OSError:
                continue
    return out


def locked_files(root) -> set:
    """Paths (relative to ``root``) a Snakemake run has locked as outputs."""
    root = Path(root).resolve()
    out = set()
    for f, paths in snakemake_locks(root).items():
        if f.name.endswith(".output.lock"):
            for p in paths:
                out.add(os.path.relpath(p, root) if os.path.isabs(p) else p)
    return out


def clear_stale_snakemake_locks(root, exposure: str) -> int:
    """Remove Snakemake's locks whose files all belong to ``exposure`` (call only while
    holding :func:`acquire`); return how many lock files were removed."""
    root = Path(root).resolve()
    mine = [str(root / io.data_dir(exposure)) + os.sep, str(root / "logs" / exposure) + os.sep]
    removed = 0
    for f, paths in snakemake_locks(root).items():
        absolute = [p if os.path.isabs(p) else str(root / p) for p in paths]
        if absolute and all(any(p.startswith(m) for m in mine) for p in absolute):
            try:
                f.unlink()
                removed += 1
            except OSError:
                continue
    return removed
