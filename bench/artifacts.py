"""Artifact throughput: a 1 GiB file uploaded to and downloaded from the control plane, next
to the same bytes moved without it, in the same run and on the same machine.

- S3 store (a SeaweedFS node started here): the platform — ArtifactService.UploadInput
  (client-streamed 1 MiB messages; the same receive path as a run's UploadOutput) then
  DownloadArtifact — against plain aioboto3 upload_fileobj/download_fileobj (default
  TransferConfig: 8 MiB parts, 10 concurrent requests) of the same file to the same server.
- file store: the platform against `cp` of the same file, followed by an fsync (the store
  fsyncs every blob), and `cp` of the stored blob for the download.

Every client runs in a process of its own and reads and writes files. The platform hashes
every byte (sha256) on the way in and verifies it on the way out (a whole download ends in
DATA_LOSS if the stored bytes changed); the baselines check nothing. The control plane runs
in this process: the peak growth of its resident set during the platform's transfers is
the control plane's.

    python -m bench.artifacts [--size-mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import aioboto3

from bench.figures import Figure, publish
from bench.local_platform import LocalPlatform, start_platform
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import artifact_service_pb2_grpc as asg
from flnet.channels import CHUNK_BYTES, insecure_channel
from flnet.control.blobs import LocalBlobStore
from tests.rss import peak_rss_growth
from tests.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY, start_seaweedfs, stop_seaweedfs

MiB = 1024 * 1024
TENANT = "tenants/default"


# --------------------------------------------------------------------------- clients


async def platform_client(address: str, source: BinaryIO, target: BinaryIO) -> None:
    """Uploads `source` as an input, downloads it into `target`; prints both durations.
    (Plain blocking file I/O, as in the baseline: this process does nothing else.)"""
    async with insecure_channel(address, os.environ["FLNET_TOKEN"]) as channel:
        artifacts: asg.ArtifactServiceAsyncStub = asg.ArtifactServiceStub(channel)
        sent = 0

        async def messages() -> AsyncIterator[asv.UploadInputRequest]:
            yield asv.UploadInputRequest(
                metadata=asv.UploadMetadata(parent=TENANT, filename="output.bin")
            )
            nonlocal sent
            while data := source.read(CHUNK_BYTES):
                sent += len(data)
                yield asv.UploadInputRequest(chunk=data)

        start = time.perf_counter()
        artifact = (await artifacts.UploadInput(messages())).artifact
        upload = time.perf_counter() - start
        if artifact.size_bytes != sent:
            raise RuntimeError("the platform stored other bytes than were sent")
        received = 0
        start = time.perf_counter()
        async for msg in artifacts.DownloadArtifact(
            asv.DownloadArtifactRequest(name=artifact.name)
        ):
            received += len(msg.data)
            target.write(msg.data)
        target.flush()
        download = time.perf_counter() - start
        if received != artifact.size_bytes:
            raise RuntimeError("the platform returned fewer bytes than were stored")
    print(f"{upload} {download} {artifact.sha256}")


async def aioboto3_client(endpoint: str, bucket: str, source: BinaryIO, target: BinaryIO) -> None:
    """upload_fileobj then download_fileobj of `source`; prints both durations."""
    session = aioboto3.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    )
    async with session.client("s3", endpoint_url=endpoint) as s3:
        start = time.perf_counter()
        await s3.upload_fileobj(source, bucket, "baseline/output.bin")
        upload = time.perf_counter() - start
        start = time.perf_counter()
        await s3.download_fileobj(bucket, "baseline/output.bin", target)
        target.flush()
        download = time.perf_counter() - start
    print(f"{upload} {download}")


# --------------------------------------------------------------------------- rounds


@dataclass
class Figures:
    """Seconds per round of one way of moving the file."""

    uploads: list[float] = field(default_factory=list)
    downloads: list[float] = field(default_factory=list)

    def add(self, upload: float, download: float) -> None:
        self.uploads.append(upload)
        self.downloads.append(download)


async def run_client(*args: str, env: dict[str, str] | None = None) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.artifacts",
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"the client {args[0]} failed with {proc.returncode}")
    return out.decode().split()


async def platform_round(platform: LocalPlatform, source: Path, target: Path) -> list[str]:
    out = await run_client(
        "--platform-client",
        platform.address,
        str(source),
        str(target),
        env={"FLNET_TOKEN": platform.token},
    )
    target.unlink()
    return out


async def cp_round(source: Path, target: Path, stored: Path) -> tuple[float, float]:
    """`cp` + fsync of the file into the data directory's disk, then `cp` of the stored
    blob out of it (what the platform's upload and download amount to on one disk)."""

    async def cp(src: Path, dst: Path, sync: bool) -> float:
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec("cp", str(src), str(dst))
        await proc.wait()
        if sync:
            proc = await asyncio.create_subprocess_exec("sync", str(dst))
            await proc.wait()
        return time.perf_counter() - start

    upload = await cp(source, target, sync=True)
    target.unlink()
    download = await cp(stored, target, sync=False)
    target.unlink()
    return upload, download


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
        f.write(os.urandom(size % MiB))


def mb_s(size: int, seconds: list[float]) -> float:
    """MB/s (10^6 bytes) of the median round."""
    return size / statistics.median(seconds) / 1e6


def report(
    label: str, size: int, platform: Figures, baseline: Figures, name: str, target: str = ""
) -> None:
    for way, p, b in (
        ("upload", platform.uploads, baseline.uploads),
        ("download", platform.downloads, baseline.downloads),
    ):
        rounds = "  ".join(f"{bs / ps:.2f}" for ps, bs in zip(p, b, strict=True))
        print(
            f"{label} {way:9} platform {mb_s(size, p):7.0f} MB/s   {name} {mb_s(size, b):7.0f}"
            f" MB/s   ratio {mb_s(size, p) / mb_s(size, b):5.2f}  (rounds {rounds})"
        )
        publish(
            Figure("artifacts", f"{size // MiB} MiB {way}, {label.strip()} (vs {name.strip()})",
                   mb_s(size, p), "MB/s", mb_s(size, b), target),
        )  # fmt: skip


async def main(size: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source, target = root / "output.bin", root / "received.bin"
        make_file(source, size)
        node = start_seaweedfs(root / "seaweedfs")
        try:
            os.environ.update(node.environment())
            bucket = node.bucket
            s3, aws, s3_rss = Figures(), Figures(), 0
            platform = await start_platform(
                root / "s3-platform", artifact_url=f"s3://{bucket}/flnet", s3_endpoint=node.endpoint
            )
            try:
                for _ in range(repeat):  # alternating, so both see the same machine
                    up, down = await run_client(
                        "--aioboto3-client", node.endpoint, bucket, str(source), str(target)
                    )
                    target.unlink()
                    aws.add(float(up), float(down))
                    with peak_rss_growth() as growth:
                        up, down, _ = await platform_round(platform, source, target)
                    s3.add(float(up), float(down))
                    s3_rss = max(s3_rss, growth[0])
            finally:
                await platform.stop()
        finally:
            stop_seaweedfs(node)

        files, cp, file_rss = Figures(), Figures(), 0
        platform = await start_platform(root / "file-platform")
        try:
            for _ in range(repeat):
                with peak_rss_growth() as growth:
                    up, down, sha256 = await platform_round(platform, source, target)
                files.add(float(up), float(down))
                file_rss = max(file_rss, growth[0])
                assert isinstance(platform.control.blobs, LocalBlobStore)
                cp.add(*await cp_round(source, target, platform.control.blobs.path_of(sha256)))
        finally:
            await platform.stop()
        shutil.rmtree(root / "file-platform", ignore_errors=True)

    print(f"file of {size / MiB:.0f} MiB, {repeat} rounds, medians; ratio = platform / baseline")
    report("S3  ", size, s3, aws, "aioboto3", "ratio >= 0.70")
    report("file", size, files, cp, "cp      ")
    print("target: S3 ratio >= 0.70 both ways")
    print(
        f"control-plane peak RSS growth: S3 {s3_rss / MiB:.0f} MiB, file {file_rss / MiB:.0f} MiB"
        " (target < 100 MB)"
    )
    publish(
        *(Figure("artifacts", f"control plane peak memory growth, {store} store", rss / 1e6, "MB",
                 target="<= 100", higher_is_better=False)
          for store, rss in (("S3", s3_rss), ("file", file_rss))),
    )  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--platform-client":
        with open(sys.argv[3], "rb") as src, open(sys.argv[4], "wb") as dst:
            asyncio.run(platform_client(sys.argv[2], src, dst))
        sys.exit(0)
    if len(sys.argv) == 6 and sys.argv[1] == "--aioboto3-client":
        with open(sys.argv[4], "rb") as src, open(sys.argv[5], "wb") as dst:
            asyncio.run(aioboto3_client(sys.argv[2], sys.argv[3], src, dst))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.size_mib * MiB, args.repeat))
