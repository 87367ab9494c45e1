"""The figures `make bench` tabulates: ratios against the baseline of the same run, targets on
the ratio or on the value, and the JSON lines a bench hands to `python -m bench`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import compare, load, table
from bench.figures import FIGURES_ENV, Figure, publish


def test_a_ratio_target_is_judged_on_value_over_baseline() -> None:
    fast = Figure("t", "rate", 300.0, "lines/s", 500.0, "ratio >= 0.5")
    slow = Figure("t", "rate", 200.0, "lines/s", 500.0, "ratio >= 0.5")
    assert fast.ratio == pytest.approx(0.6) and fast.met is True
    assert slow.ratio == pytest.approx(0.4) and slow.met is False
    latency = Figure("t", "p50", 0.9, "ms", 0.45, "ratio <= 2", higher_is_better=False)
    assert latency.met is True


def test_a_value_target_and_no_target() -> None:
    assert Figure("t", "p99", 8.0, "ms", target="<= 10").met is True
    assert Figure("t", "p99", 12.0, "ms", target="<= 10").met is False
    untargeted = Figure("t", "phase", 5.0, "ms")
    assert untargeted.met is None and untargeted.ratio is None


def test_published_figures_reach_the_runner_and_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(Figure("t", "ignored", 1.0, "x"))  # outside `python -m bench`: nowhere
    collected = tmp_path / "figures.jsonl"
    monkeypatch.setenv(FIGURES_ENV, str(collected))
    publish(
        Figure("unary", "GetRun p50", 0.9, "ms", 0.45, "ratio <= 2", higher_is_better=False),
        Figure("history", "growth", 120.0, "MB", target="<= 100", higher_is_better=False),
    )
    figures = [Figure(**json.loads(line)) for line in collected.read_text().splitlines()]
    assert [f.name for f in figures] == ["GetRun p50", "growth"]
    rows = table(figures).splitlines()
    assert rows[0].split() == ["bench", "figure", "value", "baseline", "ratio", "target", "met"]
    assert rows[1].split()[-5:] == ["2.00", "ratio", "<=", "2", "yes"]
    assert rows[2].split()[-3:] == ["<=", "100", "NO"]


def test_two_runs_compare_by_ratio_where_both_have_a_baseline(tmp_path: Path) -> None:
    old = [
        Figure("t", "rate", 200.0, "lines/s", 800.0, "ratio >= 0.5"),
        Figure("d", "p50", 300.0, "ms", 200.0, "ratio <= 1.0", higher_is_better=False),
        Figure("h", "growth", 3.0, "MB", target="<= 100", higher_is_better=False),
    ]
    new = [
        Figure("t", "rate", 300.0, "lines/s", 750.0, "ratio >= 0.5"),  # 0.25 -> 0.40
        Figure("d", "p50", 50.0, "ms", 250.0, "ratio <= 1.0", higher_is_better=False),
        Figure("h", "growth", 6.0, "MB", target="<= 100", higher_is_better=False),
        Figure("n", "new figure", 1.0, "x"),
    ]
    saved = tmp_path / "old.json"
    saved.write_text(json.dumps({"figures": [f.as_json() for f in old]}))
    rows = [row.split("  ") for row in compare(load(str(saved)), new).splitlines()[1:]]
    cells = [[c.strip() for c in row if c.strip()] for row in rows]
    assert cells[0][2:5] == ["ratio 0.25", "ratio 0.40", "+60%"]
    assert cells[1][2:5] == ["ratio 1.50", "ratio 0.20", "-87%"]
    assert cells[2][2:5] == ["3 MB", "6 MB", "+100% (worse)"]
    assert cells[3][2:3] == ["1 x"]  # nothing to compare it with
