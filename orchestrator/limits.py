"""Exec wrapper of the process backend: puts itself in the run's cgroups and applies
rlimits, then replaces itself with the engine command (same pid, same process group)::

    python -m flnet.orchestrator.limits [--cgroup DIR]... --address-space-bytes N \\
        --open-files N --cpu-millis N -- ENGINE COMMAND...

A value of 0 leaves that limit as inherited. What each limit means here:

- memory: with a cgroup (cgroups.py; the backend made it and set its limits), resident
  memory: past it the kernel's OOM killer ends the run (OOM_KILLED). Without one, all a
  process can be given is RLIMIT_AS, a cap on its address space, and a Python engine maps
  several times what it uses (a 64 MiB malloc arena per thread, thread stacks, BLAS
  buffers): the logreg example keeps 43 MB resident while mapping 520 MB, and an engine
  under a 512 MiB cap fails to start its twelfth thread. So the backend passes
  ``--address-space-bytes`` = the memory limit plus `ADDRESS_SPACE_HEADROOM`, a cap against
  runaway allocations rather than the memory limit, and an allocation past it fails
  (MemoryError) without anything being killed: the contracts' ADDRESS_SPACE_EXHAUSTED, not
  OOM_KILLED.
- pids: the cgroup's pids.max. The only rlimit for it, RLIMIT_NPROC, counts every thread of
  the user id, not of the run (an engine would fail to start threads whenever other
  processes of the same user are busy): without a cgroup there is no pids limit.
- open files: RLIMIT_NOFILE.
- CPU: best-effort only. A process has no CPU quota without a cgroup's cpu controller; a
  run asking for less than the whole machine is niced (priority lowered) so that it yields
  to others.

Soft and hard rlimits are both set, so the engine cannot raise them again. A requested
value above the inherited hard limit is clamped to it. This module is stdlib-only and
must stay so: it runs before every engine start.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from collections.abc import Sequence

#: Niceness of a run that asked for less CPU than the machine has.
CPU_NICENESS = 10
#: What the address-space cap adds to the memory limit when no cgroup bounds resident
#: memory: room for what a Python process with gRPC and numpy maps without using it.
ADDRESS_SPACE_HEADROOM = 4 * 1024**3

EXIT_CANNOT_EXECUTE = 127
EXIT_USAGE = 2


def address_space_cap(memory_bytes: int) -> int:
    """The RLIMIT_AS standing in for a memory limit without a cgroup (0: none)."""
    return memory_bytes + ADDRESS_SPACE_HEADROOM if memory_bytes > 0 else 0


def _set_limit(which: int, value: int) -> None:
    if value <= 0:
        return
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY and value > hard:
        value = hard
    resource.setrlimit(which, (value, value))


def join_cgroups(directories: Sequence[str]) -> None:
    """Moves the calling process into each cgroup directory (root, or a delegated tree)."""
    for directory in directories:
        fd = os.open(os.path.join(directory, "cgroup.procs"), os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)


def apply_limits(*, address_space_bytes: int, open_files: int, cpu_millis: int) -> None:
    """Applies the rlimits and niceness to the calling process (inherited across exec and
    fork)."""
    _set_limit(resource.RLIMIT_AS, address_space_bytes)
    _set_limit(resource.RLIMIT_NOFILE, open_files)
    if 0 < cpu_millis < 1000 * (os.cpu_count() or 1):
        os.nice(CPU_NICENESS)


def limits_argv(
    *, cgroups: Sequence[str], address_space_bytes: int, open_files: int, cpu_millis: int
) -> list[str]:
    """The wrapper's options, for the process backend's command line."""
    argv: list[str] = []
    for directory in cgroups:
        argv += ["--cgroup", directory]
    return [
        *argv,
        "--address-space-bytes",
        str(address_space_bytes),
        "--open-files",
        str(open_files),
        "--cpu-millis",
        str(cpu_millis),
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flnet.orchestrator.limits",
        description="Join cgroups, set resource limits, then exec COMMAND.",
    )
    parser.add_argument("--cgroup", action="append", default=[], metavar="DIR")
    for option in ("--address-space-bytes", "--open-files", "--cpu-millis"):
        parser.add_argument(option, type=int, default=0, metavar="N")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Applies the limits and execs the command; returns only on failure."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        print("usage: ... -- COMMAND [ARG...]", file=sys.stderr)
        return EXIT_USAGE
    split = args.index("--")
    options, command = _parser().parse_args(args[:split]), args[split + 1 :]
    if not command:
        print("flnet.orchestrator.limits: no command after --", file=sys.stderr)
        return EXIT_USAGE
    try:
        join_cgroups(options.cgroup)
    except OSError as exc:
        print(f"flnet.orchestrator.limits: cannot join the run's cgroup: {exc}", file=sys.stderr)
        return EXIT_CANNOT_EXECUTE
    try:
        apply_limits(
            address_space_bytes=options.address_space_bytes,
            open_files=options.open_files,
            cpu_millis=options.cpu_millis,
        )
    except (OSError, ValueError) as exc:
        print(f"flnet.orchestrator.limits: cannot apply limits: {exc}", file=sys.stderr)
        return EXIT_CANNOT_EXECUTE
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"flnet.orchestrator.limits: cannot execute {command[0]}: {exc}", file=sys.stderr)
    return EXIT_CANNOT_EXECUTE


if __name__ == "__main__":
    sys.exit(main())
