"""``manager.sh`` commands: create / archive / delete an exposure, write the DEMO data.

Standard library only: ``./manager.sh install pyjama`` must run before anything is installed
(that command is handled in manager.sh itself).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from .config import check_exposure_name   # stdlib only at import
from .errors import UserError

REPO = Path(__file__).resolve().parent.parent
TEMPLATE_DIR = REPO / "configs" / "_template"
RAW = "00_raw"   # the one stage a user fills; the steps make the others as they write


class ManageError(Exception):
    pass


def check_name(name: str) -> str:
    """The exposure-name rule of the configs (:func:`pyjama.config.check_exposure_name`,
    stdlib only), plus the names this tool reserves."""
    try:
        check_exposure_name(name, "exposure name")
    except UserError as exc:
        raise ManageError(str(exc)) from None
    if name in ("ARCHIVES",):
        raise ManageError(f"exposure name {name!r} is reserved")
    return name


def _fill(obj, name):
    if isinstance(obj, str):
        return obj.replace("{{EXPOSURE_RE}}", re.escape(name)).replace("{{EXPOSURE}}", name)
    if isinstance(obj, list):
        return [_fill(x, name) for x in obj]
    if isinstance(obj, dict):
        return {k: _fill(v, name) for k, v in obj.items()}
    return obj


def create(name: str, root: Path, partition: str = "day") -> list:
    """configs/<name>/ from the templates and data/<name>/00_raw/. ``partition``: the
    pipelines' ``$.partition`` (day, week, month); with week or month (a slow logger) the
    70 config writes only the windows holding a row (``fill_day: false``), said in its
    comment."""
    check_name(name)
    if partition not in PARTITIONS:
        raise ManageError(f"--partition {partition!r} is not allowed; allowed: {', '.join(PARTITIONS)}")
    cfg_dir = root / "configs" / name
    data_dir = root / "data" / name
    if cfg_dir.exists() or data_dir.exists():
        raise ManageError(f"exposure {name!r} already exists ({cfg_dir if cfg_dir.exists() else data_dir}); "
                          "archive or delete it first")
    if (root / "ARCHIVES" / name).exists():
        raise ManageError(f"exposure {name!r} exists in ARCHIVES/{name}; pick another name")
    cfg_dir.mkdir(parents=True)
    written = []
    for src in sorted(TEMPLATE_DIR.glob("*.json")):
        data = _fill(json.loads(src.read_text(encoding="utf-8")), name)
        if "partition" in data:
            data["partition"] = partition
        if partition != "day" and "fill_day" in data:
            data["fill_day"] = False
            data["comment"] += SLOW_70
        dst = cfg_dir / src.name
        dst.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(dst)
    (data_dir / RAW).mkdir(parents=True, exist_ok=True)
    (cfg_dir / "llm.txt").write_text(llm_brief(name, cfg_dir), encoding="utf-8")
    written.append(cfg_dir / "llm.txt")
    return written


PARTITIONS = ("day", "week", "month")
SLOW_70 = (" Made with --partition for a slow logger: fill_day false writes only the windows that"
           " hold a row (with true, every 10 s window of every day is written, empty ones as NaN:"
           " 8,640 a day and series for a few samples).")


def llm_brief(name: str, cfg_dir: Path) -> str:
    steps = []
    pipe = cfg_dir / "pipeline.json"
    if pipe.exists():
        for e in json.loads(pipe.read_text()).get("steps", []):
            steps.append(f"  - {e['script']} with {e['with']}")
    return f"""PyJAMA exposure {name} — a brief for an assistant or a new colleague

What this is
  An exposure = one experiment/station campaign. Raw logger files go in data/{name}/00_raw/.
  The pipeline configs/{name}/pipeline.json lists the steps; each step reads one stage folder
  and writes the next, one parquet file per (device, UTC day) — or per week or month when
  pipeline.json's "partition" says so (week=YYYY-Www, month=YYYY-MM; same values):
    data/{name}/<stage>/device_id=<id>/day=<YYYY-MM-DD>/part.parquet  (the ledger in its footer)
  Parser output is per raw file: data/{name}/10_parsed/raw=<file>/part.parquet; bad lines in
  data/{name}/_meta/10_parsed/raw=<file>/rejects.csv. With week or month partitions, per
  batch of raw files (those whose first day is in one device's period):
  10_parsed/batch=<device>_<period>/part.parquet and _meta/10_parsed/batch=<...>/rejects.csv.

Steps
{chr(10).join(steps)}

Commands (run from the project root)
  python3 drawer.py run configs/{name}/pipeline.json [--from 2026-01-20 --to 2026-01-21] [--cores 2] [--dry-run]
  snakemake --cores 2 --config exposure={name}            (the same workflow)
  python3 pyjama.py run 20_split.py --with configs/{name}/20_split.json [--from A --to B]
  python3 scripts/parquet_to_csv.py data/{name}/20_split out.csv
  ./manager.sh archive {name}   then   ./manager.sh delete {name}

Conventions
  Times are UTC (ts, timestamp[us, tz=UTC]). Tidy long table from stage 20 on:
  ts, device_id, domain, sensor, value (float64), quality_flag (uint8).
  quality_flag: 0 OK, 1 missing, 2 spike, 3 out of range / sentinel, 4 flat line,
  5 interpolated, 6 excluded. Flags never delete rows. See docs/data-conventions.md.
  From 40 on, a long gap (40_resample's sparse_after) is written as its first and last
  cell: a grid time without a row is missing (1); the 40 ledger has cells_expected.
  Every config key is described in workflow/schemas/<step>.schema.json; unknown keys are errors.
  Ledgers: rows in = rows out + rows set aside (by reason), per partition and step.
"""


def archive(name: str, root: Path) -> Path:
    check_name(name)
    cfg_dir, data_dir = root / "configs" / name, root / "data" / name
    if not cfg_dir.exists() and not data_dir.exists():
        raise ManageError(f"exposure {name!r} not found (no configs/{name} or data/{name})")
    dest = root / "ARCHIVES" / name
    if dest.exists():
        raise ManageError(f"ARCHIVES/{name} already exists; refusing to overwrite an archive")
    dest.mkdir(parents=True)
    if cfg_dir.exists():
        shutil.copytree(cfg_dir, dest / "configs")
    if data_dir.exists():
        # not the hard links of data/<EXPO>/.pyjama/kept/ (pyjama.keep): copied, they would
        # double the archive; an archive brought back recomputes its jobs once
        shutil.copytree(data_dir, dest / "data", symlinks=True,
                        ignore=lambda d, names: ["kept"] if Path(d).name == ".pyjama" else [])
    # Copies are complete: now the originals can go (a crash above leaves both).
    if cfg_dir.exists():
        shutil.rmtree(cfg_dir)
    if data_dir.exists():
        shutil.rmtree(data_dir)
    return dest


def delete(name: str, root: Path, force: bool = False) -> list:
    check_name(name)
    cfg_dir, data_dir = root / "configs" / name, root / "data" / name
    archived = (root / "ARCHIVES" / name).exists()
    live = [p for p in (cfg_dir, data_dir, root / "logs" / name) if p.exists()]
    if not live and not archived:
        raise ManageError(f"exposure {name!r} not found")
    if live and not force:
        raise ManageError(f"exposure {name!r} is not archived; run ./manager.sh archive {name} first, "
                          "or add --force to delete it without an archive")
    targets = live if live else [root / "ARCHIVES" / name]
    for p in targets:
        shutil.rmtree(p)
    return targets


def demo(root: Path) -> str:
    raw = root / "data" / "DEMO" / "00_raw"
    if raw.exists() and any(p for p in raw.iterdir() if not p.name.startswith(".")):
        return "data/DEMO/00_raw already holds raw files; left as they are"
    raw.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    from pyjama.demo import generate

    m = generate(raw, "DEMO", devices=2, days=3, start="2026-01-20")
    return f"wrote {len(m['files'])} DEMO raw files to data/DEMO/00_raw ({len(m['defects'])} injected defects)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="manager.sh")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("name", nargs="?", default="")
    c.add_argument("--partition", default="day",
                   help="days per partition file and job: day (default), week or month (slow loggers)")
    sub.add_parser("archive").add_argument("name", nargs="?", default="")
    d = sub.add_parser("delete")
    d.add_argument("name", nargs="?", default="")
    d.add_argument("--force", action="store_true")
    sub.add_parser("demo")
    a = p.parse_args(argv)
    root = Path.cwd()
    try:
        if a.cmd == "create":
            files = create(a.name, root, a.partition)
            print(f"created exposure {a.name}: configs/{a.name}/ ({len(files)} files), "
                  f"data/{a.name}/{RAW}/" + (f", {a.partition} partitions (70_aggregate.json: fill_day false)"
                                             if a.partition != "day" else ""))
            print(f"next: put raw files in data/{a.name}/00_raw/, then "
                  f"python3 drawer.py run configs/{a.name}/pipeline.json")
        elif a.cmd == "archive":
            dest = archive(a.name, root)
            print(f"archived exposure {a.name} to {dest.relative_to(root)}/")
        elif a.cmd == "delete":
            gone = delete(a.name, root, a.force)
            print(f"deleted {', '.join(str(g.relative_to(root)) for g in gone)}")
        elif a.cmd == "demo":
            print(demo(root))
        return 0
    except ManageError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
