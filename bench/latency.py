"""Latency arms measured in alternating rounds, as bench.auth and bench.gateway measure them:
the run every arm reads, percentiles, the per-round report, and the command line."""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from flnet.client import FlnetClient

TRIVIAL = Path(__file__).parent / "tools" / "trivial"


async def trivial_run(address: str, token: str) -> str:
    """A development-session run of the trivial tool (it stays PENDING: nothing connects), for
    the arms to read; returns its name."""
    async with FlnetClient(address, token) as client:
        version = (await client.register_tool(TRIVIAL)).tool_version
        return (await client.submit(version.name, {}, {}, dev_session=True)).run.name


def run_main(
    doc: str | None, main: Callable[[int, int], Coroutine[Any, Any, None]], calls: int = 2000
) -> None:
    """`python -m bench.X [--calls N] [--rounds R]`."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--calls", type=int, default=calls)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))


def median_p50(rounds: list[list[float]]) -> float:
    """The median over rounds of each round's p50, in milliseconds."""
    return statistics.median(p(latencies, 0.5) for latencies in rounds)


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
