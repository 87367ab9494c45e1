"""csv-stats: per-column statistics of a CSV file.

Numeric columns (every non-empty value parses as a number) get count, missing, mean, standard
deviation (sample, n - 1), min, max and the configured percentiles (linear interpolation between
closest ranks, as numpy's default). Other columns get count, missing, the number of distinct
values and the most frequent ones. The result is the JSON output `stats`.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flnet.runtime import Context

LOG_EVERY_ROWS = 10_000
TOP_VALUES = 5


@dataclass
class Config:
    delimiter: str = ","
    # Columns to describe; empty means every column.
    columns: list[str] = field(default_factory=list)
    # Percentiles to report, each between 0 and 100.
    percentiles: list[float] = field(default_factory=lambda: [25.0, 50.0, 75.0])

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1:
            raise ValueError("delimiter must be one character")
        for p in self.percentiles:
            if not 0.0 <= p <= 100.0:
                raise ValueError(f"percentile {p} is not between 0 and 100")


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) of ascending values, interpolating linearly."""
    if not sorted_values:
        raise ValueError("no values")
    rank = (len(sorted_values) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = rank - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def describe_column(values: Sequence[str], percentiles: Sequence[float]) -> dict[str, Any]:
    """Statistics of one column's raw values (empty strings count as missing)."""
    present = [v for v in values if v.strip() != ""]
    missing = len(values) - len(present)
    numbers = [_number(v) for v in present]
    if present and all(n is not None for n in numbers):
        data = sorted(n for n in numbers if n is not None)
        count = len(data)
        mean = math.fsum(data) / count
        variance = math.fsum((x - mean) ** 2 for x in data) / (count - 1) if count > 1 else 0.0
        return {
            "type": "numeric",
            "count": count,
            "missing": missing,
            "mean": mean,
            "std": math.sqrt(variance),
            "min": data[0],
            "max": data[-1],
            "percentiles": {_label(p): percentile(data, p) for p in percentiles},
        }
    counts = Counter(v.strip() for v in present)
    return {
        "type": "categorical",
        "count": len(present),
        "missing": missing,
        "distinct": len(counts),
        "top": [{"value": v, "count": c} for v, c in counts.most_common(TOP_VALUES)],
    }


def _label(p: float) -> str:
    return f"p{p:g}"


def read_columns(
    lines: Iterable[str], config: Config, on_rows: Callable[[int], None] | None = None
) -> tuple[int, dict[str, list[str]]]:
    """(row count, raw values by selected column) of CSV text with a header row."""
    reader = csv.reader(lines, delimiter=config.delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ValueError("the CSV is empty: it has no header row") from None
    wanted = config.columns or header
    unknown = [c for c in wanted if c not in header]
    if unknown:
        raise ValueError(f"columns not in the CSV header: {', '.join(unknown)}")
    index = {name: header.index(name) for name in wanted}
    columns: dict[str, list[str]] = {name: [] for name in wanted}
    rows = 0
    for row in reader:
        if not row:
            continue
        rows += 1
        for name, i in index.items():
            columns[name].append(row[i] if i < len(row) else "")
        if on_rows is not None and rows % LOG_EVERY_ROWS == 0:
            on_rows(rows)
    return rows, columns


def compute_stats(path: Path, config: Config, ctx: Context[Config] | None = None) -> dict[str, Any]:
    """Statistics of the CSV file at `path`, reporting progress to `ctx` when given."""

    def on_rows(rows: int) -> None:
        if ctx is not None:
            ctx.log.info("read %d rows", rows)
            ctx.check_cancelled()

    with path.open(newline="", encoding="utf-8") as f:
        rows, columns = read_columns(f, config, on_rows)
    if ctx is not None:
        ctx.log.info("read %d rows and %d columns", rows, len(columns))
        ctx.progress(0.5, "computing statistics")
    result: dict[str, Any] = {"rows": rows, "columns": {}}
    for done, (name, values) in enumerate(columns.items(), start=1):
        result["columns"][name] = describe_column(values, config.percentiles)
        if ctx is not None:
            ctx.check_cancelled()
            ctx.progress(0.5 + 0.5 * done / len(columns), f"column {name}")
    return result


def main(ctx: Context[Config]) -> None:
    ctx.progress(0.0, "reading the CSV")
    stats = compute_stats(ctx.inputs["data"], ctx.config, ctx)
    with ctx.outputs.open("stats") as f:
        json.dump(stats, f, indent=2, sort_keys=True)
    numeric = sum(1 for c in stats["columns"].values() if c["type"] == "numeric")
    ctx.log.info("wrote statistics of %d columns (%d numeric)", len(stats["columns"]), numeric)
    ctx.progress(1.0, "done")
