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
import resource
import tempfile
import time
import uuid
from pathlib import Path

from bench.local_platform import register_image, start_platform, trivial_image
from flnet import images, lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.channels import insecure_channel


async def sh(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {err.decode().strip()}")
    return out.decode()


async def plain_docker(image: str, code: str = "pass") -> None:
    await sh("docker", "run", "--rm", "--network", "none", image, "python3", "-c", code)


async def plain_docker_imports(image: str) -> None:
    """The plain launch whose container also imports the engine (what the engine costs
    before it does anything)."""
    await plain_docker(image, "import flnet.runtime.__main__")


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


async def plain_arm(
    backend: str, image: str, runs: int, concurrency: int, imports: bool = False
) -> float:
    """Seconds for `runs` plain launches, `concurrency` at a time."""
    launch = plain_swarm if backend == "swarm" else plain_docker
    if imports and backend == "docker":
        launch = plain_docker_imports
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await launch(image)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return time.perf_counter() - start


async def platform_arm(
    backend: str, built: images.BuiltImage, runs: int, concurrency: int
) -> tuple[float, float]:
    """Seconds from the first CreateRun to the last run's end, with `concurrency` slots, and
    the CPU seconds the control plane and the orchestrator (this process, and what it
    started: mkfs, mount) spent on them."""
    with tempfile.TemporaryDirectory() as tmp:
        platform = await start_platform(Path(tmp), backend=backend, run_slots=concurrency)
        try:
            async with insecure_channel(platform.address, platform.token) as channel:
                api: rsg.RunServiceAsyncStub = rsg.RunServiceStub(channel)
                version = await register_image(channel, built)
                start, cpu = time.perf_counter(), cpu_seconds()
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
                elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
                failed = [r.name for r in ended if r.state != lc.RUN_STATE_FINISHED]
                if failed:
                    raise RuntimeError(f"{len(failed)} runs did not finish, e.g. {failed[0]}")
                return elapsed, cpu
        finally:
            await platform.stop()


def cpu_seconds() -> float:
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def main(runs: int, concurrencies: list[int], backends: list[str]) -> None:
    built = await trivial_image()
    print(f"{runs} trivial runs per arm; image {built.reference} ({built.digest[:19]})")
    print("runs/min: plain script (python3 -c pass); plain script importing the engine")
    print("(docker only); the platform; platform/plain (target >= 0.8); the control plane's and")
    print("the orchestrator's CPU ms per run (this process and its children)")
    print(f"{'backend':<8}{'conc.':>6}{'plain':>9}{'+imports':>10}{'platform':>10}{'ratio':>7}"
          f"{'cpu ms/run':>12}")  # fmt: skip
    for backend in backends:
        for concurrency in concurrencies:
            plain = runs / await plain_arm(backend, built.digest, runs, concurrency) * 60
            imports = (
                runs / await plain_arm(backend, built.digest, runs, concurrency, True) * 60
                if backend == "docker"
                else float("nan")
            )
            seconds, cpu = await platform_arm(backend, built, runs, concurrency)
            ours = runs / seconds * 60
            print(
                f"{backend:<8}{concurrency:>6}{plain:>9.1f}{imports:>10.1f}{ours:>10.1f}"
                f"{ours / plain:>7.2f}{cpu / runs * 1000:>12.0f}",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--backends", nargs="+", default=["docker", "swarm"])
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.concurrency, args.backends))
