"""Which calls clients repeat after UNAVAILABLE (flnet.channels.RETRY_SAFE): only methods
that exist, and none whose repetition would do a thing twice."""

from __future__ import annotations

from google.protobuf import descriptor_pool

from flnet.api.control.v1 import (  # noqa: F401 - their services register in the pool
    artifact_service_pb2,
    audit_service_pb2,
    run_service_pb2,
    tool_service_pb2,
)
from flnet.api.orchestrator.v1 import orchestrator_service_pb2  # noqa: F401
from flnet.api.runtime.v1 import runtime_service_pb2  # noqa: F401
from flnet.channels import RETRY_SAFE

NOT_SAFE = {
    ("flnet.api.control.v1.ArtifactService", "FinishUpload"),  # a repeat: "already finished"
    ("flnet.api.control.v1.RunService", "StartDevTest"),  # a second test run
    ("flnet.api.control.v1.RunService", "UpdateDevConfig"),  # a second config change
    ("flnet.api.runtime.v1.RuntimeService", "Connect"),  # the engine's session reconnects
}


def test_retried_methods_exist_and_exclude_those_not_safe_to_repeat() -> None:
    pool = descriptor_pool.Default()
    retried = set()
    for service, methods in RETRY_SAFE.items():
        found = {m.name for m in pool.FindServiceByName(service).methods}
        assert set(methods) <= found, service
        retried |= {(service, m) for m in methods or found}
    assert not retried & NOT_SAFE
    assert {s for s, _ in NOT_SAFE} <= set(RETRY_SAFE)  # their services are listed at all
