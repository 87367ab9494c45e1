"""Whose tenant the CLI names resources in."""

from __future__ import annotations

import pytest

from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_pb2 as rp
from flnet.client import compare_outputs, tenant_of
from tests.conftest import FIXTURES
from tests.identity import IDENTITY

NOOP = FIXTURES / "tools" / "noop"


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
