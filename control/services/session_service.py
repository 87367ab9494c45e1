"""SessionService: the orchestrators' side of the control plane (Attach). Every call carries
an orchestrator's client-credentials token (validated by the authorization interceptor); the
token's subject owns the orchestrator name it registers. The protocol's decisions are
control.runs.fleet_sessions'."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator

import grpc

from flnet import resource_names
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.api.orchestrator.v1 import session_service_pb2_grpc as spg
from flnet.control.fleet.links import Link
from flnet.control.runs.fleet_sessions import FleetSessions
from flnet.control.store.fleet import Registered
from flnet.errors import InvalidArgument
from flnet.server.auth import require_principal
from flnet.server.auth.audit import note_resource
from flnet.server.streams import opening

log = logging.getLogger(__name__)
REGISTRATION_TIMEOUT = 30.0
NAME = resource_names.ID_RULES["orchestrator"]
LABEL = re.compile(r"[a-z0-9._-]{0,63}")
MAX_LABELS = 64


def registered(reg: sp.Registration, subject: str) -> Registered:
    """The registration checked (InvalidArgument names every field at fault)."""
    violations: list[tuple[str, str]] = []
    if not NAME.fullmatch(reg.name):
        violations.append(
            (
                "registration.name",
                "1 to 63 lower-case letters, digits and '-', not starting with '-'",
            )
        )
    if not NAME.fullmatch(reg.backend):
        violations.append(("registration.backend", "a backend name, e.g. docker"))
    c = reg.capacity
    for field in ("cpu_millis", "memory_bytes", "run_slots"):
        if getattr(c, field) < 1:
            violations.append((f"registration.capacity.{field}", "must be at least 1"))
    if len(reg.labels) > MAX_LABELS:
        violations.append(("registration.labels", f"at most {MAX_LABELS} labels"))
    for key, value in sorted(reg.labels.items()):
        if not key or not LABEL.fullmatch(key) or not LABEL.fullmatch(value):
            violations.append(
                (f"registration.labels[{key[:63]!r}]", "keys and values of a-z, 0-9, '.', '_', '-'")
            )
    if len(reg.hostname) > 255:
        violations.append(("registration.hostname", "at most 255 characters"))
    if violations:
        raise InvalidArgument(
            "invalid registration: " + "; ".join(f"{f}: {d}" for f, d in violations[:5]),
            violations=violations,
        )
    return Registered(
        name=reg.name,
        subject=subject,
        backend=reg.backend,
        hostname=reg.hostname,
        labels=dict(reg.labels),
        cpu_millis=c.cpu_millis,
        memory_bytes=c.memory_bytes,
        run_slots=c.run_slots,
    )


class SessionService(spg.SessionServiceServicer):
    def __init__(self, fleet: FleetSessions) -> None:
        self.fleet = fleet

    async def Attach(
        self,
        request_iterator: AsyncIterator[sp.AttachRequest],
        context: grpc.aio.ServicerContext[sp.AttachRequest, sp.AttachResponse],
    ) -> AsyncIterator[sp.AttachResponse]:
        requests = aiter(request_iterator)
        first = await opening(requests, "registration", "a Registration", REGISTRATION_TIMEOUT)
        reg = registered(first.registration, require_principal().subject)
        note_resource(f"orchestrators/{reg.name}")
        self.fleet.throttle(reg.name)
        link = await self.fleet.attach(reg, list(first.registration.containers))
        reader = asyncio.create_task(self._read(requests, link))
        try:
            while (message := await link.outbox.get()) is not None:
                yield message
            if link.error is not None:
                raise link.error
            if reader.done() and not reader.cancelled() and (error := reader.result()):
                raise error
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await asyncio.shield(self.fleet.detach(link))

    async def _read(
        self, requests: AsyncIterator[sp.AttachRequest], link: Link
    ) -> InvalidArgument | None:
        """Applies the orchestrator's messages in order; returns the error that ended it."""
        try:
            async for msg in requests:
                which = msg.WhichOneof("message")
                if which == "report":
                    refused = await asyncio.shield(self.fleet.report(link, msg.report))
                    ack = sp.ReportAck(sequence=link.acked)
                    if refused is not None:
                        log.warning("%s: report refused: %s", link.name, refused.message)
                        ack.rejections.append(refused)
                    link.send(sp.AttachResponse(ack=ack))
                    await self.fleet.heard(link)
                elif which == "heartbeat":
                    await self.fleet.heard(link)
                else:
                    return InvalidArgument(
                        "only reports and heartbeats may follow the Registration",
                        violations=[("message", "expected report or heartbeat")],
                    )
        except asyncio.CancelledError:
            raise
        except InvalidArgument as e:  # a message that could not be decoded (logged there)
            return e
        except Exception:
            log.exception("the session of orchestrator %s failed; it will reconnect", link.name)
        finally:
            link.close(link.error)
        return None
