"""The FLNet engine (DESIGN.md §4): it drives one run over its own Connect session, proposing
the transitions the control plane records. `run_engine` is its entry point (`python -m
flnet.runtime`, `flnet dev connect`): it loads the tool, opens the channel, handles signals and
drives the run with a RunDriver (run_driver.py), which wires these parts together:

    run_setup       what the engine knows of the run (tool, spec, configuration)
    run_lifecycle   the steps from Welcome to a terminal state
    commands        Start, Cancel, UpdateConfig, Execute
    dev_session     the runs a development session executes, each with a child driver
    tool_thread     main(ctx) in a worker thread
    staging         inputs in, outputs out
    interrupts      a cancel (with its grace period) and the run's end on the control plane
    reporting       proposed transitions and the engine's own log lines
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from flnet.channels import insecure_channel

from .errors import ToolLoadError
from .exit_codes import EXIT_USAGE
from .loader import ToolFunction, load_entrypoint
from .run_driver import RunDriver
from .settings import EngineConfig, EngineConfigError
from .telemetry import install_router

log = logging.getLogger(__name__)


async def run_engine(config: EngineConfig) -> int:
    """Drives `config.run` to a terminal state. Returns the exit code: 0 once the control
    plane has acknowledged a terminal state; non-zero otherwise (2: unusable settings)."""
    try:
        config.read_credential()
    except (OSError, EngineConfigError) as exc:
        log.error("cannot read the run credential: %s", exc)
        return EXIT_USAGE
    undo_router = install_router(config.log_level)
    tool: ToolFunction | ToolLoadError
    if config.tool is not None:
        tool = config.tool
    else:
        try:
            tool = load_entrypoint(config.tool_dir, config.entrypoint)
        except ToolLoadError as exc:
            log.error("cannot load %s from %s: %s", config.entrypoint, config.tool_dir, exc)
            tool = exc
    channel = insecure_channel(config.control_address)
    loop = asyncio.get_running_loop()
    io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flnet-io")
    installed: list[int] = []
    try:
        driver = RunDriver(
            run=config.run,
            credential=config.read_credential,
            channel=channel,
            config=config,
            tool=tool,
            input_dir=config.input_dir,
            output_dir=config.output_dir,
            io=io,
        )
        if config.handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(signum, driver.on_signal, int(signum))
                    installed.append(signum)
                except (RuntimeError, ValueError, NotImplementedError):
                    log.debug("cannot handle signal %d here", signum)
        return await driver.drive()
    finally:
        for installed_signal in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(installed_signal)
        await channel.close()
        io.shutdown(wait=False, cancel_futures=True)
        undo_router()
