"""70_aggregate: window statistics per (device, UTC day). A thin shell over pyjama.aggregate.

One input partition → one output partition per window, in stage
``<output_stage>/window=<length>`` (``70_aggregated/window=10s`` …); the first window's
partition holds the ledger in its footer.
"""
from __future__ import annotations


from . import Output, PartitionStep


class AggregateStep(PartitionStep):
    script = "70_aggregate.py"
    summary = "window statistics (mean, min, max, std, count, share flagged), UTC-aligned, per day"

    def check_config(self, params, source):
        from ..aggregate import check_windows
        from ..config import check_regex, check_stage

        check_regex(params["sensors"], f"{source}: $.sensors", "__norm$")
        check_windows(params["windows"], source)
        for label in params["windows"]:
            check_stage(window_stage(params["output_stage"], label), f"{source}: $.windows")

    def output_tables(self, st):
        return {"data" if i == 0 else f"window_{label}": Output(window_stage(st["output_stage"], label))
                for i, label in enumerate(st["windows"])}

    def compute(self, frames, st, device, day):
        """Pure: the tidy partition → (frames by output key, ledger counts)."""
        from ..aggregate import aggregate_partition, check_windows

        windows = check_windows(st["windows"], st.path)
        by_label, counts = aggregate_partition(frames["data"], day, windows, st["stats"], st["sensors"],
                                               st["fill_day"])
        keys = list(self.output_stages(st))
        return {k: by_label[label] for k, label in zip(keys, st["windows"])}, counts


def window_stage(output_stage: str, label: str) -> str:
    """``70_aggregated`` + ``10s`` → ``70_aggregated/window=10s``."""
    return f"{output_stage}/window={label}"
