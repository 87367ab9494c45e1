"""The control plane (which mints run names), the orchestrator and the engine accept and refuse
the same run names: all three parse them with the contracts' grammar (flnet.resource_names).
Before, each had rules of its own; the comments say who disagreed."""

from __future__ import annotations

from pathlib import Path

import pytest

from flnet import resource_names
from flnet.control import names
from flnet.errors import InvalidArgument
from flnet.orchestrator.backend import RunName
from flnet.orchestrator.errors import Reason
from flnet.runtime import EngineConfig, EngineConfigError
from flnet.runtime.settings import RUN_NAME

ACCEPTED = [
    "tenants/acme/runs/r-1",
    "tenants/a/runs/b",
    "tenants/0/runs/9",
    "tenants/a-b/runs/c-d",
    "tenants/acme/runs/0f3a9c1e2b7d4a5f6c8e",  # what the control plane mints (uuid4 hex[:20])
    f"tenants/{'a' * 63}/runs/{'b' * 63}",
]
REFUSED = [
    # Refused by all three before.
    "",
    "runs/r1",
    "tenants/acme",
    "tenants/acme/runs/",
    "tenants//runs/r",
    "tenants/acme/runs/r1/",
    "tenants/acme/runs/r1/x",
    "/tenants/acme/runs/r1",
    "tenants/acme/tools/r1",
    "tenants/a/runs/../../etc",
    "tenants/acme/runs/r 1",
    " tenants/acme/runs/r1",
    # Accepted by the orchestrator (upper case, "." in tenant and run ids, "_" in run ids, a
    # trailing "-", run ids up to 128 characters) and by the engine.
    "tenants/Acme/runs/r1",
    "tenants/acme/runs/R1",
    "tenants/a.b/runs/r1",
    "tenants/acme/runs/r.1",
    "tenants/acme/runs/r_1",
    "tenants/acme-/runs/r1",
    "tenants/acme/runs/r-",
    f"tenants/acme/runs/{'b' * 64}",
    # Accepted by the engine only (any ids without "/" or white space).
    "tenants/a_b/runs/x",
    f"tenants/{'a' * 64}/runs/r1",
    "tenants/acme/runs/-r",
    "tenants/acme/runs/ü",
    "tenants/acme/runs/..",
    # Accepted by the control plane only: its patterns ended with "$", which lets a trailing
    # newline through.
    "tenants/acme/runs/r1\n",
]


def _control(name: str) -> bool:
    try:
        names.parse_run(name)
    except InvalidArgument as e:
        assert e.violations == [("name", "expected tenants/{tenant}/runs/{run}")]
        return False
    return True


def _orchestrator(name: str) -> bool:
    try:
        RunName.parse(name)
    except InvalidArgument as e:
        assert e.reason == Reason.RUN_NAME_INVALID and [v.field for v in e.violations] == ["run"]
        assert "is not a run name 'tenants/{tenant}/runs/{run}'" in e.message
        return False
    return True


def _engine(name: str) -> bool:
    accepted = bool(RUN_NAME.fullmatch(name))  # the engine checks Execute commands with it
    try:
        EngineConfig(run=name, control_address="x:1", tool_dir=Path("."), credential="t")
    except EngineConfigError as e:
        assert "is not 'tenants/{tenant}/runs/{run}'" in str(e)
        assert not accepted
        return False
    assert accepted
    return True


@pytest.mark.parametrize("name", ACCEPTED + REFUSED)
def test_the_three_components_agree_on_run_names(name: str) -> None:
    expected = name in ACCEPTED
    assert (resource_names.RUN.parse(name) is not None) == expected
    assert {
        "control": _control(name),
        "orchestrator": _orchestrator(name),
        "engine": _engine(name),
    } == {"control": expected, "orchestrator": expected, "engine": expected}


@pytest.mark.parametrize("name", ACCEPTED)
def test_the_three_components_read_the_same_ids(name: str) -> None:
    tenant, run = names.parse_run(name)
    parsed = RunName.parse(name)
    assert (parsed.tenant, parsed.run_id) == (tenant, run)
    assert str(parsed) == names.run_name(tenant, run) == name
    assert EngineConfig(run=name, control_address="x:1", tool_dir=Path("."), credential="t").run
