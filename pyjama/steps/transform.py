"""50_transform: derived sensors (x^(-1/3), x^(-1/2), ln x, identity, linear calibration).

A thin shell over :mod:`pyjama.transform`; one (device, day) in → one out.
"""
from __future__ import annotations

import re

from . import PartitionStep
from ..config import check_regex
from ..errors import UserError
from ..transform import transform_frame


class TransformStep(PartitionStep):
    script = "50_transform.py"
    summary = "derived sensors: x^(-1/3), x^(-1/2), ln x, identity, linear calibration (add or replace)"

    def check_config(self, params, source):
        for i, rule in enumerate(params["transforms"]):
            where = f"{source}: $.transforms[{i}]"
            check_regex(rule["sensors"], f"{where}.sensors", r"^m\d+$")
            if rule["suffix"] == "" and rule["mode"] == "add":
                raise UserError(f"{where}.suffix: '' is not allowed with mode 'add' (the derived sensor "
                                "would replace its source); allowed: a non-empty suffix, or mode 'replace'")
            if rule["transform"] != "linear":
                for key, neutral in (("gain", 1.0), ("offset", 0.0)):
                    if rule[key] != neutral:
                        raise UserError(f"{where}.{key}: {rule[key]!r} is not allowed with transform "
                                        f"{rule['transform']!r}; allowed: {key} only with transform 'linear'")

    def made_series(self, st, input_names, output_names):
        """Add rules make new names; a replace rule with suffix "" rewrites the rows of its
        source under the same name: that series is made here too (``$.keep`` keeps it)."""
        made = set(output_names) - set(input_names)
        for rule in st["transforms"]:
            if rule["mode"] == "replace" and rule.get("suffix") == "":
                rx = re.compile(rule["sensors"])
                made |= {n for n in input_names if rx.fullmatch(n)}
        return made

    def compute(self, frames, st, device, day):
        df = frames["data"]
        try:
            out, report = transform_frame(df, st["transforms"])
        except UserError as exc:
            raise UserError(f"{st.path}: {exc}") from None
        counts = {"rows_in": len(df), "rows_out": len(df), "rejected": {},
                  "rows_added": report["rows_added"], "rows_written": len(out),
                  "undefined_flagged_out_of_range": report["undefined"],
                  "rules": report["per_rule"]}
        return {"data": out}, counts
