"""Step 10's pure core: raw logger bytes → tidy rows, with every bad line accounted for.

Formats are declared in the parser config (``workflow/schemas/10_parser.schema.json``):

* ``keyvalue``: one line per sample, ``<timestamp><sep><key><pair_sep><value><sep>...``,
  e.g. ``2026-01-20T09:07:58.142308Z;m0:10;m1:12;outdoor_temp:18.94``;
* ``delimited``: one line per sample, fields in declared columns or under a header row.

Every line of the file ends up in exactly one bucket: parsed, skipped (blank line,
declared skip, repeated header) or rejected (with its line number and reason). So
``lines = parsed + skipped + rejected`` always; the ledger of step 10 says so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import tidy
from .flags import Flag

# Reasons, spelled once (tests and docs use these exact texts).
R_GARBAGE = "garbage bytes"
R_TRUNCATED = "truncated last line (no line end)"
R_TIMESTAMP = "unparsable timestamp"
R_LOCALTIME = "local time does not exist or is ambiguous (DST change)"
R_NO_VALUES = "no values"
R_PAIR = "malformed key:value pair"
R_NUMBER = "unparsable number"
R_FIELDS = "wrong field count"
R_DEVICE = "no device id"
S_BLANK = "blank line"
S_SKIP_LINES = "skip_lines"
S_HEADER = "header line"
S_PATTERN = "skip pattern"

_GARBAGE_RE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x{fffd}]"  # RE2 syntax (pyarrow)


@dataclass
class ParseResult:
    rows: pd.DataFrame                       # tidy rows (quality_flag 1 for declared missing)
    lines: int = 0                           # lines in the file (a final line end ends a line)
    parsed: int = 0                          # lines that produced rows
    skipped: dict = field(default_factory=dict)
    rejected: dict = field(default_factory=dict)
    rejects: list = field(default_factory=list)   # (line_no, reason, detail, text)

    def check_balance(self) -> None:
        total = self.parsed + sum(self.skipped.values()) + sum(self.rejected.values())
        assert total == self.lines, f"lines {self.lines} != parsed+skipped+rejected {total}"


class LineBook:
    """Keeps the state of every line: ok, skipped or rejected, with the first reason."""

    def __init__(self, n: int):
        self.ok = np.ones(n, dtype=bool)
        self.reason = np.empty(n, dtype=object)
        self.detail = np.empty(n, dtype=object)
        self.skipped = np.zeros(n, dtype=bool)

    def skip(self, mask, reason):
        mask = np.asarray(mask, dtype=bool) & self.ok
        self.ok[mask] = False
        self.skipped[mask] = True
        self.reason[mask] = reason

    def absorb(self, other: "LineBook", start: int) -> None:
        """Copy the state of a block's book into this one at line index ``start``."""
        end = start + len(other.ok)
        self.ok[start:end] = other.ok
        self.reason[start:end] = other.reason
        self.detail[start:end] = other.detail
        self.skipped[start:end] = other.skipped

    def reject(self, mask, reason, detail=None):
        mask = np.asarray(mask, dtype=bool) & self.ok
        self.ok[mask] = False
        self.reason[mask] = reason
        if detail is not None:
            self.detail[mask] = np.asarray(detail, dtype=object)[mask]


def split_lines(data: bytes, encoding: str = "utf-8"):
    """Bytes → (list of str lines without line ends, has_final_newline).

    CRLF and LF both end a line. Undecodable bytes become U+FFFD so the line can be
    reported (and rejected as garbage) instead of failing the whole file.
    """
    text = data.decode(encoding, errors="replace")
    ends_with_newline = text.endswith("\n")
    lines = text.split("\n")
    if ends_with_newline or text == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    return lines, ends_with_newline


def read_raw_bytes(path) -> bytes:
    """Read a raw file; gzip files (by magic bytes) are decompressed. A damaged or cut
    gzip stream keeps what could be read (the cut line is then rejected as truncated)."""
    import zlib

    with open(path, "rb") as fh:
        data = fh.read()
    if data[:2] != b"\x1f\x8b":
        return data
    out = bytearray()
    while data[:2] == b"\x1f\x8b":  # concatenated gzip members are one stream
        d = zlib.decompressobj(zlib.MAX_WBITS | 16)
        try:
            out += d.decompress(data)
        except zlib.error:
            break
        data = d.unused_data
    return bytes(out)


def parse_timestamps(text: pd.Series, ts_cfg: dict, book: LineBook, frac=None) -> pd.Series:
    """Parse timestamp strings to UTC [us]; bad ones are rejected in ``book``."""
    fmt = ts_cfg.get("format", "ISO8601")
    tz = ts_cfg.get("timezone", "UTC")
    s = text.astype("string").str.strip()
    if fmt in ("unix", "unix_ms"):
        num = pd.to_numeric(s, errors="coerce")
        unit = "s" if fmt == "unix" else "ms"
        ts = pd.to_datetime(num, unit=unit, utc=True, errors="coerce")
        tz = "UTC"  # epoch seconds are UTC by definition
    elif tz == "UTC":
        ts = _fast_iso_utc(s, book) if fmt == "ISO8601" else None
        if ts is None:
            ts = pd.to_datetime(s, format=fmt, utc=True, errors="coerce")
    else:
        try:
            naive = pd.to_datetime(s, format=fmt, errors="coerce")
        except (ValueError, TypeError):
            naive = pd.to_datetime(s, format=fmt, errors="coerce", utc=True).dt.tz_localize(None)
        if isinstance(naive.dtype, pd.DatetimeTZDtype):
            ts = naive.dt.tz_convert("UTC")
        else:
            bad_syntax = naive.isna().to_numpy()
            book.reject(bad_syntax & book.ok, R_TIMESTAMP)
            local = naive.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
            book.reject(local.isna().to_numpy() & book.ok, R_LOCALTIME)
            ts = local.dt.tz_convert("UTC")
    if frac is not None:
        ts = ts + pd.to_timedelta(frac, unit="s")
    ts = ts.astype("datetime64[us, UTC]")
    book.reject(ts.isna().to_numpy(), R_TIMESTAMP, s.fillna("").to_numpy(dtype=object))
    return ts


def _fast_iso_utc(s: pd.Series, book: LineBook):
    """ISO-8601 strings with an offset → UTC, with arrow's C parser; None when any
    string of a line still in play does not parse (the caller then uses pandas, which
    rejects the bad ones one by one)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        arr = pa.array(s.to_numpy(dtype=object, na_value=""), pa.string())
        arr = pc.if_else(pa.array(book.ok), arr, pa.scalar("1970-01-01T00:00:00Z"))
        ts = pc.cast(arr, pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    out = pd.Series(ts.to_numpy(zero_copy_only=False), index=s.index).dt.tz_localize("UTC")
    return out.where(book.ok)


def ts_values(ts) -> np.ndarray:
    """UTC timestamps (Series, index or array) → numpy datetime64[us] (naive UTC), no copies
    through Python objects."""
    if isinstance(ts, np.ndarray) and ts.dtype == "datetime64[us]":
        return ts
    idx = pd.DatetimeIndex(ts)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return idx.as_unit("us").to_numpy()


def day_counts(ts, devices) -> dict:
    """{(device, 'YYYY-MM-DD'): rows} for UTC timestamps and a device column, vectorised."""
    days = ts_values(ts).astype("datetime64[D]").astype(np.int64)
    dev = pd.Categorical(devices)
    key = dev.codes.astype(np.int64) * 1_000_000 + days
    uniq, n = np.unique(key, return_counts=True)
    out = {}
    for k, c in zip(uniq, n):
        d = str(np.datetime64(int(k % 1_000_000), "D"))
        out[(str(dev.categories[k // 1_000_000]), d)] = int(c)
    return out


def utc_days(ts) -> np.ndarray:
    """UTC day ('YYYY-MM-DD') of each timestamp."""
    return ts_values(ts).astype("datetime64[D]").astype(str)


def domain_of(sensors, domains_cfg: dict) -> dict:
    """Map each distinct sensor name to its domain: first matching rule, else default."""
    rules = [(re.compile(r["pattern"]), r["domain"]) for r in domains_cfg.get("rules", [])]
    default = domains_cfg.get("default", "environment")
    out = {}
    for name in sensors:
        out[name] = next((dom for rx, dom in rules if rx.search(name)), default)
    return out


def device_from_filename(filename: str, device_cfg: dict) -> str | None:
    if device_cfg.get("from") == "fixed":
        return device_cfg["value"]
    if device_cfg.get("from") == "filename":
        m = re.search(device_cfg["pattern"], filename)
        return m.group("device") if m else None
    return None


_NUMBER_RE = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
_NAN_RE = r"^[-+]?(?i:nan)$"


def _to_numbers(values, missing_tokens) -> tuple:
    """Arrow strings → float64 numpy; returns (numbers, is_missing_token, is_bad)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    v = pc.utf8_trim_whitespace(values)
    missing = pc.is_in(v, value_set=pa.array(list(missing_tokens), pa.string())) if missing_tokens \
        else pc.is_null(v)
    missing = pc.or_kleene(pc.fill_null(missing, True), pc.is_null(v))
    good = pc.fill_null(pc.match_substring_regex(v, _NUMBER_RE), False)
    nan_text = pc.fill_null(pc.match_substring_regex(v, _NAN_RE), False)
    clean = pc.if_else(good, v, pa.scalar("nan"))
    num = pc.cast(clean, pa.float64()).to_numpy(zero_copy_only=False)
    missing_np = missing.to_numpy(zero_copy_only=False)
    bad = ~(good.to_numpy(zero_copy_only=False) | missing_np | nan_text.to_numpy(zero_copy_only=False))
    num = np.where(missing_np, np.nan, num)
    return num, missing_np, bad


def _np_bool(arr) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.fill_null(arr, False).to_numpy(zero_copy_only=False).astype(bool)


def parse_bytes(data: bytes, cfg: dict, filename: str, values: bool = True) -> ParseResult:
    """Parse one raw file's bytes with the parser config ``cfg`` (validated, defaults in).

    ``values=False`` only parses timestamps and device ids (used to index which
    (device, day) partitions a raw file touches, cheaply, before the workflow runs).
    """
    lines, final_newline = split_lines(data, cfg.get("encoding", "utf-8"))
    n = len(lines)
    fixed_device = device_from_filename(filename, cfg["device"])
    if cfg["device"]["from"] in ("filename", "fixed") and fixed_device is None:
        from .errors import UserError
        raise UserError(f"{filename}: file name does not match $.device.pattern "
                        f"{cfg['device']['pattern']!r}; allowed: names with a (?P<device>...) match")
    # Lines are parsed in blocks so that the memory a file needs is bounded by the block,
    # not by the file (a 10 Hz day is ~864 k lines and 11 M values); results are the same.
    book = LineBook(n)
    state: dict = {}
    parts = []
    for start in range(0, max(n, 1), CHUNK_LINES):
        chunk = lines[start:start + CHUNK_LINES]
        sub = LineBook(len(chunk))
        _premark(sub, chunk, start, n, final_newline, cfg)
        s = pd.Series(chunk, dtype=object)
        if cfg["format"] == "keyvalue":
            rows = _parse_keyvalue(s, cfg, sub, fixed_device, values)
        else:
            rows = _parse_delimited(s, cfg, sub, fixed_device, values, state)
        book.absorb(sub, start)
        if len(rows):
            parts.append(rows)
    if values:
        rows = tidy.concat(parts)
    else:
        rows = pd.concat(parts, ignore_index=True) if parts else _scan_rows(
            pd.Series([], dtype="datetime64[us, UTC]"), LineBook(0), fixed_device, None)
    return _finish(rows, lines, book, n)


CHUNK_LINES = 200_000


def _premark(book: LineBook, chunk, start: int, n: int, final_newline: bool, cfg) -> None:
    """Blank lines, declared skips, garbage bytes and a cut last line, for one block of
    lines starting at line index ``start`` of a file of ``n`` lines."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not chunk:
        return
    arr = pa.array(chunk, pa.string())
    book.skip(_np_bool(pc.equal(pc.utf8_trim_whitespace(arr), "")), S_BLANK)
    head = (np.arange(start, start + len(chunk)) < int(cfg.get("skip_lines", 0)))
    book.skip(head, S_SKIP_LINES)
    for pat in cfg.get("skip_patterns", []):
        book.skip(_np_bool(pc.match_substring_regex(arr, pat)), S_PATTERN)
    book.reject(_np_bool(pc.match_substring_regex(arr, _GARBAGE_RE)), R_GARBAGE)
    if (not final_newline and cfg.get("last_line_without_newline", "reject") == "reject"
            and start + len(chunk) == n):
        last = np.zeros(len(chunk), dtype=bool)
        last[-1] = True
        book.reject(last, R_TRUNCATED)


def _finish(rows, lines, book, n) -> ParseResult:
    res = ParseResult(rows=rows, lines=n, parsed=int(book.ok.sum()))
    bad = ~book.ok
    for i in np.flatnonzero(bad):
        reason = book.reason[i]
        if book.skipped[i]:
            res.skipped[reason] = res.skipped.get(reason, 0) + 1
        else:
            res.rejected[reason] = res.rejected.get(reason, 0) + 1
            res.rejects.append((int(i) + 1, reason, book.detail[i] or "", lines[i]))
    res.check_balance()
    return res


def _parse_keyvalue(s, cfg, book, fixed_device, values):
    import pyarrow as pa
    import pyarrow.compute as pc

    sep = cfg.get("separator", ";")
    psep = cfg.get("pair_separator", ":")
    lines = pa.array(s.to_numpy(dtype=object, na_value=""), pa.string())
    pos = pc.find_substring(lines, sep).to_numpy(zero_copy_only=False)
    no_sep = pos < 0
    lengths = pc.utf8_length(lines).to_numpy(zero_copy_only=False)
    book.reject(no_sep | (pos + len(sep) >= lengths), R_NO_VALUES)
    ts_text = pc.list_element(pc.split_pattern(lines, sep, max_splits=1), 0)
    ts = parse_timestamps(pd.Series(ts_text.to_pandas(), dtype=object).where(book.ok, ""),
                          cfg["timestamp"], book)
    if not values:
        return _scan_rows(ts, book, fixed_device, None)
    ok_idx = np.flatnonzero(book.ok)
    ok_lines = lines.take(pa.array(ok_idx))
    tok = pc.split_pattern(ok_lines, sep)
    flat = pc.list_flatten(tok)
    parent = pc.list_parent_indices(tok).to_numpy(zero_copy_only=False)
    # drop the first token of each line (the timestamp) and empty trailing tokens
    first = np.r_[True, parent[1:] != parent[:-1]] if len(parent) else np.zeros(0, bool)
    keep_tok = ~first & (pc.utf8_length(flat).to_numpy(zero_copy_only=False) > 0)
    flat = flat.filter(pa.array(keep_tok))
    line_of = ok_idx[parent[keep_tok]]
    kv = pc.extract_regex(flat, "^(?P<key>[^" + _re_class(psep) + "]*)" + re.escape(psep) + "(?P<val>.*)$")
    bad_pair = ~_np_bool(pc.is_valid(kv))
    key = pc.utf8_trim_whitespace(pc.struct_field(kv, "key"))
    bad_pair |= ~_np_bool(pc.greater(pc.utf8_length(key), 0))
    num, missing, bad_num = _to_numbers(pc.struct_field(kv, "val"), cfg.get("missing_values", []))
    bad_num &= ~bad_pair
    flat_text = None

    def detail_for(mask):
        nonlocal flat_text
        if flat_text is None:
            flat_text = flat.to_numpy(zero_copy_only=False)
        d = np.empty(len(book.ok), dtype=object)
        d[line_of[mask][::-1]] = flat_text[mask][::-1]  # first bad token of each line
        return d

    if bad_pair.any():
        m = np.zeros(len(book.ok), dtype=bool)
        m[line_of[bad_pair]] = True
        book.reject(m, R_PAIR, detail_for(bad_pair))
    if bad_num.any():
        m = np.zeros(len(book.ok), dtype=bool)
        m[line_of[bad_num]] = True
        book.reject(m, R_NUMBER, detail_for(bad_num))
    keep = book.ok[line_of]
    sensors = pc.dictionary_encode(key.filter(pa.array(keep)))
    return _rows(ts_values(ts)[line_of[keep]], fixed_device, sensors, num[keep], missing[keep], cfg)


def _re_class(text: str) -> str:
    return "".join("\\" + c if c in "]\\^-" else c for c in text)


def _map_categorical(cat: pd.Categorical, fn) -> pd.Categorical:
    """Apply ``fn`` to the categories (several may map to one), keeping codes vectorised."""
    new = [fn(c) for c in cat.categories]
    names = sorted(set(new))
    pos = {n: i for i, n in enumerate(names)}
    code_map = np.array([pos[n] for n in new] + [-1], dtype=np.int32)  # -1 stays -1 (NaN)
    return pd.Categorical.from_codes(code_map[cat.codes], categories=pd.Index(names, dtype=object))


def _rows(ts, device, sensors, num, missing, cfg):
    """Assemble tidy rows. ``sensors`` is an arrow (dictionary) array or numpy of names."""
    import pyarrow as pa

    if len(num) == 0:
        return tidy.empty()
    if isinstance(sensors, (pa.Array, pa.ChunkedArray)):
        if not pa.types.is_dictionary(sensors.type):
            sensors = sensors.dictionary_encode()
        cat = pd.Categorical.from_codes(sensors.indices.to_numpy(zero_copy_only=False),
                                        categories=pd.Index(sensors.dictionary.to_pylist(), dtype=object))
    else:
        cat = pd.Categorical(sensors)
    rename = cfg.get("rename", {})
    if rename:
        cat = _map_categorical(cat, lambda c: rename.get(c, c))
    dom = domain_of(list(cat.categories), cfg.get("domains", {}))
    domains = _map_categorical(cat, dom.__getitem__)
    ts = pd.DatetimeIndex(ts)
    if ts.tz is None:
        ts = ts.tz_localize("UTC")
    df = pd.DataFrame({
        "ts": ts,
        "device_id": pd.Categorical.from_codes(np.zeros(len(num), dtype=np.int8),
                                               categories=pd.Index([device or ""], dtype=object)),
        "domain": domains,
        "sensor": cat,
        "value": num,
        "quality_flag": np.where(missing, int(Flag.MISSING), int(Flag.OK)).astype(np.uint8),
    })
    return tidy.conform(df)


def _scan_rows(ts, book, device, device_col):
    ok = book.ok
    out = pd.DataFrame({"ts": pd.DatetimeIndex(ts_values(ts)[ok]).tz_localize("UTC"),
                        "device_id": device if device_col is None else device_col[ok]})
    return out


def _parse_delimited(s, cfg, book, fixed_device, values, state=None):
    import pyarrow as pa
    import pyarrow.compute as pc

    delim = cfg["delimiter"]
    n = len(s)
    state = {} if state is None else state   # the header, found once per file
    columns = list(cfg.get("columns") or [])
    header_line = state.get("header_line")
    if cfg.get("header", False) and header_line is None:
        first = np.flatnonzero(book.ok)
        if len(first) == 0:
            return tidy.empty() if values else _scan_rows(
                pd.Series([], dtype="datetime64[us, UTC]"), book, fixed_device, None)
        i = first[0]
        header_line = state["header_line"] = s.iloc[i]
        mask = np.zeros(n, dtype=bool)
        mask[i] = True
        book.skip(mask, S_HEADER)
    if cfg.get("header", False):
        columns = columns or [h.strip() for h in header_line.split(delim)]
    if cfg.get("skip_repeated_header", True):
        hdr_text = (header_line if header_line is not None else delim.join(columns)).strip()
        book.skip(np.array([ln.strip() == hdr_text for ln in s], dtype=bool), S_HEADER)
    arr = pa.array(s.to_numpy(dtype=object), pa.string())
    tok = pc.split_pattern(arr, delim)
    nfields = pc.list_value_length(tok).to_numpy(zero_copy_only=False)
    wrong = nfields != len(columns)
    detail = np.array([f"{k} fields, expected {len(columns)}" for k in nfields], dtype=object)
    book.reject(wrong, R_FIELDS, detail)
    dummy = pa.scalar(delim.join([""] * len(columns)))
    tok = pc.split_pattern(pc.if_else(pa.array(book.ok), arr, dummy), delim)
    fields = {c: pc.utf8_trim_whitespace(pc.list_element(tok, i)) for i, c in enumerate(columns)}
    ts_cfg = cfg["timestamp"]
    frac = None
    if ts_cfg.get("fraction_column"):
        fnum, _, fbad = _to_numbers(fields[ts_cfg["fraction_column"]], [])
        book.reject(fbad | np.isnan(fnum), R_TIMESTAMP,
                    fields[ts_cfg["fraction_column"]].to_numpy(zero_copy_only=False))
        frac = np.nan_to_num(fnum) * float(ts_cfg.get("fraction_scale", 1.0))
    ts_text = pd.Series(fields[ts_cfg["column"]].to_numpy(zero_copy_only=False), dtype=object)
    ts = parse_timestamps(ts_text.where(book.ok, ""), ts_cfg, book, frac)
    device_col = None
    dev_cfg = cfg["device"]
    if dev_cfg["from"] == "column":
        device_col = fields[dev_cfg["column"]].to_numpy(zero_copy_only=False).astype(object)
        book.reject((device_col == "") & book.ok, R_DEVICE)
    if not values:
        return _scan_rows(ts, book, fixed_device, device_col)
    used = {ts_cfg["column"], ts_cfg.get("fraction_column"), dev_cfg.get("column")}
    ignore = set(cfg.get("ignore_columns", []))
    value_cols = cfg.get("value_columns") or [c for c in columns if c not in used and c not in ignore]
    nums = {}
    for c in value_cols:
        num, missing, bad = _to_numbers(fields[c], cfg.get("missing_values", []))
        if (bad & book.ok).any():
            text = fields[c].to_numpy(zero_copy_only=False)
            detail = np.array([f"{c}={v}" if b else None for v, b in zip(text, bad)], dtype=object)
            book.reject(bad & book.ok, R_NUMBER, detail)
        nums[c] = (num, missing)
    ok = np.flatnonzero(book.ok)
    k = len(value_cols)
    ts_ok = ts_values(ts)[ok]
    ts_long = np.repeat(ts_ok, k)
    sensors = np.tile(np.asarray(value_cols, dtype=object), len(ok))
    num = np.column_stack([nums[c][0][ok] for c in value_cols]).ravel() if k else np.array([])
    missing = np.column_stack([nums[c][1][ok] for c in value_cols]).ravel() if k else np.array([], bool)
    if device_col is None:
        return _rows(ts_long, fixed_device, sensors, num, missing, cfg)
    out = _rows(ts_long, "", sensors, num, missing, cfg)
    out["device_id"] = pd.Categorical(np.repeat(device_col[ok], k))
    return tidy.conform(out)
