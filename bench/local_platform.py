"""The platform in one process, for benchmarks: a control plane on loopback and an
orchestrator attached to it, both using an in-process issuer key
(flnet.server.auth.local.LocalIssuer) as they would an OIDC issuer's; every call carries a
token of it.

The control plane's database is SQLite in the data directory (the embedded default) or any
`database_url`; `postgres_cluster` starts a private, throwaway PostgreSQL to point it at."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from flnet import images, timeouts
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.control.v1 import tool_service_pb2_grpc as tsg
from flnet.control.app import ControlApp
from flnet.control.settings import ControlSettings
from flnet.control.tenant_limits import TenantShare
from flnet.heap import settle_heap
from flnet.orchestrator.app import OrchestratorApp
from flnet.orchestrator.docker_container import ENGINE_GID
from flnet.orchestrator.link import Identity
from flnet.server.auth.local import LocalIssuer
from flnet.toolspec import load_tool_spec
from tests import pg_cluster

ISSUER = LocalIssuer("https://issuer.bench.invalid")
UNBOUNDED_SHARE = TenantShare(rate=1e9, burst=1e9, calls=1_000_000, streams=1_000_000)


@dataclass
class LocalPlatform:
    orchestrator: OrchestratorApp
    control: ControlApp
    address: str
    token: str  # a data scientist of tenant "default"

    async def stop(self) -> None:
        await self.orchestrator.stop()
        await self.control.stop(1)


async def start_platform(
    root: Path,
    backend: str = "process",
    *,
    artifact_url: str = "",
    s3_endpoint: str = "",
    database_url: str = "",
    run_slots: int = 64,
    warm_pool: int = 0,
) -> LocalPlatform:
    """The platform with its data under `root`; artifacts in `artifact_url` (default: files
    under `root`), credentials of an S3 store from the AWS_* variables; the control plane's
    database at `database_url` (default: SQLite under `root`)."""
    control = ControlApp(
        ControlSettings(
            auth=ISSUER.settings(),
            data_dir=root / "control",
            database_url=database_url,
            artifact_url=artifact_url,
            s3_endpoint=s3_endpoint,
            # Containers' engines connect as the docker backend's group (as `flnet up` sets).
            engine_gid=ENGINE_GID if backend in ("docker", "swarm") else None,
            # Benches load one tenant far beyond a fair share: still checked, never refused.
            tenant_share=UNBOUNDED_SHARE,
        ),
        keys=ISSUER.keys(),
    )
    port = await control.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"

    async def token() -> str:
        return ISSUER.orchestrator_token()

    orchestrator = OrchestratorApp(
        root / "orchestrator",
        control_address=address,
        token=token,
        identity=Identity(
            "bench", cpu_millis=64_000, memory_bytes=64 * 1024**3, run_slots=run_slots
        ),
        backend=backend,
        warm_pool=warm_pool,
    )
    await orchestrator.start()
    await timeouts.wait_for(orchestrator.link.attached.wait(), 60)
    settle_heap()  # as the control plane's and the orchestrator's own processes do
    return LocalPlatform(orchestrator, control, address, ISSUER.token())


# ----------------------------------------------------------------------------- images

TRIVIAL = Path(__file__).parent / "tools" / "trivial"


async def trivial_image() -> images.BuiltImage:
    """The trivial tool's image (and the base image under it), built or found."""
    await images.ensure_dockerd()
    await images.build_base()
    spec = load_tool_spec(TRIVIAL)
    assert spec.image_build is not None
    return await images.build_tool_image(
        spec.image_build.context,
        name=spec.name,
        version=spec.version.version,
        entrypoint=spec.entrypoint,
    )


async def register_image(channel: grpc.aio.Channel, built: images.BuiltImage) -> str:
    """The trivial tool registered with its image in tenant "default"; its version's name."""
    spec = load_tool_spec(TRIVIAL)
    tools: tsg.ToolServiceAsyncStub = tsg.ToolServiceStub(channel)
    created = await tools.CreateToolVersion(
        ts.CreateToolVersionRequest(
            parent=f"tenants/default/tools/{spec.name}",
            tool_version=spec.with_image(built.reference, built.digest),
        )
    )
    return created.tool_version.name


# ------------------------------------------------------------------------- PostgreSQL


@contextlib.contextmanager
def postgres_cluster(*, durable: bool = True) -> Iterator[str]:
    """A private, throwaway PostgreSQL cluster (tests.pg_cluster) for the duration; yields the
    URL of its empty database `flnet` (the control plane migrates it). `durable` keeps
    PostgreSQL's default durability (fsync, synchronous commit), the honest setting for a
    benchmark; otherwise it runs with the tests' settings."""
    bindir = pg_cluster.bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
    root = Path(tempfile.mkdtemp(prefix="flnet-bench-pg-"))
    cluster = pg_cluster.Cluster(bindir, root, durable=durable)
    try:
        try:
            cluster.start()
            yield cluster.create_database("flnet")
        finally:
            with contextlib.suppress(RuntimeError):  # never started: nothing to stop
                cluster.stop()  # also after a start that failed halfway
    finally:
        shutil.rmtree(root, ignore_errors=True)
