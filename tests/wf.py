"""Helpers for tests that run the real workflow in a temporary project (no mocks)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REAL = REPO.parent / "shared" / "data" / "real"
PY = sys.executable


def make_project(root: Path, name: str = "T", devices: int = 1, days: int = 2, hz: float = 0.05,
                 steps=("10_parser", "20_split"), defects: bool = True, start: str = "2026-01-20"):
    """A project folder with exposure ``name`` from the templates, tiny generated raw data,
    and a pipeline.json listing ``steps`` (template config names)."""
    sys.path.insert(0, str(REPO))
    from pyjama.demo import generate
    from pyjama.manage import create

    create(name, root)
    pipe = {"exposure": name, "steps": []}
    script_of = {"10_parser": "10_parser.py", "20_split": "20_split.py"}
    for s in steps:
        script = script_of.get(s, re.sub(r"^(\d+_[a-z]+).*$", r"\1", s) + ".py")
        pipe["steps"].append({"script": script, "with": f"configs/{name}/{s}.json"})
    (root / "configs" / name / "pipeline.json").write_text(json.dumps(pipe, indent=2))
    manifest = generate(root / "data" / name / "00_raw", name, devices=devices, days=days,
                        hz=hz, defects=defects, start=start)
    return manifest


def run(cmd, cwd, check=True, timeout=600):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}")
    return res


def snakemake(cwd, *args, name="T", check=True, config=()):
    """Run the real workflow; ``config`` holds extra --config entries (e.g. "from=2026-01-20")."""
    return run([PY, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--cores", "2",
                *args, "--config", f"exposure={name}", *config], cwd, check)


def pyjama(cwd, *args, check=False):
    return run([PY, str(REPO / "pyjama.py"), *args], cwd, check)


def drawer(cwd, *args, check=False):
    return run([PY, str(REPO / "drawer.py"), *args], cwd, check)


def planned_jobs(cwd, *config, name="T") -> dict:
    """{rule: count} of what a dry run would execute (empty when nothing to do)."""
    res = snakemake(cwd, "-n", "--quiet", "rules", name=name, config=config)
    out = res.stdout + res.stderr
    jobs = {}
    m = re.search(r"Job stats:\n(.*?)\n\n", out + "\n\n", re.S)
    if not m:
        return jobs
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            jobs[parts[0]] = int(parts[1])
    return jobs


def outputs(cwd, stage, name="T"):
    """{relative path: bytes} of every file of a stage folder."""
    base = Path(cwd) / "data" / name / stage
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}
