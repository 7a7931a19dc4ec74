"""The tidy record every stage from 20 on holds (DESIGN.md, docs/data-conventions.md).

In memory a tidy table is a pandas DataFrame with exactly these columns. On disk the
partition columns ``device_id`` and ``day`` live in the path
(``device_id=<id>/day=<YYYY-MM-DD>/part.parquet``), hive style, so the file holds
ts, domain, sensor, value, quality_flag; :func:`pyjama.io.read_partition` adds
``device_id`` back.
"""
import numpy as np
import pandas as pd
import pyarrow as pa

COLUMNS = ["ts", "device_id", "domain", "sensor", "value", "quality_flag"]
TS_TYPE = pa.timestamp("us", tz="UTC")

# What is written to a partition file (partition columns are in the path).
FILE_SCHEMA = pa.schema([
    ("ts", TS_TYPE),
    ("domain", pa.dictionary(pa.int32(), pa.string())),
    ("sensor", pa.dictionary(pa.int32(), pa.string())),
    ("value", pa.float64()),
    ("quality_flag", pa.uint8()),
])


def empty() -> pd.DataFrame:
    """An empty tidy frame with the right dtypes."""
    return frame(ts=[], device_id=[], domain=[], sensor=[], value=[], quality_flag=[])


def frame(ts, device_id, domain, sensor, value, quality_flag=None) -> pd.DataFrame:
    """Build a tidy frame from columns (scalars are broadcast); ts is converted to UTC [us].

    Handy in tests: ``frame(ts=["2026-01-20T00:00:00Z"], device_id="d", domain="bio_signal",
    sensor="m0", value=[1.0])``.
    """
    ts = pd.to_datetime(pd.Series(ts, dtype=object) if not isinstance(ts, pd.Series) else ts,
                        utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    n = len(ts)

    def col(v, dtype):
        if v is None:
            return np.zeros(n, dtype=dtype)
        if np.isscalar(v):
            return np.full(n, v, dtype=object if dtype is str else dtype)
        return np.asarray(v, dtype=object if dtype is str else dtype)

    df = pd.DataFrame({
        "ts": ts.reset_index(drop=True),
        "device_id": col(device_id, str),
        "domain": col(domain, str),
        "sensor": col(sensor, str),
        "value": col(value, np.float64),
        "quality_flag": col(quality_flag, np.uint8),
    })
    return conform(df)


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` with exactly the tidy columns, in order, with the tidy dtypes (a frame
    that has them already comes back as a shallow copy: a slow logger's day calls this a
    few hundred times on tables of a few dozen rows, where each cast is pure overhead)."""
    if _is_tidy(df):
        return df.copy(deep=False)       # copy-on-write: the caller's frame is never changed
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"tidy frame lacks columns {missing}")
    out = df[COLUMNS]          # copy-on-write (pandas >= 3): no copy until a column changes
    if len(out) and not isinstance(out["ts"].dtype, pd.DatetimeTZDtype):
        out["ts"] = pd.to_datetime(out["ts"], utc=True)
    out["ts"] = out["ts"].astype("datetime64[us, UTC]")
    for c in ("device_id", "domain", "sensor"):
        out[c] = as_category(out[c])
    out["value"] = out["value"].astype(np.float64)
    out["quality_flag"] = out["quality_flag"].astype(np.uint8)
    return out.reset_index(drop=True)


def _is_tidy(df: pd.DataFrame) -> bool:
    """True when ``df`` has exactly the tidy columns in order, the tidy dtypes (string
    categories) and a 0..n-1 index: what :func:`conform` would return unchanged."""
    if list(df.columns) != COLUMNS:
        return False
    index = df.index
    if not (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1):
        return False
    types = df.dtypes.tolist()
    ts = types[0]
    if not (isinstance(ts, pd.DatetimeTZDtype) and ts.unit == "us" and str(ts.tz) == "UTC"):
        return False
    for t in types[1:4]:
        if not isinstance(t, pd.CategoricalDtype) or not _string_categories(t.categories):
            return False
    return types[4] == np.float64 and types[5] == np.uint8


def _string_categories(cats) -> bool:
    return cats.dtype == object or str(cats.dtype) in ("str", "string")


def as_category(col: pd.Series) -> pd.Series:
    """String column → pandas categorical with plain string categories (cheap for
    long tables: a few distinct names repeated millions of times)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = col.cat.categories
        if _string_categories(cats):
            return col
        return col.cat.rename_categories([str(c) for c in cats])
    return col.astype(str).astype("category")


def remove_unused(col: pd.Series) -> pd.Series:
    """``col.cat.remove_unused_categories()`` (the same categories in the same order, the
    codes renumbered) by counting codes instead of pandas' ``np.unique`` sort of them:
    ~25 ms → ~3 ms on a 1 Hz device-day of 60_behaviour's 3.1 M rows (issue 14)."""
    cat = col.array
    codes = np.asarray(cat.codes)
    k = len(cat.categories)
    used = np.bincount(codes[codes >= 0] if (codes < 0).any() else codes, minlength=k)[:k] > 0
    if used.all():
        return col
    new = np.full(k + 1, -1, dtype=np.int64)          # the last slot: code -1 stays -1
    new[:k][used] = np.arange(int(used.sum()))
    out = pd.Categorical.from_codes(new[codes], dtype=pd.CategoricalDtype(cat.categories[used], cat.ordered))
    return pd.Series(out, index=col.index, name=col.name)


def _dict_array(col: pd.Series) -> pa.DictionaryArray:
    cat = as_category(col)
    codes = cat.cat.codes.to_numpy().astype(np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()),
                                          pa.array([str(c) for c in cat.cat.categories], pa.string()))


def to_arrow(df: pd.DataFrame) -> pa.Table:
    """Tidy frame → arrow table with FILE_SCHEMA (device_id dropped: it is in the path)."""
    df = conform(df)
    return pa.table({
        "ts": pa.array(df["ts"].to_numpy(dtype="datetime64[us]"), type=TS_TYPE),
        "domain": _dict_array(df["domain"]),
        "sensor": _dict_array(df["sensor"]),
        "value": pa.array(df["value"].to_numpy(), pa.float64()),
        "quality_flag": pa.array(df["quality_flag"].to_numpy(), pa.uint8()),
    }, schema=FILE_SCHEMA)


def from_arrow(table: pa.Table, device_id: str) -> pd.DataFrame:
    """Arrow table with FILE_SCHEMA → tidy frame, adding ``device_id``."""
    n = table.num_rows
    if n == 0:
        return empty()
    df = pd.DataFrame({
        "ts": table.column("ts").to_pandas(),
        "device_id": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8),
                                               categories=pd.Index([device_id], dtype=object)),
        "domain": table.column("domain").to_pandas(),
        "sensor": table.column("sensor").to_pandas(),
        "value": table.column("value").to_numpy(),
        "quality_flag": table.column("quality_flag").to_numpy(),
    })
    return conform(df)


def present_sensors(df: pd.DataFrame) -> list:
    """Sorted sensor names with at least one row (a categorical may hold unused names)."""
    if not len(df):
        return []
    sen = as_category(df["sensor"])
    codes = sen.cat.codes.to_numpy()
    used = np.bincount(codes[codes >= 0], minlength=len(sen.cat.categories)) > 0
    return sorted(str(c) for c, u in zip(sen.cat.categories, used) if u)


def sensor_groups(df: pd.DataFrame) -> list:
    """[(domain, sensor, row positions in time order)] for each series of a tidy frame.

    One stable lexsort on (domain, sensor, ts) codes (:func:`series_rows`); no pandas groupby
    objects, no copies of the frame; the names read from lists (indexing pandas'
    arrow-backed categories per series was most of the cost on a slow logger's day). Steps
    that work per series (30 clean, 40 resample) iterate this."""
    if not len(df):
        return []
    dom, sen = as_category(df["domain"]), as_category(df["sensor"])
    return series_rows(ts_us(df["ts"]),
                       dom.cat.codes.to_numpy(), sen.cat.codes.to_numpy(),
                       [str(c) for c in dom.cat.categories], [str(c) for c in sen.cat.categories])


def series_rows(ts_us: np.ndarray, dom_codes: np.ndarray, sen_codes: np.ndarray, dom_names: list,
                sen_names: list) -> list:
    """[(domain, sensor, row positions in time order)] of rows given by their times [µs] and
    codes into ``dom_names`` / ``sen_names`` (a table's dictionaries: no frame needed)."""
    if not len(ts_us):
        return []
    dom_codes = np.asarray(dom_codes).astype(np.int64)
    sen_codes = np.asarray(sen_codes).astype(np.int64)
    key = dom_codes * (len(sen_names) + 1) + sen_codes
    order = key_time_order(ts_us, key)
    cuts = np.flatnonzero(np.diff(key[order])) + 1
    return [(dom_names[dom_codes[i[0]]], sen_names[sen_codes[i[0]]], i) for i in np.split(order, cuts)]


def ts_us(ts) -> np.ndarray:
    """UTC timestamps (a tidy ``ts`` column, an index or an array) → int64 microseconds since
    the epoch, with no round trip through Python objects (a tz-aware column's
    ``to_numpy()`` would make one ``Timestamp`` per row); a tidy column's own integers,
    without a copy."""
    dtype = getattr(ts, "dtype", None)
    if isinstance(dtype, pd.DatetimeTZDtype) and dtype.unit == "us" and isinstance(ts, pd.Series):
        return ts.array.asi8                 # what the DatetimeIndex below gives, without building it
    return pd.DatetimeIndex(ts).as_unit("us").asi8


def key_time_order(ts_us: np.ndarray, key: np.ndarray) -> np.ndarray:
    """``np.lexsort((ts_us, key))``: row positions by key, then time, stably — without
    sorting when the rows already are in runs of one key (:func:`_block_order`); else, when
    the times span less than 2^40 (12.7 days in µs) and the keys are codes below 2^22, one
    stable argsort of a combined int64 key (timsort merges runs already in order in O(n));
    else the lexsort."""
    order = _block_order(ts_us, key)
    if order is not None:
        return order
    if len(key) and key.min() >= 0 and key.max() < (1 << 22):
        lo = ts_us.min()
        if ts_us.max() - lo < (1 << 40):
            return np.argsort((key.astype(np.int64) << 40) | (ts_us - lo), kind="stable")
    return np.lexsort((ts_us, key))


def _block_order(ts_us: np.ndarray, key: np.ndarray):
    """The stable lexsort of (ts, key) without sorting, when the rows already are in blocks:
    each key in one run of rows, the times of each run in order (a stage written by 20 on,
    sorted by sensor and time). The runs taken in key order, each whole: the same positions
    as ``np.lexsort((ts_us, key))``. None when the rows are not so (then sort)."""
    starts = np.flatnonzero(np.diff(key)) + 1
    keys = key[np.concatenate(([0], starts))]
    if len(np.unique(keys)) != len(keys):
        return None                 # a key in two runs
    step = np.diff(ts_us)
    if len(starts):
        step[starts - 1] = 0        # a run's first time may be below the last one's
    if (step < 0).any():
        return None
    bounds = np.concatenate(([0], starts, [len(key)]))
    runs = np.argsort(keys, kind="stable")
    if (runs == np.arange(len(runs))).all():
        return np.arange(len(key))
    return np.concatenate([np.arange(bounds[r], bounds[r + 1]) for r in runs])


def concat(frames) -> pd.DataFrame:
    """Concatenate tidy frames keeping the categorical columns categorical (union of the
    categories, sorted), which plain ``pd.concat`` would turn into per-row strings."""
    frames = [conform(f) for f in frames if len(f)]
    if not frames:
        return empty()
    if len(frames) == 1:
        return frames[0]
    frames = [f.copy() for f in frames]
    for c in ("device_id", "domain", "sensor"):
        cats = sorted({str(x) for f in frames for x in f[c].cat.categories})
        for f in frames:
            f[c] = f[c].cat.set_categories(cats)
    return conform(pd.concat(frames, ignore_index=True))


def to_table(df, schema: pa.Schema) -> pa.Table:
    """A pandas frame → arrow table with exactly ``schema`` (explicit types: deterministic)."""
    cols = {}
    for f in schema:
        s = df[f.name]
        if pa.types.is_timestamp(f.type):
            arr = pa.array(s.to_numpy(dtype="datetime64[us]"), type=f.type)
        elif pa.types.is_string(f.type):
            arr = pa.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                            for v in s], type=f.type)
        else:
            arr = pa.array(s.to_numpy(), type=f.type, from_pandas=True)
        cols[f.name] = arr
    return pa.table(cols, schema=schema)
