"""Attached orchestrators: one live Attach session (a link) per orchestrator on this replica.
Messages go out through the link's queue; a command is sent once per link until its result
comes back (a new link sends again whatever is still to be done: commands are idempotent)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.errors import Aborted, FlnetError


@dataclass(eq=False)
class Link:
    """The control plane's side of one orchestrator's Attach stream."""

    name: str
    subject: str
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    outbox: asyncio.Queue[sp.AttachResponse | None] = field(default_factory=asyncio.Queue)
    # Commands sent on this link and not answered yet, by id.
    in_flight: set[str] = field(default_factory=set)
    # Highest report sequence processed.
    acked: int = 0
    closed: bool = False
    # Why the control plane ended the stream (raised to the orchestrator), if it did.
    error: FlnetError | None = None
    # When its lease was last renewed in the database (monotonic seconds).
    recorded: float = field(default_factory=time.monotonic)

    def send(self, message: sp.AttachResponse) -> None:
        if not self.closed:
            self.outbox.put_nowait(message)

    def command(self, command: sp.FleetCommand) -> bool:
        """Sends `command` unless it is in flight on this link already."""
        if self.closed or command.id in self.in_flight:
            return False
        self.in_flight.add(command.id)
        self.send(sp.AttachResponse(command=command))
        return True

    def answered(self, command_id: str) -> None:
        self.in_flight.discard(command_id)

    def close(self, error: FlnetError | None = None) -> None:
        if self.closed:
            return
        self.error = error
        self.closed = True
        self.outbox.put_nowait(None)


class Links:
    """Live links by orchestrator name."""

    def __init__(self) -> None:
        self._links: dict[str, Link] = {}

    def open(self, name: str, subject: str, session: str) -> Link:
        """A new link; an older one of the same orchestrator is ended (newest wins)."""
        old = self._links.get(name)
        if old is not None:
            old.close(Aborted(f"orchestrator {name!r} attached again on another stream"))
        link = self._links[name] = Link(name, subject, session)
        return link

    def discard(self, link: Link) -> None:
        if self._links.get(link.name) is link:
            del self._links[link.name]
        link.close()

    def get(self, name: str) -> Link | None:
        return self._links.get(name)

    def all(self) -> list[Link]:
        return list(self._links.values())
