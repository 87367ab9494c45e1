"""FLNet engine and tool-author SDK (`flnet.runtime`): grpcio and protobuf only.

A tool is one module with a function taking a Context::

    from dataclasses import dataclass
    from flnet.runtime import Context

    @dataclass
    class Config:
        epochs: int = 10

    def main(ctx: Context[Config]) -> None:
        for epoch in range(ctx.config.epochs):
            ctx.check_cancelled()
            ctx.metric("loss", 1.0 / (epoch + 1), step=epoch)
            ctx.progress((epoch + 1) / ctx.config.epochs)
        with ctx.outputs.open("result") as f:
            f.write("done")

The engine (`python -m flnet.runtime`, or `run_engine(EngineConfig(...))`) connects to the
control plane, drives the run's lifecycle and calls `main` in a worker thread.
"""

from flnet import __version__

from .config import ConfigError, build_config
from .context import Context, Outputs
from .engine import run_engine
from .errors import Cancelled, InvalidConfig, InvalidInput
from .settings import EngineConfig, EngineConfigError

__all__ = [
    "Cancelled",
    "ConfigError",
    "Context",
    "EngineConfig",
    "EngineConfigError",
    "InvalidConfig",
    "InvalidInput",
    "Outputs",
    "__version__",
    "build_config",
    "run_engine",
]
