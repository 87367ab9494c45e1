"""What authentication costs: GetRun latency through the control plane's full interceptor
chain (error mapping, token validation, scope check, audit record) next to the same RunService
behind error mapping alone, in the same process, on the same store, in the same run.

    python -m bench.auth [--calls 2000] [--rounds 5]

Three servers share one control plane: "none" (no authentication: the baseline, which FLNet
never serves), "auth" (validation and scopes, no audit) and "auth+audit" (what the control
plane serves); "new token" is auth+audit with a token never seen before on every call (each
pays the signature check that a token's later calls skip). Rounds alternate between them;
calls are sequential (latency, not throughput). Prints p50/p99 per arm and round, and the
median of the per-round p50 ratios against the baseline (target: auth+audit <= 1.10).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import grpc

from bench.figures import Figure, publish
from bench.latency import median_p50, report, run_main, trivial_run
from bench.local_platform import ISSUER, start_platform
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.channels import insecure_channel
from flnet.control.services.run_service import RunService
from flnet.server.interceptors import ErrorMapper
from flnet.server.serving import Server

RUN_SERVICE = rs.DESCRIPTOR.services_by_name["RunService"].full_name
ARMS = ("none", "auth", "auth+audit", "new token")


async def timed_calls(
    stub: rsg.RunServiceAsyncStub, run: str, calls: int, fresh_tokens: bool = False
) -> list[float]:
    request = rs.GetRunRequest(name=run)
    # Minted before the clock starts: signing is the client's cost, not the server's.
    tokens = [(("authorization", f"Bearer {ISSUER.token()}"),) for _ in range(calls)]
    latencies = []
    for n in range(calls):
        start = time.perf_counter()
        await stub.GetRun(request, metadata=tokens[n] if fresh_tokens else None)
        latencies.append(time.perf_counter() - start)
    return latencies


async def main(calls: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        platform = await start_platform(Path(tmp))
        app = platform.control
        token = ISSUER.token()
        servers: list[Server] = []
        try:
            run = await trivial_run(platform.address, token)
            service = RunService(app.runs, app.blobs)

            def register(server: grpc.aio.Server) -> None:
                rsg.add_RunServiceServicer_to_server(service, server)

            no_audit = ISSUER.interceptor([RUN_SERVICE])
            addresses = {"auth+audit": platform.address, "new token": platform.address}
            for arm, chain in (
                ("none", [ErrorMapper("flnet.control")]),
                ("auth", [ErrorMapper("flnet.control"), no_audit]),
            ):
                server = Server([RUN_SERVICE], register, interceptors=chain)
                port = await server.start("127.0.0.1:0")
                servers.append(server)
                addresses[arm] = f"127.0.0.1:{port}"
            channels = {arm: insecure_channel(address, token) for arm, address in addresses.items()}
            stubs = {arm: rsg.RunServiceStub(ch) for arm, ch in channels.items()}
            for arm in ARMS:  # warm up every path
                await timed_calls(stubs[arm], run, 200, arm == "new token")
            results: dict[str, list[list[float]]] = {arm: [] for arm in ARMS}
            for r in range(rounds):
                order = ARMS if r % 2 == 0 else tuple(reversed(ARMS))
                for arm in order:
                    latencies = await timed_calls(stubs[arm], run, calls, arm == "new token")
                    results[arm].append(latencies)
                    await app.audit.flush()  # the writer's work stays inside its round
            for ch in channels.values():
                await ch.close()
        finally:
            for server in servers:
                await server.stop(0)
            await platform.stop()
    report(
        f"GetRun, {calls} sequential calls per arm and round, {rounds} rounds (ms)",
        results,
        "none",
    )
    none = median_p50(results["none"])
    publish(
        Figure("auth", "GetRun p50, auth+audit", median_p50(results["auth+audit"]), "ms", none,
               "ratio <= 1.10", higher_is_better=False),
        Figure("auth", "GetRun p50, a token never seen", median_p50(results["new token"]), "ms",
               none, higher_is_better=False),
    )  # fmt: skip


if __name__ == "__main__":
    run_main(__doc__, main)
