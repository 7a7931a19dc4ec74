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


DEMO_STEPS = ["10_parser", "20_split", "30_clean", "40_resample", "50_transform", "50_normalise",
              "60_behaviour"]


def edit(path, change):
    if path.exists():
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data, indent=2))


def slow_down(cfg: dict, factor: int) -> None:
    """Every duration of a step config × factor (a 1-s grid config → a 20-s grid one)."""
    for key, v in cfg.items():
        if isinstance(v, dict):
            slow_down(v, factor)
        elif isinstance(v, str) and re.fullmatch(r"\d+s", v):
            cfg[key] = f"{int(v[:-1]) * factor}s"
        elif key.endswith("_s") and isinstance(v, (int, float)) and not isinstance(v, bool):
            cfg[key] = v * factor


def make_fast_demo(root: Path, devices: int = 1, days: int = 1) -> Path:
    """The DEMO exposure as ``./manager.sh create DEMO`` makes it, every valvometry step
    listed, on tiny data: one sample every 20 s on a 20-s grid (the chain in seconds)."""
    sys.path.insert(0, str(REPO))
    from pyjama.demo import generate
    from pyjama.manage import create

    create("DEMO", root)
    cfg = root / "configs" / "DEMO"
    pipe = json.loads((cfg / "pipeline.json").read_text())
    if not any(s["script"] == "60_behaviour.py" for s in pipe["steps"]):
        # the template pipeline does not list the valvometry steps yet: list them here
        pipe["steps"] = [{"script": f"{n}.py", "with": f"configs/DEMO/{n}.json"} for n in DEMO_STEPS
                         if (cfg / f"{n}.json").exists()]
        (cfg / "pipeline.json").write_text(json.dumps(pipe, indent=2))
    edit(cfg / "40_resample.json", lambda c: [r.update(freq="20s", max_gap="60s")
                                              for r in [*c["domains"].values(), c["default_rule"]]])
    edit(cfg / "60_behaviour.json", lambda c: slow_down(c, 20))
    generate(root / "data" / "DEMO" / "00_raw", "DEMO", devices=devices, days=days, hz=0.05)
    return root
