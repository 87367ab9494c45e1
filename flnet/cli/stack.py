"""`flnet up`: supervise the platform's components as separate processes on loopback, the
way a deployment runs them, and publish their endpoints in <data-dir>/endpoints.json.

The data dir, its logs and endpoints.json are the user's only (folders 0700, files 0600), and
the components start with umask 0o077, so that whatever they write is too (flnet.datadir)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flnet import timeouts
from flnet.channels import insecure_channel
from flnet.datadir import PRIVATE_UMASK, open_private, own_private_dir, private_dir, write_private

log = logging.getLogger("flnet.up")
ENDPOINTS = "endpoints.json"
PORTS = "stack-ports.json"
# Written by the embedded issuer at its first start (flnet.issuer.config; not imported here,
# so that the CLI starts without the issuer's dependencies).
DEV_CREDENTIALS = "dev-credentials.json"
# Standby containers `flnet up --backend docker` keeps for the next runs (FLNET_WARM_POOL).
STACK_WARM_POOL = 2


class StackNotRunning(RuntimeError):
    pass


class ComponentFailed(RuntimeError):
    """A component of the stack did not start: which, why, and the end of its log."""


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: all held at once while they are picked (one at a time,
    the system may hand out a port just released, and two components would share it)."""
    held = [socket.socket() for _ in range(count)]
    try:
        for s in held:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def remembered_port(data_dir: Path, name: str, fallback: int) -> int:
    """The port `name` had the last time a stack served `data_dir`, while it is free (the
    gateway's: the development issuer's URL, which cached logins name, stays the same across
    restarts); else the free port `fallback`, remembered for next time."""
    path = data_dir / PORTS
    try:
        ports = json.loads(path.read_text())
    except (OSError, ValueError):
        ports = {}
    port = ports.get(name)
    if not (isinstance(port, int) and 0 < port < 65536 and port_is_free(port)):
        port = fallback
        write_private(path, json.dumps({**ports, name: port}))
    return port


def running_stack(data_dir: Path) -> dict[str, str] | None:
    """The endpoints of a stack serving `data_dir` now (its gateway accepts connections),
    else None (none started, or one that died without unpublishing)."""
    try:
        endpoints = read_endpoints(data_dir)
    except StackNotRunning:
        return None
    host, _, port = endpoints.get("gateway", "").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except (OSError, ValueError):
        return None
    return endpoints


def read_endpoints(data_dir: Path) -> dict[str, str]:
    path = data_dir / ENDPOINTS
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise StackNotRunning(
            f"no running stack found ({path} is missing); start one with `flnet up`"
        ) from None
    return {k: str(v) for k, v in data.items()}


async def wait_http_healthy(url: str, within: float = 30.0) -> None:
    """Until `GET url` answers 200 (raises TimeoutError)."""
    import aiohttp  # only `flnet up` needs it

    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as res:
                    if res.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not become healthy within {within:g} s")
            await asyncio.sleep(0.1)


async def wait_healthy(address: str, within: float = 30.0) -> None:
    """Until the server at `address` answers SERVING (raises TimeoutError)."""
    deadline = time.monotonic() + within
    async with insecure_channel(address) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # its stubs type it synchronous
        while True:
            try:
                res = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if res.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} did not become healthy within {within:g} s")
            await asyncio.sleep(0.1)


async def wait_log_line(path: Path, line: str, offset: int, within: float = 30.0) -> None:
    """Until the log at `path` says `line` after `offset` (raises TimeoutError)."""
    deadline = time.monotonic() + within
    while True:
        with path.open("rb") as f:
            f.seek(offset)
            if line.encode() in f.read():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not say {line!r} within {within:g} s")
        await asyncio.sleep(0.1)


@dataclass
class Component:
    """One supervised process: restarted with backoff when it dies on its own."""

    name: str
    argv: list[str]
    address: str
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    env: dict[str, str] = field(default_factory=dict)
    # An HTTP health URL (the OIDC issuer); gRPC health checking otherwise.
    health_url: str = ""
    # A line its log says once it is ready (a component that serves nothing: the
    # orchestrator, which dials the control plane).
    ready_line: str = ""

    async def start(self) -> None:
        logfile = open_private(self.log_path, os.O_WRONLY | os.O_APPEND)
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                env={**os.environ, **self.env},
                umask=PRIVATE_UMASK,
            )
        finally:
            os.close(logfile)
        process = self.process
        if self.ready_line:
            ready = wait_log_line(self.log_path, self.ready_line, self.log_path.stat().st_size)
        elif self.health_url:
            ready = wait_http_healthy(self.health_url)
        else:
            ready = wait_healthy(self.address)
        healthy = asyncio.create_task(ready)
        exited = asyncio.create_task(process.wait())
        await asyncio.wait({healthy, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if healthy.done() and healthy.exception() is None:
            where = f"serving on {self.address}" if self.address else "ready"
            log.info("%s %s (pid %d)", self.name, where, process.pid)
            return
        healthy.cancel()
        if process.returncode is None:  # alive, but never healthy
            why = "did not become healthy within 30 s"
            await self.stop(grace=2.0)
        else:
            why = f"exited with code {process.returncode}"
        raise ComponentFailed(f"{self.name} did not start: it {why}.\n{self.log_tail()}")

    def log_tail(self, lines: int = 12) -> str:
        """The last lines of the component's log, to say why it failed."""
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no log at {self.log_path})"
        return f"The last lines of {self.log_path}:\n" + "\n".join(f"  {t}" for t in tail)

    async def stop(self, grace: float = 10.0) -> None:
        p = self.process
        if p is None or p.returncode is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            await timeouts.wait_for(p.wait(), grace)
        except TimeoutError:
            p.kill()
            await p.wait()


class Stack:
    """The OIDC issuer, the control plane, the orchestrator attached to it and the gateway,
    wired to each other.

    Identity: the embedded development issuer (`python -m flnet.issuer`, its configuration and
    generated secrets under <data-dir>/oidc), whose orchestrator client the orchestrator
    attaches with. Its public URL is the gateway's `/oidc`, so that the UI, the API and
    sign-in share one origin; the servers fetch its keys directly. With FLNET_OIDC_ISSUER set,
    that external issuer is used instead and none is started; the orchestrator's client then
    comes from FLNET_ORCHESTRATOR_CLIENT_ID and FLNET_ORCHESTRATOR_CLIENT_SECRET(_FILE)."""

    def __init__(
        self,
        data_dir: Path,
        control_port: int = 0,
        extra_env: dict[str, str] | None = None,
        backend: str = "process",
        oidc_port: int = 0,
        gateway_port: int = 0,
        replicas: int = 1,
    ) -> None:
        self.data_dir = data_dir
        if (running := running_stack(data_dir)) is not None:
            raise ValueError(
                f"a stack already serves {data_dir} (its UI: {running.get('ui', '?')}): use "
                "it, stop it (Ctrl-C where `flnet up` runs), or give another --data-dir"
            )
        logs = private_dir(own_private_dir(data_dir) / "logs")
        py = sys.executable
        # Ports not given are picked together (distinct): issuer, gateway admin, gateway, then
        # each control plane.
        picked = iter(free_ports(3 + replicas))
        issuer_port, admin_port, any_gateway_port = next(picked), next(picked), next(picked)
        controls = [f"127.0.0.1:{control_port or next(picked)}"]
        controls += [f"127.0.0.1:{next(picked)}" for _ in range(replicas - 1)]
        self.gateway = "127.0.0.1:" + str(
            gateway_port or remembered_port(data_dir, "gateway", any_gateway_port)
        )
        gateway_admin = f"127.0.0.1:{admin_port}"
        env = dict(extra_env or {})
        external = env.get("FLNET_OIDC_ISSUER") or os.environ.get("FLNET_OIDC_ISSUER")
        self.embedded_issuer = not external
        self.issuer = (external or f"http://{self.gateway}/oidc").rstrip("/")
        env["FLNET_OIDC_ISSUER"] = self.issuer
        if replicas > 1:
            env.update(self._replica_env(env, controls))
        from flnet.orchestrator.link import ATTACHED_LINE

        if backend in ("docker", "swarm") and not os.environ.get("FLNET_ENGINE_GID"):
            # The engine socket admits the containers' group (flnet.control.engine_socket).
            from flnet.orchestrator.docker_container import ENGINE_GID

            env.setdefault("FLNET_ENGINE_GID", str(ENGINE_GID))
        if backend == "docker" and not os.environ.get("FLNET_WARM_POOL"):
            # Runs start in a standby container of their shape (orchestrator.docker_pool).
            env.setdefault("FLNET_WARM_POOL", str(STACK_WARM_POOL))
        issuer_listen = f"127.0.0.1:{oidc_port or issuer_port}"
        issuer_direct = f"http://{issuer_listen}/oidc"
        if self.embedded_issuer:
            env.setdefault("FLNET_OIDC_JWKS_URI", f"{issuer_direct}/jwks")
        issuer_components = [
            Component(
                "oidc",
                [
                    py,
                    "-m",
                    "flnet.issuer",
                    "--listen",
                    issuer_listen,
                    "--issuer",
                    self.issuer,
                    "--data-dir",
                    str(data_dir),
                ],
                issuer_listen,
                logs / "oidc.log",
                env=env,
                health_url=f"{issuer_direct}/healthz",
            ),
        ]
        gateway_argv = [
            py,
            "-m",
            "flnet.gateway",
            "--listen",
            self.gateway,
            "--admin",
            gateway_admin,
            "--control",
            ",".join(controls),
            "--data-dir",
            str(data_dir),
        ]
        if self.embedded_issuer:
            gateway_argv += ["--issuer-upstream", issuer_listen]
        self.components = [
            *(issuer_components if self.embedded_issuer else []),
            *(
                Component(
                    "control" if i == 0 else f"control-{i + 1}",
                    [
                        py,
                        "-m",
                        "flnet.control",
                        "--listen",
                        address,
                        "--data-dir",
                        str(data_dir if i == 0 else data_dir / "replicas" / str(i + 1)),
                    ],
                    address,
                    logs / ("control.log" if i == 0 else f"control-{i + 1}.log"),
                    env=dict(env),
                )
                for i, address in enumerate(controls)
            ),
            Component(
                "gateway",
                gateway_argv,
                self.gateway,
                logs / "gateway.log",
                env=env,
                health_url=f"http://{gateway_admin}/ready",
            ),
            # Last: it attaches to the control plane (every replica, the first preferred)
            # with a token of the issuer behind the gateway; ready once its log says so.
            Component(
                "orchestrator",
                [
                    py,
                    "-m",
                    "flnet.orchestrator",
                    "--control",
                    controls[0] if len(controls) == 1 else "ipv4:" + ",".join(controls),
                    "--name",
                    "local",
                    "--data-dir",
                    str(data_dir),
                    "--backend",
                    backend,
                ],
                "",
                logs / "orchestrator.log",
                env=env,
                ready_line=ATTACHED_LINE,
            ),
        ]
        self._stopping = False

    def _replica_env(self, env: dict[str, str], controls: list[str]) -> dict[str, str]:
        """What replicas share: one PostgreSQL database, one artifact store, one run-credential
        key; engines get every replica's address."""
        database = env.get("FLNET_DATABASE_URL") or os.environ.get("FLNET_DATABASE_URL", "")
        if not database.startswith("postgresql"):
            raise ValueError("replicas share a PostgreSQL database: set FLNET_DATABASE_URL")
        shared = {
            "FLNET_ARTIFACT_URL": (self.data_dir / "artifacts").absolute().as_uri(),
            "FLNET_RUNTIME_KEY_FILE": str(self.data_dir / "runtime-key.pem"),
            "FLNET_ENGINE_ADDRESS": "ipv4:" + ",".join(controls),
        }
        return {k: v for k, v in shared.items() if not (env.get(k) or os.environ.get(k))}

    @property
    def control(self) -> str:
        """The gRPC target of the control plane: every replica, the first preferred."""
        addresses = [c.address for c in self.components if c.name.startswith("control")]
        return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)

    @property
    def endpoints(self) -> dict[str, str]:
        """What `flnet` commands and people need: the issuer's public URL, each component's
        address, and the web UI."""
        addresses = {c.name: c.address for c in self.components if c.address and c.name != "oidc"}
        return {"oidc": self.issuer, **addresses, "control": self.control, "ui": self.ui}

    @property
    def ui(self) -> str:
        return f"http://{self.gateway}/"

    def _orchestrator_client(self) -> dict[str, str]:
        """The orchestrator's client at the embedded issuer (its generated secret). A data
        dir the issuer configured before orchestrators attached has the same client (scope
        orchestrator) under its former name, control-plane."""
        dev = json.loads((self.data_dir / "oidc" / DEV_CREDENTIALS).read_text())
        kind = "orchestrator" if "orchestrator_client_id" in dev else "control_plane"
        return {
            "FLNET_ORCHESTRATOR_CLIENT_ID": dev[f"{kind}_client_id"],
            "FLNET_ORCHESTRATOR_CLIENT_SECRET": dev[f"{kind}_client_secret"],
        }

    async def start(self) -> None:
        for component in self.components:
            if component.name == "orchestrator" and self.embedded_issuer:
                component.env = {**component.env, **self._orchestrator_client()}
            await component.start()
        endpoints = {**self.endpoints, "pid": str(os.getpid())}
        write_private(self.data_dir / ENDPOINTS, json.dumps(endpoints, indent=2))

    async def supervise(self) -> None:
        """Restarts a component that dies on its own, with backoff; returns never."""
        while not self._stopping:
            for c in self.components:
                if c.process is not None and c.process.returncode is not None:
                    c.restarts += 1
                    log.warning(
                        "%s exited with %s; restarting (%d)",
                        c.name,
                        c.process.returncode,
                        c.restarts,
                    )
                    await asyncio.sleep(min(0.2 * 2**c.restarts, 5.0))
                    try:
                        await c.start()
                    except ComponentFailed as e:
                        log.warning("%s", e)
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / ENDPOINTS).unlink()
        for component in reversed(self.components):  # orchestrator, gateway, control, issuer
            await component.stop()


async def run_stack(stack: Stack, ready: asyncio.Event | None = None) -> None:
    """Starts the stack, supervises it until SIGINT/SIGTERM, then stops it cleanly."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    supervisor: asyncio.Task[None] | None = None
    try:
        await stack.start()
        if ready is not None:
            ready.set()
        supervisor = asyncio.create_task(stack.supervise())
        await stopping.wait()
    finally:
        if supervisor is not None:
            supervisor.cancel()
        await stack.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
