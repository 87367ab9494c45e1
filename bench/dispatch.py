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

import aiodocker

from bench.figures import Figure, publish
from bench.local_platform import LocalPlatform, register_image, start_platform, trivial_image
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


async def gone(platform: LocalPlatform, run: str) -> None:
    """Until the container of `run` is gone (a standby's names no run: found by its id)."""
    [container] = [
        c
        for c in await platform.orchestrator.backend.list(include_exited=True)
        if str(c.run) == run
    ]
    async with images.docker_client() as docker:
        while True:
            try:
                await docker.containers.container(container.container_id).show()
            except aiodocker.DockerError:
                return
            await asyncio.sleep(0.01)


async def platform_run(
    platform: LocalPlatform, runs: rsg.RunServiceAsyncStub, version: str
) -> dict[str, float]:
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
    await gone(platform, run.name)
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


async def measure(
    image: images.BuiltImage, root: Path, rounds: int, warm_pool: int
) -> tuple[list[float], dict[str, list[float]], tuple[float, float] | None]:
    """Rounds alternating a bare `docker run` and a platform run; with a warm pool, also what
    its standby container costs while it waits (MB resident, % of a CPU)."""
    platform = await start_platform(root, backend="docker", warm_pool=warm_pool)
    idle = None
    try:
        async with insecure_channel(platform.address, platform.token) as channel:
            runs: rsg.RunServiceAsyncStub = rsg.RunServiceStub(channel)
            version = await register_image(channel, image)
            await bare_docker_run(image.digest)  # warm both paths once
            await platform_run(platform, runs, version)
            bare: list[float] = []
            phases: dict[str, list[float]] = {p: [] for p in PHASES}
            for _ in range(rounds):
                bare.append(await bare_docker_run(image.digest))
                for phase, seconds in (await platform_run(platform, runs, version)).items():
                    phases[phase].append(seconds)
        if warm_pool:
            idle = await standby_cost()
    finally:
        await platform.stop()
    return bare, phases, idle


async def standby_cost(seconds: float = 5.0) -> tuple[float, float]:
    """The waiting standby's resident memory (MB) and CPU (% of one) over `seconds`."""
    async with images.docker_client() as docker:
        for _ in range(100):  # started after the last run: it may still be starting
            await asyncio.sleep(0.1)
            waiting = await docker.containers.list(filters={"label": ["flnet.pool"]})
            if waiting:
                break
        [summary] = waiting
        container = docker.containers.container(summary.id)
        await asyncio.sleep(1.0)  # let its engine finish importing
        before = await container.stats(stream=False)
        await asyncio.sleep(seconds)
        after = await container.stats(stream=False)
    cpu_ns = after[0]["cpu_stats"]["cpu_usage"]["total_usage"]
    cpu_ns -= before[0]["cpu_stats"]["cpu_usage"]["total_usage"]
    return after[0]["memory_stats"]["usage"] / 1e6, 100 * cpu_ns / 1e9 / seconds


async def main(rounds: int) -> None:
    built = await trivial_image()
    arms = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm, pool in (("cold", 0), ("warm pool", 1)):
            arms[arm] = await measure(built, Path(tmp) / arm.replace(" ", "-"), rounds, pool)
    print(f"image                          {built.reference} ({built.digest[:19]})")
    print(f"rounds                         {rounds} per arm")
    figures = []
    for arm, (bare, phases, idle) in arms.items():
        total = phases["total"]
        print(f"--- {arm}")
        print(
            f"bare docker run (python3 pass) median {statistics.median(bare) * 1000:7.0f} ms"
            f"   p90 {p90(bare) * 1000:7.0f} ms"
        )
        print(
            f"CreateRun -> FINISHED          median {statistics.median(total) * 1000:7.0f} ms"
            f"   p90 {p90(total) * 1000:7.0f} ms"
        )
        ratio = statistics.median(total) / statistics.median(bare)
        print(f"ratio (medians)                {ratio:.2f}   (target <= 1.0)")
        print("breakdown (medians)")
        for phase in PHASES[:-1]:
            print(f"  {phase:<16} {statistics.median(phases[phase]) * 1000:7.0f} ms")
        figures += [
            Figure("dispatch", f"CreateRun -> FINISHED, {arm}", statistics.median(total) * 1e3,
                   "ms", statistics.median(bare) * 1e3, "ratio <= 1.0", higher_is_better=False),
            *(Figure("dispatch", f"  {phase}, {arm}", statistics.median(phases[phase]) * 1e3,
                     "ms", higher_is_better=False) for phase in PHASES[:-1]),
        ]  # fmt: skip
        if idle is not None:
            print(f"a waiting standby container: {idle[0]:.1f} MB resident, {idle[1]:.2f}% CPU")
            figures += [
                Figure("dispatch", "a waiting standby: memory", idle[0], "MB",
                       higher_is_better=False),
                Figure("dispatch", "a waiting standby: CPU", idle[1], "% of a CPU",
                       higher_is_better=False),
            ]  # fmt: skip
    publish(*figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    sys.exit(asyncio.run(main(parser.parse_args().runs)))
