"""A throwaway PostgreSQL cluster made with the local PostgreSQL binaries (initdb, pg_ctl),
for machines where no server is reachable. Used by tests/conftest.py; stopped and removed
at the end of the test session."""
from __future__ import annotations

import getpass
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class ThrowawayError(RuntimeError):
    pass


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return cands[0] if cands else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Throwaway:
    """``start()`` → DSN string; ``stop()`` removes everything it made."""

    def __init__(self):
        self.dir = None
        self.port = None
        self.prefix: list = []

    def start(self) -> str:
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise ThrowawayError("no initdb/pg_ctl found (PostgreSQL server binaries are not installed)")
        self.dir = Path(tempfile.mkdtemp(prefix="pyjama-pg-"))
        user = getpass.getuser()
        if os.geteuid() == 0:   # initdb refuses root: run the cluster as the postgres user
            runuser = shutil.which("runuser")
            if not runuser:
                raise ThrowawayError("running as root and no runuser to start PostgreSQL as another user")
            shutil.chown(self.dir, "postgres")
            self.prefix = [runuser, "-u", "postgres", "--"]
            user = "postgres"
        data, sock = self.dir / "data", self.dir
        self.port = _free_port()
        run = lambda cmd: subprocess.run(self.prefix + cmd, capture_output=True, text=True, timeout=120)  # noqa: E731
        r = run([initdb, "-D", str(data), "-A", "trust", "-U", user, "--no-sync", "-E", "UTF8"])
        if r.returncode != 0:
            raise ThrowawayError(f"initdb failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
        r = run([pg_ctl, "-D", str(data), "-l", str(self.dir / "log"), "-w", "-t", "60",
                 "-o", f"-p {self.port} -k {sock} -h 127.0.0.1 -c fsync=off", "start"])
        if r.returncode != 0:
            raise ThrowawayError(f"pg_ctl start failed: {r.stderr.strip() or r.stdout.strip()}")
        self.pg_ctl, self.data, self.user = pg_ctl, data, user
        return f"host=127.0.0.1 port={self.port} dbname=postgres user={user} connect_timeout=5"

    def stop(self) -> None:
        if self.dir is None:
            return
        if getattr(self, "pg_ctl", None):
            subprocess.run(self.prefix + [self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
