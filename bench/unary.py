"""Unary API calls against raw grpc.aio: GetRun and ListRuns (a page of 50) through the whole
control plane (its interceptor chain: error mapping, token validation, scopes, the tenant's
share, audit), next to a raw grpc.aio server that answers the same bytes from memory, in the
same run (both decoded by the client alike).

    python -m bench.unary [--calls 2000] [--rounds 5] [--clients 200] [--seconds 3]

Latency: sequential calls on one kept-alive channel per arm, rounds alternating the order of
the arms; p50/p99 per arm and round, and the median of the per-round p50 ratios against raw
(targets: GetRun <= 2x, ListRuns <= 3x). Throughput: `--clients` concurrent callers in a
process of their own (so that they do not share the server's core) for `--seconds`, on
the raw server and on GetRun, in calls/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from bench.figures import Figure, publish
from bench.latency import median_p50, p, trivial_run
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.channels import CLIENT_OPTIONS, SERVER_OPTIONS, insecure_channel

RAW_SERVICE = "bench.Raw"
PAGE = 50
TARGETS = {"GetRun": 2.0, "ListRuns": 3.0}
Call = Callable[..., Awaitable[Any]]


async def raw_server(responses: dict[str, bytes]) -> tuple[grpc.aio.Server, str]:
    """A grpc.aio server whose methods answer stored bytes (no decoding beyond the request)."""

    def method(answer: bytes) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def handler(request: bytes, context: object) -> bytes:
            return answer

        return grpc.unary_unary_rpc_method_handler(handler)

    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                RAW_SERVICE, {name: method(b) for name, b in responses.items()}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def raw_call(channel: grpc.aio.Channel, name: str, response: type[Message]) -> Call:
    """The raw server's method `name`; its answer is decoded as `response`, as a stub's is."""
    return channel.unary_unary(f"/{RAW_SERVICE}/{name}", response_deserializer=response.FromString)


async def sequential(call: Call, request: object, n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        await call(request)
        latencies.append(time.perf_counter() - start)
    return latencies


async def throughput_client(
    address: str, method: str, request: bytes, clients: int, seconds: float
) -> None:
    """`clients` callers, each calling in a loop for `seconds` (runs in its own process);
    prints the calls completed per second."""
    token = os.environ.get("FLNET_TOKEN", "")
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    channels = [grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS) for _ in range(4)]
    calls: list[Call] = [ch.unary_unary(method) for ch in channels]
    done = 0
    stop = time.monotonic() + seconds

    async def caller(i: int) -> None:
        nonlocal done
        call = calls[i % len(calls)]
        while time.monotonic() < stop:
            await call(request, metadata=metadata)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(caller(i) for i in range(clients)))
    print(done / (time.monotonic() - started))
    for ch in channels:
        await ch.close()


async def throughput(
    address: str, method: str, request: bytes, clients: int, seconds: float, token: str = ""
) -> float:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.unary", "--throughput-client", address, method,
        request.hex(), str(clients), str(seconds),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "FLNET_TOKEN": token},
    )  # fmt: skip
    out, _ = await proc.communicate()
    return float(out)


async def main(calls: int, rounds: int, clients: int, seconds: float) -> None:
    from bench.local_platform import ISSUER, start_platform

    with tempfile.TemporaryDirectory() as tmp:
        platform = await start_platform(Path(tmp))
        token = ISSUER.token()
        try:
            run = await trivial_run(platform.address, token)
            for _ in range(PAGE):
                await trivial_run(platform.address, token)
            channel = insecure_channel(platform.address, token)
            stub = rsg.RunServiceStub(channel)
            get = rs.GetRunRequest(name=run)
            page = rs.ListRunsRequest(parent="tenants/default", page_size=PAGE)
            answers = {
                "GetRun": (await stub.GetRun(get)).SerializeToString(),
                "ListRuns": (await stub.ListRuns(page)).SerializeToString(),
            }
            assert len(rs.ListRunsResponse.FromString(answers["ListRuns"]).runs) == PAGE
            server, raw_address = await raw_server(answers)
            raw = grpc.aio.insecure_channel(raw_address, options=CLIENT_OPTIONS)
            arms: dict[str, tuple[Call, object]] = {
                "raw GetRun": (raw_call(raw, "GetRun", rs.GetRunResponse), get.SerializeToString()),
                "GetRun": (stub.GetRun, get),
                "raw ListRuns": (
                    raw_call(raw, "ListRuns", rs.ListRunsResponse),
                    page.SerializeToString(),
                ),
                "ListRuns": (stub.ListRuns, page),
            }
            for call, request in arms.values():  # warm up every path
                await sequential(call, request, 200)
            results: dict[str, list[list[float]]] = {arm: [] for arm in arms}
            for r in range(rounds):
                for arm in arms if r % 2 == 0 else reversed(arms):
                    results[arm].append(await sequential(*arms[arm], calls))
                    await platform.control.audit.flush()  # the writer's work stays in its round
            rates = {
                "raw": await throughput(
                    raw_address, f"/{RAW_SERVICE}/GetRun", get.SerializeToString(), clients, seconds
                ),
                "GetRun": await throughput(
                    platform.address,
                    "/flnet.api.control.v1.RunService/GetRun",
                    get.SerializeToString(),
                    clients,
                    seconds,
                    token,
                ),
            }
            await raw.close()
            await channel.close()
            await server.stop(0)
        finally:
            await platform.stop()
    report(calls, rounds, results, rates, clients)


def report(
    calls: int,
    rounds: int,
    results: dict[str, list[list[float]]],
    rates: dict[str, float],
    clients: int,
) -> None:
    print(f"unary calls, {calls} sequential per arm and round, {rounds} rounds (ms)")
    for method, target in TARGETS.items():
        base, ours = results[f"raw {method}"], results[method]
        ratios = [p(ours[r], 0.5) / p(base[r], 0.5) for r in range(rounds)]
        print(
            f"{method:9} p50 {statistics.median(p(x, 0.5) for x in ours):6.3f} "
            f"p99 {statistics.median(p(x, 0.99) for x in ours):6.3f}   raw p50 "
            f"{statistics.median(p(x, 0.5) for x in base):6.3f} p99 "
            f"{statistics.median(p(x, 0.99) for x in base):6.3f}   p50 ratio "
            f"{statistics.median(ratios):.2f} (target <= {target:.0f}; rounds "
            f"{' '.join(f'{x:.2f}' for x in ratios)})"
        )
    print(
        f"throughput, {clients} concurrent clients: GetRun {rates['GetRun']:,.0f} calls/s, "
        f"raw {rates['raw']:,.0f} calls/s ({rates['GetRun'] / rates['raw']:.2f})",
        flush=True,
    )
    publish(
        *(Figure("unary", f"{method} p50", median_p50(results[method]), "ms",
                 median_p50(results[f"raw {method}"]), f"ratio <= {target:g}",
                 higher_is_better=False) for method, target in TARGETS.items()),
        Figure("unary", f"GetRun, {clients} concurrent clients", rates["GetRun"], "calls/s",
               rates["raw"]),
    )  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--throughput-client":
        _, _, address, method, request, n, secs = sys.argv
        asyncio.run(throughput_client(address, method, bytes.fromhex(request), int(n), float(secs)))
        sys.exit(0)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds, args.clients, args.seconds))
