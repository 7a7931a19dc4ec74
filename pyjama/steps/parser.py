"""10_parser: one raw file → its tidy rows, a rejects file and a ledger.

Output per raw file: ``data/<EXPO>/<output_stage>/raw=<file name>/part.parquet`` (with
``device_id`` as a column: one raw file may hold several devices), ``_rejects.csv``
(file, line, reason, detail, text) and ``_ledger.json`` (lines = parsed + skipped +
rejected, and the (device, day) partitions the file touches).
"""
from __future__ import annotations

import csv
import io as _io

from . import RuleSpec, Step, _q
from .. import io
from ..config import check_regex
from ..errors import UserError


class ParserStep(Step):
    script = "10_parser.py"
    kind = "10_parser"
    summary = "raw files → typed tidy rows (+ rejects with line numbers)"
    granularity = "raw_file"

    def check_config(self, params, source):

        dev = params["device"]
        if dev["from"] == "filename":
            rx = check_regex(dev["pattern"], f"{source}: $.device.pattern", r"_(?P<device>[^_]+)_")
            if "device" not in rx.groupindex:
                raise UserError(f"{source}: $.device.pattern: {dev['pattern']!r} has no (?P<device>...) "
                                "group; allowed: a regular expression with a named group `device`")
        if dev["from"] == "column" and params["format"] != "delimited":
            raise UserError(f"{source}: $.device.from: 'column' is not allowed with format "
                            f"{params['format']!r}; allowed: filename, fixed")
        if dev["from"] == "fixed" and not dev.get("value"):
            raise UserError(f"{source}: $.device.value: required when $.device.from is 'fixed'")
        if params["format"] == "delimited":
            if not params["header"] and not params["columns"]:
                raise UserError(f"{source}: $.columns: required when $.header is false "
                                "(name every column in file order)")
            if not params["timestamp"].get("column"):
                raise UserError(f"{source}: $.timestamp.column: required with format 'delimited'")
            cols = params["columns"]
            if cols:
                for key in ("column", "fraction_column"):
                    v = params["timestamp"].get(key)
                    if v and v not in cols:
                        raise UserError(f"{source}: $.timestamp.{key}: {v!r} is not a column; "
                                        f"allowed: {', '.join(cols)}")
        for i, rule in enumerate(params["domains"]["rules"]):
            check_regex(rule["pattern"], f"{source}: $.domains.rules[{i}].pattern", r"^m\d+$")

    def output_files_raw(self, st, raw="{raw}"):
        stage = st["output_stage"]
        return {
            "data": io.raw_partition_file(st.exposure, stage, raw),
            "ledger": io.raw_partition_file(st.exposure, stage, raw, io.LEDGER),
            "rejects": io.raw_partition_file(st.exposure, stage, raw, io.REJECTS),
        }

    def raw_path(self, st, raw):
        return str(io.stage_dir(st.exposure, st["input_stage"]) / raw)

    def selected_raw(self, project, st, window, devices=None):
        idx = project.raw_index(st)
        out = []
        for name, f in idx.files.items():
            parts = f["partitions"]
            if not parts:
                # a file with no readable timestamp still gets parsed (its rejects are news)
                if window.start is None and window.end is None and not devices:
                    out.append(name)
                continue
            if any(window.contains_day(d) and (not devices or dev in devices) for dev, d in parts):
                out.append(name)
        return sorted(out)

    def rule_specs(self, project, st, window):
        targets = []
        for name in self.selected_raw(project, st, window):
            targets.extend(self.output_files_raw(st, name).values())

        return [RuleSpec(
            name=self.rule_name(st),
            outputs=self.output_files_raw(st),
            inputs=None,
            input_patterns={"raw": self.raw_path(st, "{raw}")},
            log=f"logs/{st.exposure}/{st.name}/{{raw}}.log",
            args=f"{self.script} --with {_q(st.path)} --raw {{raw}}",
            params_digest=st.digest,
            wildcard_constraints={"raw": r"[^/]+"},
            targets=targets,
        )]

    def run_raw(self, project, st, raw: str) -> dict:
        from ..parse import parse_bytes, read_raw_bytes

        src = project.root / self.raw_path(st, raw)
        if not src.exists():
            raise UserError(f"{self.raw_path(st, raw)}: raw file not found")
        res = parse_bytes(read_raw_bytes(src), st.params, raw)
        rows = res.rows.sort_values(["device_id", "ts"], kind="stable") if len(res.rows) else res.rows
        outs = self.output_files_raw(st, raw)
        meta = io.provenance(self.script, st.path, st.digest, [self.raw_path(st, raw)])
        io.write_table(project.root / outs["data"], _with_device(rows), meta)
        buf = _io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["file", "line", "reason", "detail", "text"])
        for line_no, reason, detail, text in res.rejects:
            w.writerow([raw, line_no, reason, detail, _printable(text)[:300]])
        io.write_text(project.root / outs["rejects"], buf.getvalue())
        parts = {}
        if len(rows):
            from ..parse import day_counts

            for (dev, day), n in sorted(day_counts(rows["ts"], rows["device_id"]).items()):
                parts[f"{dev}/{day}"] = n
        # Skipped lines (blank, header, declared skips) are set aside like rejects, under
        # a "skipped: " reason, so lines in = lines parsed + lines set aside, always.
        rejected = dict(res.rejected)
        rejected.update({f"skipped: {k}": v for k, v in res.skipped.items()})
        entry = io.ledger_entry(self.script, f"raw={raw}", rows_in=res.lines, rows_out=res.parsed,
                                rejected=rejected, unit="lines", values_out=int(len(rows)),
                                partitions=parts)
        io.write_json(project.root / outs["ledger"], entry)
        return entry


def _with_device(rows):

    from .. import tidy

    t = tidy.to_arrow(rows)
    return t.add_column(1, "device_id", tidy._dict_array(rows["device_id"]))


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() or ch == "\t" else f"\\x{ord(ch) & 0xff:02x}" for ch in text)


def read_parsed(path, device: str, day: str):
    """Rows of one (device, day) from a parsed file (a filtered read)."""

    from .. import tidy
    from ..timewindow import day_bounds

    start, end = day_bounds(day)
    t = io.read_parquet(path, filters=[("device_id", "=", device), ("ts", ">=", start), ("ts", "<", end)])
    return tidy.from_arrow(t.drop_columns(["device_id"]), device)
