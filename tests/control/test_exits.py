"""What a container's end means for its run (control.runs.supervision.exit_error), and what a
run may write (control.runs.launching.writable_bytes)."""

from __future__ import annotations

import pytest

from flnet.api.common.v1 import io_pb2 as io
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.orchestrator.v1 import orchestrator_pb2 as op
from flnet.control.runs.launching import DEFAULT_SCRATCH_BYTES, writable_bytes
from flnet.control.runs.supervision import exit_error
from flnet.control.store import RunRow

R = lc.ErrorReason


def row(*input_sizes: int) -> RunRow:
    spec = rp.Run(
        inputs=[rp.RunInput(name=f"i{n}", size_bytes=s) for n, s in enumerate(input_sizes)]
    )
    return RunRow(
        id="r1", tenant="acme", state=lc.RUN_STATE_RUNNING, spec=spec, error=None,
        cancellation=None, progress=None, last_sequence=1, last_batch=0, create_us=0,
        update_us=0, start_us=None, end_us=None, deadline_us=None, credential_sha256="",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("cause", "code", "reason", "words"),
    [
        (op.EXIT_CAUSE_PIDS_LIMIT_EXCEEDED, -6, R.ERROR_REASON_PIDS_LIMIT_EXCEEDED, "pids limit"),
        (op.EXIT_CAUSE_DISK_LIMIT_EXCEEDED, 1, R.ERROR_REASON_DISK_LIMIT_EXCEEDED, "writable"),
        (op.EXIT_CAUSE_OOM_KILLED, -9, R.ERROR_REASON_OOM_KILLED, "memory limit"),
        (op.EXIT_CAUSE_EXITED, 3, R.ERROR_REASON_EXIT_NONZERO, "exited with code 3"),
        (op.EXIT_CAUSE_SIGNALED, -9, R.ERROR_REASON_EXIT_NONZERO, "signal 9"),
        (op.EXIT_CAUSE_VANISHED, 0, R.ERROR_REASON_LOST, "restarted orchestrator"),
    ],
)
def test_an_exit_names_the_limit_it_hit(cause: int, code: int, reason: int, words: str) -> None:
    container = op.RunContainer(
        exit_cause=op.ExitCause.ValueType(cause), exit_code=code, container_id="c1"
    )
    error = exit_error(container, row())
    assert error.reason == reason
    assert words in error.message
    assert error.context["exit_cause"] == op.ExitCause.Name(op.ExitCause.ValueType(cause))


def test_an_end_without_a_cause_states_its_real_exit_code() -> None:
    error = exit_error(op.RunContainer(exit_code=-9), row())
    assert "exit code -9" in error.message


def test_what_a_run_may_write_adds_inputs_outputs_and_scratch() -> None:
    version = tp.ToolVersion(
        outputs=[io.IoSpec(name="a", max_size_bytes=1000), io.IoSpec(name="b")],
        resources=tp.Resources(scratch_bytes=500),
    )
    assert writable_bytes(row(10, 20), version, output_default=7000) == 30 + 1000 + 7000 + 500
    version.resources.scratch_bytes = 0
    assert writable_bytes(row(), version, 7000) == 8000 + DEFAULT_SCRATCH_BYTES
