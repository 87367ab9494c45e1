"""``python -m flnet.orchestrator --control 127.0.0.1:50051 --data-dir DIR`` attaches to the
control plane and runs the engines it places here until SIGTERM or SIGINT, then stops
gracefully (see app.py). Prints nothing; logs to stderr. Flags and their environment
variables: settings.py."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from flnet.datadir import private_umask
from flnet.heap import settle_heap
from flnet.oauth import ClientCredentials
from flnet.server.serving import run_until_signalled

from .app import OrchestratorApp
from .settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    settings = Settings.load(sys.argv[1:] if argv is None else argv, os.environ)
    private_umask()
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    token = ClientCredentials(
        settings.issuer,
        settings.client_id,
        settings.client_secret,
        scope="orchestrator",
        resource=settings.resource or None,
    )
    app = OrchestratorApp(
        settings.data_dir,
        control_address=settings.control,
        token=token,
        identity=settings.identity,
        engine_address=settings.engine_address,
        backend=settings.backend,
        engine_command=settings.engine_command,
        kill_grace=settings.kill_grace,
        keep_workdirs=settings.keep_workdirs,
        docker_url=settings.docker_url,
        detach_on_stop=settings.detach_on_stop,
        cgroups=settings.cgroups,
        swarm_constraints=settings.swarm_constraints,
        warm_pool=settings.warm_pool,
    )

    async def start() -> None:
        await app.start()
        settle_heap()

    asyncio.run(run_until_signalled(start, app.stop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
