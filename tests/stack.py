"""A whole `flnet up` stack (issuer, orchestrator, control plane, gateway) as separate
processes, the way a user runs it, with a second tenant's user for isolation tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from flnet.cli.login import browser_login, scripted_browser
from flnet.issuer.config import write_default_config
from flnet.issuer.passwords import hash_secret

FLNET = [sys.executable, "-m", "flnet.cli.main"]
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
OTHER_TENANT = "lab-b"
OTHER_USER = "bob"
AUDITOR = "carol"  # of the default tenant; may read, not submit


@dataclass
class RunningStack:
    data: Path
    endpoints: dict[str, str]
    process: subprocess.Popen[str]
    passwords: dict[str, str]
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        """host:port of the gateway (gRPC, gRPC-web, UI)."""
        return self.endpoints["gateway"]

    @property
    def ui(self) -> str:
        return self.endpoints["ui"].rstrip("/")

    @property
    def control(self) -> str:
        return self.endpoints["control"]

    def token(self, user: str = "admin") -> str:
        """An access token of `user`, signed in through the issuer's login page (valid for
        15 minutes: a module's tests share it)."""
        if user not in self._tokens:
            browser = scripted_browser(user, self.passwords[user])
            login = browser_login(self.endpoints["oidc"], browser)
            # A thread of its own: the caller's thread may run an event loop (Playwright's).
            with concurrent.futures.ThreadPoolExecutor(1) as thread:
                credentials = thread.submit(asyncio.run, login).result()
            self._tokens[user] = credentials.access_token
        return self._tokens[user]

    def flnet(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*FLNET, "--data-dir", str(self.data), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"flnet {' '.join(args)}: {done.stdout}{done.stderr}")
        return done

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its components with it
                self.process.wait()


def grpcurl_services(address: str, *flags: str) -> list[str]:
    """The services grpcurl lists at `address` through reflection (`-plaintext` unless `flags`
    say otherwise); fails the test with grpcurl's error when it cannot."""
    listed = subprocess.run(
        [GRPCURL, *(flags or ("-plaintext",)), address, "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.split()


def wait_http_ok(url: str, within: float = 30.0) -> None:
    """Until `GET url` answers 200 (fails the test after `within` seconds)."""
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {within:g} s"
        time.sleep(0.2)


def write_issuer_config(data: Path) -> dict[str, str]:
    """The default development configuration plus a second tenant with its own user, and an
    auditor of the default tenant; returns the users' passwords."""
    path = data / "oidc" / "issuer.yaml"
    credentials = write_default_config(path)
    config = yaml.safe_load(path.read_text())
    config["tenants"].append(OTHER_TENANT)
    other_password = "bob-" + credentials.admin_password
    config["users"][OTHER_USER] = {
        "password_hash": hash_secret(other_password),
        "tenant": OTHER_TENANT,
        "roles": ["data-scientist"],
        "name": "Bob of lab B",
    }
    auditor_password = "carol-" + credentials.admin_password
    config["users"][AUDITOR] = {
        "password_hash": hash_secret(auditor_password),
        "tenant": "default",
        "roles": ["auditor"],
        "name": "Carol the auditor",
    }
    path.write_text(yaml.safe_dump(config))
    return {
        "admin": credentials.admin_password,
        OTHER_USER: other_password,
        AUDITOR: auditor_password,
    }


def start_stack(data: Path, *args: str, env: dict[str, str] | None = None) -> RunningStack:
    """`flnet up` in `data`, once every component serves (raises if it does not)."""
    data.mkdir(parents=True, exist_ok=True)
    passwords = write_issuer_config(data)
    log = (data / "up.log").open("w")
    process = subprocess.Popen(
        [*FLNET, "--data-dir", str(data), "up", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # a group of its own, which stop() can kill as a whole
    )
    endpoints_file = data / "endpoints.json"
    deadline = time.monotonic() + 90
    while not endpoints_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"flnet up did not start: {(data / 'up.log').read_text()}")
        time.sleep(0.1)
    stack = RunningStack(data, json.loads(endpoints_file.read_text()), process, passwords)
    try:
        stack.flnet("login", "--dev")
        for user in passwords:  # now, outside any test's event loop
            stack.token(user)
    except BaseException:
        stack.stop()  # never a stack left behind by a fixture that failed
        raise
    return stack
