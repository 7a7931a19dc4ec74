"""PyJAMA: raw IoT sensor files (valvometry first) to clean, flagged, aggregated data.

The package is the one importable place for everything the steps, the two CLIs
(``pyjama.py``, ``drawer.py``) and the Snakefile share: config loading, time windows,
partition paths, parquet I/O with provenance, flags, the ledger.
"""

__version__ = "0.1.0"
