# Helpers of the Snakefile: the plan (project, rules, targets) comes from the pyjama
# library, the same code `pyjama.py run` uses. Nothing here does data work.
import shlex
import sys
from pathlib import Path

REPO = Path(workflow.basedir).resolve().parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pyjama.errors import UserError
from pyjama.workflow import WorkflowPlan

try:
    PLAN = WorkflowPlan(config)
except UserError as exc:
    # One line, no traceback: the same text drawer.py prints.
    print(f"Error: {exc}", file=sys.stderr)
    sys.exit(2)

if not PLAN.targets():
    print(f"PyJAMA: no partitions in the window {PLAN.window} for {PLAN.project.pipeline.path} "
          "(no raw file has data there)", file=sys.stderr)



def run_job(rule_name, wildcards, log):
    """Run one job in this process: `pyjama.py run <args>`, messages to the job's log.

    With --force-use-threads (set in the default profile) Snakemake runs `run:` blocks as
    threads of the main process, so a job costs no interpreter start and no re-import of
    pandas/pyarrow; elsewhere (SLURM, other profiles) Snakemake starts a process per job.
    """
    from snakemake.exceptions import WorkflowError

    from pyjama.cli import run_job_logged

    try:
        run_job_logged(shlex.split(SPECS[rule_name].job_args(wildcards)), log)
    except UserError as exc:
        raise WorkflowError(f"Error: {exc}") from None


SPECS = {spec.name: spec for _st, spec in PLAN.rules}


def rule_inputs(spec):
    """Positional inputs of a rule: its input function (unpacked), if it has one."""
    return [unpack(spec.inputs)] if spec.inputs is not None else []


def run_job(rule_name, wildcards, log):
    """Run one job in this process: `pyjama.py run <args>`, messages to the job's log.

    With --force-use-threads (set in the default profile) Snakemake runs `run:` blocks as
    threads of the main process, so a job costs no interpreter start and no re-import of
    pandas/pyarrow; elsewhere (SLURM, other profiles) Snakemake starts a process per job.
    """
    from snakemake.exceptions import WorkflowError

    from pyjama.cli import run_job_logged

    try:
        run_job_logged(shlex.split(SPECS[rule_name].job_args(wildcards)), log)
    except UserError as exc:
        raise WorkflowError(f"Error: {exc}") from None


class JobArgs:
    """Params function giving a job its `pyjama.py run` arguments. Rules are made in a
    loop and Snakemake evaluates `shell:` at job time, so they must be bound here."""

    def __init__(self, spec):
        self.spec = spec

    def __call__(self, wildcards):
        return self.spec.job_args(wildcards)
