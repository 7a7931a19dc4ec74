#!/usr/bin/env python3
"""Convert a partition file or a whole stage folder to CSV (UTC ISO-8601 timestamps).

    python3 scripts/parquet_to_csv.py data/DEMO/20_split/device_id=valve01/day=2026-01-20/part.parquet out.csv
    python3 scripts/parquet_to_csv.py data/DEMO/20_split out.csv          # every partition, with device_id and day
    python3 scripts/parquet_to_csv.py data/DEMO/20_split -                 # to standard output

Partition columns (device_id, day) live in the folder names; they are added as columns.
"""
import argparse
import sys
from pathlib import Path


def convert(src: Path, dst) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.dataset as ds

    if src.is_file():
        dataset = ds.dataset(src, format="parquet")
        table = dataset.to_table()
        for part in src.parts:
            if "=" in part:
                key, value = part.split("=", 1)
                if key not in table.column_names:
                    table = table.append_column(key, pa.array([value] * table.num_rows, pa.string()))
    elif src.is_dir():
        table = ds.dataset(src, format="parquet", partitioning="hive",
                           exclude_invalid_files=True).to_table()
    else:
        raise FileNotFoundError(f"{src}: not found (expected a part.parquet or a stage folder)")
    cols = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        if pa.types.is_timestamp(col.type):
            col = pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ") if col.type.tz else col
        cols[name] = col
    table = pa.table(cols)
    pcsv.write_csv(table, dst)
    return table.num_rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a part.parquet file or a stage folder")
    p.add_argument("dest", help="output CSV file, or - for standard output")
    a = p.parse_args(argv)
    try:
        if a.dest == "-":
            n = convert(Path(a.source), sys.stdout.buffer)
        else:
            n = convert(Path(a.source), a.dest)
            print(f"wrote {n} rows to {a.dest}", file=sys.stderr)
        return 0
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
    except (FileNotFoundError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
