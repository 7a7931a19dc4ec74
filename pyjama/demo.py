"""A deterministic, seeded generator of raw station files (the key:value format).

Used by the DEMO exposure (``./manager.sh demo``), the tests and the benchmarks:

    python3 -m pyjama.demo data/DEMO/00_raw --exposure DEMO --devices 2 --days 3

Each (device, day) is one file ``<EXPO>_<device>_<YYYY-MM-DD>.csv`` with one line per
sample: ``2026-01-20T00:00:00.012345Z;m0:512;...;m11:498;outdoor_temp:12.31``.
Animals open and close (long closures, micro-closures, one synchronised closure a day);
the Hall count rises as the valve closes (magnet nearer the sensor).

With ``defects=True`` each device-day carries the defects real loggers have, at places
written to the returned manifest so tests can check each one is found where it was put:
spikes, duplicated lines, a short gap (10 s), a long gap (10 min), a sentinel (4095),
a flat line (a lost magnet, 40 min), and a truncated last line on the last file of the
first device.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip as _gzip
import json
from pathlib import Path

import numpy as np

from .timewindow import iso

SECONDS_PER_DAY = 86400


def _opening(rng, n, hz, sync_starts):
    """Opening fraction in [0, 1] per sample for one animal."""
    t = np.arange(n) / hz
    o = np.full(n, 0.85) + 0.05 * np.sin(2 * np.pi * t / 3600.0 + rng.uniform(0, 6.28))
    # long closures: 4 per day, 5–25 min
    for _ in range(4):
        start = rng.uniform(0, SECONDS_PER_DAY - 1800)
        dur = rng.uniform(300, 1500)
        m = (t >= start) & (t < start + dur)
        o[m] = 0.03
    # micro-closures: 12 per day, 8–30 s, partial drop
    for _ in range(12):
        start = rng.uniform(0, SECONDS_PER_DAY - 60)
        dur = rng.uniform(8, 30)
        m = (t >= start) & (t < start + dur)
        o[m] = o[m] - 0.35
    for s in sync_starts:  # synchronised closure of every animal, 3 min
        start = s + rng.uniform(0, 20)
        m = (t >= start) & (t < start + 180)
        o[m] = 0.05
    return np.clip(o, 0, 1)


def generate(out_dir, exposure="DEMO", devices=2, days=3, start="2026-01-20", hz=1.0,
             channels=12, seed=42, defects=True, gzip=False) -> dict:
    """Write the raw files; return the manifest of injected defects (also written as
    ``.demo_manifest.json`` in ``out_dir``; hidden files are not raw files)."""
    from .config import check_exposure_name

    check_exposure_name(exposure, "exposure")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    day0 = dt.date.fromisoformat(start)
    manifest = {"exposure": exposure, "hz": hz, "channels": channels, "files": [], "defects": []}
    n = int(round(SECONDS_PER_DAY * hz))
    for d in range(devices):
        device = f"valve{d + 1:02d}"
        closed = rng.uniform(600, 760, channels)
        opened = rng.uniform(180, 320, channels)
        for k in range(days):
            day = (day0 + dt.timedelta(days=k)).isoformat()
            t0 = np.datetime64(f"{day}T00:00:00", "us")
            step_us = int(round(1e6 / hz))
            jitter = rng.integers(0, min(50_000, step_us // 4), n)
            ts = t0 + (np.arange(n, dtype=np.int64) * step_us + jitter).astype("timedelta64[us]")
            sync = [rng.uniform(30000, 50000)]
            vals = np.empty((channels, n))
            for c in range(channels):
                o = _opening(rng, n, hz, sync)
                vals[c] = closed[c] - (closed[c] - opened[c]) * o + rng.normal(0, 2.0, n)
            temp = 12 + 2 * np.sin(2 * np.pi * (np.arange(n) / hz) / SECONDS_PER_DAY) + rng.normal(0, 0.02, n)
            keep = np.ones(n, dtype=bool)
            dup = np.zeros(n, dtype=bool)
            truncated = False
            if defects:
                def at(sec):
                    return int(sec * hz)
                # spikes: single samples far off, 3 per file on channels 1, 4, 7
                for c, sec in ((1, 20000.0), (4, 40000.0), (7, 60000.0)):
                    i = at(sec + 37 * k)
                    vals[c, i] += 350
                    manifest["defects"].append({"kind": "spike", "device": device, "sensor": f"m{c}",
                                                "ts": iso(ts[i])})
                # sentinel value on channel 2
                i = at(30000 + 11 * d)
                vals[2, i] = 4095
                manifest["defects"].append({"kind": "sentinel", "device": device, "sensor": "m2",
                                            "ts": iso(ts[i]), "value": 4095})
                # flat line: channel 5 stuck for 40 min
                i0, i1 = at(70000), at(70000 + 2400)
                vals[5, i0:i1] = np.round(vals[5, i0])
                manifest["defects"].append({"kind": "flat_line", "device": device, "sensor": "m5",
                                            "start": iso(ts[i0]), "end": iso(ts[i1 - 1])})
                # duplicated lines: 5 lines written twice
                for sec in (1000, 2000, 3000, 4000, 5000):
                    dup[at(sec)] = True
                    manifest["defects"].append({"kind": "duplicate", "device": device, "ts": iso(ts[at(sec)])})
                # short gap (10 s) and long gap (10 min)
                i = at(10000)
                keep[i:i + at(10)] = False
                manifest["defects"].append({"kind": "gap", "device": device, "start": iso(ts[i]),
                                            "seconds": 10})
                i = at(50000)
                keep[i:i + at(600)] = False
                manifest["defects"].append({"kind": "gap", "device": device, "start": iso(ts[i]),
                                            "seconds": 600})
                truncated = d == 0 and k == days - 1
            lines = _format_lines(ts, vals, temp)
            idx = np.flatnonzero(keep)
            rep = np.where(dup[idx], 2, 1)
            order = np.repeat(idx, rep)
            body = "\n".join(lines[order].tolist()) + "\n"
            if truncated:
                cut = lines[order[-1]][: len(lines[order[-1]]) // 2]
                body += cut  # power loss: half a line, no line end
                manifest["defects"].append({"kind": "truncated_last_line", "device": device,
                                            "file": _name(exposure, device, day, gzip),
                                            "line": int(len(order) + 1)})
            name = _name(exposure, device, day, gzip)
            data = body.encode("ascii")
            if gzip:
                data = _gzip.compress(data, mtime=0)
            (out / name).write_bytes(data)
            manifest["files"].append(name)
    (out / ".demo_manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _name(exposure, device, day, gz):
    return f"{exposure}_{device}_{day}.csv" + (".gz" if gz else "")


def _format_lines(ts, vals, temp):
    parts = np.char.add(np.datetime_as_string(ts, unit="us"), "Z")
    for c in range(vals.shape[0]):
        parts = np.char.add(np.char.add(parts, f";m{c}:"), np.round(vals[c]).astype(np.int64).astype(str))
    parts = np.char.add(np.char.add(parts, ";outdoor_temp:"), np.char.mod("%.2f", temp))
    return parts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m pyjama.demo",
                                description="Write deterministic demo raw files (key:value format).",
                                epilog="example:\n  python3 -m pyjama.demo data/X/00_raw --exposure X --devices 2 "
                                "--days 14 --hz 1",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--exposure", default="DEMO")
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--start", default="2026-01-20")
    p.add_argument("--hz", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-defects", action="store_true")
    p.add_argument("--gzip", action="store_true")
    a = p.parse_args(argv)
    from .config import check_exposure_name
    from .errors import one_line_errors

    return one_line_errors(_main, a, check_exposure_name)


def _main(a, check_exposure_name) -> int:
    # the exposure names the files (<EXPO>_<device>_<day>.csv): manager.sh's rule, so
    # '../x' or 'a/b' cannot write outside out_dir
    check_exposure_name(a.exposure, "--exposure")
    m = generate(a.out_dir, a.exposure, a.devices, a.days, a.start, a.hz, seed=a.seed,
                 defects=not a.no_defects, gzip=a.gzip)
    print(f"wrote {len(m['files'])} raw files to {a.out_dir} ({len(m['defects'])} injected defects)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
