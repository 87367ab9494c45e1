"""`python -m flnet.runtime`: the engine process the orchestrator starts. Settings come from
the FLNET_* environment variables (see flnet.runtime.settings); the exit code is 0 once the
control plane has acknowledged a terminal state of the run, non-zero otherwise."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from flnet.heap import settle_heap

from .engine import run_engine
from .settings import OPTIONAL_ENV, REQUIRED_ENV, EngineConfig, EngineConfigError
from .standby import ASSIGNMENT_ENV, AssignmentError, wait_for_assignment
from .telemetry import NotFromToolThreads
from .tool_thread import live_tool_threads


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(NotFromToolThreads())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _usage() -> str:
    lines = ["environment:"]
    lines += [f"  {name:<24} {what}" for name, what in REQUIRED_ENV.items()]
    lines += [f"  {name:<24} (optional) {what}" for name, what in OPTIONAL_ENV.items()]
    return "\n".join(lines)


def main() -> int:
    env = dict(os.environ)
    try:
        if fifo := env.pop(ASSIGNMENT_ENV, ""):  # a standby engine: its run comes later
            assigned = wait_for_assignment(fifo)
            env.update(assigned)
            os.environ.update(assigned)  # as a cold engine's, for the tool to see
        config = EngineConfig.from_env(env)
    except (EngineConfigError, AssignmentError, OSError) as exc:
        print(f"flnet.runtime: error: {exc}\n{_usage()}", file=sys.stderr)
        return 2
    _configure_logging()
    settle_heap()
    return asyncio.run(run_engine(config))


if __name__ == "__main__":
    code = main()
    if live_tool_threads():
        # A tool that ignored its cancel is still running: end the process without waiting.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
