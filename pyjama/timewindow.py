"""The one time-window parser: ``--from`` / ``--to`` bounds → the UTC days they select.

Accepted bounds (UTC only):

* ``YYYY-MM-DDTHH:MM:SSZ`` (optionally with fractional seconds): that instant;
* ``YYYY-MM-DD``: that whole UTC day — as ``--from`` its first instant, as ``--to`` its
  end, so ``--from D --to D`` is the day D;
* ``{NOW}`` and offsets ``{NOW-2d}``, ``{NOW+3h}``, ``{NOW-30m}``, ``{NOW-1w}``.

Bounds come as text from two places, and errors name the one the user typed: ``--from`` /
``--to`` of ``drawer.py`` and ``pyjama.py`` (``style="option"``), and ``from=`` / ``to=`` of
``snakemake --config`` (``style="config"``; :func:`pyjama.workflow.window_from_config`).
``drawer.py`` parses its bounds once and hands Snakemake the exact instants
(:func:`iso`: the text that parses back to the same µs), so ``{NOW}`` is read once per run, not once per process.

A window chooses WHICH (device, day) partitions are built; it never trims a partition.
A day is selected when any part of it lies in the window: ``--to 2026-01-21T00:00:00Z``
selects day 2026-01-21 too (its first instant is in the window).
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .errors import UserError

_INSTANT = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?Z$")
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_NOW = re.compile(r"^\{NOW(?:([+-])(\d+)([smhdw]))?\}$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
ALLOWED = ("YYYY-MM-DDTHH:MM:SSZ, YYYY-MM-DD (a whole UTC day), {NOW}, "
           "or {NOW-2d} (offset units s, m, h, d, w)")
UTC = dt.timezone.utc


STYLES = ("option", "config")


def _named(side: str, text, style: str) -> str:
    """How the user typed the bound: ``--from: 'x'`` (an option) or ``from='x'`` (--config)."""
    return f"--{side}: {text!r}" if style == "option" else f"{side}={text!r}"


def parse_bound(text: str, side: str, now: dt.datetime | None = None, style: str = "option") -> dt.datetime:
    """Parse one bound. ``side`` is ``"from"`` or ``"to"``; a bare date as ``to`` means
    the end of that day (exclusive end returned as the next midnight minus 1 µs).
    ``style`` says how errors name the bound (see the module text)."""
    label = f"--{side}" if style == "option" else f"{side}="
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{label}: empty bound; allowed: {ALLOWED}")
    s = text.strip()
    m = _NOW.match(s)
    if m:
        base = (now or dt.datetime.now(UTC)).astimezone(UTC)
        if m.group(1):
            delta = dt.timedelta(**{_UNITS[m.group(3)]: int(m.group(2))})
            base = base + delta if m.group(1) == "+" else base - delta
        return base
    m = _INSTANT.match(s)
    if m:
        y, mo, d, h, mi, sec = (int(x) for x in m.groups()[:6])
        frac = m.group(7)
        us = int((frac[1:] + "000000")[:6]) if frac else 0
        try:
            return dt.datetime(y, mo, d, h, mi, sec, us, tzinfo=UTC)
        except ValueError as exc:
            raise UserError(f"{_named(side, text, style)} is not a valid instant ({exc}); allowed: {ALLOWED}") from None
    m = _DATE.match(s)
    if m:
        try:
            day = dt.date(*(int(x) for x in m.groups()))
        except ValueError as exc:
            raise UserError(f"{_named(side, text, style)} is not a valid date ({exc}); allowed: {ALLOWED}") from None
        start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start if side == "from" else start + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    raise UserError(f"{_named(side, text, style)} is not a time bound; allowed: {ALLOWED}")


@dataclass(frozen=True)
class Window:
    """A closed UTC interval; either end may be open (None)."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def contains_day(self, day) -> bool:
        """True when any instant of the UTC day ``day`` (a date or ``YYYY-MM-DD``; or a
        partition key of a week or a month, :func:`key_period`) lies in the window."""
        if isinstance(day, str):
            if len(day) != 10:
                day_start, day_end = day_bounds(day)
                return not ((self.start is not None and day_end <= self.start)
                            or (self.end is not None and day_start > self.end))
            day = dt.date.fromisoformat(day)
        day_start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
        day_end = day_start + dt.timedelta(days=1)  # exclusive
        if self.start is not None and day_end <= self.start:
            return False
        if self.end is not None and day_start > self.end:
            return False
        return True

    def select_days(self, days):
        """Keep the days (``datetime.date`` or ``YYYY-MM-DD`` strings) the window selects."""
        return [d for d in days if self.contains_day(d)]

    def __str__(self) -> str:
        f = self.start.isoformat().replace("+00:00", "Z") if self.start else "-inf"
        t = self.end.isoformat().replace("+00:00", "Z") if self.end else "+inf"
        return f"[{f}, {t}]"


def parse_window(start: str | None, end: str | None, now: dt.datetime | None = None,
                 style: str = "option") -> Window:
    """Parse ``--from`` / ``--to`` (each may be None or empty); from > to is an error.
    ``style="config"``: the bounds were typed as ``snakemake --config from=… to=…``."""
    now = now or dt.datetime.now(UTC)
    a = parse_bound(start, "from", now, style) if start not in (None, "") else None
    b = parse_bound(end, "to", now, style) if end not in (None, "") else None
    if a is not None and b is not None and a > b:
        said = (f"--from {start} is after --to {end}" if style == "option"
                else f"from={start} is after to={end}")
        raise UserError(f"{said}; the window would be empty")
    return Window(a, b)


def iso(t) -> str | None:
    """An instant as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, µs); a naive datetime or a numpy
    datetime64 is read as UTC; None stays None. The one text form of instants we write."""
    if t is None:
        return None
    if not isinstance(t, dt.datetime):
        import pandas as pd

        t = pd.Timestamp(t).to_pydatetime()
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_seconds(t) -> str:
    """An instant to the second, ``YYYY-MM-DDTHH:MM:SSZ`` (UTC; cut, not rounded), the form of
    event times in ledgers and lock files; ``t`` as in :func:`iso`."""
    if not isinstance(t, dt.datetime):
        import pandas as pd

        t = pd.Timestamp(t).floor("s").to_pydatetime()
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def day_bounds(day: str):
    """(start, end) of a UTC day — or of a partition key of any period (a week, a month) —
    as tz-aware datetimes; end is the next midnight after it (exclusive)."""
    if len(day) == 10:
        d = dt.date.fromisoformat(day)
        start = dt.datetime(d.year, d.month, d.day, tzinfo=UTC)
        return start, start + dt.timedelta(days=1)
    days = key_days(day)
    first, last = dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[-1])
    return (dt.datetime(first.year, first.month, first.day, tzinfo=UTC),
            dt.datetime(last.year, last.month, last.day, tzinfo=UTC) + dt.timedelta(days=1))


def shift_day(day: str, n: int) -> str:
    """The day ``n`` days after ``day`` (both ``YYYY-MM-DD``)."""
    return (dt.date.fromisoformat(day) + dt.timedelta(days=n)).isoformat()


# ---------------------------------------------------------------- partition periods
# An exposure declares how many days one partition file (and one job) holds: pipeline.json's
# ``$.partition``. Its keys name themselves, so a key alone says its period and its bounds:
#   day    YYYY-MM-DD   (directory day=2026-01-20)
#   week   YYYY-Www     (ISO week, Monday to Sunday; directory week=2026-W04)
#   month  YYYY-MM      (directory month=2026-01)
PERIODS = ("day", "week", "month")
PERIOD_RE = {"day": r"\d{4}-\d{2}-\d{2}", "week": r"\d{4}-W\d{2}", "month": r"\d{4}-\d{2}"}
_KEY = {p: re.compile(f"^{rx}$") for p, rx in PERIOD_RE.items()}


def key_period(key: str) -> str:
    """The period a partition key names (``2026-01-20`` day, ``2026-W04`` week, ``2026-01``
    month); ValueError for anything else."""
    for period, rx in _KEY.items():
        if rx.match(key):
            return period
    raise ValueError(f"{key!r} is not a partition key (YYYY-MM-DD, YYYY-Www or YYYY-MM)")


def period_key(day: str, period: str) -> str:
    """The key of the ``period`` partition holding the UTC day ``day`` (``YYYY-MM-DD``)."""
    if period == "day" or len(day) != 10:      # a day, or already the period's key
        return day
    d = dt.date.fromisoformat(day)
    if period == "week":
        year, week, _ = d.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if period == "month":
        return f"{d.year:04d}-{d.month:02d}"
    raise ValueError(f"unknown partition period {period!r}; allowed: {', '.join(PERIODS)}")


def _key_first_day(key: str) -> dt.date:
    period = key_period(key)
    if period == "day":
        return dt.date.fromisoformat(key)
    if period == "week":
        return dt.date.fromisocalendar(int(key[:4]), int(key[6:]), 1)
    return dt.date(int(key[:4]), int(key[5:7]), 1)


def key_days(key: str) -> list:
    """The UTC days (``YYYY-MM-DD``) of a partition key, in order."""
    first = _key_first_day(key)
    period = key_period(key)
    if period == "day":
        return [key]
    if period == "week":
        n = 7
    else:
        nxt = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
        n = (nxt - first).days
    return [(first + dt.timedelta(days=i)).isoformat() for i in range(n)]


def key_ordinal(key: str) -> int:
    """Consecutive keys of one period have consecutive ordinals (days, weeks or months)."""
    first = _key_first_day(key)
    period = key_period(key)
    if period == "day":
        return first.toordinal()
    if period == "week":
        return (first.toordinal() - 1) // 7
    return first.year * 12 + first.month - 1


DURATION_HINT = "a positive duration with a unit such as '10s', '5min', '2h', '1D'"


def parse_duration(text, where: str, allow_zero: bool = False):
    """Parse a duration string (``"10s"``, ``"30min"``, ``"2h"``) with pandas.Timedelta.

    A bare number is refused (pandas would read ``"31"`` as 31 ns). ``where`` prefixes the
    one-line :class:`UserError` (file and JSON path).
    """
    import pandas as pd

    hint = DURATION_HINT.replace("positive", "non-negative") if allow_zero else DURATION_HINT
    bad = UserError(f"{where}: {text!r} is not allowed; allowed: {hint}")
    if not isinstance(text, str) or not re.search(r"[A-Za-z]", text):
        raise bad
    try:
        td = pd.Timedelta(text)
    except (ValueError, TypeError):
        raise bad from None
    if td is pd.NaT or td < pd.Timedelta(0) or (td == pd.Timedelta(0) and not allow_zero):
        raise bad
    return td
