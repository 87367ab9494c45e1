"""The orchestrator's settings, read once at start: command-line flags, falling back to
environment variables, falling back to defaults.

    flag                 environment               default
    --listen             FLNET_ORCHESTRATOR_LISTEN 127.0.0.1:50052
    --data-dir           FLNET_DATA_DIR            (required)
    --backend            FLNET_ORCHESTRATOR_BACKEND process (or docker)
    --engine-command     FLNET_ENGINE_COMMAND      process: "<python> -m flnet.runtime",
                                                   docker: the image's CMD (shell-split)
    --kill-grace         FLNET_KILL_GRACE          5 (seconds)
    --stop-grace         FLNET_STOP_GRACE          5 (seconds)
    --keep-workdirs      FLNET_KEEP_WORKDIRS=1     off
    --docker-url         FLNET_DOCKER_URL, then    unix:///var/run/docker.sock
                         DOCKER_HOST
    --detach-on-stop     FLNET_DETACH_ON_STOP=1    off (docker: containers outlive a stop)
    --no-cgroups         FLNET_NO_CGROUPS=1        off (process: a cgroup per run when possible)
    --log-level          FLNET_LOG_LEVEL           INFO
    (identity)           FLNET_OIDC_ISSUER, ...    required: see flnet.server.auth.settings
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flnet.server.auth import AuthSettings

from .app import DEFAULT_LISTEN, DEFAULT_STOP_GRACE
from .backends import BACKENDS, DEFAULT_BACKEND
from .docker_backend import DEFAULT_DOCKER_URL, docker_socket
from .supervisor import DEFAULT_KILL_GRACE

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    listen: str
    data_dir: Path
    backend: str
    # None: the backend's default.
    engine_command: tuple[str, ...] | None
    kill_grace: float
    stop_grace: float
    keep_workdirs: bool
    docker_url: str
    detach_on_stop: bool
    # Process backend: a cgroup per run where the machine allows it.
    cgroups: bool
    log_level: str
    # Who may call (FLNET_OIDC_*): the control plane's service tokens, audience
    # flnet-orchestrator, scope orchestrator.
    auth: AuthSettings

    @classmethod
    def load(cls, argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
        """Parses `argv` (without the program name); exits with usage on bad input."""
        parser = argparse.ArgumentParser(
            prog="python -m flnet.orchestrator",
            description="FLNet orchestrator: launches and stops the engines of runs.",
        )
        parser.add_argument(
            "--listen",
            default=environ.get("FLNET_ORCHESTRATOR_LISTEN", DEFAULT_LISTEN),
            help="host:port to serve on (port 0 picks a free one)",
        )
        parser.add_argument(
            "--data-dir",
            type=Path,
            default=environ.get("FLNET_DATA_DIR"),
            required="FLNET_DATA_DIR" not in environ,
            help="platform data directory; work dirs go to DATA_DIR/orchestrator/runs",
        )
        parser.add_argument(
            "--backend",
            choices=list(BACKENDS),
            default=environ.get("FLNET_ORCHESTRATOR_BACKEND", DEFAULT_BACKEND),
        )
        parser.add_argument(
            "--engine-command",
            default=environ.get("FLNET_ENGINE_COMMAND"),
            help="engine command line, shell-split (default: python -m flnet.runtime for "
            "the process backend, the image's CMD for docker)",
        )
        parser.add_argument(
            "--kill-grace",
            type=float,
            default=float(environ.get("FLNET_KILL_GRACE", DEFAULT_KILL_GRACE)),
            help="seconds between SIGTERM and SIGKILL",
        )
        parser.add_argument(
            "--stop-grace",
            type=float,
            default=float(environ.get("FLNET_STOP_GRACE", DEFAULT_STOP_GRACE)),
            help="seconds in-flight calls get at shutdown",
        )
        parser.add_argument(
            "--keep-workdirs",
            action="store_true",
            default=environ.get("FLNET_KEEP_WORKDIRS", "").lower() in _TRUE,
            help="keep exited runs' work dirs (debugging)",
        )
        parser.add_argument(
            "--docker-url",
            default=environ.get("FLNET_DOCKER_URL")
            or environ.get("DOCKER_HOST")
            or DEFAULT_DOCKER_URL,
            help="the Docker engine's unix socket (docker backend)",
        )
        parser.add_argument(
            "--detach-on-stop",
            action="store_true",
            default=environ.get("FLNET_DETACH_ON_STOP", "").lower() in _TRUE,
            help="docker backend: leave running containers running at stop; the next start "
            "re-attaches them",
        )
        parser.add_argument(
            "--no-cgroups",
            action="store_true",
            default=environ.get("FLNET_NO_CGROUPS", "").lower() in _TRUE,
            help="process backend: no cgroup per run, rlimits only (memory becomes an "
            "address-space cap, pids unlimited)",
        )
        parser.add_argument("--log-level", default=environ.get("FLNET_LOG_LEVEL", "INFO"))
        args = parser.parse_args(list(argv))
        command: tuple[str, ...] | None = None
        if args.engine_command is not None:
            command = tuple(shlex.split(args.engine_command))
            if not command:
                parser.error("--engine-command must not be empty")
        if args.backend == "docker":
            try:
                docker_socket(args.docker_url)
            except ValueError as exc:
                parser.error(str(exc))
        if args.detach_on_stop and args.backend != "docker":
            parser.error("--detach-on-stop needs --backend docker")
        try:
            auth = AuthSettings.from_env(environ)
        except ValueError as exc:
            parser.error(str(exc))
        return cls(
            listen=args.listen,
            data_dir=Path(args.data_dir),
            backend=args.backend,
            engine_command=command,
            kill_grace=args.kill_grace,
            stop_grace=args.stop_grace,
            keep_workdirs=args.keep_workdirs,
            docker_url=args.docker_url,
            detach_on_stop=args.detach_on_stop,
            cgroups=not args.no_cgroups,
            log_level=args.log_level.upper(),
            auth=auth,
        )
