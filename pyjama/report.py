"""``drawer.py report``: one self-contained HTML page about an exposure, readable offline.

Per device and UTC day: data completeness and QC flags (sensors × time), the normalised
opening of each animal as a heat map (animals × time), closures, micro-closures and
synchronised closures, the environment sensors (temperature), the daily metrics, and the
ledger; then the configs used, with the provenance the outputs carry.

Each section reads the stage it needs from the pipeline itself (the stage a step of the
pipeline writes), so renamed stages work; a stage that is not built (yet) is said plainly
("stage X not built yet") and the rest of the page is drawn anyway. Tables of the event and
daily stages are shown with the columns the files hold (nothing beyond them is assumed).

Pictures are PNG (matplotlib, Agg backend) embedded as base64; the CSS is inline; there is
no script and no external link, so the file opens anywhere, offline.
"""
from __future__ import annotations

import base64
import html
import io as _io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, io, losses
from .flags import PRECEDENCE, Flag

DETAIL_LIMIT = 62          # device-days drawn in detail (the most recent ones)
HEAT_BIN_S = 60            # heat-map and flag-map resolution [s]
EXTRA_FLAG = len(Flag)     # colour index for a code this PyJAMA does not know

FLAG_COLOURS = {
    Flag.OK: "#cfe8cf", Flag.MISSING: "#ffffff", Flag.SPIKE: "#d62728",
    Flag.OUT_OF_RANGE: "#9467bd", Flag.FLAT_LINE: "#ff7f0e", Flag.INTERPOLATED: "#1f77b4",
    Flag.EXCLUDED: "#222222", Flag.TIME_ORDER: "#e377c2",
}

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1d2329;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:18px 28px 60px;background:#fff}
h1{font-size:26px;margin:8px 0 2px} h2{font-size:21px;margin:34px 0 8px;border-bottom:2px solid #d0d7de;padding-bottom:4px}
h3{font-size:17px;margin:26px 0 6px;color:#24425e} h4{font-size:14px;margin:16px 0 4px;color:#333}
p.meta{color:#57606a;margin:2px 0 14px} p.note{color:#6e5200;background:#fff8c5;padding:5px 9px;border-radius:4px;display:inline-block;margin:4px 0}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 12px} th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right}
th{background:#f0f3f6} td.l,th.l{text-align:left} tr:nth-child(even) td{background:#fafbfc}
img{max-width:100%;height:auto;display:block;margin:4px 0 8px}
.state-done{color:#1a7f37}.state-stale{color:#9a6700}.state-missing{color:#6e7781}.state-failed{color:#cf222e;font-weight:600}
pre{background:#f6f8fa;border:1px solid #d0d7de;padding:8px;font-size:12px;overflow:auto}
details{margin:4px 0} summary{cursor:pointer}
nav a{margin-right:10px} div.scroll{overflow-x:auto;max-width:100%} .day{border-left:4px solid #d0d7de;padding-left:14px;margin-left:2px}
"""


# ---------------------------------------------------------------- where things are

class Stages:
    """The stages the pipeline writes, found by script (and output key)."""

    def __init__(self, project):
        from .steps import get_step

        self.project = project
        self.by_script: dict = {}
        for st in project.pipeline.steps:
            outs = get_step(st.script).output_stages(st) if "output_stage" in st.params else {}
            self.by_script.setdefault(st.script.removesuffix(".py"), []).append((st, outs))

    def find(self, script: str, key: str = "data"):
        for _st, outs in self.by_script.get(script, []):
            if key in outs:
                return outs[key]
        return None

    def config(self, script: str):
        hits = self.by_script.get(script, [])
        return hits[0][0] if hits else None


def _part(root, expo, stage, device, day, period="day"):
    """The file holding (device, day): the day's, or its week's or month's."""
    return Path(root) / io.partition_file(expo, stage, device, day, period=period)


def _of_day(df, path, day):
    """The rows of ``day`` of a table read from ``path``: all of a day's file; of a week's or
    a month's file, the rows whose ``ts`` (tidy), ``day`` (daily metrics) or ``start``
    (events) is in that day."""
    if not io.multi_day(path) or not len(df):
        return df
    if "day" in df:
        return df[df["day"].astype(str) == day].drop(columns=["day"]).reset_index(drop=True)
    from .timewindow import day_bounds

    lo, hi = (pd.Timestamp(t) for t in day_bounds(day))
    col = "ts" if "ts" in df else "start"
    t = df[col]
    return df[((t >= lo) & (t < hi)).to_numpy()].reset_index(drop=True)


def _missing(stage, default_name, device, day, root, expo, period="day"):
    """The note shown when a section's stage is absent ('' when the file is there)."""
    if stage is None:
        return f"stage {default_name} not built yet (no step of this pipeline writes it)"
    if not _part(root, expo, stage, device, day, period).exists():
        return f"stage {stage} not built yet for {device} {day}"
    return ""


def read_columns(path, columns, sensors=None, day=None):
    """Some columns of a tidy partition (optionally only some sensors), as pandas; ``day``:
    that day's rows of a week's or a month's file."""
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    cols = [c for c in columns if c in names]
    multi = day is not None and io.multi_day(path) and "ts" not in cols and "ts" in names
    filters = [("sensor", "in", list(sensors))] if sensors is not None and "sensor" in names else None
    t = pq.read_table(path, columns=cols + (["ts"] if multi else []), filters=filters)
    df = t.to_pandas()
    if day is not None:
        df = _of_day(df, path, day)
        if multi:
            df = df.drop(columns=["ts"])
    if "sensor" in df:
        df["sensor"] = df["sensor"].astype(str)
    return df


def sensor_names(path) -> list:
    """Distinct sensors of a tidy partition (reads the sensor column only)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    col = pq.read_table(path, columns=["sensor"]).column("sensor")
    if hasattr(col.type, "value_type"):
        col = col.cast(col.type.value_type)
    return sorted(str(x) for x in pc.unique(col).to_pylist())


def _natural(name: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# ---------------------------------------------------------------- pure summaries

def worst_flag_per_bin(df: pd.DataFrame, day: str, bin_s: int = HEAT_BIN_S):
    """(sensors, matrix[sensor, bin]) of the worst quality flag in each ``bin_s`` [s] bin of
    the UTC day; a bin with no row at all holds MISSING. "Worst" follows flags.PRECEDENCE."""
    n_bins = 86400 // bin_s
    sensors = sorted(df["sensor"].unique(), key=_natural) if len(df) else []
    out = np.full((len(sensors), n_bins), int(Flag.MISSING), dtype=np.int16)
    if not sensors:
        return sensors, out
    rank = np.full(256, len(PRECEDENCE), dtype=np.int16)
    for i, f in enumerate(PRECEDENCE):
        rank[int(f)] = i
    day0 = pd.Timestamp(day, tz="UTC")
    b = ((df["ts"] - day0).dt.total_seconds().to_numpy() // bin_s).astype(np.int64)
    s = pd.Categorical(df["sensor"], categories=sensors).codes
    ok = (b >= 0) & (b < n_bins) & (s >= 0)
    codes = df["quality_flag"].to_numpy().astype(np.int64)
    r = rank[np.clip(codes, 0, 255)]
    best = np.full((len(sensors), n_bins), len(PRECEDENCE) + 1, dtype=np.int16)
    np.minimum.at(best, (s[ok], b[ok]), r[ok])
    order = np.array([int(f) for f in PRECEDENCE] + [EXTRA_FLAG, int(Flag.MISSING)], dtype=np.int16)
    out = order[best]
    # codes outside the enum keep their own colour slot
    known = {int(f) for f in Flag}
    if any(c not in known for c in np.unique(codes)):
        unk = ~np.isin(codes, list(known))
        out[s[ok & unk], b[ok & unk]] = EXTRA_FLAG
    return sensors, out


def flag_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows per sensor and per quality flag code (columns named by Flag name)."""
    if not len(df):
        return pd.DataFrame()
    names = {int(f): f.name for f in Flag}
    t = df.groupby(["sensor", "quality_flag"], observed=True).size().unstack(fill_value=0)
    t.columns = [names.get(int(c), f"code {int(c)}") for c in t.columns]
    t = t.loc[sorted(t.index, key=_natural)]
    t.insert(0, "rows", t.sum(axis=1))
    return t


def opening_matrix(df: pd.DataFrame, day: str, bin_s: int = HEAT_BIN_S):
    """(sensors, matrix[sensor, bin]) of the mean normalised opening [0–1] per bin, usable
    values only (flags in flags.UNUSABLE are left out); NaN where a bin has none."""
    from .flags import UNUSABLE

    n_bins = 86400 // bin_s
    sensors = sorted(df["sensor"].unique(), key=_natural) if len(df) else []
    mat = np.full((len(sensors), n_bins), np.nan)
    if not sensors:
        return sensors, mat
    use = ~df["quality_flag"].isin([int(f) for f in UNUSABLE]).to_numpy() & np.isfinite(df["value"].to_numpy())
    d = df[use]
    day0 = pd.Timestamp(day, tz="UTC")
    b = ((d["ts"] - day0).dt.total_seconds().to_numpy() // bin_s).astype(np.int64)
    s = pd.Categorical(d["sensor"], categories=sensors).codes
    ok = (b >= 0) & (b < n_bins) & (s >= 0)
    total = np.zeros((len(sensors), n_bins))
    count = np.zeros((len(sensors), n_bins))
    np.add.at(total, (s[ok], b[ok]), d["value"].to_numpy()[ok])
    np.add.at(count, (s[ok], b[ok]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mat = np.where(count > 0, total / count, np.nan)
    return sensors, mat


# ---------------------------------------------------------------- pictures

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
                         "figure.dpi": 100, "savefig.dpi": 100, "svg.hashsalt": "pyjama",
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


FIG_W, LEFT, RIGHT, TOP, BOTTOM = 11.5, 1.15, 2.0, 0.35, 0.55   # [inch]


def _figure(n_rows: int, per_row: float = 0.26, min_plot: float = 1.3):
    """A figure whose plot area has the same left edge and width in every picture of the
    page (so the hours line up from one picture to the next); legends go in the right margin."""
    plt = _plt()
    plot_h = max(min_plot, per_row * n_rows)
    h = plot_h + TOP + BOTTOM
    fig = plt.figure(figsize=(FIG_W, h))
    ax = fig.add_axes([LEFT / FIG_W, BOTTOM / h, (FIG_W - LEFT - RIGHT) / FIG_W, plot_h / h])
    return fig, ax


def _side_axes(fig, ax):
    """A thin axes in the right margin, beside ``ax`` (for a colour bar)."""
    x0, y0, w, h = ax.get_position().bounds
    return fig.add_axes([x0 + w + 0.15 / FIG_W, y0, 0.18 / FIG_W, h])


def _png(fig) -> str:
    plt = _plt()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def short_sensor(name: str) -> str:
    """``m3__cbrt_inv__norm`` → ``m3``: the channel (animal) a derived sensor comes from."""
    return str(name).split("__")[0]


def shorten_sensors(text: str) -> str:
    """Every derived sensor name in a text (e.g. a list of animals) shortened to its channel."""
    import re

    short = re.sub(r"__[A-Za-z0-9_]+", "", str(text))
    if "," in short:
        short = ", ".join(sorted((x.strip() for x in short.split(",")), key=_natural))
    return short


def _hours_axis(ax):
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 2))
    ax.set_xlabel("hour of the UTC day")


def plot_flag_map(sensors, mat, title):
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    colours = [FLAG_COLOURS[f] for f in Flag] + ["#8c564b"]
    cmap = ListedColormap(colours)
    norm = BoundaryNorm(np.arange(-0.5, len(colours) + 0.5), cmap.N)
    fig, ax = _figure(len(sensors), per_row=0.22)
    ax.imshow(mat, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest",
              extent=(0, 24, len(sensors) - 0.5, -0.5))
    ax.set_yticks(range(len(sensors)))
    ax.set_yticklabels(sensors)
    _hours_axis(ax)
    ax.set_title(title)
    present = sorted({int(x) for x in np.unique(mat)})
    handles = [Patch(facecolor=colours[c], edgecolor="#777777",
                     label=Flag(c).name.lower().replace("_", " ") if c < len(Flag) else "unknown code")
               for c in present]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1), frameon=False, fontsize=8)
    return _png(fig)


def plot_opening(sensors, mat, title):
    plt = _plt()
    fig, ax = _figure(len(sensors))
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#e6e6e6")
    im = ax.imshow(np.ma.masked_invalid(mat), aspect="auto", cmap=cmap, vmin=0, vmax=1,
                   interpolation="nearest", extent=(0, 24, len(sensors) - 0.5, -0.5))
    ax.set_yticks(range(len(sensors)))
    ax.set_yticklabels([short_sensor(s) for s in sensors])
    ax.set_ylabel("animal (channel)")
    _hours_axis(ax)
    ax.set_title(title)
    cb = fig.colorbar(im, cax=_side_axes(fig, ax))
    cb.set_label("opening: 0 closed – 1 open")
    return _png(fig)


def plot_events(events: pd.DataFrame, animals, day, title):
    day0 = pd.Timestamp(day, tz="UTC")

    def hours(col):
        return (pd.to_datetime(events[col], utc=True) - day0).dt.total_seconds().to_numpy() / 3600

    animals = sorted(set(animals) | set(events.loc[events["sensor"].notna(), "sensor"].astype(str)),
                     key=_natural) if "sensor" in events else list(animals)
    fig, ax = _figure(len(animals))
    ypos = {a: i for i, a in enumerate(animals)}
    kinds = events["kind"].astype(str) if "kind" in events else pd.Series([], dtype=str)
    start, end = hours("start"), hours("end")
    handles = []
    sync = (kinds == "sync_closure").to_numpy()
    for i in np.flatnonzero(sync):
        # drawn at least 6 min wide (a 3-min event is a hair at this scale)
        mid, half = (start[i] + end[i]) / 2, max(end[i] - start[i], 0.1) / 2
        h = ax.axvspan(mid - half, mid + half, color="#fdae61", alpha=0.55, lw=0, zorder=0)
    if sync.any():
        handles.append(h)
        h.set_label("synchronised closure")
    # minimum drawn widths [h]: a 10-s micro-closure must still be seen on a 24-h axis
    for kind, colour, height, min_w, label in (("closure", "#b2182b", 0.7, 0.03, "closure"),
                                               ("micro_closure", "#2166ac", 0.45, 0.06, "micro-closure")):
        m = (kinds == kind).to_numpy()
        if not m.any():
            continue
        ys = np.array([ypos.get(str(s), -1) for s in events.loc[m, "sensor"]])
        widths = np.maximum(end[m] - start[m], min_w)
        bars = ax.barh(ys, widths, left=start[m], height=height, color=colour, label=label, zorder=2)
        handles.append(bars)
    ax.set_yticks(range(len(animals)))
    ax.set_yticklabels([short_sensor(a) for a in animals])
    ax.set_ylim(len(animals) - 0.5, -0.5)
    ax.set_ylabel("animal (channel)")
    _hours_axis(ax)
    ax.set_title(title)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1), frameon=False, fontsize=8)
    return _png(fig)


def plot_environment(df: pd.DataFrame, day, title):
    from .flags import UNUSABLE

    day0 = pd.Timestamp(day, tz="UTC")
    fig, ax = _figure(1, min_plot=1.9)
    for sensor in sorted(df["sensor"].unique(), key=_natural):
        d = df[(df["sensor"] == sensor)].sort_values("ts")
        v = d["value"].to_numpy(dtype=float).copy()
        v[d["quality_flag"].isin([int(f) for f in UNUSABLE]).to_numpy()] = np.nan
        h = (d["ts"] - day0).dt.total_seconds().to_numpy() / 3600
        ax.plot(h, v, lw=1.2, label=sensor)
    _hours_axis(ax)
    ax.set_title(title)
    ax.set_ylabel("°C" if all("temp" in s for s in df["sensor"].unique()) else "value")
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1), frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


# ---------------------------------------------------------------- HTML helpers

def esc(x) -> str:
    return html.escape(str(x), quote=True)


def img(b64: str, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{b64}">'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return ""
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,d}"
    if isinstance(v, pd.Timestamp):
        return v.strftime("%H:%M:%S")
    return str(v)


def table(df: pd.DataFrame, index=False, left=()) -> str:
    if df is None or not len(df):
        return "<p>(no rows)</p>"
    d = df.reset_index() if index else df
    head = "".join(f'<th class="{"l" if c in left else ""}">{esc(str(c).replace("_", " "))}</th>'
                   for c in d.columns)
    rows = []
    for rec in d.itertuples(index=False):
        rows.append("<tr>" + "".join(
            f'<td class="{"l" if c in left else ""}">{esc(_fmt(v))}</td>' for c, v in zip(d.columns, rec))
            + "</tr>")
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(rows)}</table></div>"


# ---------------------------------------------------------------- sections

class ReportBuilder:
    def __init__(self, board, root: Path):
        self.board = board
        self.root = Path(root)
        self.project = board.project
        self.expo = self.project.exposure
        self.stages = Stages(self.project)
        self.warnings: list = []
        self.period = self.project.pipeline.partition

    def part(self, stage, dev, day):
        return _part(self.root, self.expo, stage, dev, day, self.period)

    def key(self, day: str) -> str:
        """The board's column (a partition key) of a day."""
        from .timewindow import period_key

        return period_key(day, self.period)

    def days(self, device: str, key: str) -> list:
        """The days of a board column that hold data (a week's or a month's known days)."""
        if len(key) == 10:
            return [key]
        from .timewindow import key_days

        known = set(self.project.partitions())
        return [d for d in key_days(key) if (device, d) in known]

    # -- stages each section uses (first one that the pipeline writes and that is built)
    def flag_stage(self):
        for script in ("40_resample", "30_clean", "20_split"):
            s = self.stages.find(script)
            if s:
                yield script, s

    def section_completeness(self, dev, day) -> str:
        out = ["<h4>Data completeness and QC flags</h4>"]
        cands = list(self.flag_stage())
        built = [(sc, s) for sc, s in cands if self.part(s, dev, day).exists()]
        if not built:
            names = ", ".join(s for _sc, s in cands) or "20_split"
            out.append(note(f"stage {names} not built yet for {dev} {day}"))
            return "\n".join(out)
        script, stage = built[0]
        path = self.part(stage, dev, day)
        df = read_columns(path, ["ts", "sensor", "quality_flag"], day=day)
        if script != "40_resample" and self.stages.find("40_resample"):
            out.append(note(f"stage {self.stages.find('40_resample')} not built yet for {dev} {day}; "
                            f"showing {stage}"))
        sensors, mat = worst_flag_per_bin(df, day)
        out.append(f"<p>Worst quality flag per minute and sensor, from <b>{esc(stage)}</b>"
                   + (" (a minute with no row is missing)." if script != "40_resample" else
                      " (regular grid: gaps are explicit MISSING rows).") + "</p>")
        if sensors:
            out.append(img(plot_flag_map(sensors, mat, f"{dev} {day}: quality flags per minute ({stage})"),
                           f"quality flags {dev} {day}"))
        ft = flag_table(df)
        if len(ft):
            if script == "40_resample":
                miss = ft["MISSING"] if "MISSING" in ft else 0
                ft.insert(1, "complete %", 100.0 * (ft["rows"] - miss) / ft["rows"])
            else:
                present = (mat != int(Flag.MISSING)).mean(axis=1) * 100
                ft.insert(1, "minutes with data %", present)
            out.append("<p>Rows per quality flag code (0 OK, 1 missing, 2 spike, 3 out of range, "
                       "4 flat line, 5 interpolated, 6 excluded):</p>")
            out.append(table(ft, index=True, left=("sensor",)))
        return "\n".join(out)

    def _normalised(self, dev, day):
        stage = self.stages.find("50_normalise")
        msg = _missing(stage, "50_normalised", dev, day, self.root, self.expo, self.period)
        if msg:
            return stage, None, msg
        path = self.part(stage, dev, day)
        names = [s for s in sensor_names(path) if s.endswith("__norm")]
        if not names:
            return stage, None, f"stage {stage} holds no '__norm' sensor for {dev} {day}"
        return stage, read_columns(path, ["ts", "sensor", "value", "quality_flag"], names, day=day), ""

    def section_opening(self, dev, day) -> tuple:
        out = ["<h4>Opening of each animal</h4>"]
        stage, df, msg = self._normalised(dev, day)
        animals = []
        if msg:
            out.append(note(msg))
        else:
            animals, mat = opening_matrix(df, day)
            out.append(f"<p>Mean normalised opening per minute (0 = closed, 1 = open), usable values "
                       f"only, from <b>{esc(stage)}</b>; grey = no usable value.</p>")
            out.append(img(plot_opening(animals, mat, f"{dev} {day}: opening per animal"),
                           f"opening heat map {dev} {day}"))
        return "\n".join(out), animals

    def section_events(self, dev, day, animals) -> str:
        out = ["<h4>Closures, micro-closures and synchronised closures</h4>"]
        stage = self.stages.find("60_behaviour", "events")
        msg = _missing(stage, "60_events", dev, day, self.root, self.expo, self.period)
        if msg:
            out.append(note(msg))
            return "\n".join(out)
        import pyarrow.parquet as pq

        path = self.part(stage, dev, day)
        ev = _of_day(pq.read_table(path).to_pandas(), path, day)
        if {"kind", "start", "end", "sensor"} <= set(ev.columns):
            counts = ev["kind"].astype(str).value_counts()
            out.append("<p>" + ", ".join(f"{esc(k.replace('_', ' '))}: <b>{int(n)}</b>"
                                         for k, n in sorted(counts.items())) + f" (from {esc(stage)})</p>"
                       if len(counts) else f"<p>No event on this day (from {esc(stage)}).</p>")
            out.append(img(plot_events(ev, animals, day, f"{dev} {day}: closures (red), micro-closures "
                                       "(blue), synchronised closures (orange band)"),
                           f"events {dev} {day}"))
        else:
            out.append(note(f"{stage} has columns {', '.join(ev.columns)}; no timeline drawn"))
        if "kind" in ev:
            syn = ev[ev["kind"].astype(str) == "sync_closure"]
            if len(syn):
                cols = [c for c in ("start", "end", "duration_s", "n_animals", "share_active", "animals")
                        if c in syn.columns]
                syn = syn[cols].copy()
                if "animals" in syn:
                    syn["animals"] = syn["animals"].map(shorten_sensors)
                out.append("<p>Synchronised closures (animals by channel):</p>"
                           + table(syn, left=("animals",)))
        return "\n".join(out)

    def section_environment(self, dev, day) -> str:
        out = ["<h4>Temperature and environment sensors</h4>"]
        for script in ("40_resample", "30_clean", "20_split"):
            stage = self.stages.find(script)
            if stage and self.part(stage, dev, day).exists():
                break
        else:
            out.append(note(f"stage 20_split not built yet for {dev} {day}"))
            return "\n".join(out)
        path = self.part(stage, dev, day)
        df = read_columns(path, ["ts", "domain", "sensor", "value", "quality_flag"], day=day)
        if "domain" in df:
            df = df[df["domain"].astype(str) == "environment"]
        if not len(df):
            out.append(note(f"no environment sensor in {stage} for {dev} {day}"))
            return "\n".join(out)
        out.append(f"<p>From <b>{esc(stage)}</b>; flagged values are left out.</p>")
        out.append(img(plot_environment(df, day, f"{dev} {day}: environment"), f"environment {dev} {day}"))
        return "\n".join(out)

    def section_daily(self, dev, day) -> str:
        out = ["<h4>Daily metrics</h4>"]
        import pyarrow.parquet as pq

        shown = False
        for key, label in (("device_daily", "device"), ("daily", "per animal")):
            stage = self.stages.find("60_behaviour", key)
            if stage is None:
                continue
            path = self.part(stage, dev, day)
            if not path.exists():
                out.append(note(f"stage {stage} not built yet for {dev} {day}"))
                continue
            df = _of_day(pq.read_table(path).to_pandas(), path, day)
            caption = f"{label} ({stage})"
            if "sensor" in df and len(df):
                caption += f", sensors by channel (e.g. {short_sensor(df['sensor'].iloc[0])} = {df['sensor'].iloc[0]})"
                df["sensor"] = df["sensor"].astype(str)
                df = df.iloc[sorted(range(len(df)), key=lambda i: _natural(df["sensor"].iloc[i]))]
                df["sensor"] = df["sensor"].map(short_sensor)
            out.append(f"<p>{esc(caption)}:</p>" + table(df, left=("sensor",)))
            shown = True
        if not shown and not any("note" in x for x in out):
            out.append(note("stage 60_daily not built yet (no step of this pipeline writes it)"))
        return "\n".join(out)

    def section_ledger(self, dev, day) -> str:
        rows = []
        for step in self.board.steps:
            c = self.board.cells.get((step, dev, self.key(day)))
            if c is None:
                continue
            rej = "; ".join(f"{k}: {v:,d}" for k, v in sorted(c.rejected.items()))
            share = c.flagged_share
            rows.append({"step": step, "state": c.state + (f" ({', '.join(c.reasons)})" if c.reasons else ""),
                         "rows in": c.rows_in, "rows out": c.rows_out, "rejected": rej,
                         "flagged %": None if share is None else 100 * share})
        body = table(pd.DataFrame(rows), left=("step", "state", "rejected")) if rows else "<p>(no job)</p>"
        return ("<h4>Ledger</h4><p>Rows in = rows out + rows rejected, per step (parser: values "
                "written for this day).</p>" + body)

    # -- page
    def overview(self, pairs) -> str:
        import pyarrow.parquet as pq

        stage = self.stages.find("60_behaviour", "device_daily")
        rows = []
        for dev, day in pairs:
            r = {"device": dev, "day": day}
            cells = [self.board.cells.get((s, dev, self.key(day))) for s in self.board.steps]
            states = [c.state for c in cells if c is not None]
            for s in ("done", "stale", "missing", "failed"):
                r[s] = states.count(s)
            if stage:
                p = self.part(stage, dev, day)
                if p.exists():
                    dd = _of_day(pq.read_table(p).to_pandas(), p, day)
                    for col in ("completeness_pct", "usable_pct", "active_animals", "closures",
                                "micro_closures", "sync_closures"):
                        if col in dd and len(dd):
                            r[col.replace("_", " ")] = dd[col].iloc[0]
            rows.append(r)
        df = pd.DataFrame(rows)
        return table(df, left=("device", "day"))

    def configs(self) -> str:
        out = []
        jobs_by_step = {}
        for j in self.board.jobs:
            jobs_by_step.setdefault(j.step, []).append(j)
        for st in self.project.pipeline.steps:
            jobs = jobs_by_step.get(st.name, [])
            built = sum(1 for j in jobs if j.state in ("done", "stale") and "config changed" not in j.reasons)
            changed = sum(1 for j in jobs if "config changed" in j.reasons)
            out.append(f"<details><summary><b>{esc(st.name)}</b> — {esc(st.script)}, "
                       f"<code>{esc(st.path)}</code>, digest <code>{esc(st.digest)}</code>: "
                       f"{built} of {len(jobs)} outputs built with this config"
                       + (f", <span class='state-stale'>{changed} with an older one</span>" if changed else "")
                       + "</summary>")
            out.append(f"<pre>{esc(json.dumps(st.params, indent=2, ensure_ascii=False))}</pre></details>")
        return "\n".join(out)

    def lost_data(self) -> list:
        """The lost-data lines ``drawer.py run`` ends with (pyjama.steps.parser.loss_warnings)."""
        from .steps.parser import loss_warnings

        try:
            return loss_warnings(self.project)
        except Exception as exc:  # noqa: BLE001 - one section must not stop the report
            self.warnings.append(f"lost data: {exc}")
            return []

    def page(self) -> str:
        b = self.board
        w = b.plan.window
        span = "all days" if w.start is None and w.end is None else str(w)
        pairs = sorted({(d, day) for _s, d, key in b.cells for day in self.days(d, key)})
        detail = pairs[-DETAIL_LIMIT:]
        totals = {s: sum(1 for j in b.jobs if j.state == s)
                  for s in ("done", "stale", "missing", "running", "failed")}
        parts = [
            "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>PyJAMA report · {esc(self.expo)}</title>",
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<style>{CSS}</style></head><body><main>",
            f"<h1>PyJAMA report · exposure {esc(self.expo)}</h1>",
            f'<p class="meta">pipeline <code>{esc(self.project.pipeline.path)}</code> · window {esc(span)} · '
            f"{len(b.devices())} device(s), {len(pairs)} device-day(s) · PyJAMA {esc(__version__)}</p>",
            "<h2 id='summary'>Summary</h2>",
            "<p>Jobs: " + ", ".join(f"<span class='state-{s}'>{n} {s}</span>" for s, n in totals.items())
            + " (details: <code>python3 drawer.py status " + esc(self.project.pipeline.path) + "</code>).</p>",
        ]
        lost = self.lost_data()
        if lost:
            parts.append("<p class='lost'><b>Lost data</b> (raw files not parsed, or that lost more than "
                         "their parser's <code>warn_rejected_share</code> of their lines):</p><ul>"
                         + "".join(losses.render(lost, "html")) + "</ul>")
        bad = b.attention()
        if bad:
            items = []
            for j in bad[:20]:
                where = " ".join(str(v) for _k, v in sorted(j.wildcards.items()))
                why = j.error if j.state == "failed" else "; ".join(j.reasons)
                items.append(f"<li><span class='state-{j.state}'>{esc(j.state)}</span> {esc(j.step)} "
                             f"{esc(where)}{': ' + esc(why) if why else ''}"
                             + (f" — log <code>{esc(j.log)}</code>" if j.state == "failed" else "") + "</li>")
            more = f"<li>… and {len(bad) - 20} more</li>" if len(bad) > 20 else ""
            parts.append(f"<details><summary>{len(bad)} job(s) not done</summary><ul>{''.join(items)}{more}"
                         "</ul></details>")
        if pairs:
            parts.append(self.overview(pairs))
        else:
            parts.append(note("nothing planned in this window: no raw file touches it"))
        if len(detail) < len(pairs):
            parts.append(note(f"{len(pairs)} device-days in the window: the {len(detail)} most recent are "
                              "drawn below; use --from/--to for others"))
        nav = " ".join(f"<a href='#{esc(d)}'>{esc(d)}</a>" for d in sorted({d for d, _ in detail}))
        parts.append(f"<nav>devices: {nav} <a href='#configs'>configs</a></nav>")
        for dev in sorted({d for d, _ in detail}):
            parts.append(f"<h2 id='{esc(dev)}'>Device {esc(dev)}</h2>")
            for d2, day in detail:
                if d2 != dev:
                    continue
                parts.append(f"<section class='day'><h3>{esc(dev)} · {esc(day)}</h3>")
                parts.append(self._guard(self.section_completeness, dev, day))
                opening = self._guard(self.section_opening, dev, day, pair=True)
                parts.append(opening[0])
                parts.append(self._guard(self.section_events, dev, day, opening[1]))
                parts.append(self._guard(self.section_environment, dev, day))
                parts.append(self._guard(self.section_daily, dev, day))
                parts.append(self._guard(self.section_ledger, dev, day))
                parts.append("</section>")
        parts.append("<h2 id='configs'>Configs used (provenance)</h2>")
        parts.append("<p>Each output parquet carries its step, config path, config digest, code version "
                     "and input files in its metadata; the counts below compare them with the configs "
                     "as they are now.</p>")
        parts.append(self.configs())
        parts.append("</main></body></html>")
        return "\n".join(parts) + "\n"

    def _guard(self, fn, dev, day, *args, pair=False):
        """A section that cannot be drawn says why in one line; the page goes on."""
        try:
            return fn(dev, day, *args)
        except Exception as exc:  # noqa: BLE001 - one broken file must not hide the others
            text = note(f"could not draw this section for {dev} {day}: {type(exc).__name__}: {exc}")
            self.warnings.append(f"{fn.__name__} {dev} {day}: {exc}")
            return (text, []) if pair else text


def build_report(pipeline: str, start=None, end=None, root=None):
    """(html text, warnings) of the report of ``pipeline`` over [start, end]."""
    from .status import build_board

    root = Path(root or Path.cwd())
    board = build_board(pipeline, start, end, root)
    rb = ReportBuilder(board, root)
    return rb.page(), rb.warnings


def write_report(pipeline: str, output="report.html", start=None, end=None, root=None) -> Path:
    import sys

    text, warnings = build_report(pipeline, start, end, root)
    for w in warnings:
        print(f"warning: report section not drawn: {w}", file=sys.stderr)
    out = Path(output)
    io.write_text(out, text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out, 0o666 & ~umask)   # a page to share: the usual file mode, not the temp file's 0600
    return out
