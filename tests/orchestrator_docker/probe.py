"""The engine of the docker backend tests: the test image runs it as its CMD, and it runs
the function FLNET_ENTRYPOINT names ("probe.py:observe"). Standard library only (it runs on
the base image's python3). Functions that wait write "ready" to the output dir first."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

OUTPUT = Path(os.environ.get("FLNET_OUTPUT_DIR", "/mnt/output"))
INPUT = Path(os.environ.get("FLNET_INPUT_DIR", "/mnt/input"))


def ready() -> None:
    (OUTPUT / "ready").touch()


def _first(*paths: str) -> str:
    for path in paths:
        try:
            return Path(path).read_text().strip()
        except OSError:
            continue
    return ""


def _status(field: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def _writable(path: str) -> bool:
    try:
        Path(path).write_text("x")
    except OSError:
        return False
    return True


def _ask_control_plane() -> str:
    address = os.environ["FLNET_CONTROL_ADDRESS"].removeprefix("unix://")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(address)
            conn.sendall(b"ping\n")
            return conn.recv(64).decode().strip()
    except OSError as exc:
        return f"error: {exc}"


def observe() -> None:
    """Writes what the engine sees to observations.json."""
    credential_file = os.environ["FLNET_CREDENTIAL_FILE"]
    credential = Path(credential_file).read_text()
    processes = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
    seen = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "cap_eff": _status("CapEff"),
        "no_new_privs": _status("NoNewPrivs"),
        "root_writable": _writable("/probe"),
        "tmp_writable": _writable("/tmp/probe"),
        "output_writable": _writable(str(OUTPUT / "probe")),
        "interfaces": sorted(os.listdir("/sys/class/net")),
        "net_dev": sorted(
            line.split(":")[0].strip()
            for line in Path("/proc/net/dev").read_text().splitlines()[2:]
        ),
        "memory_limit": _first(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"
        ),
        "memsw_limit": _first("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"),
        "pids_limit": _first("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"),
        "cpu_quota": _first("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu.max"),
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "pid1": Path("/proc/1/cmdline").read_bytes().split(b"\0")[0].decode(),
        "credential": credential,
        "credential_mode": oct(os.stat(credential_file).st_mode & 0o777),
        "credential_writable": os.access(credential_file, os.W_OK),
        "credential_in_env": any(credential in value for value in os.environ.values()),
        "credential_in_cmdlines": any(
            credential.encode() in _read_bytes(p / "cmdline") for p in processes
        ),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("FLNET_", "PYTHON", "X_"))},
        "control_plane": _ask_control_plane(),
        "mounts": _mounts("/tmp", str(INPUT), str(OUTPUT)),
        "disk_available": _available(str(OUTPUT)),
    }
    (OUTPUT / "observations.json").write_text(json.dumps(seen))
    print("observed")


def _mounts(*points: str) -> dict[str, list[str]]:
    """Mount point → [file system type, device, mount options] for `points`."""
    found: dict[str, list[str]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        tail = fields[fields.index("-") + 1 :]
        if fields[4] in points:
            found[fields[4]] = [tail[0], fields[2], fields[5]]
    return found


def _available(path: str) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def lines() -> None:
    for i in range(60):
        print(f"line {i}")
    # Docker copies stdout and stderr apart: a pause makes their order in the log certain.
    time.sleep(0.2)
    print("to stderr", file=sys.stderr)


def exit3() -> None:
    print("bye")
    sys.exit(3)


def sleep() -> None:
    """Ends with SIGTERM (docker-init, PID 1, forwards it)."""
    ready()
    time.sleep(600)


def stubborn() -> None:
    """Ignores SIGTERM: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready()
    time.sleep(600)


def oom() -> None:
    """Fills its memory until the kernel kills it (the pages are written, so resident)."""
    hog = []
    while True:
        hog.append(b"\1" * (8 * 1024 * 1024))


def fill_disk() -> None:
    """Writes to its output until the disk refuses (the OSError ends it, exit code 1)."""
    written = 0
    with (OUTPUT / "big").open("wb") as big:
        try:
            while True:
                big.write(b"\1" * (1024 * 1024))
                big.flush()
                written += 1024 * 1024
        finally:
            print(f"wrote {written // (1024 * 1024)} MiB", flush=True)


def write_bytes() -> None:
    """Writes X_BYTES bytes, half to /tmp, half to its output, then exits 0."""
    total = int(os.environ["X_BYTES"])
    Path("/tmp/half").write_bytes(b"\1" * (total // 2))
    (OUTPUT / "half").write_bytes(b"\1" * (total - total // 2))
    print(f"wrote {total} bytes")


def fork_bomb() -> None:
    """Forks until the pids limit refuses, keeps the limit reached a while as a fork bomb
    does, then aborts, as an engine that cannot start a thread does."""
    children = 0
    while True:
        try:
            pid = os.fork()
        except BlockingIOError:
            break
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        children += 1
    print(f"forked {children}, then no more", flush=True)
    time.sleep(1)
    os.abort()


def fork_forever() -> None:
    """A fork bomb that never gives up: refused forks are retried at once."""
    ready()
    while True:
        try:
            if os.fork() == 0:
                time.sleep(600)
                os._exit(0)
        except BlockingIOError:
            continue


def abort() -> None:
    """SIGABRT, with no limit reached."""
    print("aborting", flush=True)
    os.abort()


def _attempt(action: Callable[[], object]) -> str:
    """ "allowed", or the name of the error that stopped `action`."""
    try:
        action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return "allowed"


def _connect(family: int, kind: int, address: tuple[str, int] | str) -> None:
    with socket.socket(family, kind) as conn:
        conn.settimeout(2)
        conn.connect(address)
        if kind == socket.SOCK_DGRAM:
            conn.send(b"x")


def escape() -> None:
    """Tries to leave the container the ways a hostile tool would, and prints what stopped
    each attempt ("attempts {json}"). The network attempts aim at the Docker bridge's gateway
    on this host only, and never reach it: the container has no interface but loopback."""
    gateway = "172.17.0.1"
    attempts: dict[str, Callable[[], object]] = {
        "tcp": lambda: _connect(socket.AF_INET, socket.SOCK_STREAM, (gateway, 9)),
        "udp": lambda: _connect(socket.AF_INET, socket.SOCK_DGRAM, (gateway, 9)),
        "docker_api": lambda: _connect(socket.AF_INET, socket.SOCK_STREAM, (gateway, 2375)),
        "raw_socket": lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        "docker_socket": lambda: _connect(
            socket.AF_UNIX, socket.SOCK_STREAM, "/var/run/docker.sock"
        ),
        "containerd_socket": lambda: _connect(
            socket.AF_UNIX, socket.SOCK_STREAM, "/run/containerd/containerd.sock"
        ),
        "host_proc_write": lambda: Path("/proc/sys/kernel/hostname").write_text("owned"),
        "mknod": lambda: os.mknod("/tmp/disk", 0o600 | stat.S_IFBLK, os.makedev(8, 0)),
        "setuid_root": lambda: os.setuid(0),
    }
    seen = {name: _attempt(action) for name, action in attempts.items()}
    print("attempts " + json.dumps(seen), flush=True)


def wait_for_go() -> None:
    """Exits with the code written to the input dir's "go" file, once there."""
    ready()
    go = INPUT / "go"
    while not go.exists():
        time.sleep(0.05)
    print("going")
    sys.exit(int(go.read_text() or 0))


def wait_for_assignment() -> None:
    """A standby of the warm pool: its run comes through the FIFO, as the engine's does
    (flnet.runtime.standby)."""
    fifo = os.environ.pop("FLNET_ASSIGNMENT", "")
    if fifo:
        with open(fifo, "rb") as pipe:
            os.environ.update(json.loads(pipe.read()))


if __name__ == "__main__":
    wait_for_assignment()
    name = os.environ.get("FLNET_ENTRYPOINT", "").partition(":")[2]
    globals()[name]()
