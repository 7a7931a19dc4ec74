"""40_resample: one (device, day) of 30_clean → a regular grid per sensor over the UTC day.

The rules are pure functions in :mod:`pyjama.resample`; this class only checks the
config and calls :func:`pyjama.resample.resample_frame`. docs/steps/clean-resample.md
documents every key and the ledger.
"""
from __future__ import annotations

from . import PartitionStep
from .. import resample


class ResampleStep(PartitionStep):
    script = "40_resample.py"
    summary = "regular grid per (device, sensor) over the UTC day; short gaps filled (5), long gaps missing (1)"

    def check_config(self, params, source):
        resample.check_grid(params.get("default_rule", {}), f"{source}: $.default_rule")
        for domain, rule in params.get("domains", {}).items():
            resample.check_grid(rule, f"{source}: $.domains.{domain}")
        for sensor, rule in params.get("sensors", {}).items():
            resample.check_grid(rule, f"{source}: $.sensors.{sensor}")

    def compute(self, frames, st, device, day):
        df, counts = resample.resample_frame(frames["data"], st.params, day)
        return {"data": df}, counts
