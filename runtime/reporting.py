"""What the engine tells the control plane about its run: the transitions it proposes and its
own log lines. Both travel in the sequenced telemetry batches, so they are ordered with the
tool's logs and survive reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.runtime.v1 import runtime_service_pb2 as rt

from .errors import format_traceback
from .exit_codes import EXIT_FAILED, EXIT_OK
from .session import Session
from .telemetry import LOG, Batcher

log = logging.getLogger(__name__)

S = lc.RunState


class RunReporter:
    """Proposes one run's transitions and sends the engine's log lines with its telemetry."""

    def __init__(
        self, *, run: str, batcher: Batcher, session: Session, flush_timeout: float
    ) -> None:
        self.run = run
        # The last non-terminal state: the phase of an error of the engine itself.
        self.phase: int = S.RUN_STATE_PENDING
        self._batcher = batcher
        self._session = session
        self._flush_timeout = flush_timeout
        self._terminal_proposed = False

    @property
    def terminal_proposed(self) -> bool:
        return self._terminal_proposed

    @property
    def recorded_state(self) -> int:
        """The run's last state the control plane recorded, as far as the session knows."""
        return self._session.recorded_state

    def propose(
        self,
        state: int,
        *,
        error: lc.RunError | None = None,
        message: str = "",
        source_sha256: str = "",
    ) -> int:
        """Proposes a transition after everything buffered so far; returns its sequence."""
        transition = rt.Transition(
            to_state=state,  # type: ignore[arg-type]
            message=message,
            source_sha256=source_sha256,
        )
        if error is not None:
            transition.error.CopyFrom(error)
        if lifecycle.is_terminal(state):
            self._terminal_proposed = True
        else:
            self.phase = state
        log.info(
            "run %s: proposing %s%s",
            self.run,
            lifecycle.state_name(state),
            f" ({lifecycle.reason_name(error.reason)}: {error.message})" if error else "",
        )
        return self._batcher.propose(transition)

    async def terminal(
        self, state: int, *, error: lc.RunError | None = None, message: str = ""
    ) -> int:
        """Proposes a terminal state and waits for the Ack that covers it; returns the exit
        code."""
        sequence = self.propose(state, error=error, message=message)
        await self._batcher.outbox.wait_acked(sequence)
        recorded = self._session.recorded_state
        if lifecycle.is_terminal(recorded):
            if recorded != state:
                log.warning(
                    "run %s: proposed %s, control plane recorded %s",
                    self.run,
                    lifecycle.state_name(state),
                    lifecycle.state_name(recorded),
                )
            return EXIT_OK
        log.error(
            "run %s: proposed %s but the recorded state is %s",
            self.run,
            lifecycle.state_name(state),
            lifecycle.state_name(recorded),
        )
        return EXIT_FAILED

    def wait_all_acked(self) -> Awaitable[None]:
        """Cuts what is buffered now; the result completes once all of it is acknowledged."""
        return self._batcher.outbox.wait_acked(self._batcher.flush())

    async def flush(self) -> None:
        """Cuts what is buffered and waits (bounded) until it is acknowledged."""
        sequence = self._batcher.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._flush_timeout):
                await self._batcher.outbox.wait_acked(sequence)

    def platform_log(
        self,
        level: int,
        message: str,
        *,
        exc: BaseException | None = None,
        traceback: str | None = None,
    ) -> None:
        """A log line of the engine itself, sent with the run's telemetry."""
        if exc is not None and traceback is None:
            traceback = format_traceback(exc)
        self._batcher.buffer.append(
            (
                LOG,
                time.time_ns(),
                level,
                message,
                "flnet.engine",
                "",
                0,
                "",
                traceback,
            )
        )
