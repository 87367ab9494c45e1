"""The scale of the history: a run with millions of stored events watched from its start, and
ListRuns with a million runs stored.

    python -m bench.history [--database sqlite|postgresql|URL]... [--events 10000000]
        [--runs 1000000] [--calls 500]

Events: one run's history is filled through the store's ingestion path (batches of 1000 log
lines, 16 to a transaction, as RuntimeService stores an engine's), timed: the live ingestion
rate, the baseline. The run then ends, and a WatchRun subscriber in a process of its own
streams it from sequence 0 to its end (target: >= 0.5 of the ingestion rate), while the
control plane's resident memory is sampled (target: < 100 MB of growth).

Runs: that many runs of one tenant are inserted in bulk (copies of a real one, with new ids
and times), then ListRuns' first page of 50 and a page deep in the listing (its token) are
timed, p50 over `--calls` sequential calls each (target: <= 5 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import insert, select

from bench.figures import Figure, publish
from bench.latency import p, trivial_run
from bench.telemetry import POSTGRESQL, SQLITE, database, database_choice
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.channels import insecure_channel
from flnet.control import pagination
from flnet.control.engine_batches import checked
from flnet.control.schema import runs

if TYPE_CHECKING:
    from bench.local_platform import LocalPlatform

BATCH = 1000
GROUP = 16  # batches per transaction (RuntimeService's MAX_GROUP_COMMIT)
INSERT_CHUNK = 10_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def batch(sequence: int, first_line: int) -> rt.Batch:
    b = rt.Batch(sequence=sequence)
    now = time.time_ns()
    for i in range(first_line, first_line + BATCH):
        rec = b.entries.add().log
        rec.time.seconds, rec.time.nanos = divmod(now, 1_000_000_000)
        rec.severity = tm.LOG_SEVERITY_INFO
        rec.message = f"line {i} of a long history"
    return b


async def watch_span(address: str, token: str, run: str) -> tuple[int, float]:
    """Streams `run` whole in a subscriber process; (events received, seconds)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.history", "--watcher", address, run,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "FLNET_TOKEN": token},
    )  # fmt: skip
    out, _ = await proc.communicate()
    count, seconds = out.split()
    return int(count), float(seconds)


async def watcher(address: str, run: str) -> None:
    count = 0
    async with insecure_channel(address, os.environ["FLNET_TOKEN"]) as channel:
        stub: rsg.RunServiceAsyncStub = rsg.RunServiceStub(channel)
        start = time.perf_counter()
        async for response in stub.WatchRun(rs.WatchRunRequest(name=run)):
            count += len(response.events)
        seconds = time.perf_counter() - start
    print(count, seconds)


async def measure_events(platform: LocalPlatform, events: int) -> dict[str, float]:
    store = platform.control.store
    run = await trivial_run(platform.address, platform.token)
    run_id = run.rsplit("/", 1)[1]
    batches = events // BATCH
    ingest_seconds = 0.0
    sequence = 0
    while sequence < batches:
        group = [
            checked(batch(sequence + n + 1, (sequence + n) * BATCH))
            for n in range(min(GROUP, batches - sequence))
        ]
        start = time.perf_counter()
        outcome = await store.runs.apply_batches(run_id, group)
        ingest_seconds += time.perf_counter() - start
        sequence += len(group)
        assert outcome.acked == sequence
    await store.runs.transition(run_id, lc.RUN_STATE_CANCELLED, actor="bench")
    before = peak = rss_bytes()
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_bytes())
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    received, watch_seconds = await watch_span(platform.address, platform.token, run)
    sampling = False
    await sampler
    assert received >= events, f"the watch streamed {received} of {events} events"
    return {
        "ingest": events / ingest_seconds,
        "watch": received / watch_seconds,
        "growth": (peak - before) / 1e6,
    }


async def measure_listing(platform: LocalPlatform, count: int, calls: int) -> dict[str, float]:
    template_name = await trivial_run(platform.address, platform.token)
    engine = platform.control.engine
    async with engine.connect() as conn:
        template = (
            (await conn.execute(select(runs).where(runs.c.id == template_name.rsplit("/", 1)[1])))
            .one()
            ._asdict()
        )
    base_us = template["create_us"] - count * 1000
    for start in range(0, count, INSERT_CHUNK):
        rows = []
        for n in range(start, min(count, start + INSERT_CHUNK)):
            row = dict(template)
            row.update(
                id=uuid.uuid4().hex[:20],
                request_id=f"bench-{n}",
                credential_sha256=uuid.uuid4().hex * 2,
                create_us=base_us + n * 1000,
                update_us=base_us + n * 1000,
                state=lc.RUN_STATE_FINISHED if n % 2 else lc.RUN_STATE_CANCELLED,
            )
            rows.append(row)
        async with engine.begin() as conn:
            await conn.execute(insert(runs), rows)
    async with insecure_channel(platform.address, platform.token) as channel:
        stub: rsg.RunServiceAsyncStub = rsg.RunServiceStub(channel)
        first = rs.ListRunsRequest(parent="tenants/default", page_size=50)
        # The page after the run halfway down the listing, as its previous page's token says.
        middle = base_us + count // 2 * 1000
        async with engine.connect() as conn:
            middle_id = (
                await conn.execute(select(runs.c.id).where(runs.c.create_us == middle))
            ).scalar_one()
        query: dict[str, object] = {
            "parent": first.parent,
            "tool": "",
            "states": [],
            "from": None,
            "to": None,
        }  # (what RunService.ListRuns binds its tokens to)
        token = pagination.encode([middle, middle_id], query)
        deep = rs.ListRunsRequest(parent="tenants/default", page_size=50, page_token=token)
        finished = rs.ListRunsRequest(
            parent="tenants/default", page_size=50, states=[lc.RUN_STATE_FINISHED]
        )
        out: dict[str, float] = {}
        for name, request in (("first", first), ("deep", deep), ("finished", finished)):
            latencies: list[float] = []
            for _ in range(calls):
                began = time.perf_counter()
                await stub.ListRuns(request)
                latencies.append(time.perf_counter() - began)
            out[name] = p(latencies, 0.5)
    return out


async def measure(database_url: str, events: int, count: int, calls: int) -> dict[str, float]:
    from bench.local_platform import start_platform

    with tempfile.TemporaryDirectory() as tmp:
        platform = await start_platform(Path(tmp), database_url=database_url)
        try:
            figures = await measure_events(platform, events)
            figures.update(await measure_listing(platform, count, calls))
        finally:
            await platform.stop()
    return figures


def report(choice: str, events: int, count: int, f: dict[str, float]) -> None:
    print(f"database                      {choice}")
    print(f"ingestion ({events:,} events)   {f['ingest']:12,.0f} events/s  (the baseline)")
    print(
        f"WatchRun from the start       {f['watch']:12,.0f} events/s  ratio "
        f"{f['watch'] / f['ingest']:.2f} (target >= 0.5)"
    )
    print(f"control plane memory growth   {f['growth']:12.1f} MB        (target < 100 MB)")
    print(
        f"ListRuns with {count:,} runs: p50 first page {f['first']:.2f} ms, a page halfway "
        f"{f['deep']:.2f} ms, FINISHED only {f['finished']:.2f} ms (target <= 5 ms)",
        flush=True,
    )
    publish(
        Figure("history", f"WatchRun from the start, {events:,} events, {choice}", f["watch"],
               "events/s", f["ingest"], "ratio >= 0.5"),
        Figure("history", f"control plane memory growth meanwhile, {choice}", f["growth"], "MB",
               target="<= 100", higher_is_better=False),
        *(Figure("history", f"ListRuns p50, {count:,} runs, {page}, {choice}", f[key], "ms",
                 target="<= 5", higher_is_better=False)
          for key, page in (("first", "first page"), ("deep", "halfway"),
                            ("finished", "FINISHED only"))),
    )  # fmt: skip


def main(databases: list[str], events: int, count: int, calls: int) -> None:
    for index, choice in enumerate(databases):
        if index:
            print()
        with database(choice) as url:
            figures = asyncio.run(measure(url, events, count, calls))
        report(choice, events, count, figures)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--watcher":
        asyncio.run(watcher(sys.argv[2], sys.argv[3]))
        sys.exit(0)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", action="append", type=database_choice)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    from tests.pg_cluster import bindir

    chosen = args.database or [SQLITE, *([POSTGRESQL] if bindir() is not None else [])]
    main(chosen, args.events, args.runs, args.calls)
