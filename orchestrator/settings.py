"""The orchestrator's settings, read once at start: command-line flags, falling back to
environment variables, falling back to defaults.

    flag                 environment                     default
    --control            FLNET_CONTROL_ADDRESS           127.0.0.1:50051
    --name               FLNET_ORCHESTRATOR_NAME         the host name (lower-cased)
    --data-dir           FLNET_DATA_DIR                  (required)
    --backend            FLNET_ORCHESTRATOR_BACKEND      process (or docker, swarm)
    --cpu-millis         FLNET_ORCHESTRATOR_CPU_MILLIS   1000 per CPU
    --memory-bytes       FLNET_ORCHESTRATOR_MEMORY_BYTES the host's memory
    --run-slots          FLNET_ORCHESTRATOR_RUN_SLOTS    16
    --labels             FLNET_ORCHESTRATOR_LABELS       none ("gpu,site=eu")
    --engine-address     FLNET_ENGINE_CONTROL_ADDRESS    what the control plane says
    --engine-command     FLNET_ENGINE_COMMAND            process: "<python> -m flnet.runtime",
                                                         docker: the image's CMD (shell-split)
    --kill-grace         FLNET_KILL_GRACE                5 (seconds)
    --keep-workdirs      FLNET_KEEP_WORKDIRS=1           off
    --docker-url         FLNET_DOCKER_URL, then          unix:///var/run/docker.sock
                         DOCKER_HOST
    --detach-on-stop     FLNET_DETACH_ON_STOP=1          off (docker: containers outlive a stop)
    --no-cgroups         FLNET_NO_CGROUPS=1              off (process: a cgroup per run)
    --swarm-constraint   FLNET_SWARM_CONSTRAINTS         none (swarm: placement constraints of
                         (comma-separated)               every run, e.g. node.labels.flnet==true)
    --warm-pool          FLNET_WARM_POOL                 0 (docker: standby containers for the
                                                         next launches of recent shapes of run)
    --log-level          FLNET_LOG_LEVEL                 INFO
    (identity)           FLNET_OIDC_ISSUER, FLNET_ORCHESTRATOR_CLIENT_ID,
                         FLNET_ORCHESTRATOR_CLIENT_SECRET (or ..._SECRET_FILE),
                         FLNET_ORCHESTRATOR_RESOURCE (an RFC 8707 resource indicator)
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flnet import resource_names

from .backends import BACKENDS, DEFAULT_BACKEND
from .docker_backend import DEFAULT_DOCKER_URL, docker_socket
from .link import Identity
from .supervisor import DEFAULT_KILL_GRACE

_TRUE = {"1", "true", "yes", "on"}
DEFAULT_CONTROL = "127.0.0.1:50051"
DEFAULT_RUN_SLOTS = 16
LABEL = re.compile(r"[a-z0-9._-]{1,63}")


def default_name() -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-")
    return (name or "orchestrator")[:63]


def host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_labels(text: str) -> dict[str, str]:
    """ "gpu,site=eu" -> {"gpu": "", "site": "eu"}; ValueError names a bad one."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        if not LABEL.fullmatch(key) or (value and not LABEL.fullmatch(value)):
            raise ValueError(f"label {item!r}: keys and values of a-z, 0-9, '.', '_', '-'")
        labels[key] = value
    return labels


@dataclass(frozen=True)
class Settings:
    control: str
    identity: Identity
    data_dir: Path
    backend: str
    # None: the backend's default.
    engine_command: tuple[str, ...] | None
    engine_address: str
    kill_grace: float
    keep_workdirs: bool
    docker_url: str
    detach_on_stop: bool
    # Process backend: a cgroup per run where the machine allows it.
    cgroups: bool
    # Swarm backend: placement constraints of every run's service.
    swarm_constraints: tuple[str, ...]
    # Docker backend: standby containers waiting for their runs (docker_pool.py).
    warm_pool: int
    log_level: str
    # The orchestrator's client at the OIDC issuer (client_credentials, scope orchestrator).
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    resource: str

    @classmethod
    def load(cls, argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
        """Parses `argv` (without the program name); exits with usage on bad input."""
        env = environ.get
        parser = argparse.ArgumentParser(
            prog="python -m flnet.orchestrator",
            description="FLNet orchestrator: attaches to the control plane and runs the "
            "engines of the runs it places here.",
        )
        parser.add_argument(
            "--control",
            default=env("FLNET_CONTROL_ADDRESS", DEFAULT_CONTROL),
            help="the control plane's address (host:port or unix:///path)",
        )
        parser.add_argument("--name", default=env("FLNET_ORCHESTRATOR_NAME") or default_name())
        parser.add_argument(
            "--data-dir",
            type=Path,
            default=env("FLNET_DATA_DIR"),
            required="FLNET_DATA_DIR" not in environ,
            help="platform data directory; work dirs go to DATA_DIR/orchestrator/runs",
        )
        parser.add_argument(
            "--backend",
            choices=list(BACKENDS),
            default=env("FLNET_ORCHESTRATOR_BACKEND", DEFAULT_BACKEND),
        )
        parser.add_argument(
            "--cpu-millis",
            type=int,
            default=int(env("FLNET_ORCHESTRATOR_CPU_MILLIS") or (os.cpu_count() or 1) * 1000),
        )
        parser.add_argument(
            "--memory-bytes",
            type=int,
            default=int(env("FLNET_ORCHESTRATOR_MEMORY_BYTES") or host_memory()),
        )
        parser.add_argument(
            "--run-slots",
            type=int,
            default=int(env("FLNET_ORCHESTRATOR_RUN_SLOTS") or DEFAULT_RUN_SLOTS),
        )
        parser.add_argument(
            "--labels",
            default=env("FLNET_ORCHESTRATOR_LABELS", ""),
            help='labels tool versions may require: "gpu,site=eu"',
        )
        parser.add_argument(
            "--engine-address",
            default=env("FLNET_ENGINE_CONTROL_ADDRESS", ""),
            help="where this host's engines reach the control plane (default: what the "
            "control plane says)",
        )
        parser.add_argument(
            "--engine-command",
            default=env("FLNET_ENGINE_COMMAND"),
            help="engine command line, shell-split (default: python -m flnet.runtime for "
            "the process backend, the image's CMD for docker)",
        )
        parser.add_argument(
            "--kill-grace",
            type=float,
            default=float(env("FLNET_KILL_GRACE", DEFAULT_KILL_GRACE)),
            help="seconds between SIGTERM and SIGKILL",
        )
        parser.add_argument(
            "--keep-workdirs",
            action="store_true",
            default=env("FLNET_KEEP_WORKDIRS", "").lower() in _TRUE,
            help="keep exited runs' work dirs (debugging)",
        )
        parser.add_argument(
            "--docker-url",
            default=env("FLNET_DOCKER_URL") or env("DOCKER_HOST") or DEFAULT_DOCKER_URL,
            help="the Docker engine's unix socket (docker and swarm backends)",
        )
        parser.add_argument(
            "--detach-on-stop",
            action="store_true",
            default=env("FLNET_DETACH_ON_STOP", "").lower() in _TRUE,
            help="docker backends: leave running containers running at stop; the next "
            "start re-attaches them",
        )
        parser.add_argument(
            "--no-cgroups",
            action="store_true",
            default=env("FLNET_NO_CGROUPS", "").lower() in _TRUE,
            help="process backend: no cgroup per run, rlimits only (memory becomes an "
            "address-space cap, pids unlimited)",
        )
        parser.add_argument(
            "--swarm-constraint",
            action="append",
            default=[c for c in env("FLNET_SWARM_CONSTRAINTS", "").split(",") if c.strip()],
            help="swarm backend: a placement constraint of every run (repeatable)",
        )
        parser.add_argument(
            "--warm-pool",
            type=int,
            default=env("FLNET_WARM_POOL", "0"),  # (argparse converts a string default)
            help="docker backend: standby containers, started ahead, that the next launches "
            "of recently launched shapes of run take (0: none)",
        )
        parser.add_argument("--log-level", default=env("FLNET_LOG_LEVEL", "INFO"))
        args = parser.parse_args(list(argv))
        if args.warm_pool < 0:
            parser.error("--warm-pool must not be negative")
        command: tuple[str, ...] | None = None
        if args.engine_command is not None:
            command = tuple(shlex.split(args.engine_command))
            if not command:
                parser.error("--engine-command must not be empty")
        if args.backend in ("docker", "swarm"):
            try:
                docker_socket(args.docker_url)
            except ValueError as exc:
                parser.error(str(exc))
        if args.detach_on_stop and args.backend not in ("docker", "swarm"):
            parser.error("--detach-on-stop needs --backend docker or swarm")
        if not resource_names.ID_RULES["orchestrator"].fullmatch(args.name):
            parser.error("--name: 1 to 63 lower-case letters, digits and '-', not at either end")
        for flag, value in (
            ("--cpu-millis", args.cpu_millis),
            ("--memory-bytes", args.memory_bytes),
            ("--run-slots", args.run_slots),
        ):
            if value < 1:
                parser.error(f"{flag} must be at least 1")
        try:
            labels = parse_labels(args.labels)
        except ValueError as exc:
            parser.error(f"--labels: {exc}")
        secret = env("FLNET_ORCHESTRATOR_CLIENT_SECRET", "")
        if not secret and (secret_file := env("FLNET_ORCHESTRATOR_CLIENT_SECRET_FILE")):
            try:
                secret = Path(secret_file).read_text().strip()
            except OSError as exc:
                parser.error(f"FLNET_ORCHESTRATOR_CLIENT_SECRET_FILE: {exc.strerror}")
        issuer, client_id = env("FLNET_OIDC_ISSUER", ""), env("FLNET_ORCHESTRATOR_CLIENT_ID", "")
        if not (issuer and client_id and secret):
            parser.error(
                "the orchestrator needs its client at the OIDC issuer: FLNET_OIDC_ISSUER,"
                " FLNET_ORCHESTRATOR_CLIENT_ID and FLNET_ORCHESTRATOR_CLIENT_SECRET(_FILE)"
            )
        return cls(
            control=args.control,
            identity=Identity(
                name=args.name,
                cpu_millis=args.cpu_millis,
                memory_bytes=args.memory_bytes,
                run_slots=args.run_slots,
                labels=labels,
            ),
            data_dir=Path(args.data_dir),
            backend=args.backend,
            engine_command=command,
            engine_address=args.engine_address,
            kill_grace=args.kill_grace,
            keep_workdirs=args.keep_workdirs,
            docker_url=args.docker_url,
            detach_on_stop=args.detach_on_stop,
            cgroups=not args.no_cgroups,
            swarm_constraints=tuple(c.strip() for c in args.swarm_constraint),
            warm_pool=args.warm_pool,
            log_level=args.log_level.upper(),
            issuer=issuer,
            client_id=client_id,
            client_secret=secret,
            resource=env("FLNET_ORCHESTRATOR_RESOURCE", ""),
        )
