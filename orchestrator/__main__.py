"""``python -m flnet.orchestrator --listen 127.0.0.1:50052 --data-dir DIR`` serves until
SIGTERM or SIGINT, then stops gracefully (see app.py). Prints nothing; logs to stderr.
Flags and their environment variables: settings.py."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from flnet.datadir import private_umask
from flnet.server.serving import run_until_signalled

from .app import OrchestratorApp
from .service import SERVICE_NAME
from .settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    settings = Settings.load(sys.argv[1:] if argv is None else argv, os.environ)
    private_umask()
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    app = OrchestratorApp(
        settings.data_dir,
        backend=settings.backend,
        engine_command=settings.engine_command,
        kill_grace=settings.kill_grace,
        stop_grace=settings.stop_grace,
        keep_workdirs=settings.keep_workdirs,
        docker_url=settings.docker_url,
        detach_on_stop=settings.detach_on_stop,
        cgroups=settings.cgroups,
        auth=settings.auth.interceptor([SERVICE_NAME]),
    )

    async def serve() -> None:
        await run_until_signalled(lambda: app.start(settings.listen), app.stop)

    try:
        asyncio.run(serve())
    except OSError as exc:  # e.g. the address is taken
        logging.getLogger("flnet.orchestrator").error("cannot serve: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
