"""Config schemas' regular expressions run in linear time (control.patterns): a pattern that
backtracks exponentially in Python's `re` costs nothing special, and what RE2 cannot
evaluate is refused when the tool version is registered."""

from __future__ import annotations

import time

import grpc
import pytest

from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.control.validation import check_schema, validate_config
from flnet.errors import InvalidArgument
from flnet.structs import dict_to_struct
from flnet.toolspec import load_tool_spec
from tests.conftest import FIXTURES, TENANT, Clients, request_id
from tests.status import violations

EXPONENTIAL = "(a+)+$"  # in `re`, each further "a" before the "b" doubles the time


def test_an_exponential_pattern_is_evaluated_in_linear_time() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "pattern": EXPONENTIAL}},
    }
    began = time.perf_counter()
    with pytest.raises(InvalidArgument) as e:
        validate_config(schema, {"name": "a" * 5000 + "b"})
    assert time.perf_counter() - began < 0.5
    assert [v.field for v in e.value.violations] == ["run.config.name"]
    assert validate_config(schema, {"name": "aaa"}) == {"name": "aaa"}


def test_pattern_properties_and_additional_properties_use_it_too() -> None:
    schema = {
        "type": "object",
        "patternProperties": {EXPONENTIAL: {"type": "integer"}},
        "additionalProperties": False,
    }
    began = time.perf_counter()
    with pytest.raises(InvalidArgument) as e:
        validate_config(schema, {"a" * 5000 + "b": 1, "aa": "not an integer"})
    assert time.perf_counter() - began < 0.5
    fields = {v.field for v in e.value.violations}
    assert fields == {"run.config.aa", f"run.config.{'a' * 5000}b"}
    assert validate_config(schema, {"aaa": 3}) == {"aaa": 3}


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"type": "string", "pattern": r"(a)\1"}, "schema.pattern"),
        ({"properties": {"x": {"pattern": "(?=a)a"}}}, "schema.properties.x.pattern"),
        ({"patternProperties": {"(?<!b)a": {}}}, "schema.patternProperties['(?<!b)a']"),
    ],
)
def test_what_re2_cannot_evaluate_is_refused_at_registration(
    schema: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument) as e:
        check_schema(schema, "schema")
    assert [v.field for v in e.value.violations] == [field]
    assert "RE2" in e.value.message


def test_pattern_properties_with_unevaluated_properties_is_refused() -> None:
    schema = {"patternProperties": {"^a": {}}, "unevaluatedProperties": False}
    with pytest.raises(InvalidArgument, match="cannot be used together"):
        check_schema(schema, "schema")


async def test_a_run_whose_value_would_backtrack_is_answered_at_once(api: Clients) -> None:
    spec = load_tool_spec(FIXTURES / "tools" / "noop")
    properties = spec.version.config_schema["properties"]
    properties["label"] = {"type": "string", "pattern": EXPONENTIAL}  # type: ignore[index]
    version = (
        await api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(
                parent=f"{TENANT}/tools/redos", tool_version=await api.with_source(spec)
            )
        )
    ).tool_version
    data = await api.upload(b"a,b\n1,2\n")
    began = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(
            rs.CreateRunRequest(
                parent=TENANT,
                request_id=request_id(),
                run=rp.Run(
                    tool_version=version.name,
                    config=dict_to_struct({"rate": 0.5, "label": "a" * 40 + "b"}),
                    inputs=[rp.RunInput(name="data", artifact=data)],
                ),
            )
        )
    assert time.perf_counter() - began < 1.0  # `re` would take hours
    assert violations(e.value) == ["run.config.label"]
