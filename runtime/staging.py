"""A run's files: its declared inputs are staged (sha256-checked) before the tool runs, and the
outputs it wrote are uploaded after it returns. Failures become the run's error."""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import Executor
from pathlib import Path

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.runtime.v1 import runtime_service_pb2 as rt

from .backoff import Backoff
from .context import Outputs
from .errors import simple_error
from .interrupts import Interrupts
from .reporting import RunReporter
from .session import Session
from .transfer import TransferError, stage_input, upload_output

S = lc.RunState
R = lc.ErrorReason


class Staging:
    """Moves one run's inputs in and its outputs out, each wait raced against interrupts."""

    def __init__(
        self,
        *,
        run: str,
        session: Session,
        input_dir: Path,
        output_dir: Path,
        io: Executor | None,
        reconnect_timeout: float,
        interrupts: Interrupts,
        reporter: RunReporter,
    ) -> None:
        self.run = run
        self._session = session
        self._input_dir = input_dir
        self._output_dir = output_dir
        self._io = io
        self._reconnect_timeout = reconnect_timeout
        self._interrupts = interrupts
        self._reporter = reporter

    async def stage_inputs(self, spec: rt.RunSpec) -> dict[str, Path] | lc.RunError:
        """The staged input files by name, or the run's error when staging failed."""
        try:
            return await self._interrupts.race(self._stage(spec))
        except TransferError as exc:
            reason = R.ERROR_REASON_INTERNAL if exc.retryable else R.ERROR_REASON_INPUT_INVALID
            return simple_error(reason, str(exc), phase=S.RUN_STATE_INITIALIZED)
        except (OSError, ValueError) as exc:
            return simple_error(
                R.ERROR_REASON_INPUT_INVALID,
                f"staging inputs failed: {exc}",
                phase=S.RUN_STATE_INITIALIZED,
            )

    async def _stage(self, spec: rt.RunSpec) -> dict[str, Path]:
        staged: dict[str, Path] = {}
        backoff = Backoff(budget=self._reconnect_timeout)
        for ref in spec.inputs:
            path = await stage_input(
                self._session.stub,
                run=self.run,
                ref=ref,
                directory=self._input_dir,
                metadata=self._session.metadata,
                backoff=backoff,
                executor=self._io,
            )
            staged[ref.name] = path
            self._reporter.platform_log(
                logging.INFO, f"staged input {ref.name} ({ref.size_bytes} bytes)"
            )
        return staged

    def outputs(self, spec: rt.RunSpec) -> Outputs:
        """The run's declared outputs, in an output directory made if need be."""
        with contextlib.suppress(OSError):
            self._output_dir.mkdir(parents=True, exist_ok=True)
        return Outputs(self._output_dir, [o.name for o in spec.outputs])

    async def deliver_outputs(self, spec: rt.RunSpec, outputs: Outputs) -> lc.RunError | None:
        """Uploads every output the tool wrote; returns the run's error when a required one is
        missing or an upload failed."""
        existing = outputs.existing()
        missing = [o.name for o in spec.outputs if o.required and o.name not in existing]
        if missing:
            return simple_error(
                R.ERROR_REASON_OUTPUT_MISSING,
                f"the tool returned without writing required output(s) {', '.join(missing)}",
                phase=S.RUN_STATE_RUNNING,
            )
        # Outputs are accepted once RUNNING is recorded: wait for everything proposed so far.
        await self._interrupts.race(self._reporter.wait_all_acked())
        backoff = Backoff(budget=self._reconnect_timeout)
        for name, path in existing.items():
            try:
                response = await self._interrupts.race(
                    upload_output(
                        self._session.stub,
                        run=self.run,
                        name=name,
                        path=path,
                        metadata=self._session.metadata,
                        backoff=backoff,
                        executor=self._io,
                    )
                )
            except TransferError as exc:
                reason = R.ERROR_REASON_INTERNAL if exc.retryable else R.ERROR_REASON_OUTPUT_INVALID
                return simple_error(reason, str(exc), phase=S.RUN_STATE_RUNNING)
            except OSError as exc:
                return simple_error(
                    R.ERROR_REASON_OUTPUT_INVALID,
                    f"output {name} cannot be read: {exc}",
                    phase=S.RUN_STATE_RUNNING,
                )
            self._reporter.platform_log(
                logging.INFO,
                f"uploaded output {name} ({response.size_bytes} bytes, sha256 {response.sha256})",
            )
        return None
