"""The unchanged workflow on a REAL single-node SLURM cluster (docs/slurm.md).

One tiny exposure is built twice in the same folder: locally (`drawer.py run`, the reference),
then through the shipped profile workflow/profiles/slurm — the first step with
`drawer.py run … --profile slurm`, the rest with `snakemake --profile workflow/profiles/slurm`,
so both documented forms submit real jobs. Then:

* every output file (parquet, ledger, rejects, …) is byte-for-byte the local one;
* every job Snakemake ran was a SLURM job: the plugin reports a SLURM job id per job,
  SLURM's own accounting (sacct; squeue's memory without accounting) lists each id as
  COMPLETED with this project as its working directory, and each job's SLURM log shows the
  rule's body was run inside that allocation by the jobstep executor.

The cluster: reused when `tests/infra/slurm_cluster.sh status` says it is usable (.ci/run
starts it and sets PYJAMA_SLURM=up), else brought up here and stopped after. When it cannot
be brought up (not root, no apt) the test FAILS saying what to install; PYJAMA_SKIP_SLURM=1
turns that into a visible skip.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.wf import REPO, make_project

pytestmark = pytest.mark.slurm

CLUSTER_SH = REPO / "tests" / "infra" / "slurm_cluster.sh"
EXPO = "T"
MAX_STEPS = 4        # each step is one more SLURM round trip (~16 s here): keep CI short
RUN_LIMIT_S = 240    # a SIGTERM'd Snakemake can hang: every run is bounded by `timeout -k`
INSTALL_HINT = (
    "the SLURM test needs a single-node SLURM cluster. As root on Debian/Ubuntu with apt and a "
    "MariaDB at 127.0.0.1:3306: `bash tests/infra/slurm_cluster.sh up` installs slurm-wlm, "
    "slurmdbd and munge and starts them (`... down` stops them). Elsewhere install SLURM "
    "(slurmctld, slurmd, slurmdbd) and munge yourself, or set PYJAMA_SKIP_SLURM=1 to skip")


# ------------------------------------------------------------------------------ helpers
def cluster(cmd: str, limit: int = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER_SH), cmd], capture_output=True, text=True,
                          timeout=limit)


def bounded(cmd, cwd: Path, limit: int = RUN_LIMIT_S) -> subprocess.CompletedProcess:
    """Run ``cmd`` killed after ``limit`` s (TERM, then KILL 15 s later); fail with its output."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run(["timeout", "-k", "15", str(limit), *map(str, cmd)], cwd=cwd,
                         capture_output=True, text=True, env=env, timeout=limit + 30)
    if res.returncode != 0:
        why = "timed out" if res.returncode in (124, 137) else f"exit {res.returncode}"
        raise AssertionError(f"{' '.join(map(str, cmd))} ({why}):\n{res.stdout[-3000:]}\n"
                             f"{res.stderr[-6000:]}")
    return res


def accounting_enabled() -> bool:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                         timeout=20).stdout
    return "accounting_storage/none" not in out


def slurm_jobs_of(root: Path, ids) -> dict:
    """{job id: (state, working directory)} as SLURM itself recorded them."""
    ids = ",".join(sorted(ids))
    if accounting_enabled():
        cmd = ["sacct", "-a", "-X", "-n", "-P", "-j", ids, "-o", "JobIDRaw,State,WorkDir"]
    else:   # finished jobs stay in squeue for MinJobAge (300 s in slurm_cluster.sh)
        cmd = ["squeue", "-h", "-t", "all", "-j", ids, "-o", "%i|%T|%Z"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    rows = [line.split("|", 2) for line in out.splitlines() if line.strip()]
    return {jid: (state.split()[0], workdir) for jid, state, workdir in rows}


def cancel_jobs_of(root: Path) -> None:
    """scancel whatever a failed or timed-out run left queued in this project."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%Z"], capture_output=True, text=True,
                         timeout=30).stdout
    ids = [line.split("|")[0] for line in out.splitlines() if line.endswith(f"|{root}")]
    if ids:
        subprocess.run(["scancel", *ids], timeout=30)


def template_pipeline(root: Path) -> list:
    """The steps to run: the template pipeline, plus further template configs (in number
    order, before the 80 database imports) that load as a valid chain, at most MAX_STEPS."""
    sys.path.insert(0, str(REPO))
    from pyjama.pipeline import load_pipeline

    pipe_path = root / "configs" / EXPO / "pipeline.json"
    pipe = json.loads(pipe_path.read_text())
    listed = {Path(e["with"]).name for e in pipe["steps"]}
    for cfg in sorted((root / "configs" / EXPO).glob("[0-7]*.json")):
        if cfg.name in listed or len(pipe["steps"]) >= MAX_STEPS:
            continue
        script = re.sub(r"^(\d+_[a-z]+).*$", r"\1", cfg.stem) + ".py"
        trial = dict(pipe, steps=pipe["steps"] + [{"script": script,
                                                    "with": f"configs/{EXPO}/{cfg.name}"}])
        pipe_path.write_text(json.dumps(trial, indent=2))
        try:
            load_pipeline(f"configs/{EXPO}/pipeline.json", root)
        except Exception:       # not (yet) a loadable step in this chain: leave it out
            continue
        pipe = trial
    pipe_path.write_text(json.dumps(pipe, indent=2))
    return [Path(e["with"]).stem for e in pipe["steps"]]


def built_files(root: Path) -> dict:
    """{path under data/<EXPO>: bytes} of every file in the stage folders the pipeline wrote
    (00_raw and hidden bookkeeping such as the raw-file index excluded)."""
    base = root / "data" / EXPO
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and p.relative_to(base).parts[0] != "00_raw"
            and not p.relative_to(base).parts[0].startswith(".")}


def forget_run(root: Path) -> None:
    """Remove what a run built and recorded, keeping configs and raw files."""
    for stage in (root / "data" / EXPO).iterdir():
        if stage.name != "00_raw":
            shutil.rmtree(stage)
            stage.mkdir()
    for d in (".snakemake", "logs"):
        shutil.rmtree(root / d, ignore_errors=True)


SUBMITTED_RE = re.compile(r"Job [\w-]+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
RULE_RE = re.compile(r"^\s*(?:local)?rule (\w+):", re.M)      # indented: a job of a group job
SOLO_RE = re.compile(r"^rule (\w+):", re.M)                     # a job submitted alone
GROUP_RE = re.compile(r"Group job (\w+) \(jobs in", re.M)        # one SLURM job for several jobs


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def slurm_cluster():
    """A usable cluster for this module: reused if up, else started here and stopped after."""
    if shutil.which("sbatch") and cluster("status").returncode == 0:
        yield "reused"
        return
    if os.environ.get("PYJAMA_SLURM") == "up":
        pytest.fail("PYJAMA_SLURM=up but `slurm_cluster.sh status` says the cluster is not "
                    f"usable:\n{cluster('status').stdout}", pytrace=False)
    if os.environ.get("PYJAMA_SKIP_SLURM") == "1":
        pytest.skip("PYJAMA_SKIP_SLURM=1 and no usable SLURM cluster: SLURM test skipped "
                    "(docs/slurm.md says how to get one)")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(f"cannot start a test cluster here (needs root and apt-get): {INSTALL_HINT}",
                    pytrace=False)
    res = cluster("up", limit=600)
    if res.returncode != 0:
        cluster("down", limit=120)
        pytest.fail(f"`slurm_cluster.sh up` failed:\n{res.stderr[-4000:]}\n{INSTALL_HINT}",
                    pytrace=False)
    try:
        yield "started"
    finally:
        cluster("down", limit=120)


@pytest.fixture(scope="module")
def runs(slurm_cluster, tmp_path_factory):
    """The same exposure built locally, then on SLURM, in the same folder."""
    root = tmp_path_factory.mktemp("slurm")
    make_project(root, EXPO, devices=1, days=1, hz=0.05)
    steps = template_pipeline(root)
    (root / "workflow").symlink_to(REPO / "workflow")   # `snakemake --profile workflow/…` as documented
    drawer, pipeline = [sys.executable, REPO / "drawer.py", "run"], f"configs/{EXPO}/pipeline.json"

    bounded([*drawer, pipeline, "--cores", "2"], root)
    local = built_files(root)
    forget_run(root)

    extra = ["--slurm-keep-successful-logs"]     # the SLURM logs are evidence below
    if not accounting_enabled():
        extra += ["--slurm-status-command", "squeue"]
    try:
        first = bounded([*drawer, pipeline, "--profile", "slurm", "--until", steps[0], "--verbose",
                         "--", *extra], root)
        rest = bounded([sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/slurm",
                        "--config", f"exposure={EXPO}", *extra], root)
    finally:
        cancel_jobs_of(root)
    return {"root": root, "steps": steps, "local": local, "slurm": built_files(root),
            "logs": [first.stdout + first.stderr, rest.stdout + rest.stderr]}


# ------------------------------------------------------------------------------ tests
def test_slurm_outputs_are_the_local_outputs_byte_for_byte(runs):
    local, slurm = runs["local"], runs["slurm"]
    assert sorted(slurm) == sorted(local)
    differing = [path for path in local if slurm[path] != local[path]]
    assert differing == []
    # not a vacuous comparison: each step wrote a parquet (its ledger in the footer)
    for stage_dir in {Path(p).parts[0] for p in local if Path(p).parts[0] != "_meta"}:
        names = {Path(p).name for p in local if p.startswith(stage_dir + "/")}
        assert "part.parquet" in names, stage_dir
    assert len({Path(p).parts[0] for p in local}) >= len(runs["steps"])


def test_every_job_was_a_completed_slurm_job_in_this_project(runs):
    for out in runs["logs"]:
        ran = [r for r in RULE_RE.findall(out) if r != "all"]
        submitted = SUBMITTED_RE.findall(out)
        assert ran, "no job ran"
        # no rule ran on the login node: each job was submitted alone or in a group job
        assert len(submitted) == len(SOLO_RE.findall(out)) + len(GROUP_RE.findall(out))
    ids = {jid for out in runs["logs"] for jid, _ in SUBMITTED_RE.findall(out)}
    recorded = slurm_jobs_of(runs["root"], ids)
    assert recorded == {jid: ("COMPLETED", str(runs["root"])) for jid in ids}


def test_each_job_body_ran_inside_its_slurm_allocation(runs):
    # The plugin's sbatch script starts Snakemake's jobstep executor inside the allocation
    # (SLURM_JOB_ID set); its output is the job's SLURM log, named after the job id.
    for out in runs["logs"]:
        assert SUBMITTED_RE.search(out), "no SLURM job was submitted"
        for jid, log in SUBMITTED_RE.findall(out):
            assert Path(log).name == f"{jid}.log"
            text = Path(log).read_text()
            assert "--executor slurm-jobstep" in text, log
            assert re.search(r"^\s*rule s\w+:", text, re.M), log


def test_both_documented_commands_submitted_jobs(runs):
    first, rest = runs["logs"]
    steps = runs["steps"]
    assert RULE_RE.findall(first) == [f"s{steps[0]}", "all"]   # drawer.py … --profile slurm --until
    assert f"s{steps[1]}" in RULE_RE.findall(rest)               # snakemake --profile workflow/profiles/slurm
    assert SUBMITTED_RE.search(first) and SUBMITTED_RE.search(rest)


# ------------------------------------------------------------------------------ grouped jobs
KNOB = 2       # partitions per SLURM job: --group-components pyjama=KNOB (docs/slurm.md)


@pytest.fixture(scope="module")
def grouped(slurm_cluster, tmp_path_factory):
    """2 devices × 2 days built locally, then on SLURM with KNOB partitions per SLURM job."""
    root = tmp_path_factory.mktemp("slurm_grouped")
    make_project(root, EXPO, devices=2, days=2, hz=0.05,
                 steps=("10_parser", "20_split", "30_clean", "40_resample"))
    (root / "workflow").symlink_to(REPO / "workflow")
    bounded([sys.executable, REPO / "drawer.py", "run", f"configs/{EXPO}/pipeline.json", "--cores", "2"], root)
    local = built_files(root)
    forget_run(root)
    extra = [] if accounting_enabled() else ["--slurm-status-command", "squeue"]
    try:
        res = bounded([sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/slurm",
                       "--config", f"exposure={EXPO}", "--group-components", f"pyjama={KNOB}", *extra],
                      root, limit=RUN_LIMIT_S + 120)
    finally:
        cancel_jobs_of(root)
    return {"local": local, "slurm": built_files(root), "log": res.stdout + res.stderr}


def test_grouped_jobs_submit_at_most_device_days_over_the_knob_with_the_same_bytes(grouped):
    device_days = 2 * 2
    submitted = SUBMITTED_RE.findall(grouped["log"])
    ran = [r for r in RULE_RE.findall(grouped["log"]) if r != "all"]
    assert len(ran) == 4 * device_days                 # parser, split, clean, resample per device-day
    assert 0 < len(submitted) <= device_days // KNOB
    assert len(GROUP_RE.findall(grouped["log"])) == len(submitted)
    assert sorted(grouped["slurm"]) == sorted(grouped["local"])
    assert [p for p in grouped["local"] if grouped["slurm"][p] != grouped["local"][p]] == []
