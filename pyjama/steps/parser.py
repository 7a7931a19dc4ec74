"""10_parser: one raw file → its tidy rows, a rejects file and a ledger.

Output per raw file: ``data/<EXPO>/<output_stage>/raw=<file name>/part.parquet`` (with
``device_id`` as a column: one raw file may hold several devices; its footer holds the
ledger: lines = parsed + skipped + rejected, and the (device, day) partitions the file
touches) and ``data/<EXPO>/_meta/<output_stage>/raw=<file name>/rejects.csv`` (file, line,
reason, detail, text).
"""
from __future__ import annotations

import csv
import io as _io

from . import RawFileStep
from .. import io, losses
from ..config import check_regex
from ..errors import UserError


REJECTS = "rejects.csv"


class ParserStep(RawFileStep):
    script = "10_parser.py"
    summary = "raw files → typed tidy rows (+ rejects with line numbers)"

    def check_config(self, params, source):

        dev = params["device"]
        if dev["from"] in ("filename", "header"):
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
        check_parser_extras(params, source)

    def output_files(self, st, raw="{raw}", key="raw"):
        return {"data": io.raw_partition_file(st.exposure, st["output_stage"], raw, key=key),
                "rejects": io.meta_file(st.exposure, st["output_stage"], f"{key}={raw}", REJECTS)}

    def selected_raw(self, project, st, window, devices=()):
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

    def run_raw(self, project, st, raw: str) -> dict:
        table, rejects, entry = self._parse(project, st, raw, self.output_files(st, raw)["rejects"])
        return self._write(project, st, self.output_files(st, raw), [raw], table, rejects, entry)

    def run_batch(self, project, st, batch: str) -> dict:
        """The raw files of one batch, parsed one by one exactly as alone, written as one
        file: their rows in file-name order (each file's rows by device and time), one
        rejects file, and a ledger that sums theirs and keeps each under ``files``."""
        import pyarrow as pa

        from ..parse import MAX_EVENTS

        outs = self.output_files(st, batch, "batch")
        names = self.batch_files(project, st, batch)
        tables, rejects, files = [], [], {}
        for name in names:
            table, rej, files[name] = self._parse(project, st, name, outs["rejects"])
            tables.append(table)
            rejects.extend(rej)
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables).unify_dictionaries().combine_chunks()
        # numbers and counts by reason, day or kind add up (as a month's days do)
        sums = io.merge_counts([{k: f[k] for k in ("rows_in", "rows_out", "rejected", "values_out", "partitions",
                                                "events")} for f in files.values()])
        entry = io.ledger_entry(self.script, f"batch={batch}", unit="lines", files=files, **sums,
                                event_lines=[f"{n}: {x}" for n, f in files.items() for x in f["event_lines"]][:MAX_EVENTS])
        return self._write(project, st, outs, names, table, rejects, entry)

    def _parse(self, project, st, raw: str, rejects_path: str):
        """One raw file → (its rows as an Arrow table with device_id, its rejects rows, its
        ledger entry with the loss warning that names ``rejects_path``)."""
        from ..parse import parse_bytes, read_raw_bytes

        src = project.root / self.raw_path(st, raw)
        if not src.exists():
            raise UserError(f"{self.raw_path(st, raw)}: raw file not found")
        res = parse_bytes(read_raw_bytes(src), st.params, raw)
        rows = res.rows.sort_values(["device_id", "ts"], kind="stable") if len(res.rows) else res.rows
        rejects = [[raw, line_no, reason, detail, _printable(text[:300])]
                   for line_no, reason, detail, text in res.rejects]
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
                                partitions=parts, events=res.events, event_lines=res.event_lines)
        entry["warning"] = loss_warning(entry, st["warn_rejected_share"], self.raw_path(st, raw), rejects_path)
        return _with_device(rows), rejects, entry

    def _write(self, project, st, outs: dict, names: list, table, rejects: list, entry: dict) -> dict:
        buf = _io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["file", "line", "reason", "detail", "text"])
        w.writerows(rejects)
        io.write_text(project.root / outs["rejects"], buf.getvalue())
        meta = io.provenance(self.script, st.path, st.digest, [self.raw_path(st, n) for n in names], ledger=entry)
        io.write_table(project.root / outs["data"], table, meta)
        return entry


def loss_warning(led: dict, share: float, raw_path: str, rejects_path: str):
    """The one-line warning of a raw file that lost more than ``share`` of its lines
    (rejected, not skipped), or None (text: :func:`pyjama.losses.rejected_share`)."""
    return losses.rejected_share(raw_path, led, share, rejects_path)


def loss_warnings(project) -> list:
    """Every warning of the end-of-run summary: raw files not parsed because their name
    gives no device id, parsed files that lost more than $.warn_rejected_share of
    their lines, and (no $.deployment declared) parsed files with rows on days far from
    their other days (from the parser ledgers). Shown through :func:`pyjama.losses.render` by
    `drawer.py run`, `drawer.py status`, the report and the Snakefile's handlers."""
    from ..parse import declares_span

    step = ParserStep()
    out = []
    for st in project.parser_steps():
        idx = project.raw_index(st)
        out.extend(idx.unmatched[name] for name in sorted(idx.unmatched))
        key = step.unit_key(project, st)
        footers: dict = {}
        for name in sorted(idx.files):
            outs = step.output_files(st, idx.unit_of(name), key)
            if outs["data"] not in footers:
                footers[outs["data"]] = _ledger_of(project.root, outs)
            led = footers[outs["data"]]
            if led and key == "batch":
                led = (led.get("files") or {}).get(name)    # the file's own, in its batch's ledger
            if led:
                w = loss_warning(led, st["warn_rejected_share"], step.raw_path(st, name), outs["rejects"])
                if w:
                    out.append(w)
                if not declares_span(st.params):     # a declared span rejects them instead
                    w = losses.far_days(step.raw_path(st, name), led)
                    if w:
                        out.append(w)
            elif not idx.files[name]["partitions"]:
                # not parsed yet and no readable time: a window never selects it, so say so
                out.append(losses.no_readable_time(step.raw_path(st, name), st.path))
    return out


def _ledger_of(root, outs):
    """The ledger of a parser output (in the footer of its parquet)."""
    try:
        return io.read_ledger(root / outs["data"])
    except (OSError, ValueError):
        return None


def check_parser_extras(params, source):
    """Checks of the keys of issue 11 (types, status rules, relative time, spans, records)."""
    from ..timewindow import parse_bound, parse_duration

    def need_groups(key, pattern, groups, example):
        rx = check_regex(pattern, f"{source}: $.{key}", example)
        lacking = [g for g in groups if g not in rx.groupindex]
        if lacking:
            raise UserError(f"{source}: $.{key}: {pattern!r} has no group {', '.join(lacking)}; "
                            f"allowed: a regular expression such as {example!r}")

    fmt = params["format"]
    if fmt == "multiline":
        if not params["record_start"]:
            raise UserError(f"{source}: $.record_start: required with format 'multiline'; "
                            "allowed: a regular expression with a group `ts`, e.g. '^Time: (?P<ts>.+)$'")
        need_groups("record_start", params["record_start"], ["ts"], "^Time: (?P<ts>.+)$")
        need_groups("value_line", params["value_line"], ["name", "value"],
                    r"^\s*(?P<name>[^:]+?)\s*:\s*(?P<value>\S*)\s*$")
    for i, pat in enumerate(params["skip_patterns"]):
        check_regex(pat, f"{source}: $.skip_patterns[{i}]", "^# Start Log")
    ts = params["timestamp"]
    if ts["format"] == "relative":
        if ts["origin"]:
            import pandas as pd
            try:
                pd.Timestamp(ts["origin"])
            except (ValueError, TypeError):
                raise UserError(f"{source}: $.timestamp.origin: {ts['origin']!r} is not an instant; "
                                "allowed: YYYY-MM-DDTHH:MM:SSZ") from None
        elif ts["origin_pattern"]:
            rx = check_regex(ts["origin_pattern"], f"{source}: $.timestamp.origin_pattern",
                             "^Start: (?P<origin>.+)$")
            if "origin" not in rx.groupindex and not {"date", "time"} <= set(rx.groupindex):
                raise UserError(f"{source}: $.timestamp.origin_pattern: {ts['origin_pattern']!r} has no "
                                "group `origin` (or `date` and `time`); allowed: e.g. '^Start: (?P<origin>.+)$'")
        else:
            raise UserError(f"{source}: $.timestamp.origin: required with format 'relative' "
                            "(or $.timestamp.origin_pattern); allowed: YYYY-MM-DDTHH:MM:SSZ")
    dep = params["deployment"]
    spans = [("$.deployment", dep)] + [(f"$.deployment.devices.{d}", v) for d, v in dep["devices"].items()]
    for where, span in spans:
        for key, side in (("start", "from"), ("end", "to")):
            if span.get(key):
                try:
                    parse_bound(span[key], side)
                except UserError as exc:
                    raise UserError(f"{source}: {where}.{key}: {str(exc).split(': ', 1)[1]}") from None
    seq = params["sequence"]
    if seq["max_step"]:
        parse_duration(seq["max_step"], f"{source}: $.sequence.max_step")
    types = params["column_types"]
    for name, spec in types.items():
        if spec.get("codes") and spec.get("type", "number") != "text":
            raise UserError(f"{source}: $.column_types.{name}.codes: only allowed with type 'text'")
    for i, rule in enumerate(params["status_flags"]):
        where = f"{source}: $.status_flags[{i}]"
        if bool(rule["bits"]) == bool(rule["equals"]):
            raise UserError(f"{where}: give exactly one of bits and equals")
        if rule["bits"]:
            try:
                int(str(rule["bits"]), 0)
            except ValueError:
                raise UserError(f"{where}.bits: {rule['bits']!r} is not a bit mask; allowed: e.g. "
                                "'0x04', '0b100', '4'") from None
            if types.get(rule["column"], {}).get("type") == "text":
                raise UserError(f"{where}.bits: not allowed on the text column {rule['column']!r}; "
                                "allowed: equals")
        cols = params["columns"]
        for key, names in (("column", [rule["column"]]), ("sensors", rule["sensors"])):
            for nm in names:
                if cols and nm not in cols:
                    raise UserError(f"{where}.{key}: {nm!r} is not a column; allowed: {', '.join(cols)}")


def _with_device(rows):

    from .. import tidy

    t = tidy.to_arrow(rows)
    return t.add_column(1, "device_id", tidy._dict_array(rows["device_id"]))


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() or ch == "\t" else f"\\x{ord(ch) & 0xff:02x}" for ch in text)
