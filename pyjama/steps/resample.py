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
    # a day's grid is made of that day's rows only: a week's or a month's days in one call,
    # each as alone (read once, one frame, one arrow table instead of one per day)
    whole_period = True

    def check_config(self, params, source):
        resample.check_grid(params.get("default_rule", {}), f"{source}: $.default_rule")
        for domain, rule in params.get("domains", {}).items():
            resample.check_grid(rule, f"{source}: $.domains.{domain}")
        for sensor, rule in params.get("sensors", {}).items():
            resample.check_grid(rule, f"{source}: $.sensors.{sensor}")

    def compute(self, frames, st, device, day):
        """Pure: the tidy partition → its grids and ledger counts. ``day``: a day, or the
        list of days of a week's or a month's partition (:attr:`whole_period`)."""
        df, counts = resample.resample_frame(frames["data"], st.params, day)
        return {"data": df}, counts
