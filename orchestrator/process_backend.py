"""The process backend (development mode, DESIGN.md §7): each run's engine is a local
subprocess in its own process group, started through the limits exec wrapper.

Per run it creates ``<data-dir>/orchestrator/runs/<tenant>_<run>/`` holding ``input/``,
``output/``, ``credential`` (mode 0400) and ``engine.log`` (stdout and stderr). The work dir
is removed once the engine has exited, before its EXITED event is published, unless
``keep_workdirs`` is set. When the engine (the group leader) exits, whatever it left
running in its process group is killed, as a container's processes die with it.

It does not isolate: the engine runs as the orchestrator's user, sees its file system and
network. Use the docker backend for isolation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections import OrderedDict
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .backend import (
    Container,
    ContainerEvent,
    ContainerState,
    ExitCause,
    Image,
    LaunchSpec,
    Limits,
    LocalSource,
    RunName,
)
from .engine_env import EnginePaths, engine_environment
from .errors import (
    InvalidArgument,
    LaunchFailed,
    NotFound,
    Reason,
    Unavailable,
)
from .events import EventLog
from .limits import limits_argv

log = logging.getLogger(__name__)

BACKEND_NAME = "process"
DEFAULT_ENGINE_COMMAND: tuple[str, ...] = (sys.executable, "-m", "flnet.runtime")
DEFAULT_KILL_GRACE = 5.0
DEFAULT_MAX_EXITED = 10_000
LAST_LINES = 50
LOG_FILE = "engine.log"
CREDENTIAL_FILE = "credential"
# How long to wait for an exit after SIGKILL before giving up on a process (it may be stuck
# in uninterruptible sleep); its exit is still recorded whenever it happens.
_KILL_WAIT = 30.0
_TAIL_BYTES = 64 * 1024
_MAX_LINE_CHARS = 2000


@dataclass(eq=False)
class _Child:
    """Mutable bookkeeping of one run's engine process."""

    container: Container
    process: asyncio.subprocess.Process
    workdir: Path
    # Set when the orchestrator decided to end it (StopRun, deadline, shutdown).
    stop_cause: ExitCause | None = None
    # The process has exited (it may not be cleaned up yet).
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    # Cleaned up and its EXITED event published.
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def read_last_lines(path: Path, count: int = LAST_LINES) -> tuple[str, ...]:
    """The last `count` lines of a file (decoded leniently, each cut to a sane length)."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - _TAIL_BYTES))
            data = file.read()
    except OSError:
        return ()
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > _TAIL_BYTES and lines:
        lines = lines[1:]  # the first one is cut
    return tuple(line[:_MAX_LINE_CHARS] for line in lines[-count:])


def _prepare_workdir(workdir: Path, credential: str) -> EnginePaths:
    if workdir.exists():  # left over by an earlier orchestrator process
        shutil.rmtree(workdir)
    workdir.mkdir(mode=0o700, parents=True)
    (workdir / "input").mkdir(mode=0o700)
    (workdir / "output").mkdir(mode=0o700)
    credential_file = workdir / CREDENTIAL_FILE
    fd = os.open(credential_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.fchmod(fd, 0o400)  # whatever the umask
        os.write(fd, credential.encode())
    finally:
        os.close(fd)
    return EnginePaths(
        tool_dir="",  # filled in by the caller
        credential_file=str(credential_file),
        input_dir=str(workdir / "input"),
        output_dir=str(workdir / "output"),
    )


class ProcessBackend:
    """Runs engines as local subprocesses. Create and use it inside one event loop.

    `engine_command` is the engine's argv (default ``python -m flnet.runtime``); the limits
    wrapper is put in front of it. `kill_grace` is the time between SIGTERM and SIGKILL
    at the deadline and the default of StopRun. `base_environment` (default: this process's
    environment, read at construction) supplies the allowlisted basics of engine_env.py.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        events: EventLog,
        *,
        engine_command: Sequence[str] | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
        keep_workdirs: bool = False,
        max_exited: int = DEFAULT_MAX_EXITED,
        base_environment: Mapping[str, str] | None = None,
    ) -> None:
        self._runs_dir = Path(data_dir).resolve() / "orchestrator" / "runs"
        self._events = events
        self._engine_command = tuple(engine_command or DEFAULT_ENGINE_COMMAND)
        if not self._engine_command:
            raise ValueError("engine_command must not be empty")
        self._kill_grace = kill_grace
        self._keep_workdirs = keep_workdirs
        self._max_exited = max_exited
        self._base_environment = dict(os.environ if base_environment is None else base_environment)
        self._children: dict[RunName, _Child] = {}
        self._exited_order: OrderedDict[RunName, None] = OrderedDict()
        self._launch_lock = asyncio.Lock()
        self._closed = False

    @property
    def name(self) -> str:
        return BACKEND_NAME

    @property
    def runs_dir(self) -> Path:
        """Parent of the per-run work dirs."""
        return self._runs_dir

    def workdir(self, run: RunName) -> Path:
        """The work dir of a run (it exists while the engine runs)."""
        return self._runs_dir / f"{run.tenant}_{run.run_id}"

    # -- Backend protocol ------------------------------------------------------------------

    async def launch(self, spec: LaunchSpec) -> Container:
        async with self._launch_lock:
            if self._closed:
                raise Unavailable("the orchestrator is shutting down", Reason.SHUTTING_DOWN)
            existing = self._children.get(spec.run)
            if existing is not None:
                log.info("%s already has container %s", spec.run, existing.container.container_id)
                return existing.container
            tool_dir = self._tool_dir(spec)
            workdir = self.workdir(spec.run)
            try:
                paths = await asyncio.to_thread(_prepare_workdir, workdir, spec.credential)
                env = engine_environment(
                    run=str(spec.run),
                    control_address=spec.control_address,
                    entrypoint=spec.entrypoint,
                    paths=replace(paths, tool_dir=str(tool_dir)),
                    extra=spec.environment,
                    base=self._base_environment,
                )
                process = await self._spawn(self._argv(spec.limits), env, workdir)
            except OSError as exc:
                await asyncio.to_thread(shutil.rmtree, workdir, True)
                log.error("cannot start the engine of %s: %s", spec.run, exc)
                raise LaunchFailed(
                    f"cannot start the engine: {exc.strerror or exc}", Reason.LAUNCH_FAILED
                ) from exc
            now = datetime.now(UTC)
            container = Container(
                run=spec.run,
                container_id=str(process.pid),
                backend=BACKEND_NAME,
                state=ContainerState.RUNNING,
                start_time=now,
                deadline_time=now + timedelta(seconds=spec.deadline) if spec.deadline else None,
            )
            child = _Child(container=container, process=process, workdir=workdir)
            self._children[spec.run] = child
            self._events.append(container)
            log.info("started %s as pid %d in %s", spec.run, process.pid, workdir)
            child.tasks.append(asyncio.create_task(self._reap(child), name=f"reap {spec.run}"))
            if spec.deadline:
                child.tasks.append(
                    asyncio.create_task(
                        self._enforce_deadline(child, spec.deadline), name=f"deadline {spec.run}"
                    )
                )
            return container

    async def stop(self, run: RunName, grace: float | None = None) -> Container:
        child = self._child(run)
        await self._terminate(
            child, ExitCause.STOPPED, self._kill_grace if grace is None else grace
        )
        return child.container

    async def get(self, run: RunName) -> Container:
        return self._child(run).container

    async def list(self, *, include_exited: bool = False) -> Sequence[Container]:
        containers = [
            child.container
            for child in self._children.values()
            if include_exited or child.container.state is not ContainerState.EXITED
        ]
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(containers, key=lambda c: (c.start_time or epoch, c.run))

    def events(self, after_sequence: int = 0) -> AsyncGenerator[ContainerEvent, None]:
        return self._events.subscribe(after_sequence)

    async def close(self, grace: float) -> None:
        """Refuses new launches, then SIGTERMs every running engine's group, SIGKILLs what
        is left after `grace` seconds and waits for their exits."""
        async with self._launch_lock:
            self._closed = True
        running = [c for c in self._children.values() if not c.exited.is_set()]
        if running:
            log.info("terminating %d running engine(s)", len(running))
        await asyncio.gather(
            *(self._terminate(c, ExitCause.STOPPED, grace) for c in running),
            return_exceptions=True,
        )
        tasks = [t for c in self._children.values() for t in c.tasks if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- internals -------------------------------------------------------------------------

    def _child(self, run: RunName) -> _Child:
        child = self._children.get(run)
        if child is None:
            raise NotFound(
                f"{run} has no container", Reason.RUN_NOT_FOUND, metadata={"run": str(run)}
            )
        return child

    def _tool_dir(self, spec: LaunchSpec) -> Path:
        artifact = spec.artifact
        if isinstance(artifact, Image):
            raise InvalidArgument.field(
                "image_digest", "process backend runs local source only", Reason.IMAGE_NOT_SUPPORTED
            )
        assert isinstance(artifact, LocalSource)
        path = artifact.path.resolve()
        if not path.is_dir():
            raise NotFound(
                f"source_path {str(artifact.path)!r} is not a directory",
                Reason.SOURCE_NOT_FOUND,
                metadata={"source_path": str(artifact.path)},
            )
        return path

    def _argv(self, limits: Limits) -> tuple[str, ...]:
        return (
            sys.executable,
            "-m",
            "flnet.orchestrator.limits",
            *limits_argv(
                memory_bytes=limits.memory_bytes,
                pids=limits.pids,
                open_files=limits.open_files,
                cpu_millis=limits.cpu_millis,
            ),
            "--",
            *self._engine_command,
        )

    async def _spawn(
        self, argv: Sequence[str], env: dict[str, str], workdir: Path
    ) -> asyncio.subprocess.Process:
        log_fd = os.open(workdir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # exec-based (no Python code runs between fork and exec; no preexec_fn).
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=asyncio.subprocess.STDOUT,
                cwd=workdir,
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(log_fd)

    def _signal_group(self, child: _Child, sig: signal.Signals) -> None:
        # start_new_session made the engine a session and group leader: pgid == pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, sig)

    async def _reap(self, child: _Child) -> None:
        """Waits for the engine's exit, then records it: the one place a child ends."""
        returncode = await child.process.wait()
        child.ended.set()
        # What the engine left behind in its group dies with it.
        self._signal_group(child, signal.SIGKILL)
        for task in child.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if child.stop_cause is not None:
            cause = child.stop_cause
        elif returncode < 0:
            cause = ExitCause.SIGNALED
        else:
            cause = ExitCause.EXITED
        last_lines = await asyncio.to_thread(read_last_lines, child.workdir / LOG_FILE)
        if not self._keep_workdirs:
            await asyncio.to_thread(shutil.rmtree, child.workdir, True)
        child.container = replace(
            child.container,
            state=ContainerState.EXITED,
            exit_cause=cause,
            exit_code=returncode,
            end_time=datetime.now(UTC),
            last_output_lines=last_lines,
        )
        self._events.append(child.container)
        child.exited.set()
        log.info("%s exited: %s, code %d", child.container.run, cause.name, returncode)
        self._forget_old(child.container.run)

    def _forget_old(self, run: RunName) -> None:
        self._exited_order[run] = None
        while len(self._exited_order) > self._max_exited:
            old, _ = self._exited_order.popitem(last=False)
            self._children.pop(old, None)

    async def _enforce_deadline(self, child: _Child, deadline: float) -> None:
        await asyncio.sleep(deadline)
        log.info("%s reached its deadline of %.3f s", child.container.run, deadline)
        await self._terminate(child, ExitCause.DEADLINE_EXCEEDED, self._kill_grace)

    async def _terminate(self, child: _Child, cause: ExitCause, grace: float) -> None:
        """SIGTERM to the group, SIGKILL after `grace`; returns once the exit is recorded.
        The first cause wins when several arrive (deadline, then StopRun)."""
        if not child.ended.is_set() and child.process.returncode is None:
            if child.stop_cause is None:
                child.stop_cause = cause
            self._signal_group(child, signal.SIGTERM)
            try:
                await asyncio.wait_for(child.ended.wait(), max(0.0, grace))
            except TimeoutError:
                log.info("%s ignored SIGTERM for %.3f s: SIGKILL", child.container.run, grace)
                self._signal_group(child, signal.SIGKILL)
        try:
            await asyncio.wait_for(child.exited.wait(), _KILL_WAIT)
        except TimeoutError:
            log.error("%s did not exit %.0f s after SIGKILL", child.container.run, _KILL_WAIT)
