# The Snakefile's helpers live in the library (pyjama/workflow.py: linted and tested like
# the rest); this file only makes the package importable and builds the plan once.
import sys
from pathlib import Path

REPO = Path(workflow.basedir).resolve().parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pyjama.results import results_of, run_result_job
from pyjama.verdict import on_success
from pyjama.workflow import (
    drop_local_rate_limit,
    load_plan_or_exit,
    print_loss_lines,
    run_rule_job,
)

PLAN = load_plan_or_exit(config, workflow.config_settings.config_args)
RESULTS = results_of(PLAN)  # what `snakemake --report` shows (config results=true)
