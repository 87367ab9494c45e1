"""Conversions between the contract's messages and the domain types, so that the control
link stays a thin shell. Malformed fields raise InvalidArgument naming the field."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from google.protobuf import timestamp_pb2

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.server.ranges import duration_seconds

from .backend import (
    Container,
    Image,
    LaunchSpec,
    Limits,
    LocalSource,
    RunName,
)
from .errors import InvalidArgument, Reason


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def container_to_proto(container: Container) -> pb.RunContainer:
    return pb.RunContainer(
        run=str(container.run),
        container_id=container.container_id,
        backend=container.backend,
        state=pb.ContainerState.Value(f"CONTAINER_STATE_{container.state.name}"),
        exit_cause=pb.ExitCause.Value(f"EXIT_CAUSE_{container.exit_cause.name}"),
        exit_code=container.exit_code,
        start_time=_timestamp(container.start_time),
        end_time=_timestamp(container.end_time),
        deadline_time=_timestamp(container.deadline_time),
        last_output_lines=container.last_output_lines,
    )


def launch_spec_from_proto(request: pb.LaunchRunRequest) -> LaunchSpec:
    run = RunName.parse(request.run)
    # The tenant id ("acme"); its resource name ("tenants/acme") is accepted too.
    if request.tenant and request.tenant.removeprefix("tenants/") != run.tenant:
        raise InvalidArgument.field(
            "tenant", f"{request.tenant!r} is not the tenant of {run}", Reason.TENANT_MISMATCH
        )
    artifact: LocalSource | Image
    which = request.WhichOneof("artifact")
    if which == "source_path" and request.source_path:
        artifact = LocalSource(Path(request.source_path))
    elif which == "image_digest" and request.image_digest:
        artifact = Image(request.image_digest)
    else:
        raise InvalidArgument.field(
            "source_path", "source_path or image_digest is required", Reason.ARTIFACT_MISSING
        )
    deadline: float | None = None
    if request.HasField("deadline"):
        deadline = duration_seconds(request.deadline, "deadline", Reason.DEADLINE_INVALID) or None
    limits = request.limits
    return LaunchSpec(
        run=run,
        artifact=artifact,
        entrypoint=request.entrypoint,
        control_address=request.control_address,
        credential=request.credential,
        limits=Limits(
            cpu_millis=limits.cpu_millis,
            memory_bytes=limits.memory_bytes,
            pids=limits.pids,
            open_files=limits.open_files,
            disk_bytes=limits.disk_bytes,
        ),
        deadline=deadline,
        environment=dict(request.environment),
    )


def grace_from_proto(request: pb.StopRunRequest) -> float | None:
    """The grace period in seconds; None (the backend default) when unset."""
    if not request.HasField("grace_period"):
        return None
    return duration_seconds(request.grace_period, "grace_period", Reason.GRACE_PERIOD_INVALID)
