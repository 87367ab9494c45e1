"""Run orchestration logic of the control plane: accept runs, launch them, drive their engine
sessions, cancel them, and turn timeouts and container exits into recorded outcomes."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import grpc

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.orchestrator.v1 import orchestrator_service_pb2 as op
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control import credentials, names
from flnet.control.clock import duration, now_us, seconds
from flnet.control.orchestration import LaunchFailed, OrchestratorClient, grace_of
from flnet.control.sessions import Session, SessionRegistry
from flnet.control.settings import ControlSettings
from flnet.control.store import BatchOutcome, RunRow, Store
from flnet.control.validation import (
    canonical_sha256,
    dict_to_struct,
    struct_to_dict,
    validate_config,
)
from flnet.errors import (
    AlreadyExists,
    FailedPrecondition,
    FlnetError,
    InvalidArgument,
    NotFound,
)

log = logging.getLogger(__name__)
S = lc.RunState
R = lc.ErrorReason

DEFAULT_CONNECT_TIMEOUT = 60.0
DEFAULT_INPUT_LIMIT = 1024**3


class RunController:
    def __init__(
        self,
        store: Store,
        sessions: SessionRegistry,
        orchestrator: OrchestratorClient,
        settings: ControlSettings,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.orchestrator = orchestrator
        self.settings = settings
        self.engine_address = settings.engine_address
        self.credentials = credentials.RunCredentials(settings.resolved_runtime_key_file)
        self._versions: dict[str, tp.ToolVersion] = {}
        self._started_us = now_us()
        self._marked_us = 0
        self._stopping: set[str] = set()
        # Runs whose change by another replica is being passed on to their engine here:
        # whether another change came in meanwhile.
        self._following: dict[str, bool] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def tool_version(self, name: str) -> tp.ToolVersion:
        """Tool versions are immutable: cache them by name."""
        found = self._versions.get(name)
        if found is None:
            tv = names.parse_tool_version(name)
            found = self._versions[name] = await self.store.get_tool_version(*tv)
        return found

    # ------------------------------------------------------------------------ accepting

    async def create(
        self,
        tenant: str,
        run: rp.Run,
        request_id: str,
        creator: str,
        *,
        reproduce_of: str = "",
        dev_session_run: str = "",
    ) -> tuple[RunRow, str]:
        """Validates and records a run, then launches it. Returns the run and, for a
        development session, the credential its developer's engine connects with."""
        tv = names.parse_tool_version(run.tool_version, "run.tool_version")
        if tv.tenant != tenant:
            raise NotFound(f"tool version {run.tool_version} does not exist")
        version = await self.tool_version(run.tool_version)
        config = validate_config(struct_to_dict(version.config_schema), struct_to_dict(run.config))
        inputs = await self._resolve_inputs(tenant, version, run.inputs)
        fingerprint = canonical_sha256(
            {
                "tool_version": run.tool_version,
                "config": config,
                "dev": run.dev_session,
                "inputs": [[i.name, i.artifact] for i in inputs],
                "reproduce_of": reproduce_of,
            }
        )
        if request_id:
            existing = await self.store.find_run_by_request(tenant, request_id)
            if existing is not None:
                return await self._retried(existing, fingerprint, version, creator)
        spec = rp.Run(
            tool_version=run.tool_version,
            config=dict_to_struct(config),
            config_sha256=canonical_sha256(config),
            inputs=inputs,
            creator=creator,
            request_id=request_id,
            reproduce_of=reproduce_of,
            artifact_digest=version.image.digest
            if version.HasField("image")
            else "sha256:" + version.local_source.source_sha256,
            dev_session=run.dev_session,
            dev_session_run=dev_session_run,
        )
        run_id = uuid.uuid4().hex[:20]
        deadline_us = None
        lifetime = None
        if version.timeouts.HasField("deadline") and seconds(version.timeouts.deadline) > 0:
            lifetime = seconds(version.timeouts.deadline)
            deadline_us = now_us() + int(lifetime * 1e6)
        token = self.credentials.mint(names.run_name(tenant, run_id), lifetime)
        token_sha = credentials.digest(token)
        row, created = await self.store.create_run(
            run_id=run_id,
            tenant=tenant,
            tool=tv.tool,
            spec=spec,
            request_sha256=fingerprint,
            credential_sha256=token_sha,
            deadline_us=deadline_us,
        )
        if not created:
            return await self._retried(row, fingerprint, version, creator)
        if run.dev_session or dev_session_run:
            return row, token
        await self._launch(row, version, token)
        return await self.store.get_run(tenant, row.id), ""

    async def _retried(
        self, existing: RunRow, fingerprint: str, version: tp.ToolVersion, creator: str
    ) -> tuple[RunRow, str]:
        """A retried CreateRun returns the first run; a different request under the same
        request_id is a client bug. The first attempt may have stopped between recording the
        run and launching it (its replica killed), or its answer may have been lost: a run
        still PENDING is launched again (the orchestrator keeps a container it has already),
        and a development session's creator gets a fresh credential (nobody else: the
        request is visible to the whole tenant)."""
        if await self.store.request_sha256_of(existing.id) != fingerprint:
            raise AlreadyExists(
                f"request_id was already used for {existing.name} with a different request",
                violations=[("request_id", "already used")],
            )
        if existing.state != S.RUN_STATE_PENDING:
            return existing, ""
        left = max(1.0, (existing.deadline_us - now_us()) / 1e6) if existing.deadline_us else None
        token = self.credentials.mint(existing.name, left)
        if existing.spec.dev_session:
            return existing, token if existing.spec.creator == creator else ""
        try:
            await self.orchestrator.launch(
                existing.name, existing.tenant, version, token, self.engine_address
            )
        except LaunchFailed as e:
            # The first attempt may have launched it after all: the connect timeout decides.
            log.warning("launching %s again failed: %s", existing.name, e)
        return await self.store.get_run(existing.tenant, existing.id), ""

    async def _resolve_inputs(
        self, tenant: str, version: tp.ToolVersion, given: Sequence[rp.RunInput]
    ) -> list[rp.RunInput]:
        declared = {i.name: i for i in version.inputs}
        violations: list[tuple[str, str]] = []
        resolved: list[rp.RunInput] = []
        seen: set[str] = set()
        for i, inp in enumerate(given):
            field = f"run.inputs[{i}]"
            spec = declared.get(inp.name)
            if spec is None:
                violations.append(
                    (
                        f"{field}.name",
                        f"'{inp.name}' is not a declared input "
                        f"(declared: {', '.join(sorted(declared)) or 'none'})",
                    )
                )
                continue
            if inp.name in seen:
                violations.append((f"{field}.name", f"'{inp.name}' is given twice"))
                continue
            seen.add(inp.name)
            a_tenant, a_id = names.parse_artifact(inp.artifact, f"{field}.artifact")
            if a_tenant != tenant:
                raise NotFound(f"artifact {inp.artifact} does not exist")
            artifact = await self.store.get_artifact(tenant, a_id)
            limit = spec.max_size_bytes or DEFAULT_INPUT_LIMIT
            if artifact.size_bytes > limit:
                violations.append(
                    (
                        f"{field}.artifact",
                        f"{artifact.size_bytes} bytes exceeds the input's limit of {limit}",
                    )
                )
                continue
            resolved.append(
                rp.RunInput(
                    name=inp.name,
                    artifact=artifact.name,
                    sha256=artifact.sha256,
                    size_bytes=artifact.size_bytes,
                )
            )
        for name, spec in declared.items():
            if spec.required and name not in seen:
                violations.append(("run.inputs", f"input '{name}' is required"))
        if violations:
            raise InvalidArgument(
                "inputs do not match the tool's declared inputs: "
                + "; ".join(f"{f}: {d}" for f, d in violations[:5]),
                reason="INPUT_INVALID",
                violations=violations,
            )
        return resolved

    async def _launch(self, row: RunRow, version: tp.ToolVersion, credential: str) -> None:
        try:
            await self.orchestrator.launch(
                row.name, row.tenant, version, credential, self.engine_address
            )
        except LaunchFailed as e:
            reason = (
                R.ERROR_REASON_IMAGE_MISSING
                if e.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
                else R.ERROR_REASON_INTERNAL
            )
            await self.store.transition(
                row.id,
                S.RUN_STATE_ERROR,
                actor="orchestrator",
                message="launch failed",
                error=lifecycle.make_error(
                    reason, f"could not launch the run: {e}", phase=S.RUN_STATE_PENDING
                ),
            )

    # ----------------------------------------------------------------- user operations

    async def run_proto(self, row: RunRow) -> rp.Run:
        outputs = await self.store.run_outputs([row.id])
        return row.to_proto(outputs[row.id])

    async def run_protos(self, rows: Sequence[RunRow]) -> list[rp.Run]:
        outputs = await self.store.run_outputs([r.id for r in rows])
        return [r.to_proto(outputs[r.id]) for r in rows]

    async def cancel(self, tenant: str, run_id: str, reason: str, actor: str) -> RunRow:
        row = await self.store.get_run(tenant, run_id)
        if row.terminal:
            return row
        row = await self.store.request_cancel(row.id, actor, reason or "cancelled by user")
        if row.terminal:
            return row
        await self.tool_version(row.spec.tool_version)  # cached for the grace period
        session = self.sessions.get(row.id)
        if session is not None and row.state != S.RUN_STATE_PENDING:
            self._send_cancel(row, session)
        elif row.state != S.RUN_STATE_PENDING:
            # The engine is connected to another replica (which hears of the cancel from the
            # database's notification and passes it on), or between sessions (it gets the
            # Cancel when it reconnects); the supervisor stops it once the grace period is
            # over — never without a grace.
            pass
        else:
            # No engine yet: stop whatever was launched and record the outcome now.
            await self._stop(row, 0.0)
            await self.store.transition(
                row.id,
                S.RUN_STATE_CANCELLED,
                actor=actor,
                message=reason or "cancelled before the engine connected",
            )
        return await self.store.get_run(tenant, run_id)

    async def reproduce(self, tenant: str, run_id: str, request_id: str, creator: str) -> RunRow:
        original = await self.store.get_run(tenant, run_id)
        run = rp.Run(
            tool_version=original.spec.tool_version,
            config=original.spec.config,
            inputs=[rp.RunInput(name=i.name, artifact=i.artifact) for i in original.spec.inputs],
        )
        row, _ = await self.create(tenant, run, request_id, creator, reproduce_of=original.name)
        return row

    async def _dev_session(self, tenant: str, run_id: str) -> tuple[RunRow, Session]:
        row = await self.store.get_run(tenant, run_id)
        if not row.spec.dev_session:
            raise FailedPrecondition(f"{row.name} is not a development session")
        session = self.sessions.get(row.id)
        if row.terminal or session is None:
            raise FailedPrecondition(f"development session {row.name} is not connected")
        return row, session

    async def update_dev_config(
        self, tenant: str, run_id: str, patch: dict[str, Any], actor: str
    ) -> RunRow:
        row, session = await self._dev_session(tenant, run_id)
        version = await self.tool_version(row.spec.tool_version)
        merged = struct_to_dict(row.spec.config) | patch
        config = validate_config(struct_to_dict(version.config_schema), merged, "config")
        result = await asyncio.wait_for(
            session.command(
                rt.Command(update_config=rt.UpdateConfig(config=dict_to_struct(config)))
            ),
            30,
        )
        if not result.ok:
            raise FailedPrecondition(f"the engine refused the configuration: {result.message}")
        await self.store.update_dev_config(
            row.id,
            rp.ConfigChange(
                config=dict_to_struct(config), config_sha256=canonical_sha256(config), actor=actor
            ),
        )
        return await self.store.get_run(tenant, run_id)

    async def start_dev_test(self, tenant: str, run_id: str, creator: str) -> RunRow:
        row, session = await self._dev_session(tenant, run_id)
        run = rp.Run(
            tool_version=row.spec.tool_version,
            config=row.spec.config,
            inputs=[rp.RunInput(name=i.name, artifact=i.artifact) for i in row.spec.inputs],
        )
        test, credential = await self.create(tenant, run, "", creator, dev_session_run=row.name)
        session.command(rt.Command(execute=rt.Execute(run=test.name, credential=credential)))
        return test

    # ------------------------------------------------------------------ engine sessions

    async def welcome(self, row: RunRow) -> rt.Welcome:
        version = await self.tool_version(row.spec.tool_version)
        spec = rt.RunSpec(
            run=row.name,
            tool_version=row.spec.tool_version,
            config=row.spec.config,
            config_schema=version.config_schema,
            outputs=version.outputs,
            dev_session=row.spec.dev_session,
            cancel_grace=duration(grace_of(version)),
        )
        media = {i.name: i.media_type for i in version.inputs}
        spec.inputs.extend(
            rt.InputRef(
                name=i.name,
                media_type=media.get(i.name, ""),
                sha256=i.sha256,
                size_bytes=i.size_bytes,
            )
            for i in row.spec.inputs
        )
        return rt.Welcome(
            spec=spec,
            state=S.ValueType(row.state),
            acked_sequence=row.last_batch,
            heartbeat_interval=duration(self.settings.heartbeat_interval),
        )

    def after_connect(self, row: RunRow, session: Session) -> None:
        """A reconnecting engine whose run is INITIALIZED may have missed its Start."""
        if row.state == S.RUN_STATE_INITIALIZED and not row.spec.dev_session:
            session.command(rt.Command(start=rt.Start(config=row.spec.config)))
        if row.cancellation is not None and not row.terminal and row.state != S.RUN_STATE_PENDING:
            self._send_cancel(row, session)
        # `row` was read before the session opened: a cancel or an end recorded meanwhile
        # (here or by another replica) found no session to tell.
        self._pass_on_soon(row.id)

    def _send_cancel(self, row: RunRow, session: Session) -> None:
        """The run's recorded cancel, to its engine, once per session. The grace counts from
        the request, not from when the engine hears of it."""
        assert row.cancellation is not None
        if session.cancel_sent:
            return
        session.cancel_sent = True
        version = self._versions.get(row.spec.tool_version)
        grace = grace_of(version) if version is not None else 10.0
        waited = (now_us() - row.cancellation.request_time.ToMicroseconds()) / 1e6
        cancel = rt.Cancel(
            reason=row.cancellation.reason, grace_period=duration(max(0.0, grace - waited))
        )
        session.command(rt.Command(cancel=cancel))

    def on_remote_change(self, run_id: str) -> None:
        """Another replica wrote to `run_id` (control.notifications): its watchers here read
        what is new, and if the run's engine is connected here it hears what was decided
        there: a cancel, or the run's end."""
        self.store.feed.wake(run_id)
        self._pass_on_soon(run_id)

    def _pass_on_soon(self, run_id: str) -> None:
        """Reads the run and tells its engine, if connected here, of a cancel or an end."""
        if self.sessions.get(run_id) is None:
            return
        if run_id in self._following:
            self._following[run_id] = True  # read again once the current read is done
            return
        self._following[run_id] = False
        task = asyncio.create_task(self._follow(run_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def on_missed_changes(self) -> None:
        """Other replicas' changes may have gone unheard: everyone here catches up."""
        self.store.feed.wake_all()
        for session in self.sessions.all():
            self.on_remote_change(session.run_id)

    async def _follow(self, run_id: str) -> None:
        try:
            while True:
                try:
                    await self._pass_on(run_id)
                except Exception:
                    log.exception("telling the engine of %s what changed failed", run_id)
                if not self._following[run_id]:
                    return
                self._following[run_id] = False
        finally:
            del self._following[run_id]

    async def _pass_on(self, run_id: str) -> None:
        row = await self.store.get_run_by_id(run_id)
        session = self.sessions.get(run_id)
        if row is None or session is None:
            return
        if row.terminal:
            reason = row.error.message if row.error is not None else "the run has ended"
            self._close_session(run_id, reason, row.state)
        elif row.cancellation is not None and row.state != S.RUN_STATE_PENDING:
            await self.tool_version(row.spec.tool_version)
            self._send_cancel(row, session)

    async def close(self) -> None:
        """Ends the background work (passing on other replicas' changes)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def ingest(self, row: RunRow, session: Session, batches: Sequence[rt.Batch]) -> rt.Ack:
        # Shielded: a session that ends mid-commit must not cancel the transaction between
        # its commit and the publish that wakes the run's watchers.
        outcome: BatchOutcome = await asyncio.shield(self.store.apply_batches(row.id, batches))
        self.sessions.touch(row.id, activity=True)
        for _, to_state in outcome.transitions:
            if to_state == S.RUN_STATE_INITIALIZED and not row.spec.dev_session:
                fresh = await self.store.get_run_by_id(row.id)
                assert fresh is not None
                # To the engine's current session: it may have reconnected meanwhile (its
                # Welcome then said PENDING); a repeated Start is ignored by the engine.
                current = self.sessions.get(row.id) or session
                current.command(rt.Command(start=rt.Start(config=fresh.spec.config)))
        return rt.Ack(
            sequence=outcome.acked, rejections=outcome.rejections, state=S.ValueType(outcome.state)
        )

    # -------------------------------------------------------------- outcomes from below

    async def on_container(self, container: op.RunContainer) -> None:
        """A container event from the orchestrator: an exit ends a run still in flight."""
        if container.state != op.CONTAINER_STATE_EXITED:
            return
        try:
            _, run_id = names.parse_run(container.run)
        except FlnetError:
            return
        row = await self.store.get_run_by_id(run_id)
        if row is None or row.terminal:
            return
        if row.cancellation is not None:
            await self.store.transition(
                row.id, S.RUN_STATE_CANCELLED, actor="orchestrator", message="stopped after cancel"
            )
            return
        await self.store.transition(
            row.id,
            S.RUN_STATE_ERROR,
            actor="orchestrator",
            message="container exited",
            error=exit_error(container, row),
        )
        self.sessions.forget(row.id)

    async def supervise_once(self) -> None:
        """Connect timeouts, heartbeat leases, inactivity and cancel grace periods."""
        now = now_us()
        if now - self._marked_us >= self.settings.heartbeat_interval * 1e6:
            # Engines connected here and heard lately (within two heartbeats): every replica
            # judges their leases by this record.
            heard = [
                s.run_id
                for s in self.sessions.all()
                if self.sessions.silent_for(s.run_id) < 2 * self.settings.heartbeat_interval
            ]
            await self.store.mark_engines_seen(heard, now)
            self._marked_us = now
        active = await self.store.nonterminal_runs()
        self.sessions.forget_ended({row.id for row in active}, 2 * self.settings.heartbeat_lease)
        for row in active:
            try:
                await self._supervise(row, now)
            except Exception:
                log.exception("supervising %s failed", row.name)

    async def _supervise(self, row: RunRow, now: int) -> None:
        version = await self.tool_version(row.spec.tool_version)
        t = version.timeouts
        if row.cancellation is not None:
            waited = (now - row.cancellation.request_time.ToMicroseconds()) / 1e6
            if waited > grace_of(version) + 2 * self.settings.supervision_interval + 1:
                await self._stop(row, 1.0)
                message = "grace period expired; stopped"
                applied, _ = await self.store.transition(
                    row.id, S.RUN_STATE_CANCELLED, actor="control", message=message
                )
                if applied:
                    self._close_session(row.id, message, S.RUN_STATE_CANCELLED)
                return
        session = self.sessions.get(row.id)
        if row.state == S.RUN_STATE_PENDING and session is None and row.engine_seen_us is None:
            limit = seconds(t.connect) if t.HasField("connect") else DEFAULT_CONNECT_TIMEOUT
            since = (now - max(row.create_us, self._started_us)) / 1e6
            if since > limit:
                await self._fail(
                    row,
                    R.ERROR_REASON_CONNECT_TIMEOUT,
                    f"the engine did not connect within {limit:g} s",
                )
            return
        if self._silent_for(row, now) > self.settings.heartbeat_lease:
            await self._fail(
                row,
                R.ERROR_REASON_LOST,
                f"no heartbeat from the engine for {self.settings.heartbeat_lease:g} s",
            )
            return
        if (
            row.state == S.RUN_STATE_RUNNING
            and session is not None  # the replica holding the engine judges its activity
            and t.HasField("inactivity")
            and 0 < seconds(t.inactivity) < self.sessions.inactive_for(row.id)
        ):
            await self._fail(
                row,
                R.ERROR_REASON_INACTIVITY_TIMEOUT,
                f"no telemetry for {seconds(t.inactivity):g} s",
            )

    def _silent_for(self, row: RunRow, now: int) -> float:
        """Seconds since any replica last heard the run's engine: here (since our start if
        never), or by another replica's record."""
        here = self.sessions.silent_for(row.id)
        if row.engine_seen_us is None:
            return here
        return min(here, (now - row.engine_seen_us) / 1e6)

    async def _fail(self, row: RunRow, reason: int, message: str) -> None:
        applied, _ = await self.store.transition(
            row.id,
            S.RUN_STATE_ERROR,
            actor="control",
            message=message,
            error=lifecycle.make_error(reason, message, phase=row.state),
        )
        if applied:
            self._close_session(row.id, message, S.RUN_STATE_ERROR)
            await self._stop(row, 1.0)

    def _close_session(self, run_id: str, reason: str, state: int) -> None:
        """Tells the run's engine, if connected here, how its run ended, and ends its stream."""
        session = self.sessions.get(run_id)
        if session is not None:
            close = rt.Close(reason=reason, state=S.ValueType(state))
            session.close(rt.ConnectResponse(close=close))

    async def _stop(self, row: RunRow, grace: float) -> None:
        if row.spec.dev_session or row.spec.dev_session_run or row.id in self._stopping:
            return
        self._stopping.add(row.id)
        try:
            await self.orchestrator.stop(row.name, grace)
        finally:
            self._stopping.discard(row.id)


def exit_error(container: op.RunContainer, row: RunRow) -> lc.RunError:
    """The RunError a container exit means for a run that had not finished."""
    cause, code = container.exit_cause, container.exit_code
    if cause == op.EXIT_CAUSE_DEADLINE_EXCEEDED:
        reason, message = R.ERROR_REASON_DEADLINE_EXCEEDED, "the run exceeded its deadline"
    elif cause == op.EXIT_CAUSE_OOM_KILLED:
        reason, message = R.ERROR_REASON_OOM_KILLED, "the run exceeded its memory limit"
    elif cause == op.EXIT_CAUSE_SIGNALED or (cause == op.EXIT_CAUSE_EXITED and code != 0):
        reason = R.ERROR_REASON_EXIT_NONZERO
        message = (
            f"the process was killed by signal {-code}"
            if code < 0
            else f"the process exited with code {code}"
        )
    elif cause == op.EXIT_CAUSE_VANISHED:
        reason = R.ERROR_REASON_LOST
        message = "the container disappeared: it was removed outside the platform"
    elif cause == op.EXIT_CAUSE_STOPPED:
        reason = R.ERROR_REASON_LOST
        message = "the container was stopped before the run reported a result"
    else:
        reason = R.ERROR_REASON_LOST
        message = "the process ended (exit code 0) without reporting a result"
    return lifecycle.make_error(
        reason,
        message,
        phase=row.state,
        context={
            "exit_code": code,
            "exit_cause": op.ExitCause.Name(cause),
            "container": container.container_id,
            "backend": container.backend,
        },
        last_output_lines=list(container.last_output_lines),
    )
