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
    whole_period = True     # windows never cross midnight: a week's or a month's days in blocks
    # a period whose input holds more rows goes day by day (the same values): one pass
    # holds the whole period in memory (a month of 1 Hz rows from 60: ~87 M rows, 10.6 GB)
    ONE_PASS_ROWS = 4_000_000

    def one_pass(self, project, st, device, key):
        """One pass over a period of at most :attr:`ONE_PASS_ROWS` input rows (a slow
        logger's month: its CPU), day by day above (a dense month: its memory, one day's
        rows at a time). The row count is in the input file's footer."""
        import pyarrow.parquet as pq

        from ..rules import flat_files

        rows = 0
        for rel in flat_files(self.job_input_files(project, st, device, key)):
            try:
                rows += pq.read_metadata(project.root / rel).num_rows
            except (OSError, ValueError):
                return True             # missing or unreadable: the read says so in one line
        return rows <= self.ONE_PASS_ROWS

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

    # config file → {(domain, sensor): grid period [µs]} from the 40 config upstream (prepare);
    # per config file because one step object serves every 70 config of the process
    # (workflow jobs of two variants run in threads of one Snakemake)
    _grids: dict = {}

    def prepare(self, project, st, sel, todo, options, quiet):
        """Read the grid periods from the plan before the partitions run (none done here)."""
        self._grids[st.path] = grid_periods(project.pipeline, st)

    def key_extra(self, project, st):
        """The grid periods come from the 40 config upstream: its digest is part of the key."""
        up = upstream_resample(project.pipeline, st)
        return {"grid_config_digest": None if up is None else up.digest}

    def compute(self, frames, st, device, day):
        """Pure: the tidy partition → (frames by output key, ledger counts). ``day``: a day,
        or the list of days of a week's or a month's partition (:attr:`whole_period`)."""
        from ..aggregate import aggregate_partition, check_windows

        windows = check_windows(st["windows"], st.path)
        by_label, counts = aggregate_partition(frames["data"], day, windows, st["stats"], st["sensors"],
                                               st["fill_day"],
                                               self._grids.get(st.path))
        keys = list(self.output_stages(st))
        return {k: by_label[label] for k, label in zip(keys, st["windows"])}, counts


def window_stage(output_stage: str, label: str) -> str:
    """``70_aggregated`` + ``10s`` → ``70_aggregated/window=10s``."""
    return f"{output_stage}/window={label}"


def grid_periods(pipeline, st):
    """The grid period of each aggregated series, read from the config of the 40_resample
    step upstream of ``st`` in the plan (following input stages), or None when there is
    none (then share_flagged is over the rows present). A series ``<s>__<suffix>`` of 50/60
    has the grid of its source: the longest ``__`` prefix named in the 40 config's
    $.sensors, else its domain's rule ($.domains, $.default_rule)."""
    from ..resample import resolve_grid
    from ..timewindow import parse_duration

    up = upstream_resample(pipeline, st)
    if up is None:
        return None
    params = up.params
    named = set(params.get("sensors") or {})
    cache = {}

    def period(domain, sensor):
        if (domain, sensor) not in cache:
            parts = sensor.split("__")
            src = next(("__".join(parts[:k]) for k in range(len(parts), 0, -1)
                        if "__".join(parts[:k]) in named), parts[0])
            freq = resolve_grid(params, domain, src)["freq"]
            cache[(domain, sensor)] = int(parse_duration(freq, up.path).value // 1000)
        return cache[(domain, sensor)]

    return period


def upstream_resample(pipeline, st):
    """The config of the 40_resample step upstream of ``st`` in the plan (following input
    stages), or None."""
    from . import get_step

    stage, seen = st["input_stage"], set()
    while stage not in seen:
        seen.add(stage)
        up = pipeline.producer_of(stage)
        if up is None or up.script == "40_resample.py":
            return up
        stage = get_step(up.script).input_stages(up)[0]
    return None
