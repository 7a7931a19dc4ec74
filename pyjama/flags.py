"""Quality flag codes: the one enum of the project (docs/data-conventions.md mirrors it).

Codes are never reused: add a new member at the end. Flagging never deletes a row.
"""
from enum import IntEnum


class Flag(IntEnum):
    OK = 0            # value is valid
    MISSING = 1       # no value: gap on the regular grid, or an empty aggregation window
    SPIKE = 2         # short excursion from the robust rolling reference (30 clean)
    OUT_OF_RANGE = 3  # outside the gross range, a declared sentinel, or undefined transform
    FLAT_LINE = 4     # stuck sensor: within tolerance for longer than the declared duration
    INTERPOLATED = 5  # value filled across a short gap (40 resample)
    EXCLUDED = 6      # inside a declared exclusion window (30 clean)
    TIME_ORDER = 7    # the line's time is earlier than a line before it in the raw file (10 parser)


# When several tests flag the same sample, the stored flag is the one that comes first
# here: a manual exclusion beats everything, then a sentinel/out-of-range value, then a
# stuck sensor, then a spike. A time out of order (the clock went backwards) says less
# than a bad value, more than a stuck sensor. (Missing and interpolated are set by resampling only.)
PRECEDENCE = (Flag.EXCLUDED, Flag.OUT_OF_RANGE, Flag.TIME_ORDER, Flag.FLAT_LINE, Flag.SPIKE,
              Flag.MISSING, Flag.INTERPOLATED, Flag.OK)

# Flags whose value must not be used to fill gaps or compute statistics.
UNUSABLE = frozenset({Flag.MISSING, Flag.SPIKE, Flag.OUT_OF_RANGE, Flag.FLAT_LINE,
                      Flag.EXCLUDED, Flag.TIME_ORDER})


def combine(current, new):
    """Return the flag array keeping, element-wise, the flag with the higher precedence.

    ``current`` and ``new`` are uint8 numpy arrays of equal length.
    """
    import numpy as np

    rank = np.empty(256, dtype=np.uint8)
    rank[:] = len(PRECEDENCE)
    for i, f in enumerate(PRECEDENCE):
        rank[int(f)] = i
    current = np.asarray(current, dtype=np.uint8)
    new = np.asarray(new, dtype=np.uint8)
    return np.where(rank[new] < rank[current], new, current).astype(np.uint8)


def counts(flags) -> dict:
    """Count flags by code name, e.g. ``{"OK": 10, "SPIKE": 2}``, all codes present."""
    import numpy as np

    arr = np.asarray(flags, dtype=np.uint8)
    found = np.bincount(arr, minlength=256)
    return {f.name: int(found[int(f)]) for f in Flag}
