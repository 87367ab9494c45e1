"""`python -m bench` (`make bench`): every bench in turn, each in a process of its own with its
own report, then one table of every figure with its baseline and target, written as JSON to
bench/results/<time>-<commit>.json as well. `--compare` sets two such files side by side.

    python -m bench [--only telemetry,unary,...]
    python -m bench --compare OLD.json NEW.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.figures import FIGURES_ENV, Figure

BENCHES = (
    "telemetry",
    "dispatch",
    "auth",
    "unary",
    "history",
    "artifacts",
    "gateway",
    "scheduler",
)
RESULTS = Path(__file__).parent / "results"


def run(benches: list[str]) -> list[Figure]:
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as collected:
        for bench in benches:
            print(f"\n=== bench.{bench}", flush=True)
            env = {**os.environ, FIGURES_ENV: collected.name}
            done = subprocess.run([sys.executable, "-m", f"bench.{bench}"], env=env, check=False)
            if done.returncode:
                print(f"bench.{bench} failed (exit code {done.returncode})", flush=True)
        return [Figure(**json.loads(line)) for line in collected if line.strip()]


def table(figures: list[Figure]) -> str:
    rows = [("bench", "figure", "value", "baseline", "ratio", "target", "met")]
    for f in figures:
        rows.append(
            (
                f.bench,
                f.name,
                quantity(f.value, f.unit),
                "" if f.baseline is None else quantity(f.baseline, f.unit),
                "" if f.ratio is None else f"{f.ratio:.2f}",
                f.target,
                {True: "yes", False: "NO", None: ""}[f.met],
            )
        )
    return aligned(rows)


def quantity(value: float, unit: str) -> str:
    """Three significant digits, thousands separated, no exponent."""
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def compare(old: list[Figure], new: list[Figure]) -> str:
    """Each figure of `new` next to the same figure (bench and name) of `old`: the ratios to
    their baselines when both have one (each measured against its own run), else the values."""
    before = {(f.bench, f.name): f for f in old}
    rows = [("bench", "figure", "old", "new", "change", "target", "met")]
    for f in new:
        was = before.get((f.bench, f.name))
        then = change = ""
        now = quantity(f.value, f.unit)
        if was is not None:
            then = quantity(was.value, was.unit)
            a, b = was.value, f.value
            if f.ratio is not None and was.ratio is not None:
                (a, then), (b, now) = (
                    (was.ratio, f"ratio {was.ratio:.2f}"),
                    (f.ratio, f"ratio {f.ratio:.2f}"),
                )
            if a:
                worse = "" if b == a or (b > a) == f.higher_is_better else " (worse)"
                change = f"{(b / a - 1) * 100:+.0f}%{worse}"
        met = {True: "yes", False: "NO", None: ""}[f.met]
        rows.append((f.bench, f.name, then, now, change, f.target, met))
    return aligned(rows)


def aligned(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def load(path: str) -> list[Figure]:
    return [Figure.from_json(f) for f in json.loads(Path(path).read_text())["figures"]]


def commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="comma-separated benches (default: all)")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="two results files")
    args = parser.parse_args()
    if args.compare:
        print(compare(load(args.compare[0]), load(args.compare[1])))
        return
    benches = [b for b in args.only.split(",") if b] or list(BENCHES)
    unknown = set(benches) - set(BENCHES)
    if unknown:
        parser.error(f"no such bench: {', '.join(sorted(unknown))}")
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    figures = run(benches)
    print("\n" + table(figures))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{started}-{commit()}.json"
    record = {
        "commit": commit(),
        "started": started,
        "cpus": os.cpu_count(),
        "benches": benches,
        "figures": [f.as_json() for f in figures],
    }
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
