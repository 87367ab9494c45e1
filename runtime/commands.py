"""The control plane's commands to a run: Start, Cancel, UpdateConfig and Execute. Each is
answered once per id; a redelivered command gets its first answer again."""

from __future__ import annotations

import logging

from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.structs import struct_to_dict

from .config import ConfigError, typed_config
from .dev_session import DevSession
from .errors import ToolLoadError
from .interrupts import Interrupts
from .reporting import RunReporter
from .run_setup import RunSetup
from .session import Session

DEFAULT_CANCEL_GRACE = 10.0


class Commands:
    """Answers one run's commands (on the loop; must not block)."""

    def __init__(
        self,
        *,
        session: Session,
        setup: RunSetup,
        reporter: RunReporter,
        interrupts: Interrupts,
        dev: DevSession,
    ) -> None:
        self._session = session
        self._setup = setup
        self._reporter = reporter
        self._interrupts = interrupts
        self._dev = dev
        self._answered: dict[str, tuple[bool, str]] = {}

    def on_command(self, command: rt.Command) -> None:
        kind = command.WhichOneof("command")
        if command.id and command.id in self._answered:
            ok, message = self._answered[command.id]
            self._session.send_result(command.id, ok, message)
            return
        if kind == "start":
            ok, message = self._on_start(command.start)
        elif kind == "cancel":
            ok, message = self._on_cancel(command.cancel)
        elif kind == "update_config":
            ok, message = self._on_update_config(command.update_config)
        elif kind == "execute":
            ok, message = self._dev.execute(command.execute)
        else:
            ok, message = False, f"unknown command {kind!r}"
        if command.id:
            self._answered[command.id] = (ok, message)
        self._session.send_result(command.id, ok, message)

    def _on_start(self, start: rt.Start) -> tuple[bool, str]:
        if self._setup.dev_session:
            return False, "a development session runs what Execute commands name"
        if self._setup.started.done():
            return True, "already started"
        config = struct_to_dict(start.config) if start.HasField("config") else None
        self._setup.started.set_result(config)
        return True, ""

    def _on_cancel(self, cancel: rt.Cancel) -> tuple[bool, str]:
        if self._reporter.terminal_proposed:
            return True, "the run is already ending"
        if cancel.HasField("grace_period"):
            grace = cancel.grace_period.ToTimedelta().total_seconds()
        elif self._setup.spec.HasField("cancel_grace"):
            grace = self._setup.spec.cancel_grace.ToTimedelta().total_seconds()
        else:
            grace = DEFAULT_CANCEL_GRACE
        reason = cancel.reason or "no reason"
        self._reporter.platform_log(logging.WARNING, f"cancel requested: {reason}")
        self._interrupts.request_cancel(cancel.reason, grace)
        return True, ""

    def _on_update_config(self, update: rt.UpdateConfig) -> tuple[bool, str]:
        if not self._setup.dev_session:
            return False, "configuration updates are for development sessions"
        raw = struct_to_dict(update.config)
        tool = self._setup.tool
        if isinstance(tool, ToolLoadError):
            return False, tool.error.message
        try:
            typed_config(tool, raw)
        except ConfigError as exc:
            return False, f"invalid configuration: {exc}"
        self._setup.raw_config = raw
        self._reporter.platform_log(logging.INFO, "configuration updated")
        return True, ""
