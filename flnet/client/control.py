"""A small typed client of the control plane's user-facing services. Callers never touch
channels or raw stubs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import artifact_service_pb2_grpc as asg
from flnet.api.control.v1 import fleet_pb2 as fp
from flnet.api.control.v1 import fleet_service_pb2 as fs
from flnet.api.control.v1 import fleet_service_pb2_grpc as fsg
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.control.v1 import tool_service_pb2_grpc as tsg
from flnet.channels import CHUNK_BYTES, TokenSource, insecure_channel
from flnet.sources import MEDIA_TYPE as SOURCE_MEDIA_TYPE
from flnet.sources import pack_source
from flnet.structs import dict_to_struct
from flnet.toolspec import ToolSpec, ToolSpecError, load_tool_spec

from .tokens import unverified_claims


def development_version(release: str, version: tp.ToolVersion) -> str:
    """The development version of `release` whose source (or image) is `version`'s:
    "1.0.0+dev.3f2a9c1e0b7d" (semver build metadata, or a further part of it)."""
    digest = version.source.sha256 or version.image.digest.removeprefix("sha256:")
    return f"{release}{'.' if '+' in release else '+'}dev.{digest[:12]}"


#: The length of the run ids the control plane issues.
RUN_ID_CHARS = 20


class FlnetClient:
    """One channel to the control plane, and the operations the CLI offers. Every call
    carries the bearer token `token` gives; `tenant` defaults to the token's own."""

    def __init__(self, address: str, token: str | TokenSource, tenant: str | None = None) -> None:
        self.address = address
        self.token = token
        self.tenant = f"tenants/{tenant}" if tenant else ""
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> FlnetClient:
        if not self.tenant:
            token = self.token if isinstance(self.token, str) else await self.token()
            self.tenant = f"tenants/{tenant_of(token)}"
        self._channel = insecure_channel(self.address, self.token)
        self.tools = tsg.ToolServiceStub(self._channel)
        self.runs = rsg.RunServiceStub(self._channel)
        self.artifacts = asg.ArtifactServiceStub(self._channel)
        self.fleet = fsg.FleetServiceStub(self._channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def run_name(self, run: str) -> str:
        """Accepts a full resource name, a run id, or an unambiguous prefix of one (looked up
        among the tenant's runs; ValueError when none or several match)."""
        if run.startswith("tenants/") or len(run) >= RUN_ID_CHARS:
            return run if run.startswith("tenants/") else f"{self.tenant}/runs/{run}"
        if not run:
            raise ValueError("no run named")
        matches: list[str] = []
        token = ""
        while True:
            page = await self.runs.ListRuns(
                rs.ListRunsRequest(parent=self.tenant, page_size=1000, page_token=token)
            )
            matches += [r.name for r in page.runs if r.name.rsplit("/", 1)[1].startswith(run)]
            token = page.next_page_token
            if not token or len(matches) > 1:
                break
        if not matches:
            raise ValueError(f"no run of {self.tenant} has an id starting with {run!r}")
        if len(matches) > 1:
            raise ValueError(f"{run!r} is the start of several runs' ids; give more of it")
        return matches[0]

    # tools
    async def register_tool(
        self,
        path: Path,
        *,
        image: bool = False,
        development: bool = False,
        config_schema: Mapping[str, Any] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> ts.CreateToolVersionResponse:
        """Registers the tool.yaml at `path`: its folder's files uploaded as a source
        archive (process backend), or with `image` as a container image (docker backend),
        built first from the build context tool.yaml names (`image: {build: "."}`) and pinned
        by its digest. ToolSpecError when the tool cannot be registered that way (no build
        context, no Docker, build failed).

        `config_schema`: the schema to register instead of tool.yaml's.
        `development`: as a development version of its files as they are now,
        "<version>+dev.<digest>" (development_version), so that editing the tool never
        collides with the release registered under its tool.yaml version."""
        spec = load_tool_spec(path)
        if image:
            version = await self._build_image(spec, progress)
        else:
            version = await self.upload_source(spec)
        if development:
            version.version = development_version(spec.version.version, version)
        if config_schema is not None:  # derived from the tool's Config (flnet.cli.contract)
            version.config_schema.Clear()
            version.config_schema.update(config_schema)
        return await self.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(
                parent=f"{self.tenant}/tools/{spec.name}", tool_version=version
            )
        )

    @staticmethod
    async def _build_image(
        spec: ToolSpec, progress: Callable[[str], None] | None
    ) -> tp.ToolVersion:
        if spec.image_build is None:
            raise ToolSpecError(
                f'tool {spec.name} names no image build context: add `image: {{build: "."}}` '
                "to its tool.yaml"
            )
        # Image builds need the platform's Docker client (aiodocker): loaded only for them.
        from flnet.images import ImageError, build_tool_image  # noqa: PLC0415

        try:
            built = await build_tool_image(
                spec.image_build.context,
                name=spec.name,
                version=spec.version.version,
                entrypoint=spec.entrypoint,
                progress=progress,
            )
        except ImageError as e:
            raise ToolSpecError(f"cannot build the image of {spec.name}: {e}") from e
        return spec.with_image(built.reference, built.digest)

    async def upload_source(self, spec: ToolSpec) -> tp.ToolVersion:
        """Packs the tool's folder (flnet.sources.pack_source) and uploads it; returns the
        version running that archive. The same files give the same archive, and so the same
        contract: registering an unchanged tool again is a no-op."""
        with tempfile.TemporaryDirectory(prefix="flnet-source-") as scratch:
            archive = Path(scratch) / f"{spec.name}-{spec.version.version}.tar.gz"

            def pack() -> None:
                with archive.open("wb") as f:
                    pack_source(spec.directory, f)

            await asyncio.to_thread(pack)
            uploaded = await self.upload(archive, SOURCE_MEDIA_TYPE)
        version = spec.with_source(uploaded.name)
        version.source.sha256 = uploaded.sha256  # as the control plane records it
        return version

    async def list_tools(self) -> list[tp.Tool]:
        tools: list[tp.Tool] = []
        token = ""
        while True:
            page = await self.tools.ListTools(
                ts.ListToolsRequest(parent=self.tenant, page_token=token)
            )
            tools += page.tools
            token = page.next_page_token
            if not token:
                return tools

    async def get_tool(self, name: str) -> tuple[tp.Tool, list[tp.ToolVersion]]:
        full = name if name.startswith("tenants/") else f"{self.tenant}/tools/{name}"
        tool = (await self.tools.GetTool(ts.GetToolRequest(name=full))).tool
        versions = await self.tools.ListToolVersions(ts.ListToolVersionsRequest(parent=full))
        return tool, list(versions.tool_versions)

    def tool_version_name(self, tool: str) -> str:
        """'csv-stats@1.0.0' or a full name."""
        if tool.startswith("tenants/"):
            return tool
        name, _, version = tool.partition("@")
        return f"{self.tenant}/tools/{name}/versions/{version}"

    async def latest_version(self, tool: str) -> str:
        if "@" in tool or tool.startswith("tenants/"):
            return self.tool_version_name(tool)
        _, versions = await self.get_tool(tool)
        if not versions:
            raise ValueError(f"tool {tool} has no versions")
        return versions[0].name

    # artifacts
    async def upload(self, path: Path, media_type: str = "") -> ap.Artifact:
        """Streams a file to the control plane; its sha256 is checked on arrival."""
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while data := f.read(CHUNK_BYTES):
                digest.update(data)

        async def messages() -> AsyncIterator[asv.UploadInputRequest]:
            yield asv.UploadInputRequest(
                metadata=asv.UploadMetadata(
                    parent=self.tenant,
                    filename=path.name,
                    media_type=media_type,
                    sha256=digest.hexdigest(),
                )
            )
            with path.open("rb") as f:
                while data := f.read(CHUNK_BYTES):
                    yield asv.UploadInputRequest(chunk=data)

        return (await self.artifacts.UploadInput(messages())).artifact

    async def resolve_inputs(self, pairs: Mapping[str, str]) -> dict[str, str]:
        """NAME -> PATH uploads the file; NAME -> tenants/.../artifacts/... is used as is."""
        inputs: dict[str, str] = {}
        for name, value in pairs.items():
            if value.startswith("tenants/"):
                inputs[name] = value
            else:
                inputs[name] = (await self.upload(Path(value))).name
        return inputs

    async def download(self, artifact: str, target: Path) -> str:
        """Streams an artifact into `target` and returns the sha256 of what was written."""
        digest = hashlib.sha256()
        tmp = target.with_name(target.name + ".part")
        with tmp.open("wb") as f:
            async for msg in self.artifacts.DownloadArtifact(
                asv.DownloadArtifactRequest(name=artifact)
            ):
                f.write(msg.data)
                digest.update(msg.data)
        tmp.replace(target)
        return digest.hexdigest()

    async def outputs(self, run: str) -> list[ap.Artifact]:
        res = await self.artifacts.ListArtifacts(
            asv.ListArtifactsRequest(parent=await self.run_name(run), page_size=1000)
        )
        return list(res.artifacts)

    # runs
    async def submit(
        self,
        tool_version: str,
        config: Mapping[str, Any],
        inputs: Mapping[str, str],
        *,
        dev_session: bool = False,
    ) -> rs.CreateRunResponse:
        run = rp.Run(
            tool_version=tool_version,
            config=dict_to_struct(config),
            inputs=[rp.RunInput(name=k, artifact=v) for k, v in inputs.items()],
            dev_session=dev_session,
        )
        return await self.runs.CreateRun(
            rs.CreateRunRequest(parent=self.tenant, run=run, request_id=uuid.uuid4().hex)
        )

    async def orchestrators(self) -> list[fp.Orchestrator]:
        return list(
            (await self.fleet.ListOrchestrators(fs.ListOrchestratorsRequest())).orchestrators
        )

    async def quota(self, tenant: str) -> fp.TenantQuota:
        """A tenant's quota ("acme" or "tenants/acme")."""
        name = tenant if tenant.startswith("tenants/") else f"tenants/{tenant}"
        return (await self.fleet.GetTenantQuota(fs.GetTenantQuotaRequest(tenant=name))).quota

    async def set_quota(
        self, tenant: str, runs: int, cpu_millis: int, memory_bytes: int
    ) -> fp.TenantQuota:
        name = tenant if tenant.startswith("tenants/") else f"tenants/{tenant}"
        quota = fp.TenantQuota(
            tenant=name, max_runs=runs, max_cpu_millis=cpu_millis, max_memory_bytes=memory_bytes
        )
        request = fs.UpdateTenantQuotaRequest(quota=quota)
        return (await self.fleet.UpdateTenantQuota(request)).quota

    async def get_run(self, run: str) -> rp.Run:
        return (await self.runs.GetRun(rs.GetRunRequest(name=await self.run_name(run)))).run

    async def list_runs(
        self, tool: str = "", states: Sequence[int] = (), limit: int = 50
    ) -> list[rp.Run]:
        tool_filter = ""
        if tool:
            tool_filter = (
                self.tool_version_name(tool) if "@" in tool else f"{self.tenant}/tools/{tool}"
            )
        res = await self.runs.ListRuns(
            rs.ListRunsRequest(
                parent=self.tenant,
                page_size=limit,
                tool=tool_filter,
                states=[lc.RunState.ValueType(s) for s in states],
            )
        )
        return list(res.runs)

    async def cancel(self, run: str, reason: str) -> rp.Run:
        return (
            await self.runs.CancelRun(
                rs.CancelRunRequest(name=await self.run_name(run), reason=reason)
            )
        ).run

    async def reproduce(self, run: str) -> rp.Run:
        return (
            await self.runs.ReproduceRun(
                rs.ReproduceRunRequest(name=await self.run_name(run), request_id=uuid.uuid4().hex)
            )
        ).run

    async def export(self, run: str, target: Path | None) -> tuple[Path, int]:
        """Streams the run's RO-Crate into `target` (default: the name the server gives, in
        the current directory); returns where, and how many bytes."""
        tmp: Path | None = None
        size = 0
        f = None
        try:
            async for msg in self.runs.ExportRun(
                rs.ExportRunRequest(name=await self.run_name(run))
            ):
                if f is None:
                    target = target or Path(msg.filename or "run.crate.zip")
                    tmp = target.with_name(target.name + ".part")
                    f = tmp.open("wb")
                f.write(msg.data)
                size += len(msg.data)
        finally:
            if f is not None:
                f.close()
        if tmp is None or target is None:
            raise ValueError("the export was empty")
        tmp.replace(target)
        return target, size

    async def wait(self, run: str) -> rp.Run:
        """Until the run ends (its events are followed, not polled); the run as it ended."""
        async for _ in self.watch(run):
            pass
        return await self.get_run(run)

    async def events(self, run: str) -> AsyncIterator[rp.RunEvent]:
        """The run's stored events so far, in order (a page at a time)."""
        name = await self.run_name(run)
        token = ""
        while True:
            page = await self.runs.ListRunEvents(
                rs.ListRunEventsRequest(parent=name, page_size=10_000, page_token=token)
            )
            for event in page.events:
                yield event
            token = page.next_page_token
            if not token:
                return

    async def watch(
        self, run: str, after: int = 0, reconnect_for: float = 60.0
    ) -> AsyncIterator[rp.RunEvent]:
        """A run's events until it ends. When the control plane goes away (a restart), the
        stream resumes after the last event seen, for up to `reconnect_for` seconds."""
        name = await self.run_name(run)
        lost_since: float | None = None
        while True:
            try:
                async for res in self.runs.WatchRun(
                    rs.WatchRunRequest(name=name, after_sequence=after)
                ):
                    lost_since = None
                    for event in res.events:
                        after = event.sequence
                        yield event
                return
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                now = time.monotonic()
                lost_since = lost_since or now
                if now - lost_since > reconnect_for:
                    raise
                await asyncio.sleep(0.5)

    async def dev_config(self, run: str, values: Mapping[str, Any]) -> rp.Run:
        return (
            await self.runs.UpdateDevConfig(
                rs.UpdateDevConfigRequest(
                    name=await self.run_name(run), config=dict_to_struct(values)
                )
            )
        ).run

    async def dev_test(self, run: str) -> rp.Run:
        return (
            await self.runs.StartDevTest(rs.StartDevTestRequest(name=await self.run_name(run)))
        ).run


def tenant_of(token: str) -> str:
    """The tenant claim ($FLNET_OIDC_TENANT_CLAIM, default `tenant`) of an access token,
    read without verification (the server verifies; this only names resources)."""
    claim = os.environ.get("FLNET_OIDC_TENANT_CLAIM") or "tenant"
    value = unverified_claims(token).get(claim)
    if not isinstance(value, str) or not value:
        raise ValueError(f"the access token names no tenant (claim {claim!r}): pass --tenant")
    return value


def compare_outputs(original: rp.Run, again: rp.Run) -> list[dict[str, Any]]:
    """Each output of either run: its sha256 in both, and whether they match."""
    first = {o.output_name: o.sha256 for o in original.outputs}
    second = {o.output_name: o.sha256 for o in again.outputs}
    return [
        {
            "output": name,
            "original": first.get(name, ""),
            "reproduced": second.get(name, ""),
            "match": first.get(name) == second.get(name),
        }
        for name in sorted(first.keys() | second.keys())
    ]
