"""Latency arms measured in alternating rounds: percentiles and the per-round report that
bench.auth and bench.gateway print."""

from __future__ import annotations

import statistics


def p(values: list[float], q: float) -> float:
    """The q-quantile of latencies in seconds, in milliseconds."""
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1e3


def report(title: str, results: dict[str, list[list[float]]], baseline: str) -> None:
    """p50/p99 of every arm in every round, then each arm's median p50 ratio to `baseline`
    (per round: arms of one round ran under the same conditions)."""
    arms = list(results)
    rounds = len(results[baseline])
    print(title)
    for r in range(rounds):
        cells = "  ".join(
            f"{arm} p50 {p(results[arm][r], 0.5):.3f} p99 {p(results[arm][r], 0.99):.3f}"
            for arm in arms
        )
        print(f"round {r + 1}: {cells}")
    width = max(len(arm) for arm in arms)
    for arm in arms:
        if arm == baseline:
            continue
        ratios = [p(results[arm][r], 0.5) / p(results[baseline][r], 0.5) for r in range(rounds)]
        print(
            f"{arm:>{width}} / {baseline}: p50 ratio median {statistics.median(ratios):.3f} "
            f"(rounds {', '.join(f'{x:.3f}' for x in ratios)})"
        )
