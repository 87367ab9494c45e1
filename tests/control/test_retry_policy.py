"""Which calls clients repeat after UNAVAILABLE (flnet.channels.RETRY_SAFE, derived from the
contracts' idempotency levels): every RPC is either declared safe to repeat or listed here
with the reason it is not, so a new RPC cannot slip in without that decision."""

from __future__ import annotations

import json

from flnet.channels import CLIENT_OPTIONS, RETRY_SAFE, SERVICES

NOT_SAFE = {
    ("flnet.api.control.v1.ArtifactService", "StartUpload"),  # a second upload
    ("flnet.api.control.v1.ArtifactService", "FinishUpload"),  # a repeat: "already finished"
    ("flnet.api.control.v1.RunService", "StartDevTest"),  # a second test run
    ("flnet.api.control.v1.RunService", "UpdateDevConfig"),  # a second config change
    ("flnet.api.runtime.v1.RuntimeService", "Connect"),  # the engine's session reconnects
    ("flnet.api.orchestrator.v1.SessionService", "Attach"),  # the orchestrator reconnects
}


def test_every_rpc_is_retried_or_listed_as_not_safe_to_repeat() -> None:
    every = {(s.full_name, m.name) for s in SERVICES for m in s.methods}
    retried = {(service, m) for service, methods in RETRY_SAFE.items() for m in methods}
    assert retried | NOT_SAFE == every
    assert not retried & NOT_SAFE


def test_clients_retry_exactly_the_safe_calls() -> None:
    config = json.loads(dict(CLIENT_OPTIONS)["grpc.service_config"])  # type: ignore[arg-type]
    (policy,) = config["methodConfig"]
    named = {(n["service"], n["method"]) for n in policy["name"]}
    assert named == {(s, m) for s, methods in RETRY_SAFE.items() for m in methods}
    assert policy["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
