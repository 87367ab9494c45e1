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
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .backend import Container, ContainerState, ExitCause, Image, LaunchSpec, Limits, LocalSource
from .engine_env import EnginePaths, engine_environment
from .errors import InvalidArgument, LaunchFailed, NotFound, Reason
from .events import EventLog
from .limits import limits_argv
from .output_tail import read_last_lines
from .supervisor import DEFAULT_KILL_GRACE, DEFAULT_MAX_EXITED, Supervisor, Tracked
from .workdir import WorkDir, runs_dir

log = logging.getLogger(__name__)

BACKEND_NAME = "process"
DEFAULT_ENGINE_COMMAND: tuple[str, ...] = (sys.executable, "-m", "flnet.runtime")
LOG_FILE = "engine.log"


@dataclass(eq=False, kw_only=True)
class _Child(Tracked):
    """A run's engine process."""

    process: asyncio.subprocess.Process


class ProcessBackend(Supervisor[_Child]):
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
        super().__init__(BACKEND_NAME, events, kill_grace=kill_grace, max_exited=max_exited)
        self._runs_dir = runs_dir(data_dir)
        self._engine_command = tuple(engine_command or DEFAULT_ENGINE_COMMAND)
        if not self._engine_command:
            raise ValueError("engine_command must not be empty")
        self._keep_workdirs = keep_workdirs
        self._base_environment = dict(os.environ if base_environment is None else base_environment)

    @property
    def runs_dir(self) -> Path:
        """Parent of the per-run work dirs."""
        return self._runs_dir

    async def launch(self, spec: LaunchSpec) -> Container:
        async with self._launching(spec.run) as existing:
            if existing is not None:
                log.info("%s already has container %s", spec.run, existing.container.container_id)
                return existing.container
            tool_dir = self._tool_dir(spec)
            workdir = WorkDir.of(self._runs_dir, spec.run)
            try:
                await asyncio.to_thread(workdir.prepare, spec.credential)
                env = engine_environment(
                    run=str(spec.run),
                    control_address=spec.control_address,
                    entrypoint=spec.entrypoint,
                    paths=EnginePaths(
                        tool_dir=str(tool_dir),
                        credential_file=str(workdir.credential),
                        input_dir=str(workdir.input),
                        output_dir=str(workdir.output),
                    ),
                    extra=spec.environment,
                    base=self._base_environment,
                )
                process = await self._spawn(self._argv(spec.limits), env, workdir.path)
            except OSError as exc:
                await asyncio.to_thread(workdir.remove)
                log.error("cannot start the engine of %s: %s", spec.run, exc)
                raise LaunchFailed(
                    f"cannot start the engine: {exc.strerror or exc}", Reason.LAUNCH_FAILED
                ) from exc
            now = datetime.now(UTC)
            child = _Child(
                container=Container(
                    run=spec.run,
                    container_id=str(process.pid),
                    backend=BACKEND_NAME,
                    state=ContainerState.RUNNING,
                    start_time=now,
                    deadline_time=now + timedelta(seconds=spec.deadline) if spec.deadline else None,
                ),
                workdir=workdir,
                process=process,
            )
            log.info("started %s as pid %d in %s", spec.run, process.pid, workdir.path)
            self._track(child)
            return child.container

    # -- internals -------------------------------------------------------------------------

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

    async def _signal(self, tracked: _Child, sig: signal.Signals) -> None:
        if tracked.process.returncode is None:  # else the group id may be reused
            self._signal_group(tracked, sig)

    async def _watch(self, tracked: _Child) -> None:
        returncode = await tracked.process.wait()
        self._ended(tracked)
        # What the engine left behind in its group dies with it.
        self._signal_group(tracked, signal.SIGKILL)
        if tracked.stop_cause is not None:
            cause = tracked.stop_cause
        elif returncode < 0:
            cause = ExitCause.SIGNALED
        else:
            cause = ExitCause.EXITED
        last_lines = await asyncio.to_thread(read_last_lines, tracked.workdir.path / LOG_FILE)
        if not self._keep_workdirs:
            await asyncio.to_thread(tracked.workdir.remove)
        self._record_exit(tracked, cause, returncode, last_lines)
