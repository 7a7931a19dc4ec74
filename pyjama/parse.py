"""Step 10's pure core: raw logger bytes → tidy rows, with every bad line accounted for.

Formats are declared in the parser config (``workflow/schemas/10_parser.schema.json``):

* ``keyvalue``: one line per sample, ``<timestamp><sep><key><pair_sep><value><sep>...``,
  e.g. ``2026-01-20T09:07:58.142308Z;m0:10;m1:12;outdoor_temp:18.94``;
* ``delimited``: one line per sample, fields in declared columns or under a header row;
* ``multiline``: one record per several lines: a start line (``record_start``, with the
  timestamp) followed by ``name: value`` lines (``value_line``).

Columns (delimited) and names (keyvalue, multiline) may be typed (``column_types``:
number, integer, hex, text with declared codes), scaled (``scale``, ``offset``: physical
units at parse time) and mapped to quality flags (``status_flags``: a status bit or value,
or a sentinel of one column, flags the other sensors of the same line). The time may be
relative to an origin (declared, or read from a head line); the device id may come from a
head line; timestamps outside the declared deployment span are rejected; the order of
times in the file is checked (``sequence``: backwards steps flagged, clock jumps and
counter resets recorded as events). docs/steps/parser.md documents every key.

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
R_SPAN = "timestamp outside the deployment span"
R_LONG = "line too long"
R_REPEATED = "name repeated in one record"
R_UTF16 = ("looks like UTF-16 without a byte-order mark (NUL bytes every other byte); "
           "set $.encoding to utf-16-le or utf-16-be")
R_ORIGIN = "no time origin (timestamp.origin_pattern matched none of the head lines)"
R_HEAD_DEVICE = "no device id (device.pattern matched none of the head lines)"
R_ORPHAN = "value line before any record start"
R_NOT_RECORD = "neither a record start nor a value line"
R_BAD_RECORD = "record start line rejected"
S_BLANK = "blank line"
S_SKIP_LINES = "skip_lines"
S_HEADER = "header line"
S_PATTERN = "skip pattern"   # the reason is "skip pattern '<the pattern>'"

# Events found in the order of times (recorded in the ledger, not rejects).
E_BACKWARDS = "time went backwards"
E_JUMP = "clock jump"
E_RESET = "counter reset"
MAX_EVENTS = 20    # event lines kept per file in the ledger (all are counted)


def r_decode(encoding: str) -> str:
    """Reason of a line with bytes the declared encoding cannot decode."""
    return f"not valid {encoding} (set $.encoding, e.g. latin-1 or utf-16)"


def s_pattern(pattern: str) -> str:
    return f"{S_PATTERN} {pattern!r}"

_GARBAGE_RE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"  # RE2 syntax (pyarrow)
_DECODE_RE = r"\x{fffd}"


@dataclass
class ParseResult:
    rows: pd.DataFrame                       # tidy rows (quality_flag 1 for declared missing)
    lines: int = 0                           # lines in the file (a final line end ends a line)
    parsed: int = 0                          # lines that produced rows
    skipped: dict = field(default_factory=dict)
    rejected: dict = field(default_factory=dict)
    rejects: list = field(default_factory=list)   # (line_no, reason, detail, text)
    events: dict = field(default_factory=dict)    # event kind → count (see E_*)
    event_lines: list = field(default_factory=list)  # first MAX_EVENTS events, as text

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
        self.flag = np.zeros(n, dtype=np.uint8)   # a flag for every row of the line (sequence)

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


# ---------------------------------------------------------------- bytes → lines

_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def decode(data: bytes, encoding: str = "utf-8"):
    """Bytes → (text, encoding used, reason for the whole file or None).

    A byte-order mark wins over the declared encoding (it is unambiguous). A file that
    is declared UTF-8 but has NUL bytes every other byte is UTF-16 without a BOM: it is
    not guessed, every line is rejected with :data:`R_UTF16`."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(enc, errors="replace"), enc, None
    enc = "utf-16-le" if encoding == "utf-16" else encoding   # no BOM: little-endian
    if enc in ("utf-8", "ascii") and _looks_utf16(data):
        # decoded only to count and show its lines: all of them are rejected
        guess = "utf-16-le" if data[1::2].count(0) > data[0::2].count(0) else "utf-16-be"
        return data.decode(guess, errors="replace"), enc, R_UTF16
    return data.decode(enc, errors="replace"), enc, None


def _looks_utf16(data: bytes) -> bool:
    head = data[:4096]
    if len(head) < 4:
        return False
    even, odd = head[0::2].count(0), head[1::2].count(0)
    return max(even, odd) > 0.4 * (len(head) // 2) and min(even, odd) < 0.05 * (len(head) // 2)


def split_lines(data, encoding: str = "utf-8"):
    """Bytes (or text) → (list of str lines without line ends, has_final_newline).

    CRLF and LF both end a line. Undecodable bytes become U+FFFD so the line can be
    reported (and rejected) instead of failing the whole file.
    """
    text = data if isinstance(data, str) else decode(data, encoding)[0]
    ends_with_newline = text.endswith("\n")
    lines = text.split("\n")
    if ends_with_newline or text == "":
        lines.pop()
    if "\r" in text:      # one scan of the text; only then a look at every line's end
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    return lines, ends_with_newline


# the characters of _GARBAGE_RE, and every other byte (deleted by _has_control_chars)
_CONTROL = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL)


def _has_control_chars(text: str, block: int = 1 << 23) -> bool:
    """Whether ``text`` holds a character of ``_GARBAGE_RE`` (C0 controls but tab, LF and
    CR, and DEL): in UTF-8 such a character is that one byte and no other character's byte
    is below 0x80, so each block's bytes are searched with one C pass (~8 ms an 11 MB day,
    a third of the per-line search it saves)."""
    for i in range(0, len(text), block):
        if text[i:i + block].encode("utf-8", "surrogatepass").translate(None, _NOT_CONTROL):
            return True
    return False


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


# ---------------------------------------------------------------- time

UNIT_SECONDS = {"ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_timestamps(text: pd.Series, ts_cfg: dict, book: LineBook, frac=None, origin=None) -> pd.Series:
    """Parse timestamp strings to UTC [us]; bad ones are rejected in ``book``.
    ``origin`` (a UTC pandas Timestamp) is needed for format ``relative``."""
    fmt = ts_cfg.get("format", "ISO8601")
    tz = ts_cfg.get("timezone", "UTC")
    s = text.astype("string").str.strip()
    if fmt == "relative":
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        num = np.where(np.isfinite(num), num, np.nan)
        secs = num * UNIT_SECONDS[ts_cfg.get("unit", "s")]
        us = np.round(secs * 1e6)
        ok = np.isfinite(us) & (np.abs(us) < 3e17)
        td = pd.to_timedelta(np.where(ok, us, 0).astype(np.int64), unit="us")
        ts = pd.Series(pd.DatetimeIndex([origin] * len(s)) + td, index=s.index).where(ok)
    elif fmt in ("unix", "unix_ms"):
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

    return _iso_cast(pa.array(s.to_numpy(dtype=object, na_value=""), pa.string()), book)


def _iso_utc_arrow(text, ts_cfg: dict, book: LineBook):
    """:func:`parse_timestamps` of arrow strings for ISO 8601 in UTC (the keyvalue format's
    usual case), without a round trip through pandas: the same trim, the same C parser, the
    same result; None for another format or zone, or when a line still in play does not
    parse (the caller then goes through :func:`parse_timestamps`)."""
    import pyarrow.compute as pc

    if ts_cfg.get("format", "ISO8601") != "ISO8601" or ts_cfg.get("timezone", "UTC") != "UTC":
        return None
    return _iso_cast(pc.fill_null(pc.utf8_trim_whitespace(text), ""), book)


def _iso_cast(arr, book: LineBook):
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        arr = pc.if_else(pa.array(book.ok), arr, pa.scalar("1970-01-01T00:00:00Z"))
        ts = pc.cast(arr, pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    out = pd.Series(ts.to_numpy(zero_copy_only=False)).dt.tz_localize("UTC")
    return out.where(book.ok)


def _iso(us: int) -> str:
    return str(np.datetime64(int(us), "us")).replace(".000000", "") + "Z"


def read_origin(head: str, ts_cfg: dict):
    """The time origin of a ``relative`` timestamp: ``timestamp.origin`` (an instant), or
    ``timestamp.origin_pattern`` searched in the head lines (groups ``origin``, or
    ``date`` and ``time``), read with ``timestamp.origin_format``. None when not found."""
    if ts_cfg.get("origin"):
        return pd.Timestamp(ts_cfg["origin"]).tz_convert("UTC") if pd.Timestamp(ts_cfg["origin"]).tzinfo \
            else pd.Timestamp(ts_cfg["origin"], tz="UTC")
    m = re.search(ts_cfg["origin_pattern"], head, re.M)
    if not m:
        return None
    g = m.groupdict()
    text = g.get("origin") or f"{g.get('date', '')} {g.get('time', '')}".strip()
    fmt = ts_cfg.get("origin_format", "ISO8601")
    try:
        t = pd.to_datetime(text, format=fmt) if fmt != "ISO8601" else pd.Timestamp(text)
    except (ValueError, TypeError):
        return None
    if t is pd.NaT:
        return None
    if t.tzinfo is None:
        tz = ts_cfg.get("timezone", "UTC")
        try:
            t = t.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        except Exception:   # noqa: BLE001 - an odd zone is the config's error, told at check time
            return None
        if t is pd.NaT:
            return None
    return t.tz_convert("UTC")


def span_bounds(cfg: dict, device: str):
    """(start, end) in µs since the epoch (None: open) of the deployment span of a device."""
    from .timewindow import parse_bound

    dep = cfg.get("deployment") or {}
    per = (dep.get("devices") or {}).get(device, {})
    out = []
    for key, side in (("start", "from"), ("end", "to")):
        text = per.get(key) or dep.get(key) or ""
        if not text:
            out.append(None)
            continue
        b = parse_bound(text, side)
        out.append(int(pd.Timestamp(b).value // 1000))
    return tuple(out)


def declares_span(cfg: dict) -> bool:
    """Whether a parser config declares a deployment span (for the exposure or a device)."""
    dep = cfg.get("deployment") or {}
    return bool(dep.get("start") or dep.get("end") or dep.get("devices"))


def _reject_outside_span(ts, devices, cfg: dict, book: LineBook) -> None:
    """Reject lines whose time is outside the declared deployment span of their device."""
    if not declares_span(cfg):
        return
    t = ts_values(ts).astype(np.int64)
    devs = np.asarray(devices, dtype=object) if not isinstance(devices, (str, type(None))) \
        else np.full(len(t), devices or "", dtype=object)
    for dev in pd.unique(devs[book.ok]) if book.ok.any() else []:
        lo, hi = span_bounds(cfg, dev)
        if lo is None and hi is None:
            continue
        sel = book.ok & (devs == dev)
        out = np.zeros(len(t), dtype=bool)
        if lo is not None:
            out |= t < lo
        if hi is not None:
            out |= t > hi
        out &= sel
        if out.any():
            rng = f"{_iso(lo) if lo is not None else '-inf'} .. {_iso(hi) if hi is not None else '+inf'}"
            detail = np.empty(len(t), dtype=object)
            for i in np.flatnonzero(out):
                detail[i] = f"{_iso(t[i])} not in {rng}"
            book.reject(out, R_SPAN, detail)


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


def device_from_head(head: str, device_cfg: dict) -> str | None:
    m = re.search(device_cfg["pattern"], head, re.M)
    return m.group("device") if m and m.group("device") else None


# ---------------------------------------------------------------- values

_NUMBER_RE = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
_INTEGER_RE = r"^[-+]?\d+$"
_HEX_RE = r"^(0[xX])?[0-9a-fA-F]+$"
_NAN_RE = r"^[-+]?(?i:nan)$"
_INF_RE = r"^[-+]?(?i:inf|infinity)$"


def _to_numbers(values, missing_tokens, kind: str = "number") -> tuple:
    """Arrow strings → (float64 numpy, is_missing_token, is_bad, is_infinite).

    Text ``inf``/``infinity`` and numbers too large for float64 (``1e309``) are the same
    thing: an infinite value, kept and flagged OUT_OF_RANGE by the caller."""
    import pyarrow as pa
    import pyarrow.compute as pc

    v = pc.utf8_trim_whitespace(values)
    missing = pc.is_in(v, value_set=pa.array(list(missing_tokens), pa.string())) if missing_tokens \
        else pc.is_null(v)
    missing = pc.or_kleene(pc.fill_null(missing, True), pc.is_null(v))
    missing_np = missing.to_numpy(zero_copy_only=False)
    if kind == "hex":
        good = _np_bool(pc.match_substring_regex(v, _HEX_RE)) & ~missing_np
        text = v.to_numpy(zero_copy_only=False)
        num = np.full(len(text), np.nan)
        if good.any():
            uniq, inv = np.unique(text[good].astype(str), return_inverse=True)
            num[good] = np.array([float(int(u, 16)) for u in uniq])[inv]
        bad = ~(good | missing_np)
        return num, missing_np, bad, np.zeros(len(text), bool)
    if kind == "number":
        fast = _cast_numbers(v, missing, missing_np)
        if fast is not None:
            return fast
    rx = _INTEGER_RE if kind == "integer" else _NUMBER_RE
    good = _np_bool(pc.match_substring_regex(v, rx))
    # "nan" / "inf" are no numbers: only the tokens that are not are tested for them
    nan_text, inf_text = np.zeros(len(good), bool), np.zeros(len(good), bool)
    other = np.flatnonzero(~good)
    if len(other):
        rest = v.take(pa.array(other))
        nan_text[other] = _np_bool(pc.match_substring_regex(rest, _NAN_RE))
        inf_text[other] = _np_bool(pc.match_substring_regex(rest, _INF_RE))
    clean = pc.if_else(pa.array(good | inf_text), v, pa.scalar("nan"))
    num = pc.cast(clean, pa.float64()).to_numpy(zero_copy_only=False)
    bad = ~(good | missing_np | nan_text | inf_text)
    num = np.where(missing_np, np.nan, num)
    return num, missing_np, bad, np.isinf(num)


def _cast_numbers(v, missing, missing_np):
    """:func:`_to_numbers` for kind "number" by arrow's cast alone, when it parses every
    token that is not missing (else None: the regex path rejects the bad ones). The cast
    accepts what ``_NUMBER_RE``, ``_NAN_RE`` and ``_INF_RE`` accept and, beyond them, only
    ``nan(...)`` forms, which it reads as NaN (tests/test_kernels.py pins this on ~50,000
    strings); so the regexes are asked only about the few tokens that are not finite, and
    the result is the regex path's, bit for bit, without the number regex's pass over every
    token (~67 ms of a 1 Hz day's 1.1 M tokens)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        filled = pc.if_else(missing, pa.scalar("0"), v) if missing_np.any() else v
        num = pc.cast(filled, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    num = np.where(missing_np, np.nan, num)
    bad = np.zeros(len(num), bool)
    odd = np.flatnonzero(~np.isfinite(num) & ~missing_np)
    if len(odd):        # 1e400 and inf text: infinite; nan text: NaN; nan(...): bad
        rest = v.take(pa.array(odd))
        good = _np_bool(pc.match_substring_regex(rest, _NUMBER_RE))
        inf_text = _np_bool(pc.match_substring_regex(rest, _INF_RE))
        nan_text = _np_bool(pc.match_substring_regex(rest, _NAN_RE))
        bad[odd] = ~(good | inf_text | nan_text)
        num[odd[~(good | inf_text)]] = np.nan     # the regex path's NaN (not -nan's sign)
    return num, missing_np, bad, np.isinf(num)


def _np_bool(arr) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.fill_null(arr, False).to_numpy(zero_copy_only=False).astype(bool)


class Column:
    """A typed value column (or keyvalue/multiline name): raw text → physical values,
    the raw values (for ``status_flags``), flags, and the lines it rejects."""

    def __init__(self, name, spec, missing_tokens):
        self.name = name
        self.type = spec.get("type", "number")
        self.scale = float(spec.get("scale", 1.0))
        self.offset = float(spec.get("offset", 0.0))
        self.codes = spec.get("codes", {})
        self.missing = missing_tokens
        # a text column without codes is a status column only: it makes no rows
        self.is_sensor = not (self.type == "text" and not self.codes)

    def convert(self, text):
        """Arrow strings → (values, raw, flags, bad, detail-kind)."""
        import pyarrow.compute as pc

        n = len(text)
        if self.type == "text":
            raw = pc.utf8_trim_whitespace(text).to_numpy(zero_copy_only=False).astype(object)
            miss = np.isin(raw, list(self.missing)) | pd.isna(raw)
            num = np.array([float(self.codes[t]) if t in self.codes else np.nan for t in raw]) \
                if self.codes else np.full(n, np.nan)
            flags = np.where(miss, np.uint8(Flag.MISSING),
                             np.where(np.isnan(num), np.uint8(Flag.OUT_OF_RANGE), np.uint8(Flag.OK)))
            return num, raw, flags.astype(np.uint8), np.zeros(n, bool)
        num, miss, bad, inf = _to_numbers(text, self.missing, self.type)
        raw = num
        val = num * self.scale + self.offset if (self.scale != 1.0 or self.offset != 0.0) else num
        flags = np.where(miss | (np.isnan(num) & ~inf), np.uint8(Flag.MISSING),
                         np.where(inf, np.uint8(Flag.OUT_OF_RANGE), np.uint8(Flag.OK)))
        return val, raw, flags.astype(np.uint8), bad

    def bad_detail(self, value) -> str:
        kind = {"integer": " (integer expected)", "hex": " (hex expected)"}.get(self.type, "")
        return f"{self.name}={value}{kind}"


def _columns(names, cfg) -> dict:
    types = cfg.get("column_types", {})
    miss = cfg.get("missing_values", [])
    return {c: Column(c, types.get(c, {}), miss) for c in names}


def _status_masks(cfg, raws: dict, sensors: list) -> dict:
    """{sensor: flags (uint8 per line)} from ``status_flags`` over the raw column values
    (before scale and offset; text columns: their text)."""
    from . import flags as fl

    out = {}
    for rule in cfg.get("status_flags", []):
        raw = raws.get(rule["column"])
        if raw is None:
            continue
        if rule.get("bits"):
            fin = np.isfinite(raw)
            iv = np.where(fin, raw, 0).astype(np.int64)
            hit = fin & ((iv & int(str(rule["bits"]), 0)) != 0)
        elif raw.dtype == object:
            hit = np.isin(raw, [str(e) for e in rule.get("equals", [])])
        else:
            hit = np.isin(raw, [float(e) for e in rule.get("equals", []) if not isinstance(e, str)])
        code = np.uint8(fl.Flag[rule["flag"]])
        for sensor in (rule.get("sensors") or sensors):
            if sensor in sensors:
                cur = out.get(sensor, np.zeros(len(raw), np.uint8))
                out[sensor] = fl.combine(cur, np.where(hit, code, np.uint8(0)))
    return out


# ---------------------------------------------------------------- the file

def parse_bytes(data: bytes, cfg: dict, filename: str, values: bool = True) -> ParseResult:
    """Parse one raw file's bytes with the parser config ``cfg`` (validated, defaults in).

    ``values=False`` only parses timestamps and device ids (used to index which
    (device, day) partitions a raw file touches, cheaply, before the workflow runs).
    """
    text, encoding, file_reason = decode(data, cfg.get("encoding", "utf-8"))
    del data
    lines, final_newline = split_lines(text)
    # the per-line searches for control characters and U+FFFD only when the text has one
    scan = {"garbage": _has_control_chars(text), "decode": "\ufffd" in text}
    del text
    n = len(lines)
    dev_cfg = cfg["device"]
    fixed_device = device_from_filename(filename, dev_cfg)
    if dev_cfg["from"] in ("filename", "fixed") and fixed_device is None:
        from .errors import UserError
        raise UserError(f"{filename}: file name does not match $.device.pattern "
                        f"{dev_cfg['pattern']!r}; allowed: names with a (?P<device>...) match")
    head = "\n".join(lines[:int(cfg.get("head_lines", 20))])
    if dev_cfg["from"] == "header" and file_reason is None:
        fixed_device = device_from_head(head, dev_cfg)
        if fixed_device is None:
            file_reason = R_HEAD_DEVICE
    state: dict = {"encoding": encoding, "filename": filename, "events": {}, "event_lines": [],
                   "cut_last": not final_newline and cfg.get("last_line_without_newline", "auto") == "auto"}
    ts_cfg = cfg["timestamp"]
    if ts_cfg.get("format") == "relative" and file_reason is None:
        state["origin"] = read_origin(head, ts_cfg)
        if state["origin"] is None:
            file_reason = R_ORIGIN
    book = LineBook(n)
    if file_reason is not None:          # the whole file: every line, one reason
        book.reject(np.ones(n, bool), file_reason)
        empty = tidy.empty() if values else _scan_rows(
            pd.Series([], dtype="datetime64[us, UTC]"), LineBook(0), fixed_device, None)
        return _finish(empty, lines, book, n, state)
    # Lines are parsed in blocks so that the memory a file needs is bounded by the block,
    # not by the file (a 10 Hz day is ~864 k lines and 11 M values); results are the same.
    # A multi-line record may span a block edge: that format is parsed in one block.
    parts = []
    step = max(n, 1) if cfg["format"] == "multiline" else CHUNK_LINES
    maxlen = int(cfg.get("max_line_length", 100_000))
    for start in range(0, max(n, 1), step):
        chunk = lines[start:start + step]
        sub = LineBook(len(chunk))
        long = np.zeros(len(chunk), bool)
        if chunk and max(map(len, chunk)) > maxlen:
            long = np.fromiter((len(ln) > maxlen for ln in chunk), bool, len(chunk))
        if long.any():   # never tokenised: a 50 MB line costs its bytes, not 10 M values
            det = np.array([f"{len(ln)} characters, max {maxlen}" if lg else None
                            for ln, lg in zip(chunk, long)], dtype=object)
            sub.reject(long, R_LONG, det)
            chunk = ["" if lg else ln for ln, lg in zip(chunk, long)]
        arr = _premark(sub, chunk, start, n, final_newline, cfg, encoding, **scan)
        state["last_block"] = start + len(chunk) >= n
        if cfg["format"] == "keyvalue":
            rows = _parse_keyvalue(arr, cfg, sub, fixed_device, values, state, start)
        elif cfg["format"] == "multiline":
            rows = _parse_multiline(pd.Series(chunk, dtype=object), cfg, sub, fixed_device, values, state, start)
        else:
            rows = _parse_delimited(pd.Series(chunk, dtype=object), cfg, sub, fixed_device, values, state, start)
        book.absorb(sub, start)
        if len(rows):
            parts.append(rows)
    if state["cut_last"] and n and not book.ok[n - 1] and not book.skipped[n - 1] \
            and book.reason[n - 1] not in (R_GARBAGE, r_decode(encoding), R_LONG, R_TRUNCATED):
        # a last line without a line end that does not parse: cut while being written
        first = book.reason[n - 1]
        book.reason[n - 1] = R_TRUNCATED
        book.detail[n - 1] = f"{first}: {book.detail[n - 1]}" if book.detail[n - 1] else first
    if values:
        rows = tidy.concat(parts)
    else:
        rows = pd.concat(parts, ignore_index=True) if parts else _scan_rows(
            pd.Series([], dtype="datetime64[us, UTC]"), LineBook(0), fixed_device, None)
    return _finish(rows, lines, book, n, state)


CHUNK_LINES = 200_000


def _premark(book: LineBook, chunk, start: int, n: int, final_newline: bool, cfg, encoding,
             garbage: bool = True, decode: bool = True):
    """Blank lines, declared skips, garbage bytes and a cut last line, for one block of
    lines starting at line index ``start`` of a file of ``n`` lines; returns the block's
    lines as an arrow string array (the keyvalue format tokenises that one). ``garbage`` /
    ``decode`` False: the file's text has no control character / no U+FFFD, so no line
    is searched for one."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(chunk, pa.string())
    if not chunk:
        return arr
    book.skip(_np_bool(pc.equal(pc.utf8_trim_whitespace(arr), "")) & (book.reason != R_LONG), S_BLANK)
    head = (np.arange(start, start + len(chunk)) < int(cfg.get("skip_lines", 0)))
    book.skip(head, S_SKIP_LINES)
    for pat in cfg.get("skip_patterns", []):
        book.skip(_np_bool(pc.match_substring_regex(arr, pat)), s_pattern(pat))
    if garbage:
        book.reject(_np_bool(pc.match_substring_regex(arr, _GARBAGE_RE)), R_GARBAGE)
    if decode:
        book.reject(_np_bool(pc.match_substring_regex(arr, _DECODE_RE)), r_decode(encoding))
    if (not final_newline and cfg.get("last_line_without_newline", "auto") == "reject"
            and start + len(chunk) == n):
        last = np.zeros(len(chunk), dtype=bool)
        last[-1] = True
        book.reject(last, R_TRUNCATED)
    return arr


def _finish(rows, lines, book, n, state) -> ParseResult:
    res = ParseResult(rows=rows, lines=n, parsed=int(book.ok.sum()),
                      events=dict(state.get("events", {})), event_lines=list(state.get("event_lines", [])))
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


# ---------------------------------------------------------------- order of times

def _event(state, kind, line_no, text):
    state["events"][kind] = state["events"].get(kind, 0) + 1
    if len(state["event_lines"]) < MAX_EVENTS:
        state["event_lines"].append(f"line {line_no}: {kind}: {text}")


def _check_sequence(ts, devices, cfg, book, state, start, counters=None):
    """Times in file order, per device: a line earlier than one before it (runs ahead of
    their neighbours left out, :func:`_ahead_runs`) and a run ahead of its neighbours are
    flagged TIME_ORDER (in ``book.flag``) and counted; a forward step longer than
    ``sequence.max_step`` is a clock jump and a decrease of a declared counter a counter
    reset (both recorded as events, values unflagged). ``counters`` is {name: values per line}."""
    seq = cfg.get("sequence") or {}
    ok = np.flatnonzero(book.ok)
    if not len(ok):
        return
    t = ts_values(ts).astype(np.int64)
    devs = np.asarray(devices, dtype=object) if not isinstance(devices, (str, type(None))) \
        else None
    max_step = None
    if seq.get("max_step"):
        max_step = int(pd.Timedelta(seq["max_step"]).value // 1000)
    last = state.setdefault("seq_last", {})
    groups = [(devices or "", ok)] if devs is None else \
        [(d, ok[devs[ok] == d]) for d in pd.unique(devs[ok])]
    for dev, idx in groups:
        tt = t[idx]
        prev_max, prev_t = last.get(dev, (None, None))
        ahead = _ahead_runs(tt, prev_t)
        # the latest time so far leaves the runs ahead out: one wrong future time does
        # not make every later line "earlier than a line before it"
        cm = np.maximum.accumulate(np.where(ahead, _NO_TIME, tt))
        before = np.r_[prev_max if prev_max is not None else _NO_TIME, cm[:-1]]
        prev = np.r_[prev_t if prev_t is not None else tt[0], tt[:-1]]
        back = (tt < before) | ahead
        if seq.get("backwards", "flag") == "flag":
            book.flag[idx[back]] = np.uint8(Flag.TIME_ORDER)
        step_back = tt < prev
        for i in np.flatnonzero(step_back):
            _event(state, E_BACKWARDS, start + idx[i] + 1, f"{_iso(prev[i])} -> {_iso(tt[i])}")
        if max_step is not None:
            for i in np.flatnonzero((tt - prev) > max_step):
                _event(state, E_JUMP, start + idx[i] + 1, f"{_iso(prev[i])} -> {_iso(tt[i])}")
        for name, vals in (counters or {}).items():
            v = vals[idx]
            key = (dev, name)
            pv = state.setdefault("seq_counter", {}).get(key)
            fin = np.isfinite(v)
            vi = np.flatnonzero(fin)
            if not len(vi):
                continue
            seqv = v[vi]
            pvals = np.r_[pv if pv is not None else seqv[0], seqv[:-1]]
            for j in np.flatnonzero(seqv < pvals):
                _event(state, E_RESET, start + idx[vi[j]] + 1, f"{name} {pvals[j]:g} -> {seqv[j]:g}")
            state["seq_counter"][key] = seqv[-1]
        last[dev] = (int(cm[-1]) if prev_max is None else max(int(cm[-1]), prev_max), int(tt[-1]))


_NO_TIME = np.iinfo(np.int64).min
AHEAD_RUN = 3      # longest run of lines that counts as "ahead of its neighbours" (parser.md)


def _ahead_runs(tt, prev_t=None):
    """Lines of a run of L ≤ AHEAD_RUN lines that is out of place ahead of the file's
    clock (docs/steps/parser.md, "Order of times"): every line of the run is later than
    each of the L + 1 lines after it, and the line after the run is not earlier than the
    line before it (the clock carries on as if the run were not there). ``prev_t``: the
    time of the line before ``tt`` (previous block), or None."""
    from numpy.lib.stride_tricks import sliding_window_view

    n = len(tt)
    out = np.zeros(n, dtype=bool)
    pad = np.r_[tt, np.full(AHEAD_RUN + 1, _NO_TIME, dtype=np.int64)]
    before = np.r_[_NO_TIME if prev_t is None else prev_t, tt[:-1]]
    for L in range(1, AHEAD_RUN + 1):
        m = n - L                     # runs that have at least one line after them
        if m <= 0:
            break
        run_min = sliding_window_view(tt, L).min(axis=1)[:m]
        after_max = sliding_window_view(pad, L + 1).max(axis=1)[L:L + m]
        hit = np.flatnonzero((run_min > after_max) & (before[:m] <= tt[L:L + m]))
        for k in range(L):
            out[hit + k] = True
    return out


# ---------------------------------------------------------------- formats

def _split_pairs(flat, psep: str):
    """key:value tokens → (keys, values, is_bad_pair): the key is the text before the first
    ``psep`` (holding none of its characters), the value all after it; a token without it
    is a bad pair (null key and value). A one-character separator splits at its first
    occurrence (pyarrow's split_pattern, ~5 x faster than the regex, same result:
    tests/test_kernels.py); a longer one keeps the regex."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(psep) != 1:
        kv = pc.extract_regex(flat, "^(?P<key>[^" + _re_class(psep) + "]*)" + re.escape(psep) + "(?P<val>.*)$")
        return pc.struct_field(kv, "key"), pc.struct_field(kv, "val"), ~_np_bool(pc.is_valid(kv))
    parts = pc.split_pattern(flat, psep, max_splits=1)
    bad = pc.list_value_length(parts).to_numpy(zero_copy_only=False) != 2
    if bad.any():
        parts = pc.if_else(pa.array(bad), pa.scalar(None, parts.type), parts)
    return pc.list_element(parts, 0), pc.list_element(parts, 1), bad


def _parse_keyvalue(lines, cfg, book, fixed_device, values, state, start):
    """A block of keyvalue lines (an arrow string array) → rows (see :func:`parse_bytes`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    sep = cfg.get("separator", ";")
    psep = cfg.get("pair_separator", ":")
    pos = pc.find_substring(lines, sep).to_numpy(zero_copy_only=False)
    no_sep = pos < 0
    lengths = pc.utf8_length(lines).to_numpy(zero_copy_only=False)
    book.reject(no_sep | (pos + len(sep) >= lengths), R_NO_VALUES)
    if values:      # every line's tokens at once: the first is its timestamp
        tok = pc.split_pattern(lines, sep)
        ts_text = pc.list_element(tok, 0)
    else:           # the raw index's scan needs the timestamp only
        ts_text = pc.list_element(pc.split_pattern(lines, sep, max_splits=1), 0)
    ts = _iso_utc_arrow(ts_text, cfg["timestamp"], book)
    if ts is None:
        ts = parse_timestamps(pd.Series(ts_text.to_pandas(), dtype=object).where(book.ok, ""),
                              cfg["timestamp"], book, origin=state.get("origin"))
    _reject_outside_span(ts, fixed_device, cfg, book)
    if not values:
        return _scan_rows(ts, book, fixed_device, None)
    flat = pc.list_flatten(tok)
    parent = pc.list_parent_indices(tok).to_numpy(zero_copy_only=False).astype(np.int64)
    # the tokens of the lines still in play, without each line's first (the timestamp)
    # and empty tokens (a trailing separator)
    first = np.r_[True, parent[1:] != parent[:-1]] if len(parent) else np.zeros(0, bool)
    keep_tok = book.ok[parent] & ~first & (pc.binary_length(flat).to_numpy(zero_copy_only=False) > 0)
    flat = flat.filter(pa.array(keep_tok))
    line_of = parent[keep_tok]
    key, val, bad_pair = _split_pairs(flat, psep)
    key = pc.utf8_trim_whitespace(key)
    bad_pair |= ~_np_bool(pc.greater(pc.utf8_length(key), 0))
    keyd = pc.dictionary_encode(key)
    kcodes = pc.fill_null(keyd.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    knames = keyd.dictionary.to_pylist()
    types = cfg.get("column_types", {})
    miss = cfg.get("missing_values", [])
    num = np.full(len(flat), np.nan)
    tflags = np.zeros(len(flat), np.uint8)
    bad_num = np.zeros(len(flat), bool)
    typed = [k for k in knames if k in types]
    plain = ~np.isin(kcodes, [knames.index(k) for k in typed]) if typed else np.ones(len(flat), bool)
    if plain.any():
        col = Column("", {}, miss)
        v_, _, f_, b_ = col.convert(val.filter(pa.array(plain)))
        num[plain], tflags[plain], bad_num[plain] = v_, f_, b_
    raw_of = {}                      # typed name → its tokens' raw values (before scale/offset)
    not_sensor = np.zeros(len(flat), bool)
    for k in typed:
        sel = kcodes == knames.index(k)
        col = Column(k, types[k], miss)
        v_, raw_of[k], f_, b_ = col.convert(val.filter(pa.array(sel)))
        num[sel], tflags[sel], bad_num[sel] = v_, f_, b_
        not_sensor[sel] = not col.is_sensor      # a text name without codes: status only
    bad_num &= ~bad_pair
    # the same name twice in one line: a fold of many values into one (e.g. a huge line)
    combo = line_of.astype(np.int64) * (len(knames) + 1) + kcodes
    rep = pd.Series(combo).duplicated().to_numpy() & ~bad_pair
    flat_text = None

    def detail_for(mask):
        nonlocal flat_text
        if flat_text is None:
            flat_text = flat.to_numpy(zero_copy_only=False)
        d = np.empty(len(book.ok), dtype=object)
        d[line_of[mask][::-1]] = flat_text[mask][::-1]  # first bad token of each line
        return d

    for mask, reason in ((bad_pair, R_PAIR), (bad_num, R_NUMBER), (rep, R_REPEATED)):
        if mask.any():
            m = np.zeros(len(book.ok), dtype=bool)
            m[line_of[mask]] = True
            if reason == R_REPEATED:
                d = np.empty(len(book.ok), dtype=object)
                d[line_of[mask][::-1]] = np.array(knames, dtype=object)[kcodes[mask][::-1]]
                book.reject(m, reason, d)
            elif reason == R_NUMBER and typed:
                # the token as written, and the type a typed name expects: `Status:0xZZ (hex expected)`
                kind = np.array([Column(k, types.get(k, {}), miss).bad_detail("").removeprefix(k + "=")
                                 for k in knames] + [""], dtype=object)
                d, k_ = detail_for(mask), _kind_at(kind, kcodes, line_of, mask, len(book.ok))
                has = pd.notna(d)
                d[has] = d[has] + k_[has]
                book.reject(m, reason, d)
            else:
                book.reject(m, reason, detail_for(mask))
    if state.get("cut_last") and state.get("last_block") and len(book.ok) and book.ok[-1]:
        # a last line without a line end is kept when it has the names of the line before
        ok_lines_idx = np.flatnonzero(book.ok)
        names_of = lambda i: set(kcodes[line_of == i].tolist())  # noqa: E731
        prev = names_of(ok_lines_idx[-2]) if len(ok_lines_idx) > 1 else state.get("last_names")
        if prev is not None and names_of(len(book.ok) - 1) != prev:
            m = np.zeros(len(book.ok), bool)
            m[-1] = True
            book.reject(m, R_TRUNCATED, np.array(["names differ from the line before"] * len(m), dtype=object))
    if book.ok.any():
        state["last_names"] = set(kcodes[line_of == np.flatnonzero(book.ok)[-1]].tolist())
    good = book.ok[line_of] & ~bad_pair
    per_line = {}                    # the names status_flags and counters read, one value per line
    for name in _record_names(cfg):
        if name in knames:
            sel = kcodes == knames.index(name)
            raw = raw_of[name] if name in raw_of else num[sel]
            per_line[name] = _per_record(line_of[sel & good], raw[good[sel]], len(book.ok))
    _check_sequence(ts, fixed_device, cfg, book, state, start, _counters(cfg, per_line))
    keep = book.ok[line_of] & ~not_sensor
    flags = fl_combine(tflags[keep], book.flag[line_of[keep]])
    flags = _apply_status(cfg, per_line, kcodes[keep], knames, line_of[keep], flags)
    sensors = pc.dictionary_encode(key.filter(pa.array(keep)))
    return _rows(ts_values(ts)[line_of[keep]], fixed_device, sensors, num[keep], flags, cfg)


def _kind_at(kind, kcodes, line_of, mask, n) -> np.ndarray:
    """Per line: the type hint of its first bad token (aligned with ``detail_for``)."""
    d = np.full(n, "", dtype=object)
    d[line_of[mask][::-1]] = kind[kcodes[mask][::-1]]
    return d


def _record_names(cfg) -> list:
    """Names read per record by ``status_flags`` and ``sequence.counters``."""
    names = [r["column"] for r in cfg.get("status_flags", [])]
    names += list((cfg.get("sequence") or {}).get("counters", []))
    return list(dict.fromkeys(names))


def _per_record(where, raw, n) -> np.ndarray:
    """One value per record (NaN / None where the record lacks the name)."""
    out = np.full(n, None, dtype=object) if raw.dtype == object else np.full(n, np.nan)
    out[where] = raw
    return out


def _counters(cfg, per_record: dict) -> dict:
    return {c: v for c, v in per_record.items()
            if c in (cfg.get("sequence") or {}).get("counters", []) and v.dtype != object}


def _apply_status(cfg, per_record: dict, codes, names, record_of_row, flags):
    """keyvalue / multiline: the ``status_flags`` of each row's record combined into its flag.
    ``codes``: each row's index into ``names``; ``record_of_row``: its record."""
    if not cfg.get("status_flags"):
        return flags
    present = [names[c] for c in np.unique(codes)] if len(codes) else []
    status = _status_masks(cfg, per_record, present)
    flags = np.asarray(flags, dtype=np.uint8).copy()
    for sensor, per in status.items():
        m = codes == names.index(sensor)
        flags[m] = fl_combine(flags[m], per[record_of_row[m]])
    return flags


def fl_combine(a, b):
    from .flags import combine

    return combine(a, b)


def _re_class(text: str) -> str:
    return "".join("\\" + c if c in "]\\^-" else c for c in text)


def _map_categorical(cat: pd.Categorical, fn) -> pd.Categorical:
    """Apply ``fn`` to the categories (several may map to one), keeping codes vectorised."""
    new = [fn(c) for c in cat.categories]
    names = sorted(set(new))
    pos = {n: i for i, n in enumerate(names)}
    code_map = np.array([pos[n] for n in new] + [-1], dtype=np.int32)  # -1 stays -1 (NaN)
    return pd.Categorical.from_codes(code_map[cat.codes], categories=pd.Index(names, dtype=object))


def _rows(ts, device, sensors, num, flags, cfg):
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
        "quality_flag": np.asarray(flags, dtype=np.uint8),
    })
    return tidy.conform(df)


def _scan_rows(ts, book, device, device_col):
    ok = book.ok
    out = pd.DataFrame({"ts": pd.DatetimeIndex(ts_values(ts)[ok]).tz_localize("UTC"),
                        "device_id": device if device_col is None else device_col[ok]})
    return out


def _parse_delimited(s, cfg, book, fixed_device, values, state, start):
    import pyarrow as pa
    import pyarrow.compute as pc

    delim = cfg["delimiter"]
    n = len(s)
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
    arr = pa.array(s.to_numpy(dtype=object), pa.string())
    if cfg.get("skip_repeated_header", True):
        # spaces around the delimiter do not matter: `a, b` is the header `a,b`
        hdr = header_line if header_line is not None else delim.join(columns)
        norm_hdr = delim.join(f.strip() for f in hdr.split(delim)).strip()
        norm = pc.utf8_trim_whitespace(pc.replace_substring_regex(arr, " *" + re.escape(delim) + " *", delim))
        book.skip(_np_bool(pc.equal(norm, norm_hdr)), S_HEADER)
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
        fnum, _, fbad, _ = _to_numbers(fields[ts_cfg["fraction_column"]], [])
        book.reject(fbad | np.isnan(fnum), R_TIMESTAMP,
                    fields[ts_cfg["fraction_column"]].to_numpy(zero_copy_only=False))
        frac = np.nan_to_num(fnum) * float(ts_cfg.get("fraction_scale", 1.0))
    ts_text = pd.Series(fields[ts_cfg["column"]].to_numpy(zero_copy_only=False), dtype=object)
    ts = parse_timestamps(ts_text.where(book.ok, ""), ts_cfg, book, frac, origin=state.get("origin"))
    device_col = None
    dev_cfg = cfg["device"]
    if dev_cfg["from"] == "column":
        device_col = fields[dev_cfg["column"]].to_numpy(zero_copy_only=False).astype(object)
        book.reject((device_col == "") & book.ok, R_DEVICE)
    _reject_outside_span(ts, fixed_device if device_col is None else device_col, cfg, book)
    if not values:
        return _scan_rows(ts, book, fixed_device, device_col)
    if cfg.get("header", False) and not state.get("names_checked"):
        _check_named_columns(cfg, columns, state["filename"])
        state["names_checked"] = True
    used = {ts_cfg["column"], ts_cfg.get("fraction_column"), dev_cfg.get("column")}
    ignore = set(cfg.get("ignore_columns", []))
    value_cols = cfg.get("value_columns") or [c for c in columns if c not in used and c not in ignore]
    types = cfg.get("column_types", {})
    status_cols = [c for c in types if c in columns and c not in value_cols and c not in used]
    cols = _columns(list(dict.fromkeys(value_cols + status_cols)), cfg)
    conv, raws = {}, {}
    for c, col in cols.items():
        num, raw, flags, bad = col.convert(fields[c])
        if (bad & book.ok).any():
            text = fields[c].to_numpy(zero_copy_only=False)
            detail = np.array([col.bad_detail(v) if b else None for v, b in zip(text, bad)], dtype=object)
            book.reject(bad & book.ok, R_NUMBER, detail)
        conv[c] = (num, flags)
        raws[c] = raw
    sensors_out = [c for c in value_cols if cols[c].is_sensor]
    # a line cut by a power loss keeps its field count when only a number was cut: that is
    # not detectable here; a missing field is (wrong field count → truncated last line).
    counters = _counters(cfg, {c: raws[c] for c in raws})
    _check_sequence(ts, fixed_device if device_col is None else device_col, cfg, book, state, start,
                    counters)
    status = _status_masks(cfg, raws, sensors_out)
    ok = np.flatnonzero(book.ok)
    k = len(sensors_out)
    ts_ok = ts_values(ts)[ok]
    ts_long = np.repeat(ts_ok, k)
    sensors = np.tile(np.asarray(sensors_out, dtype=object), len(ok))
    if k:
        num = np.column_stack([conv[c][0][ok] for c in sensors_out]).ravel()
        fl_cols = []
        for c in sensors_out:
            f = conv[c][1][ok]
            if c in status:
                f = fl_combine(f, status[c][ok])
            fl_cols.append(fl_combine(f, book.flag[ok]))
        flags = np.column_stack(fl_cols).ravel()
    else:
        num, flags = np.array([]), np.array([], np.uint8)
    if device_col is None:
        return _rows(ts_long, fixed_device, sensors, num, flags, cfg)
    out = _rows(ts_long, "", sensors, num, flags, cfg)
    out["device_id"] = pd.Categorical(np.repeat(device_col[ok], k))
    return tidy.conform(out)


def _check_named_columns(cfg, columns, filename) -> None:
    """A header file must have the columns that ``status_flags`` and ``sequence.counters``
    name: a misspelled name would silently never apply (with declared ``columns`` the
    config check says it before any file is read)."""
    from .errors import UserError

    named = [(f"$.status_flags[{i}].column", r["column"]) for i, r in enumerate(cfg.get("status_flags", []))]
    named += [(f"$.status_flags[{i}].sensors", c) for i, r in enumerate(cfg.get("status_flags", []))
              for c in r.get("sensors", [])]
    named += [("$.sequence.counters", c) for c in (cfg.get("sequence") or {}).get("counters", [])]
    for where, name in named:
        if name not in columns:
            raise UserError(f"{filename}: {where}: {name!r} is not a column of this file's header; "
                            f"allowed: {', '.join(columns)}")


def _parse_multiline(s, cfg, book, fixed_device, values, state, start):
    """One record = a start line matching ``record_start`` (group ``ts``: its time), then
    lines matching ``value_line`` (groups ``name`` and ``value``) up to the next start."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(s)
    arr = pa.array(s.to_numpy(dtype=object, na_value=""), pa.string())
    st = pc.extract_regex(arr, cfg["record_start"])
    is_start = _np_bool(pc.is_valid(st)) & book.ok
    vl = pc.extract_regex(arr, cfg["value_line"])
    is_val = _np_bool(pc.is_valid(vl)) & book.ok & ~is_start
    rec = np.cumsum(is_start) - 1                   # record index of each line
    book.reject(is_val & (rec < 0), R_ORPHAN)
    book.reject(~is_start & ~is_val, R_NOT_RECORD)
    starts = np.flatnonzero(is_start)
    ts_text = pc.struct_field(st, "ts").to_numpy(zero_copy_only=False)
    sub = LineBook(len(starts))
    ts_start = parse_timestamps(pd.Series(ts_text[starts], dtype=object).fillna(""), cfg["timestamp"],
                                sub, origin=state.get("origin"))
    _reject_outside_span(ts_start, fixed_device, cfg, sub)
    for reason in pd.unique(sub.reason[~sub.ok]):
        m = np.zeros(n, bool)
        m[starts[(sub.reason == reason) & ~sub.ok]] = True
        det = np.empty(n, dtype=object)
        det[starts] = sub.detail
        book.reject(m, reason, det)
    rec_ok = sub.ok                                  # per record: its start line is good
    vals = np.flatnonzero(book.ok & is_val)
    book.reject(np.isin(np.arange(n), vals[~rec_ok[rec[vals]]]), R_BAD_RECORD)
    vals = np.flatnonzero(book.ok & is_val)
    names = pc.utf8_trim_whitespace(pc.struct_field(vl, "name")).to_numpy(zero_copy_only=False)
    vtext = pc.struct_field(vl, "value")
    num = np.full(n, np.nan)
    flags = np.zeros(n, np.uint8)
    types = cfg.get("column_types", {})
    miss = cfg.get("missing_values", [])
    raw_line = {}                    # names read per record: their raw value per line
    status_only = set()
    for name in pd.unique(names[vals]) if len(vals) else []:
        sel = vals[names[vals] == name]
        col = Column(name, types.get(name, {}), miss)
        v_, r_, f_, b_ = col.convert(vtext.take(pa.array(sel)))
        num[sel], flags[sel] = v_, f_
        if not col.is_sensor:
            status_only.add(name)
        if name in _record_names(cfg):
            raw_line[name] = _per_record(sel, r_, n)
        if b_.any():
            m = np.zeros(n, bool)
            m[sel[b_]] = True
            det = np.empty(n, dtype=object)
            det[sel] = [col.bad_detail(x) for x in vtext.take(pa.array(sel)).to_pylist()]
            book.reject(m, R_NUMBER, det)
    vals = np.flatnonzero(book.ok & is_val)
    rep = pd.Series(list(zip(rec[vals], names[vals]))).duplicated().to_numpy() if len(vals) else \
        np.zeros(0, bool)
    m = np.zeros(n, bool)
    m[vals[rep]] = True
    book.reject(m, R_REPEATED, names.astype(object))
    vals = np.flatnonzero(book.ok & is_val)
    has_vals = np.zeros(len(starts), bool)
    has_vals[np.unique(rec[vals])] = True
    m = np.zeros(n, bool)
    m[starts[~has_vals]] = True
    book.reject(m, R_NO_VALUES)
    if state.get("cut_last") and n and is_val[-1] and book.ok[-1]:
        pass   # a complete `name: value` line is kept (a cut number is not detectable)
    # the time of each line is its record's time (start lines: their own)
    ts_line = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
    ts_line[starts] = ts_values(ts_start)
    line_book = LineBook(n)
    line_book.ok = book.ok & is_start
    per_rec = {}                     # name → one raw value per record (of its good value lines)
    for name, raw in raw_line.items():
        sel = vals[names[vals] == name]
        per_rec[name] = _per_record(rec[sel], raw[sel], len(starts))
    # counters are checked in line order at the record's start line
    counters = {c: _per_record(starts, v, n) for c, v in _counters(cfg, per_rec).items()}
    _check_sequence(pd.DatetimeIndex(ts_line).tz_localize("UTC"), fixed_device, cfg, line_book, state, start,
                    counters)
    if not values:
        keep = book.ok & is_start
        return _scan_rows(pd.DatetimeIndex(ts_line).tz_localize("UTC"), _Book(keep), fixed_device, None)
    vals = vals[~np.isin(names[vals], list(status_only))]      # a text name without codes: no rows
    rec_flag = line_book.flag[starts]
    t_rows = ts_values(ts_start)[rec[vals]]
    f_rows = fl_combine(flags[vals], rec_flag[rec[vals]])
    uniq, codes = np.unique(names[vals].astype(str), return_inverse=True) if len(vals) else ([], np.zeros(0, int))
    f_rows = _apply_status(cfg, per_rec, codes, list(uniq), rec[vals], f_rows)
    return _rows(t_rows, fixed_device, names[vals].astype(object), num[vals], f_rows, cfg)


class _Book:
    def __init__(self, ok):
        self.ok = ok
