"""A standby engine (flnet.runtime.standby): it waits on its FIFO, takes the run it is
assigned and nothing else, and fails loudly when the orchestrator sends something else or
goes away without a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flnet.runtime.standby import AssignmentError, wait_for_assignment

RUN = "tenants/acme/runs/r1"


def assign(fifo: Path, data: bytes) -> threading.Thread:
    """Writes `data` to `fifo` once a reader opens it (as the orchestrator hands over)."""

    def write() -> None:
        with open(fifo, "wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=write)
    writer.start()
    return writer


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "assignment"
    os.mkfifo(path, 0o600)
    return path


def test_the_assignment_sets_the_run(fifo: Path) -> None:
    writer = assign(fifo, json.dumps({"FLNET_RUN": RUN}).encode())
    assert wait_for_assignment(str(fifo)) == {"FLNET_RUN": RUN}
    writer.join()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "without a run"),
        (b"{not json", "not JSON"),
        (json.dumps({"FLNET_RUN": RUN, "FLNET_CONTROL_ADDRESS": "evil:1"}).encode(), "only"),
        (json.dumps({"FLNET_RUN": ""}).encode(), "only"),
        (json.dumps([RUN]).encode(), "only"),
    ],
)
def test_anything_but_a_run_is_refused(fifo: Path, data: bytes, words: str) -> None:
    writer = assign(fifo, data)
    with pytest.raises(AssignmentError, match=words):
        wait_for_assignment(str(fifo))
    writer.join()


def test_python_m_flnet_runtime_waits_then_fails_loudly_on_a_bad_assignment(fifo: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLNET_")}
    engine = subprocess.Popen(
        [sys.executable, "-m", "flnet.runtime"],
        env={**env, "FLNET_ASSIGNMENT": str(fifo)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with open(fifo, "wb") as pipe:  # blocks until the engine reads: it waits
            pipe.write(b'{"FLNET_RUN": 1}')
        _, stderr = engine.communicate(timeout=60)
    finally:
        engine.kill()
    assert engine.returncode == 2
    assert "flnet.runtime: error: the assignment may set ['FLNET_RUN'] only" in stderr
