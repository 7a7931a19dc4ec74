"""PyJAMA: raw IoT sensor files (valvometry first) to clean, flagged, aggregated data.

The package is the one importable place for everything the steps, the two CLIs
(``pyjama.py``, ``drawer.py``) and the Snakefile share: config loading, time windows,
partition paths, parquet I/O with provenance, flags, the ledger.
"""

__version__ = "0.1.0"


def child_env(env=None) -> dict:
    """The environment of a child Python process that imports this package: ``env`` (default
    this process's) with the repository first on PYTHONPATH (dag, drawer, results, workers)."""
    import os
    from pathlib import Path

    out = dict(os.environ if env is None else env)
    repo = str(Path(__file__).resolve().parent.parent)
    out["PYTHONPATH"] = os.pathsep.join([repo, out.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return out
