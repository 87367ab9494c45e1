"""Telemetry throughput and latency, tool -> control plane -> store -> WatchRun subscriber.

Baseline, measured in the same run: raw grpc.aio client-streaming of the same log lines, in
batches of 1000, from a client process to a server that only counts them. Both figures use
the same clock: from the first line's timestamp to the arrival of the last line.

The control plane's database, one measurement each (`--database`, repeatable; default: sqlite,
then postgresql when PostgreSQL is installed):
  sqlite             the embedded default, a file in the data directory
  postgresql         a private throwaway cluster (bench.local_platform.postgres_cluster) with
                     PostgreSQL's default durability: fsync, synchronous commit
  postgresql-nosync  the same with the tests' settings: fsync, synchronous_commit and
                     full_page_writes off (not what a deployment runs)
  postgresql+asyncpg://...  an existing database (migrated by the control plane)

    python -m bench.telemetry [--database sqlite|postgresql|postgresql-nosync|URL]...
        [--lines 100000] [--latency-seconds 5] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

from bench.figures import Figure, publish
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.channels import CLIENT_OPTIONS, SERVER_OPTIONS, insecure_channel
from flnet.client import FlnetClient

# bench.local_platform (all of the control plane) is imported where the platform starts, not
# here: the baseline client and the watcher run this module in processes of their own, started
# during the measurement, where that import would cost over a second of CPU competing with it.
CHATTY = Path(__file__).parent / "tools" / "chatty"
SINK = "/bench.Sink/Push"
BATCH = 1000
SQLITE, POSTGRESQL, POSTGRESQL_NOSYNC = "sqlite", "postgresql", "postgresql-nosync"
# End-to-end lines/s the issues ask for: 100,000 embedded (SQLite), 50,000 on PostgreSQL.
TARGETS = {SQLITE: 100_000, POSTGRESQL: 50_000}


# ------------------------------------------------------------------------- baseline


async def baseline_client(address: str, lines: int) -> None:
    """Streams `lines` log records in batches of 1000 (runs in its own process)."""
    async with grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS) as channel:
        push = channel.stream_unary(
            SINK,
            request_serializer=rt.Batch.SerializeToString,
            response_deserializer=rt.Ack.FromString,
        )

        async def batches() -> AsyncIterator[rt.Batch]:
            for seq, start in enumerate(range(0, lines, BATCH), 1):
                batch = rt.Batch(sequence=seq)
                for i in range(start, min(start + BATCH, lines)):
                    rec = batch.entries.add().log
                    rec.time.FromNanoseconds(time.time_ns())
                    rec.severity = tm.LOG_SEVERITY_INFO
                    rec.message = f"line {i}"
                yield batch

        await push(batches())


async def measure_baseline(lines: int) -> float:
    done = asyncio.Event()
    first_ns = 0
    received = 0
    end_ns = 0

    async def push(requests: AsyncIterator[rt.Batch], context: object) -> rt.Ack:
        nonlocal received, first_ns, end_ns
        async for batch in requests:
            if not first_ns:
                first_ns = batch.entries[0].log.time.ToNanoseconds()
            received += len(batch.entries)
        end_ns = time.time_ns()
        done.set()
        return rt.Ack(sequence=received)

    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Sink",
                {
                    "Push": grpc.stream_unary_rpc_method_handler(
                        push,
                        request_deserializer=rt.Batch.FromString,
                        response_serializer=rt.Ack.SerializeToString,
                    ),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.telemetry",
        "--baseline-client",
        f"127.0.0.1:{port}",
        str(lines),
    )
    await done.wait()
    await proc.wait()
    await server.stop(0)
    assert received == lines
    return lines / ((end_ns - first_ns) / 1e9)


# ------------------------------------------------------------------------ end to end


class Platform:
    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.database_url = database_url

    async def __aenter__(self) -> Platform:
        from bench.local_platform import start_platform

        self.platform = await start_platform(self.root, database_url=self.database_url)
        self.address = self.platform.address
        self.channel = insecure_channel(self.address, self.platform.token)
        self.runs: rsg.RunServiceAsyncStub = rsg.RunServiceStub(self.channel)
        async with FlnetClient(self.address, self.platform.token) as client:
            self.version = (await client.register_tool(CHATTY)).tool_version.name
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
        await self.platform.stop()

    async def watch(self, per_line: bool, **config: float) -> list[tuple[int, int]]:
        """Runs chatty with a WatchRun subscriber in its own process, as a user's would be.
        Returns (log time, arrival time) in ns per line when `per_line`, else one pair: the
        first line's log time and the last line's arrival."""
        s = struct_pb2.Struct()
        s.update(config)
        run = (
            await self.runs.CreateRun(
                rs.CreateRunRequest(
                    parent="tenants/default", run=rp.Run(tool_version=self.version, config=s)
                )
            )
        ).run
        mode = "--per-line" if per_line else "--span"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.telemetry",
            "--watcher",
            self.address,
            run.name,
            mode,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "FLNET_TOKEN": self.platform.token},
        )
        out, _ = await proc.communicate()
        final, *pairs = out.decode().split("\n")
        if int(final) != lc.RUN_STATE_FINISHED:
            raise RuntimeError(f"the benchmark run ended in state {final}")
        return [(int(a), int(b)) for a, b in (p.split() for p in pairs if p)]


async def watcher(address: str, run: str, per_line: bool) -> None:
    """Streams a run; prints its final state, then "log-time arrival-time" per line
    (--per-line) or once for the whole run (first line logged, last event arrived). The
    span mode does no per-event work, so the subscriber measures the platform, not itself."""
    pairs: list[str] = []
    first_log = last_arrival = 0
    final = 0
    async with insecure_channel(address, os.environ["FLNET_TOKEN"]) as channel:
        runs: rsg.RunServiceAsyncStub = rsg.RunServiceStub(channel)
        async for res in runs.WatchRun(rs.WatchRunRequest(name=run)):
            last_arrival = time.time_ns()
            if per_line or not first_log:
                for event in res.events:
                    if event.HasField("log") and event.log.message.startswith("line "):
                        logged = event.log.time.ToNanoseconds()
                        first_log = first_log or logged
                        if per_line:
                            pairs.append(f"{logged} {last_arrival}")
            last = res.events[-1]
            if last.HasField("state_change"):
                final = last.state_change.to_state
    if not per_line:
        pairs.append(f"{first_log} {last_arrival}")
    sys.stdout.write("\n".join([str(final), *pairs]) + "\n")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1]


@contextlib.contextmanager
def database(choice: str) -> Iterator[str]:
    """The control plane's database URL for a `--database` choice ("": the SQLite default)."""
    from bench.local_platform import postgres_cluster

    if choice == SQLITE:
        yield ""
    elif choice in (POSTGRESQL, POSTGRESQL_NOSYNC):
        with postgres_cluster(durable=choice == POSTGRESQL) as url:
            yield url
    else:
        yield choice


async def measure(
    database_url: str, lines: int, latency_seconds: float, repeat: int
) -> tuple[list[float], list[float], list[float]]:
    """Alternates baseline and platform rounds so both see the same machine. Returns the
    baselines' and the platform's lines/s per round, and the paced run's latencies in ms."""
    baselines: list[float] = []
    platforms: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with Platform(Path(tmp), database_url) as platform:
            for _ in range(repeat):
                baselines.append(await measure_baseline(lines))
                [(first_logged, last_arrived)] = await platform.watch(False, lines=lines, delay=1.5)
                platforms.append(lines / ((last_arrived - first_logged) / 1e9))
            paced = await platform.watch(
                True, lines=int(1000 * latency_seconds), rate=1000, delay=1.5
            )
    return baselines, platforms, [(arrived - logged) / 1e6 for logged, arrived in paced]


def report(
    choice: str, lines: int, baselines: list[float], platforms: list[float], latencies: list[float]
) -> None:
    """The medians of each and the ratio of the medians, with every round's ratio."""
    baseline, e2e = statistics.median(baselines), statistics.median(platforms)
    target = TARGETS[SQLITE if choice == SQLITE else POSTGRESQL]
    rounds = "  ".join(f"{p / b:.2f}" for p, b in zip(platforms, baselines, strict=True))
    spread = f"{min(platforms):,.0f}..{max(platforms):,.0f}"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    database_name = choice if "://" not in choice else choice.split("://", 1)[0] + "://..."
    print(f"database                      {database_name}  (load average {load})")
    print(f"lines per round               {lines}  ({len(platforms)} rounds, medians)")
    print(f"baseline grpc.aio stream      {baseline:12,.0f} lines/s  (batches of {BATCH})")
    print(f"tool -> store -> WatchRun     {e2e:12,.0f} lines/s  (target >= {target:,}; {spread})")
    print(f"ratio                         {e2e / baseline:12.2f}  (target >= 0.5; rounds {rounds})")
    p99 = percentile(latencies, 0.99)
    print(
        f"latency at 1,000 lines/s      p50 {percentile(latencies, 0.5):6.1f} ms   "
        f"p99 {p99:6.1f} ms   max {max(latencies):6.1f} ms (target p99 <= 10 ms)",
        flush=True,
    )
    publish(
        Figure("telemetry", f"tool -> WatchRun, {database_name}", e2e, "lines/s", baseline,
               "ratio >= 0.5"),
        Figure("telemetry", f"log() -> watcher p99 at 1k lines/s, {database_name}", p99, "ms",
               target="<= 10", higher_is_better=False),
    )  # fmt: skip


def main(databases: list[str], lines: int, latency_seconds: float, repeat: int) -> None:
    """One measurement per database, one after the other, each on a platform of its own."""
    for index, choice in enumerate(databases):
        if index:
            print()
        with database(choice) as url:
            measured = asyncio.run(measure(url, lines, latency_seconds, repeat))
        report(choice, lines, *measured)


def database_choice(value: str) -> str:
    if value in (SQLITE, POSTGRESQL, POSTGRESQL_NOSYNC) or value.startswith("postgresql+"):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r}: sqlite, postgresql, postgresql-nosync or a postgresql+asyncpg:// URL"
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--baseline-client":
        asyncio.run(baseline_client(sys.argv[2], int(sys.argv[3])))
        sys.exit(0)
    if len(sys.argv) == 5 and sys.argv[1] == "--watcher":
        asyncio.run(watcher(sys.argv[2], sys.argv[3], sys.argv[4] == "--per-line"))
        sys.exit(0)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database",
        action="append",
        type=database_choice,
        help="sqlite, postgresql, postgresql-nosync or a postgresql+asyncpg:// URL; repeat "
        "for several (default: sqlite, then postgresql when installed)",
    )
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from tests.pg_cluster import bindir

    installed = bindir() is not None
    main(
        args.database or [SQLITE, *([POSTGRESQL] if installed else [])],
        args.lines,
        args.latency_seconds,
        args.repeat,
    )
    if not args.database and not installed:
        print("\npostgresql: not measured, not installed (see --database)")
