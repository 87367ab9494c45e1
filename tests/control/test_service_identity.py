"""How the control plane gets its own credentials, and what happens when it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.client import compare_outputs, tenant_of
from flnet.control.app import ControlApp
from flnet.control.orchestration import CREDENTIAL_FAILED
from flnet.control.settings import ControlSettings
from flnet.oauth import LoginError
from flnet.structs import dict_to_struct
from tests.conftest import FIXTURES, TENANT, clients_for, control_settings, request_id
from tests.identity import IDENTITY

NOOP = FIXTURES / "tools" / "noop"


def test_an_unreadable_client_secret_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLNET_OIDC_ISSUER", "https://issuer.example")
    monkeypatch.setenv("FLNET_CONTROL_CLIENT_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="FLNET_CONTROL_CLIENT_SECRET_FILE: No such file"):
        ControlSettings.from_env()
    (tmp_path / "secret").write_text("s3cret\n")
    monkeypatch.setenv("FLNET_CONTROL_CLIENT_SECRET_FILE", str(tmp_path / "secret"))
    assert ControlSettings.from_env().client_secret == "s3cret"


async def test_an_orchestrator_without_client_credentials_is_refused_at_start(
    tmp_path: Path,
) -> None:
    settings = control_settings(tmp_path, orchestrator_address="127.0.0.1:9")
    app = ControlApp(settings, keys=IDENTITY.keys())  # no token source, no client
    with pytest.raises(ValueError, match="FLNET_CONTROL_CLIENT_ID"):
        await app.start("127.0.0.1:0")
    await app.stop(0)  # a failed start closed what it opened: stopping is harmless


async def test_a_run_whose_launch_credential_fails_ends_in_error(tmp_path: Path) -> None:
    """The issuer being down is a launch that cannot reach an orchestrator: the run waits
    (control.runs.launching), and ends, naming why, once it cannot wait any longer."""

    async def unavailable() -> str:
        raise LoginError("the issuer is down")

    settings = control_settings(tmp_path, orchestrator_address="127.0.0.1:9", launch_patience=1.0)
    app = ControlApp(settings, keys=IDENTITY.keys(), orchestrator_token=unavailable)
    await app.start("127.0.0.1:0")
    api = clients_for(f"127.0.0.1:{app.port}")
    try:
        version = await api.register(NOOP)
        data = await api.upload(b"a\n1\n")
        created = await api.runs.CreateRun(
            rs.CreateRunRequest(
                parent=TENANT,
                request_id=request_id(),
                run=rp.Run(
                    tool_version=version.name,
                    config=dict_to_struct({"rate": 0.5}),
                    inputs=[rp.RunInput(name="data", artifact=data)],
                ),
            )
        )
        run = (await api.runs.GetRun(rs.GetRunRequest(name=created.run.name))).run
        async for res in api.runs.WatchRun(rs.WatchRunRequest(name=run.name)):
            if any(
                e.HasField("state_change") and lifecycle.is_terminal(e.state_change.to_state)
                for e in res.events
            ):
                break
        run = (await api.runs.GetRun(rs.GetRunRequest(name=run.name))).run
        assert run.state == lc.RUN_STATE_ERROR
        assert "could launch" in run.error.message  # at its deadline, or its patience's end
        assert CREDENTIAL_FAILED in run.error.message
        assert "the issuer is down" in run.error.message
    finally:
        await api.channel.close()
        await app.stop(0.5)


def test_the_cli_names_resources_in_its_tokens_tenant() -> None:
    assert tenant_of(IDENTITY.token(tenant="acme")) == "acme"
    with pytest.raises(ValueError, match=r"names no tenant .*pass --tenant"):
        tenant_of(IDENTITY.token(tenant=None))
    with pytest.raises(ValueError, match="names no tenant"):
        tenant_of("opaque-token")


def test_reproduction_is_compared_output_by_output() -> None:
    def run(**outputs: str) -> rp.Run:
        return rp.Run(outputs=[ap.Artifact(output_name=k, sha256=v) for k, v in outputs.items()])

    assert compare_outputs(run(model="aa", report="bb"), run(model="aa", report="cc")) == [
        {"output": "model", "original": "aa", "reproduced": "aa", "match": True},
        {"output": "report", "original": "bb", "reproduced": "cc", "match": False},
    ]
    assert compare_outputs(run(model="aa"), run())[0]["match"] is False  # missing output
