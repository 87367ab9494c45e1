"""One tenant cannot stall the others: tenant "globex"'s GetRun latency while tenant
"default" floods the control plane, against the same calls on a quiet control plane, in the
same run.

    python -m bench.tenants [--calls 500] [--rounds 3] [--flood 10000]

Arms, in alternating rounds, each `calls` sequential GetRuns of globex's own run, 100 a
second:
- "quiet": nothing else happens (the baseline);
- "flood": another process fires `flood` concurrent GetRuns as tenant default (its share
  refuses most with RESOURCE_EXHAUSTED and RetryInfo);
- "configs": another process submits runs of 60 KiB configurations, 32 at a time, as
  tenant default (each is validated against the tool's schema in a worker thread).
Prints p50/p99 per arm and round, the p50 ratio to "quiet", and what the flooding tenant
was answered (target: globex's p99 under 100 ms during the flood).
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import tempfile
import time
from pathlib import Path

import grpc

from bench.latency import p, report, run_main, trivial_run
from bench.local_platform import ISSUER, start_platform
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.channels import insecure_channel
from flnet.client import FlnetClient
from flnet.structs import dict_to_struct

ARMS = ("quiet", "flood", "configs")
WIDE = Path(__file__).parent / "tools" / "wide"
# globex's calls: 100 a second, half its share (control.tenant_limits.TenantShare).
PACE = 0.01
CONFIG_FILLER = 60 * 1024


async def _flood(address: str, token: str, run: str, calls: int) -> dict[str, int]:
    async with insecure_channel(address, token) as channel:
        stub = rsg.RunServiceStub(channel)
        request = rs.GetRunRequest(name=run)
        answers = await asyncio.gather(
            *(stub.GetRun(request) for _ in range(calls)), return_exceptions=True
        )
    counts = collections.Counter(
        a.code().name if isinstance(a, grpc.aio.AioRpcError) else "OK" for a in answers
    )
    return dict(counts)


async def _configs(address: str, token: str, version: str, seconds: float) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    until = time.monotonic() + seconds
    async with insecure_channel(address, token) as channel:
        stub = rsg.RunServiceStub(channel)

        async def submit() -> None:
            while time.monotonic() < until:
                config = dict_to_struct({"filler": "x" * CONFIG_FILLER})
                run = rp.Run(tool_version=version, config=config, dev_session=True)
                try:
                    await stub.CreateRun(rs.CreateRunRequest(parent="tenants/default", run=run))
                    counts["OK"] += 1
                except grpc.aio.AioRpcError as e:
                    counts[e.code().name] += 1

        await asyncio.gather(*(submit() for _ in range(32)))
    return dict(counts)


def _load(kind: str, address: str, token: str, target: str, amount: float, out: object) -> None:
    """The other tenant's load, in a process of its own (its client costs the server
    nothing)."""
    if kind == "flood":
        result = asyncio.run(_flood(address, token, target, int(amount)))
    else:
        result = asyncio.run(_configs(address, token, target, amount))
    out.put(result)  # type: ignore[attr-defined]


async def timed(
    stub: rsg.RunServiceAsyncStub, run: str, calls: int, failed: collections.Counter[str]
) -> list[float]:
    """Latencies of `calls` GetRuns, one every PACE seconds (within the tenant's share); a
    failed call counts in `failed` by its code, with its latency."""
    request = rs.GetRunRequest(name=run)
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        try:
            await stub.GetRun(request)
        except grpc.aio.AioRpcError as e:
            failed[e.code().name] += 1
        latencies.append(time.perf_counter() - start)
        await asyncio.sleep(max(0.0, PACE - latencies[-1]))
    return latencies


async def main(calls: int, rounds: int, flood: int = 10_000) -> None:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        platform = await start_platform(Path(tmp))
        flooder = ISSUER.token()
        victim = ISSUER.token(subject="bob", tenant="globex")
        try:
            own = await trivial_run(platform.address, victim)
            theirs = await trivial_run(platform.address, flooder)
            async with FlnetClient(platform.address, flooder) as client:
                version = (await client.register_tool(WIDE)).tool_version.name
            results: dict[str, list[list[float]]] = {arm: [] for arm in ARMS}
            answered: dict[str, list[dict[str, int]]] = {"flood": [], "configs": []}
            async with insecure_channel(platform.address, victim) as channel:
                stub = rsg.RunServiceStub(channel)
                failed: dict[str, collections.Counter[str]] = {
                    arm: collections.Counter() for arm in ARMS
                }
                await timed(stub, own, 100, failed["quiet"])  # warm up
                for r in range(rounds):
                    for arm in ARMS if r % 2 == 0 else tuple(reversed(ARMS)):
                        if arm == "quiet":
                            results[arm].append(await timed(stub, own, calls, failed[arm]))
                            continue
                        out = context.Queue()
                        target, amount = (theirs, flood) if arm == "flood" else (version, 10.0)
                        load = context.Process(
                            target=_load,
                            args=(arm, platform.address, flooder, target, amount, out),
                        )
                        load.start()
                        await asyncio.sleep(1.0)  # the load under way
                        results[arm].append(await timed(stub, own, calls, failed[arm]))
                        answered[arm].append(await asyncio.to_thread(out.get))
                        await asyncio.to_thread(load.join)
            report("globex's GetRun while tenant default loads the control plane", results, "quiet")
            for arm, rows in answered.items():
                worst = max(p(results[arm][r], 0.99) for r in range(rounds))
                print(
                    f"{arm}: tenant default was answered {rows}; globex's worst p99 {worst:.1f} ms"
                )
        finally:
            await platform.stop()


if __name__ == "__main__":
    run_main(__doc__, main, calls=500)
