"""An output over its declared limit is the tool's fault, named at once: the control plane's
RESOURCE_EXHAUSTED carries no RetryInfo, so the engine does not retry it until the deadline."""

from __future__ import annotations

import time

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.toolspec import load_tool_spec
from tests.conftest import TENANT
from tests.integration.conftest import BEHAVE, Stack


async def test_an_output_over_its_limit_ends_the_run_at_once(stack: Stack) -> None:
    spec = load_tool_spec(BEHAVE)
    result = next(o for o in spec.version.outputs if o.name == "result")
    result.max_size_bytes = 4  # the behave tool writes a JSON document of more
    version = (
        await stack.api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(
                parent=f"{TENANT}/tools/small-output",
                tool_version=await stack.api.with_source(spec),
            )
        )
    ).tool_version
    began = time.monotonic()
    run = await stack.submit(version.name, mode="finish")
    done = await stack.wait_state(run.name, within=60)
    assert done.state == lc.RUN_STATE_ERROR
    assert done.error.reason == lc.ERROR_REASON_OUTPUT_INVALID
    assert "exceeds its limit of 4" in done.error.message
    assert time.monotonic() - began < 20  # not retried until a deadline
