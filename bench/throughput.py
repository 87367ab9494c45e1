"""Throughput: trivial runs completed per minute through the platform (CreateRun of every run
at once; the scheduler places them as the orchestrator's slots, the concurrency, allow),
next to the same image's containers launched by a plain script at the same concurrency,
measured in the same run (arms alternate per concurrency).

    python -m bench.throughput [--runs 200] [--concurrency 1 4 16] [--backends docker swarm]

Prints, per backend and concurrency, runs/min of both and their ratio (target >= 0.8).
The plain script: `docker run --rm --network none IMAGE python3 -c pass` (docker), or
`docker service create --restart-condition none` of the same command, waited for and
removed (swarm)."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from bench.local_platform import start_platform
from flnet import images, lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.control.v1 import tool_service_pb2_grpc as tsg
from flnet.channels import insecure_channel
from flnet.toolspec import load_tool_spec

TRIVIAL = Path(__file__).parent / "tools" / "trivial"


async def sh(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {err.decode().strip()}")
    return out.decode()


async def plain_docker(image: str) -> None:
    await sh("docker", "run", "--rm", "--network", "none", image, "python3", "-c", "pass")


async def plain_swarm(image: str) -> None:
    name = f"bench-{uuid.uuid4().hex[:12]}"
    await sh("docker", "service", "create", "--detach", "--quiet", "--name", name,
             "--restart-condition", "none", "--network", "host",
             image, "python3", "-c", "pass")  # fmt: skip
    try:
        while True:
            states = await sh("docker", "service", "ps", name, "--format", "{{.CurrentState}}")
            if any(s.startswith(("Complete", "Failed", "Rejected")) for s in states.split("\n")):
                return
            await asyncio.sleep(0.05)
    finally:
        await sh("docker", "service", "rm", name)


async def plain_arm(backend: str, image: str, runs: int, concurrency: int) -> float:
    """Seconds for `runs` plain launches, `concurrency` at a time."""
    launch = plain_docker if backend == "docker" else plain_swarm
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await launch(image)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return time.perf_counter() - start


async def platform_arm(
    backend: str, built: images.BuiltImage, runs: int, concurrency: int
) -> float:
    """Seconds from the first CreateRun to the last run's end, with `concurrency` slots."""
    spec = load_tool_spec(TRIVIAL)
    with tempfile.TemporaryDirectory() as tmp:
        platform = await start_platform(Path(tmp), backend=backend, run_slots=concurrency)
        try:
            async with insecure_channel(platform.address, platform.token) as channel:
                tools: tsg.ToolServiceAsyncStub = tsg.ToolServiceStub(channel)
                api: rsg.RunServiceAsyncStub = rsg.RunServiceStub(channel)
                version = (
                    await tools.CreateToolVersion(
                        ts.CreateToolVersionRequest(
                            parent=f"tenants/default/tools/{spec.name}",
                            tool_version=spec.with_image(built.reference, built.digest),
                        )
                    )
                ).tool_version.name
                start = time.perf_counter()
                for _ in range(runs):
                    await api.CreateRun(
                        rs.CreateRunRequest(
                            parent="tenants/default",
                            request_id=uuid.uuid4().hex,
                            run=rp.Run(tool_version=version),
                        )
                    )
                while True:
                    listed = await api.ListRuns(
                        rs.ListRunsRequest(parent="tenants/default", page_size=1000)
                    )
                    ended = [r for r in listed.runs if lifecycle.is_terminal(r.state)]
                    if len(ended) == runs:
                        break
                    await asyncio.sleep(0.05)
                elapsed = time.perf_counter() - start
                failed = [r.name for r in ended if r.state != lc.RUN_STATE_FINISHED]
                if failed:
                    raise RuntimeError(f"{len(failed)} runs did not finish, e.g. {failed[0]}")
                return elapsed
        finally:
            await platform.stop()


async def main(runs: int, concurrencies: list[int], backends: list[str]) -> None:
    await images.ensure_dockerd()
    await images.build_base()
    spec = load_tool_spec(TRIVIAL)
    assert spec.image_build is not None
    built = await images.build_tool_image(
        spec.image_build.context,
        name=spec.name,
        version=spec.version.version,
        entrypoint=spec.entrypoint,
    )
    print(f"{runs} trivial runs per arm; image {built.reference} ({built.digest[:19]})")
    print(f"{'backend':<8}{'conc.':>6}{'plain runs/min':>16}{'platform runs/min':>19}{'ratio':>8}")
    for backend in backends:
        for concurrency in concurrencies:
            plain = await plain_arm(backend, built.digest, runs, concurrency)
            ours = await platform_arm(backend, built, runs, concurrency)
            plain_rate, our_rate = runs / plain * 60, runs / ours * 60
            print(
                f"{backend:<8}{concurrency:>6}{plain_rate:>16.1f}{our_rate:>19.1f}"
                f"{our_rate / plain_rate:>8.2f}   (target >= 0.8)",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--backends", nargs="+", default=["docker", "swarm"])
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.concurrency, args.backends))
