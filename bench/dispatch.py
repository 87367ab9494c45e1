"""Dispatch latency: wall time from CreateRun to FINISHED of a trivial tool in a container,
next to a bare `docker run --rm --network none <same image> python3 -c pass` measured in
the same run (rounds alternate, so both see the same machine).

    python bench/dispatch.py [--runs 10]

Prints median and p90 of both, their ratio (target <= 1.0), and where the platform's time
goes: create (CreateRun, which records provenance and launches the container), engine
connect, start (Start command, input staging), run (tool and result), teardown (FINISHED
until the container is gone).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.figures import Figure, publish
from bench.local_platform import register_image, start_platform, trivial_image
from flnet import images
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.channels import insecure_channel

S = lc.RunState
PHASES = ["create", "engine connect", "start", "run", "teardown", "total"]


async def bare_docker_run(image: str) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "docker", "run", "--rm", "--network", "none", image, "python3", "-c", "pass"
    )
    if await proc.wait() != 0:
        raise RuntimeError("docker run failed")
    return time.perf_counter() - start


async def gone(run: str) -> None:
    """Until no container of `run` is left."""
    async with images.docker_client() as docker:
        while await docker.containers.list(  # noqa: ASYNC110 - polling is the measurement
            all=True, filters={"label": [f"flnet.run={run}"]}
        ):
            await asyncio.sleep(0.01)


async def platform_run(runs: rsg.RunServiceAsyncStub, version: str) -> dict[str, float]:
    t0 = time.time()
    run = (
        await runs.CreateRun(
            rs.CreateRunRequest(
                parent="tenants/default",
                request_id=uuid.uuid4().hex,
                run=rp.Run(tool_version=version),
            )
        )
    ).run
    created = time.time()
    times: dict[int, float] = {}
    async for res in runs.WatchRun(rs.WatchRunRequest(name=run.name)):
        for event in res.events:
            if event.HasField("state_change"):
                sc = event.state_change
                times[sc.to_state] = sc.time.ToNanoseconds() / 1e9
    finished = time.time()
    if S.RUN_STATE_FINISHED not in times:
        raise RuntimeError(f"{run.name} did not finish: {times}")
    await gone(run.name)
    torn_down = time.time()
    return {
        "create": created - t0,
        "engine connect": times[S.RUN_STATE_INITIALIZED] - created,
        "start": times[S.RUN_STATE_STARTED] - times[S.RUN_STATE_INITIALIZED],
        "run": times[S.RUN_STATE_FINISHED] - times[S.RUN_STATE_STARTED],
        "teardown": torn_down - finished,
        "total": finished - t0,
    }


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


async def main(rounds: int) -> None:
    built = await trivial_image()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        platform = await start_platform(root, backend="docker")
        try:
            async with insecure_channel(platform.address, platform.token) as channel:
                runs: rsg.RunServiceAsyncStub = rsg.RunServiceStub(channel)
                version = await register_image(channel, built)
                await bare_docker_run(built.digest)  # warm both paths once
                await platform_run(runs, version)
                bare: list[float] = []
                phases: dict[str, list[float]] = {p: [] for p in PHASES}
                for _ in range(rounds):
                    bare.append(await bare_docker_run(built.digest))
                    for phase, seconds in (await platform_run(runs, version)).items():
                        phases[phase].append(seconds)
        finally:
            await platform.stop()
    total = phases["total"]
    print(f"image                          {built.reference} ({built.digest[:19]})")
    print(f"rounds                         {rounds}")
    print(
        f"bare docker run (python3 pass) median {statistics.median(bare) * 1000:7.0f} ms"
        f"   p90 {p90(bare) * 1000:7.0f} ms"
    )
    print(
        f"CreateRun -> FINISHED          median {statistics.median(total) * 1000:7.0f} ms"
        f"   p90 {p90(total) * 1000:7.0f} ms"
    )
    print(
        f"ratio (medians)                {statistics.median(total) / statistics.median(bare):.2f}"
        "   (target <= 1.0)"
    )
    print("breakdown (medians)")
    for phase in PHASES[:-1]:
        print(f"  {phase:<16} {statistics.median(phases[phase]) * 1000:7.0f} ms")
    publish(
        Figure("dispatch", "CreateRun -> FINISHED (docker)", statistics.median(total) * 1e3,
               "ms", statistics.median(bare) * 1e3, "ratio <= 1.0", higher_is_better=False),
        *(Figure("dispatch", f"  {phase}", statistics.median(phases[phase]) * 1e3, "ms",
                 higher_is_better=False) for phase in PHASES[:-1]),
    )  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    sys.exit(asyncio.run(main(parser.parse_args().runs)))
