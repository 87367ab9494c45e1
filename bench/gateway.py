"""What the gateway costs: GetRun latency straight to the control plane (the baseline), through
Envoy as gRPC over HTTP/2, and through Envoy as gRPC-web over HTTP/1.1 (what browsers send),
in the same run, against the same control plane.

    python -m bench.gateway [--calls 2000] [--rounds 5]

Calls are sequential (latency, not throughput) on one kept-alive connection per arm; rounds
alternate the order of the arms. Prints p50/p99 per arm and round and the median of the
per-round p50 ratios against the baseline.
"""

from __future__ import annotations

import asyncio
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from bench.figures import Figure, publish
from bench.latency import median_p50, report, run_main, trivial_run
from bench.local_platform import ISSUER, start_platform
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.channels import insecure_channel
from flnet.cli.stack import free_port, wait_http_healthy
from flnet.gateway import GatewaySettings
from flnet.gateway.__main__ import envoy_argv
from flnet.gateway.config import write_config

ARMS = ("direct", "envoy grpc", "envoy grpc-web")
Call = Callable[[], Awaitable[None]]


async def timed(call: Call, calls: int) -> list[float]:
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - start)
    return latencies


def grpc_web_call(http: aiohttp.ClientSession, url: str, run: str, token: str) -> Call:
    body = rs.GetRunRequest(name=run).SerializeToString()
    frame = b"\x00" + struct.pack(">I", len(body)) + body
    headers = {
        "content-type": "application/grpc-web+proto",
        "x-grpc-web": "1",
        "authorization": f"Bearer {token}",
    }

    async def call() -> None:
        async with http.post(url, data=frame, headers=headers) as response:
            payload = await response.read()
            if response.status != 200 or b"grpc-status:0" not in payload:
                raise RuntimeError(f"gRPC-web call failed: {response.status} {payload[-80:]!r}")

    return call


async def main(calls: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        platform = await start_platform(Path(tmp))
        token = ISSUER.token()
        listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        settings = GatewaySettings(
            listen=listen,
            admin=admin,
            control=(platform.address,),
            data_dir=Path(tmp) / "gateway",
            oidc_issuer=ISSUER.url,
            access_log="/dev/null",
        )
        envoy = await asyncio.create_subprocess_exec(*envoy_argv(write_config(settings)))
        try:
            await wait_http_healthy(f"http://{admin}/ready")
            run = await trivial_run(platform.address, token)
            direct = insecure_channel(platform.address, token)
            through = insecure_channel(listen, token)
            http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            request = rs.GetRunRequest(name=run)
            stubs = [rsg.RunServiceStub(direct), rsg.RunServiceStub(through)]

            async def via_direct() -> None:
                await stubs[0].GetRun(request)

            async def via_envoy() -> None:
                await stubs[1].GetRun(request)

            arms: dict[str, Call] = {
                "direct": via_direct,
                "envoy grpc": via_envoy,
                "envoy grpc-web": grpc_web_call(
                    http, f"http://{listen}/flnet.api.control.v1.RunService/GetRun", run, token
                ),
            }
            for call in arms.values():  # warm up every path
                await timed(call, 200)
            results: dict[str, list[list[float]]] = {arm: [] for arm in ARMS}
            for r in range(rounds):
                for arm in ARMS if r % 2 == 0 else tuple(reversed(ARMS)):
                    results[arm].append(await timed(arms[arm], calls))
                    await platform.control.audit.flush()
            await http.close()
            await direct.close()
            await through.close()
        finally:
            envoy.terminate()
            await envoy.wait()
            await platform.stop()
    report(
        f"GetRun, {calls} sequential calls per arm and round, {rounds} rounds (ms)",
        results,
        "direct",
    )
    straight = median_p50(results["direct"])
    publish(
        *(Figure("gateway", f"GetRun p50, {arm}", median_p50(results[arm]), "ms", straight,
                 higher_is_better=False) for arm in ARMS if arm != "direct"),
    )  # fmt: skip


if __name__ == "__main__":
    run_main(__doc__, main)
