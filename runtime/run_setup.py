"""What the engine knows of the run it drives, shared by the lifecycle, the commands and a
development session: the tool, the spec from the first Welcome, the raw configuration so far
and the configuration the Start command brought."""

from __future__ import annotations

import asyncio
from typing import Any

from flnet.api.runtime.v1 import runtime_service_pb2 as rt

from .errors import ToolLoadError
from .loader import ToolFunction


class RunSetup:
    """The tool (or why it failed to load), the run's spec and its configuration."""

    def __init__(
        self,
        tool: ToolFunction | ToolLoadError,
        raw_config: dict[str, Any] | None,
        source_sha256: str = "",
    ) -> None:
        self.tool = tool
        # What `tool` was loaded from, when the engine knows (a development session's runs).
        self.source_sha256 = source_sha256
        # Built up from a development session's, the spec's, an update's or Start's config.
        self.raw_config = raw_config
        self.spec = rt.RunSpec()
        loop = asyncio.get_running_loop()
        self.welcomed: asyncio.Future[rt.Welcome] = loop.create_future()
        # The Start command's configuration (None: the run keeps the one it has).
        self.started: asyncio.Future[dict[str, Any] | None] = loop.create_future()

    @property
    def dev_session(self) -> bool:
        """A development session: it runs what Execute commands name (False before Welcome)."""
        return self.spec.dev_session

    def welcome(self, welcome: rt.Welcome) -> None:
        """Takes the spec of the session's first Welcome."""
        self.spec.CopyFrom(welcome.spec)
        if not self.welcomed.done():
            self.welcomed.set_result(welcome)
