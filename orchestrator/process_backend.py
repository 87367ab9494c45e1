"""The process backend (development mode, DESIGN.md §7): each run's engine is a local
subprocess in its own process group, started through the limits exec wrapper.

Per run it creates ``<data-dir>/orchestrator/runs/<tenant>_<run>/`` holding ``input/``,
``output/``, ``tool/`` (a copy of the source directory it was given: the run loads its tool
from there), ``credential`` (mode 0400), ``engine.log`` (stdout and stderr) and
``engine.json`` (process_engine.py). The work dir is removed once the engine has exited,
before its EXITED event is published, unless ``keep_workdirs`` is set. When the engine (the
group leader) exits, whatever it left running in its process group (and in its cgroup) is
killed, as a container's processes die with it.

Limits (limits.py): where the machine allows it (cgroups.py: root, or a delegated cgroup
tree) each run gets a cgroup bounding its resident memory and its pids, and an engine the
OOM killer ended, or one that ended abnormally after a refused fork, is reported as
OOM_KILLED or PIDS_LIMIT_EXCEEDED; a fork bomb is ended as PIDS_LIMIT_EXCEEDED
(limit_watch.py). Elsewhere (or with ``cgroups=False``) memory is an
address-space cap with headroom and pids are not bounded. Disk space is not bounded here.

Restart safety. An engine outlives an orchestrator process that dies (its own session). At
`start()` the work dirs an earlier process left are reconciled: an engine still running is
re-attached (a RUNNING event, its deadline re-armed, its end watched through a pidfd); one
that ended meanwhile gets its EXITED event; either way its work dir (and cgroup) is removed
once it has ended. Their exit codes are lost with their parent: such an exit is reported as
its stop cause or limit when one is known, else VANISHED (exit code 0).

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

from . import cgroups as cg
from .backend import (
    Container,
    Image,
    LaunchSpec,
    Limits,
    LocalSource,
    RunName,
)
from .engine_env import EnginePaths, engine_environment
from .errors import InvalidArgument, LaunchFailed, NotFound, Reason
from .events import EventLog
from .exits import Observed, exit_cause
from .limit_watch import LimitWatch, stop_watching
from .limits import address_space_cap, limits_argv
from .output_tail import LAST_LINES, read_last_lines
from .process_engine import EngineRecord, start_ticks, wait_for_exit
from .supervisor import DEFAULT_KILL_GRACE, DEFAULT_MAX_EXITED, Supervisor, Tracked
from .workdir import WorkDir, runs_dir

log = logging.getLogger(__name__)

BACKEND_NAME = "process"
DEFAULT_ENGINE_COMMAND: tuple[str, ...] = (sys.executable, "-m", "flnet.runtime")
LOG_FILE = "engine.log"
#: The last output line of an engine re-attached after a restart, whose exit status only
#: its parent (the orchestrator process that died) could have learnt.
UNKNOWN_STATUS_LINE = (
    "flnet: the engine outlived the orchestrator process that started it; its exit status "
    "is unknown"
)


@dataclass(eq=False, kw_only=True)
class _Child(Tracked):
    """A run's engine process."""

    pid: int
    # Our child; None for an engine re-attached after a restart (see the module doc).
    process: asyncio.subprocess.Process | None
    record: EngineRecord | None
    cgroup: cg.RunCgroup | None


class ProcessBackend(Supervisor[_Child]):
    """Runs engines as local subprocesses. Create and use it inside one event loop.

    `engine_command` is the engine's argv (default ``python -m flnet.runtime``); the limits
    wrapper is put in front of it. `kill_grace` is the time between SIGTERM and SIGKILL
    at the deadline and the default of StopRun. `base_environment` (default: this process's
    environment, read at construction) supplies the allowlisted basics of engine_env.py.
    `cgroups`: give each run a cgroup when the machine allows it (else rlimits only).
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
        cgroups: bool = True,
    ) -> None:
        super().__init__(BACKEND_NAME, events, kill_grace=kill_grace, max_exited=max_exited)
        self._runs_dir = runs_dir(data_dir)
        self._engine_command = tuple(engine_command or DEFAULT_ENGINE_COMMAND)
        if not self._engine_command:
            raise ValueError("engine_command must not be empty")
        self._keep_workdirs = keep_workdirs
        self._base_environment = dict(os.environ if base_environment is None else base_environment)
        self._use_cgroups = cgroups
        self._cgroups: cg.Cgroups | None = None

    @property
    def runs_dir(self) -> Path:
        """Parent of the per-run work dirs."""
        return self._runs_dir

    @property
    def cgroups(self) -> cg.Cgroups | None:
        """Where the runs' cgroups live; None when runs get none (rlimits only)."""
        return self._cgroups

    async def start(self) -> None:
        """Sets up the runs' cgroups, then reconciles what an earlier process left."""
        if self._use_cgroups:
            self._cgroups, why = await asyncio.to_thread(cg.detect, self._runs_dir)
            if self._cgroups is None:
                log.warning(
                    "runs get no cgroup (%s): memory limits are address-space caps with %s "
                    "of headroom, pids are not limited",
                    why,
                    "4 GiB",
                )
        await self._reconcile()

    async def launch(self, spec: LaunchSpec) -> Container:
        async with self._launching(spec.run) as existing:
            if existing is not None:
                log.info("%s already has container %s", spec.run, existing.container.container_id)
                return existing.container
            tool_dir = self._tool_dir(spec)
            workdir = WorkDir.of(self._runs_dir, spec.run)
            cgroup = self._cgroups.of(spec.run) if self._cgroups is not None else None
            now = datetime.now(UTC)
            deadline = now + timedelta(seconds=spec.deadline) if spec.deadline else None
            try:
                await asyncio.to_thread(workdir.prepare, spec.credential)
                tool_dir = await asyncio.to_thread(workdir.copy_tool, tool_dir)
                if cgroup is not None:
                    await asyncio.to_thread(
                        cgroup.create, memory_bytes=spec.limits.memory_bytes, pids=spec.limits.pids
                    )
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
                process = await self._spawn(self._argv(spec.limits, cgroup), env, workdir.path)
            except OSError as exc:
                if cgroup is not None:
                    await asyncio.to_thread(cgroup.end)
                await asyncio.to_thread(workdir.remove)
                log.error("cannot start the engine of %s: %s", spec.run, exc)
                raise LaunchFailed(
                    f"cannot start the engine: {exc.strerror or exc}", Reason.LAUNCH_FAILED
                ) from exc
            record = EngineRecord(process.pid, start_ticks(process.pid), now, deadline)
            try:
                await asyncio.to_thread(record.write, workdir)
            except OSError as exc:  # it runs; only a restart would not find it
                log.warning("cannot record the engine of %s: %s", spec.run, exc)
            child = _Child(
                container=Container.running(
                    spec.run, str(process.pid), BACKEND_NAME, now, deadline
                ),
                workdir=workdir,
                pid=process.pid,
                process=process,
                record=record,
                cgroup=cgroup,
            )
            log.info("started %s as pid %d in %s", spec.run, process.pid, workdir.path)
            self._track(child)
            return child.container

    async def close(self, grace: float, *, end_engines: bool = True) -> None:
        await super().close(grace, end_engines=end_engines)
        if self._cgroups is not None:
            await asyncio.to_thread(self._cgroups.close)

    # -- taking over the engines of an earlier orchestrator process ------------------------

    async def _reconcile(self) -> None:
        for path in await asyncio.to_thread(_subdirectories, self._runs_dir):
            workdir = WorkDir(path)
            run = workdir.run()
            if run is not None:
                await self._take_over(run, workdir)
        if self._cgroups is not None:
            for name, cgroup in await asyncio.to_thread(self._cgroups.leftovers):
                if not await asyncio.to_thread((self._runs_dir / name).is_dir):
                    log.info("ending cgroup %s, whose run has no work dir", name)
                    await asyncio.to_thread(cgroup.end)
        log.info("reconciled: %d running engine(s) re-attached", len(await self.list()))

    async def _take_over(self, run: RunName, workdir: WorkDir) -> None:
        """A work dir an earlier process left (module doc)."""
        cgroup = self._cgroups.of(run) if self._cgroups is not None else None
        record = await asyncio.to_thread(EngineRecord.read, workdir)
        reported = await asyncio.to_thread(workdir.reported)
        if record is None or reported:
            # Never started (LaunchRun failed), or reported and kept by keep_workdirs.
            if reported and self._keep_workdirs:
                return
            log.info("removing the work dir of %s, whose engine %s", run,
                     "was reported" if reported else "never started")  # fmt: skip
            if cgroup is not None:
                await asyncio.to_thread(cgroup.end)
            await asyncio.to_thread(workdir.remove)
            return
        running = await asyncio.to_thread(record.alive)
        child = _Child(
            container=Container.running(
                run, str(record.pid), BACKEND_NAME, record.start_time, record.deadline
            ),
            workdir=workdir,
            stop_cause=await asyncio.to_thread(workdir.stop_cause),
            pid=record.pid,
            process=None,
            record=record,
            cgroup=cgroup,
        )
        log.info("taking over pid %d of %s (%s)", record.pid, run,
                 "running" if running else "ended")  # fmt: skip
        # One that ended meanwhile gets its EXITED event only.
        self._track(child, running=running)

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

    def _argv(self, limits: Limits, cgroup: cg.RunCgroup | None) -> tuple[str, ...]:
        return (
            sys.executable,
            "-m",
            "flnet.orchestrator.limits",
            *limits_argv(
                cgroups=[str(path) for path in cgroup.join_dirs] if cgroup else [],
                # A cgroup bounds resident memory; without one, the address space.
                address_space_bytes=0 if cgroup else address_space_cap(limits.memory_bytes),
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
            os.killpg(child.pid, sig)

    async def _signal(self, tracked: _Child, sig: signal.Signals) -> None:
        # Only while the leader lives: after that, its group id may be reused.
        if tracked.process is not None:
            alive = tracked.process.returncode is None
        else:
            alive = not tracked.ended.is_set()
        if alive:
            self._signal_group(tracked, sig)

    async def _watch(self, tracked: _Child) -> None:
        watching: asyncio.Task[None] | None = None
        pids = tracked.cgroup.dirs.get(cg.PIDS) if tracked.cgroup is not None else None
        if pids is not None:
            limits = LimitWatch(pids_dir=pids)
            watching = asyncio.create_task(limits.run(self._fork_bomb_stopper(tracked)))
        returncode: int | None = None
        try:
            if tracked.process is not None:
                returncode = await tracked.process.wait()
            elif tracked.record is not None:
                await wait_for_exit(tracked.record)
        finally:
            if watching is not None:
                await stop_watching(watching)
        self._ended(tracked)
        # What the engine left behind in its group (and cgroup) dies with it.
        self._signal_group(tracked, signal.SIGKILL)
        counters = cg.Counters()
        if tracked.cgroup is not None:
            counters = await asyncio.to_thread(tracked.cgroup.end)
        abnormal = returncode != 0
        cause = exit_cause(
            Observed(
                code=returncode,
                stop_cause=tracked.stop_cause,
                oom_killed=abnormal and counters.oom_kills > 0,
                pids_limit_hit=counters.pids_max_events > 0,
            )
        )
        last_lines = await asyncio.to_thread(read_last_lines, tracked.workdir.path / LOG_FILE)
        if returncode is None:
            last_lines = (*last_lines, UNKNOWN_STATUS_LINE)[-LAST_LINES:]
        if not self._keep_workdirs:
            await asyncio.to_thread(tracked.workdir.remove)
        self._record_exit(tracked, cause, returncode or 0, last_lines)
        if self._keep_workdirs:
            await asyncio.to_thread(tracked.workdir.mark_reported)


def _subdirectories(path: Path) -> list[Path]:
    try:
        return [child for child in path.iterdir() if child.is_dir()]
    except FileNotFoundError:
        return []
