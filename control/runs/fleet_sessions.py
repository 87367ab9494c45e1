"""The orchestrator-session protocol, control-plane side (SessionService.Attach speaks gRPC;
this module decides): what an attaching orchestrator is told, what its reports do to runs,
which commands it gets, and what happens to its runs when it stays away past its lease.

Commands are derived from the database, not remembered: a placed run not yet launched is a
launch to send, a recorded stop not yet confirmed is a stop to send. Whenever that may have
changed for an orchestrator (`commands_for`), the replica holding its link sends what is
missing; other replicas are told through the database's notifications. A link sends each
command once; a new link sends again what is still to be done (commands are idempotent)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import grpc

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.orchestrator.v1 import orchestrator_pb2 as op
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.control import names
from flnet.control.clock import duration, now_us
from flnet.control.fleet.links import Link
from flnet.control.runs.context import RunContext
from flnet.control.runs.launching import Launcher, status_code
from flnet.control.runs.supervision import Supervisor
from flnet.control.store.fleet import LOST, Registered
from flnet.errors import Aborted, FlnetError, ResourceExhausted

log = logging.getLogger(__name__)
S = lc.RunState
R = lc.ErrorReason

# Attaches of one orchestrator name allowed within RECONNECT_WINDOW seconds (per replica);
# more are refused RESOURCE_EXHAUSTED with the time to wait.
RECONNECT_BURST = 10
RECONNECT_WINDOW = 10.0
# The grace of the stop sent for a container of a run not placed on its orchestrator.
STRAY_GRACE = 5.0


def stop_command(run: str, run_id: str, grace: float) -> sp.FleetCommand:
    return sp.FleetCommand(
        id=f"stop {run_id}", stop=op.StopRunRequest(run=run, grace_period=duration(grace))
    )


def rejection(sequence: int, code: grpc.StatusCode, message: str) -> sp.ReportRejection:
    return sp.ReportRejection(sequence=sequence, code=code.value[0], message=message)


class FleetSessions:
    def __init__(self, context: RunContext, launcher: Launcher, supervisor: Supervisor) -> None:
        self.context = context
        self.launcher = launcher
        self.supervisor = supervisor
        self.store = context.store
        self.links = context.links
        context.commands_for = self.commands_for
        # Tells the other replicas that an orchestrator has commands (set with PostgreSQL).
        self.notify_others: Callable[[str], Awaitable[None]] | None = None
        self._syncing: dict[str, bool] = {}
        self._attaches: dict[str, deque[float]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------------- sessions

    def throttle(self, name: str) -> None:
        """ResourceExhausted when `name` attached too often lately (a reconnect loop)."""
        now = time.monotonic()
        recent = self._attaches.setdefault(name, deque())
        while recent and now - recent[0] > RECONNECT_WINDOW:
            recent.popleft()
        if len(recent) >= RECONNECT_BURST:
            error = ResourceExhausted(
                f"orchestrator {name!r} attached {len(recent)} times in"
                f" {RECONNECT_WINDOW:g} s; retry later"
            )
            error.retry_after = RECONNECT_WINDOW - (now - recent[0])
            raise error
        recent.append(now)

    async def attach(self, reg: Registered, containers: Sequence[op.RunContainer]) -> Link:
        """Opens an orchestrator's link (replacing an older one) with Attached queued first,
        then stops for containers of runs not placed on it, then its pending commands."""
        session = uuid.uuid4().hex
        row = await self.store.fleet.attach(reg, session)
        link = self.links.open(reg.name, reg.subject, session)
        link.acked = row.acked_sequence
        settings = self.context.settings
        link.send(
            sp.AttachResponse(
                attached=sp.Attached(
                    acked_sequence=row.acked_sequence,
                    heartbeat_interval=duration(settings.heartbeat_interval),
                    lease=duration(settings.orchestrator_lease),
                )
            )
        )
        log.info(
            "orchestrator %s attached (%s backend, %d slots, %d containers)",
            reg.name,
            reg.backend,
            reg.run_slots,
            len(containers),
        )
        await self._reconcile(link, containers)
        self.commands_for(reg.name)
        self.context.placer.kick()
        return link

    async def _reconcile(self, link: Link, containers: Sequence[op.RunContainer]) -> None:
        """Containers still running for runs not placed on this orchestrator (placed
        elsewhere while it was away, or ended) are stopped."""
        running = [c for c in containers if c.state != op.CONTAINER_STATE_EXITED]
        ids = {c.run: _run_id(c.run) for c in running}
        placed = await self.store.fleet.assigned_to([i for i in ids.values() if i])
        for container in running:
            run_id = ids[container.run]
            if run_id and placed.get(run_id) != link.name:
                log.warning("%s runs %s, not placed on it: stopped", link.name, container.run)
                link.command(stop_command(container.run, run_id, STRAY_GRACE))

    async def detach(self, link: Link) -> None:
        self.links.discard(link)
        await self.store.fleet.detach(link.name, link.session)
        log.info("orchestrator %s detached", link.name)

    async def heard(self, link: Link) -> None:
        """A heartbeat: renews the lease in the database every heartbeat interval."""
        now = time.monotonic()
        if now - link.recorded < self.context.settings.heartbeat_interval:
            return
        link.recorded = now
        if not await self.store.fleet.seen(link.name, link.session, now_us()):
            link.close(Aborted(f"orchestrator {link.name!r} attached again elsewhere"))

    # ----------------------------------------------------------------------- reports

    async def report(self, link: Link, report: sp.Report) -> sp.ReportRejection | None:
        """Applies a report once (one at or below the acknowledged sequence is a resend)."""
        if report.sequence <= link.acked:
            return None
        refused = await self._apply(link, report)
        link.acked = report.sequence
        if not await self.store.fleet.acked(link.name, link.session, report.sequence):
            link.close(Aborted(f"orchestrator {link.name!r} attached again elsewhere"))
        return refused

    async def _apply(self, link: Link, report: sp.Report) -> sp.ReportRejection | None:
        which = report.WhichOneof("report")
        seq = report.sequence
        if which == "container":
            return await self._container(link, seq, report.container)
        if which == "command_result":
            return await self._result(link, seq, report.command_result)
        if which == "capacity":
            c = report.capacity
            if c.cpu_millis < 1 or c.memory_bytes < 1 or c.run_slots < 1:
                return rejection(
                    seq,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "capacity: cpu_millis, memory_bytes and run_slots must each be at least 1",
                )
            await self.store.fleet.set_capacity(
                link.name, link.session, c.cpu_millis, c.memory_bytes, c.run_slots
            )
            self.context.placer.kick()
            return None
        return rejection(seq, grpc.StatusCode.INVALID_ARGUMENT, "the report is empty")

    async def _placed_here(
        self, link: Link, seq: int, run: str
    ) -> tuple[str, sp.ReportRejection | None]:
        run_id = _run_id(run)
        if not run_id:
            return "", rejection(seq, grpc.StatusCode.INVALID_ARGUMENT, f"{run!r} is not a run")
        placed = await self.store.fleet.assigned_to([run_id])
        if placed.get(run_id) != link.name:
            return run_id, rejection(
                seq,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{run} is not placed on orchestrator {link.name}",
            )
        return run_id, None

    async def _container(
        self, link: Link, seq: int, container: op.RunContainer
    ) -> sp.ReportRejection | None:
        run_id, refused = await self._placed_here(link, seq, container.run)
        if refused is not None:
            if run_id and container.state != op.CONTAINER_STATE_EXITED:
                link.command(stop_command(container.run, run_id, STRAY_GRACE))
            return refused
        if container.state == op.CONTAINER_STATE_EXITED:
            await self.supervisor.on_container(container)
            self.context.placer.kick()
        return None

    async def _result(
        self, link: Link, seq: int, result: sp.CommandResult
    ) -> sp.ReportRejection | None:
        try:
            return await self._record_result(link, seq, result)
        finally:  # after its outcome is recorded: not sent again meanwhile
            link.answered(result.command_id)

    async def _record_result(
        self, link: Link, seq: int, result: sp.CommandResult
    ) -> sp.ReportRejection | None:
        kind, _, command_run = result.command_id.partition(" ")
        run_id, refused = await self._placed_here(link, seq, result.run)
        if refused is not None:
            return refused
        if command_run != run_id or kind not in ("launch", "stop"):
            return rejection(
                seq,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{result.command_id!r} is not a command about {result.run}",
            )
        code = status_code(result.code)
        if kind == "stop":
            await self.store.fleet.stopped(run_id, link.name)
        elif code == grpc.StatusCode.OK:
            await self.store.fleet.launched(run_id, link.name)
        else:
            row = await self.store.runs.get_run_by_id(run_id)
            if row is not None and not row.terminal:
                await self.launcher.refused(row, link.name, code, result.message)
        return None

    # ---------------------------------------------------------------------- commands

    def commands_for(self, name: str) -> None:
        """`name` may have commands to get: sent from here when its link is here, else the
        other replicas are told."""
        if self.links.get(name) is None:
            if self.notify_others is not None:
                self._spawn(self.notify_others(name))
            return
        if name in self._syncing:
            self._syncing[name] = True  # read again once the current read is done
            return
        self._syncing[name] = False
        self._spawn(self._follow(name))

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _follow(self, name: str) -> None:
        try:
            while True:
                try:
                    await self._sync(name)
                except Exception:
                    log.exception("sending the commands of orchestrator %s failed", name)
                if not self._syncing[name]:
                    return
                self._syncing[name] = False
        finally:
            del self._syncing[name]

    async def _sync(self, name: str) -> None:
        link = self.links.get(name)
        if link is None:
            return
        commands = await self.store.fleet.commands(name)
        for row in commands.launches:
            if f"launch {row.id}" in link.in_flight:
                continue
            try:
                command = await self.launcher.command(row)
            except FlnetError as e:
                await self.launcher.refused(row, name, e.code, str(e))
                continue
            link.command(command)
        for row, grace in commands.stops:
            link.command(stop_command(row.name, row.id, grace))

    # ------------------------------------------------------------------------- leases

    async def judge_leases(self) -> None:
        """Orchestrators away past their lease are LOST (once, by one replica), and their
        runs judged: a run whose engine never started is placed again (nothing of it ran);
        the others end in ERROR(LOST) unless their engine is still heard (the engine's own
        lease decides theirs)."""
        lease = self.context.settings.orchestrator_lease
        now = now_us()
        for o in await self.store.fleet.orchestrators():
            if o.state == LOST or now - o.seen_us <= lease * 1e6:
                continue
            link = self.links.get(o.name)
            if link is not None and link.session == o.session:
                continue  # attached here: its heartbeats will be recorded
            if await self.store.fleet.mark_lost(o.name, now - int(lease * 1e6)):
                log.warning("orchestrator %s lost: not heard for %g s", o.name, lease)
                await self._judge_runs(o.name, lease)
        self.context.placer.kick()

    async def _judge_runs(self, name: str, lease: float) -> None:
        away = f"orchestrator {name} was lost (not heard for {lease:g} s)"
        settings = self.context.settings
        for row in await self.store.fleet.placed_on(name):
            # Heard within two heartbeats: its engine still reports (another network path),
            # and the run goes on; its end is its own.
            quiet = self.supervisor.silent_for(row, now_us())
            if row.engine_seen_us is not None and quiet < 2 * settings.heartbeat_interval:
                continue
            if row.state == S.RUN_STATE_PENDING and row.engine_seen_us is None:
                await self.store.fleet.requeue(
                    row.id,
                    name,
                    f"{away} before the run's engine started: it waits to be placed elsewhere",
                )
                continue
            applied, _ = await self.store.runs.transition(
                row.id,
                S.RUN_STATE_ERROR,
                actor="control",
                message=away,
                error=lifecycle.make_error(
                    R.ERROR_REASON_LOST,
                    f"{away} while the run was {lifecycle.state_name(row.state)}",
                    phase=row.state,
                    context={"orchestrator": name},
                ),
            )
            if applied:
                self.context.close_session(row.id, away, S.RUN_STATE_ERROR)

    def on_remote(self, name: str) -> None:
        """Another replica says `name` has commands: sent if its link is here."""
        if self.links.get(name) is not None:
            self.commands_for(name)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


def _run_id(run: str) -> str:
    try:
        return names.parse_run(run)[1]
    except FlnetError:
        return ""
