"""ToolService against a real control plane."""

from __future__ import annotations

import hashlib

import grpc
import pytest

from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.toolspec import load_tool_spec
from tests.conftest import FIXTURES, TENANT, Clients, packed
from tests.status import reason, violations

NOOP = FIXTURES / "tools" / "noop"


async def test_register_is_idempotent_and_versions_are_immutable(api: Clients) -> None:
    first = await api.register(NOOP)
    assert first.name == f"{TENANT}/tools/noop/versions/1.0.0"
    assert len(first.contract_sha256) == 64
    assert first.source.sha256 == hashlib.sha256(packed(NOOP)).hexdigest()
    spec = load_tool_spec(NOOP)
    again = await api.tools.CreateToolVersion(
        ts.CreateToolVersionRequest(
            parent=f"{TENANT}/tools/noop", tool_version=await api.with_source(spec)
        )
    )
    assert not again.created
    assert again.tool_version.contract_sha256 == first.contract_sha256

    spec.version.description = "changed behaviour, same version"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(
                parent=f"{TENANT}/tools/noop", tool_version=await api.with_source(spec)
            )
        )
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_get_and_list(api: Clients) -> None:
    await api.register(NOOP)
    tool = (await api.tools.GetTool(ts.GetToolRequest(name=f"{TENANT}/tools/noop"))).tool
    assert tool.versions == ["1.0.0"]
    listed = await api.tools.ListTools(ts.ListToolsRequest(parent=TENANT))
    assert [t.name for t in listed.tools] == [f"{TENANT}/tools/noop"]
    versions = await api.tools.ListToolVersions(
        ts.ListToolVersionsRequest(parent=f"{TENANT}/tools/noop")
    )
    assert [v.version for v in versions.tool_versions] == ["1.0.0"]


async def test_pagination_walks_every_tool_once(api: Clients) -> None:
    spec = load_tool_spec(NOOP)
    for i in range(7):
        await api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(
                parent=f"{TENANT}/tools/t{i}", tool_version=await api.with_source(spec)
            )
        )
    seen: list[str] = []
    token = ""
    while True:
        page = await api.tools.ListTools(
            ts.ListToolsRequest(parent=TENANT, page_size=3, page_token=token)
        )
        seen += [t.name for t in page.tools]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"{TENANT}/tools/t{i}" for i in range(7)]


async def test_unknown_tool_is_not_found(api: Clients) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.tools.GetTool(ts.GetToolRequest(name=f"{TENANT}/tools/nope"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.tools.GetToolVersion(
            ts.GetToolVersionRequest(name=f"{TENANT}/tools/nope/versions/1")
        )
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_page_token_is_invalid_argument(api: Clients) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.tools.ListTools(ts.ListToolsRequest(parent=TENANT, page_token="garbage!"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e.value) == ["page_token"]


async def test_malformed_names_are_invalid_argument(api: Clients) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.tools.GetTool(ts.GetToolRequest(name="tools/../etc"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e.value) == ["name"]


async def test_invalid_contract_lists_every_violation(api: Clients) -> None:
    spec = load_tool_spec(NOOP)
    spec.version.version = "Not A Version"
    spec.version.outputs[0].name = "../escape"
    spec.version.source.entrypoint = "../logreg/tool.py:main"  # outside the tool
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(
                parent=f"{TENANT}/tools/noop", tool_version=await api.with_source(spec)
            )
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(e.value) == "INVALID_ARGUMENT"
    assert set(violations(e.value)) == {
        "tool_version.version",
        "tool_version.outputs[0].name",
        "tool_version.source.entrypoint",
    }


async def test_invalid_json_schema_is_rejected(api: Clients) -> None:
    spec = load_tool_spec(NOOP)
    spec.version.config_schema.update({"type": "no-such-type"})
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(
                parent=f"{TENANT}/tools/noop", tool_version=await api.with_source(spec)
            )
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e.value)[0].startswith("tool_version.config_schema")
