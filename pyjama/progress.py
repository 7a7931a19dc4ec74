"""The one progress bar of the project: tqdm on a terminal, shown only when the work lasts
more than 2 s; nothing when quiet, when stderr is not a terminal, or for a single item."""
from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, unit: str = "part", quiet: bool = False):
    """A tqdm bar (``update(n)``, ``close()``), or None when no bar should be shown."""
    if quiet or total < 2 or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in requirements.txt
        return None
    return tqdm(total=total, desc=desc, unit=unit, delay=2)


def iterate(items, desc: str, unit: str = "part", quiet: bool = False):
    """Yield ``items`` while advancing a bar (see :func:`progress_bar`)."""
    bar = progress_bar(len(items), desc, unit, quiet)
    try:
        for item in items:
            yield item
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
