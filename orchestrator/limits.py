"""Exec wrapper of the process backend: applies resource limits to itself, then replaces
itself with the engine command (same pid, same process group)::

    python -m flnet.orchestrator.limits --memory-bytes N --pids N --open-files N \\
        --cpu-millis N -- ENGINE COMMAND...

A value of 0 leaves that limit as inherited. What each limit means here:

- memory: RLIMIT_AS, the address space. Allocations past it fail (Python raises
  MemoryError, the engine usually exits non-zero); nothing is OOM-killed.
- pids: not enforced by this backend. The only rlimit for it, RLIMIT_NPROC, counts every
  thread of the user id, not of the run: under it an engine (about ten threads, four of them
  gRPC's) fails to start threads whenever other processes of the same user are busy. A
  per-run pids limit needs a cgroup; the docker backend sets one.
- open files: RLIMIT_NOFILE.
- CPU: best-effort only. A process has no CPU quota without cgroups; a run asking for
  less than the whole machine is niced (priority lowered) so that it yields to others.

Soft and hard limits are both set, so the engine cannot raise them again. A requested
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

EXIT_CANNOT_EXECUTE = 127
EXIT_USAGE = 2


def _set_limit(which: int, value: int) -> None:
    if value <= 0:
        return
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY and value > hard:
        value = hard
    resource.setrlimit(which, (value, value))


def apply_limits(*, memory_bytes: int, pids: int, open_files: int, cpu_millis: int) -> None:
    """Applies the limits to the calling process (inherited across exec and fork)."""
    del pids  # see the module docstring: no per-run pids limit without cgroups
    _set_limit(resource.RLIMIT_AS, memory_bytes)
    _set_limit(resource.RLIMIT_NOFILE, open_files)
    if 0 < cpu_millis < 1000 * (os.cpu_count() or 1):
        os.nice(CPU_NICENESS)


def limits_argv(*, memory_bytes: int, pids: int, open_files: int, cpu_millis: int) -> list[str]:
    """The wrapper's options, for the process backend's command line."""
    return [
        "--memory-bytes",
        str(memory_bytes),
        "--pids",
        str(pids),
        "--open-files",
        str(open_files),
        "--cpu-millis",
        str(cpu_millis),
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flnet.orchestrator.limits",
        description="Set resource limits, then exec COMMAND.",
    )
    for option in ("--memory-bytes", "--pids", "--open-files", "--cpu-millis"):
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
        apply_limits(
            memory_bytes=options.memory_bytes,
            pids=options.pids,
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
