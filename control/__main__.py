"""`python -m flnet.control`: run the control plane until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from flnet.control.app import ControlApp, StartupError
from flnet.control.settings import ControlSettings
from flnet.datadir import private_umask
from flnet.heap import settle_heap
from flnet.server.serving import run_until_signalled


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="flnet control serve", description=__doc__)
    p.add_argument("--listen", default="127.0.0.1:50051", help="host:port (port 0: any free)")
    p.add_argument("--data-dir", type=Path, help="default $FLNET_DATA_DIR")
    p.add_argument("--database-url", help="default sqlite in the data dir ($FLNET_DATABASE_URL)")
    p.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    args = p.parse_args(argv)
    private_umask()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s control %(levelname)s %(message)s")
    try:
        settings = ControlSettings.from_env(
            data_dir=args.data_dir,
            database_url=args.database_url,
        )
    except ValueError as e:
        p.error(str(e))
    app = ControlApp(settings)

    async def start() -> None:
        port = await app.start(args.listen)
        settle_heap()
        if args.port_file:
            tmp = args.port_file.with_suffix(".tmp")
            tmp.write_text(str(port))
            tmp.replace(args.port_file)

    try:
        asyncio.run(run_until_signalled(start, app.stop))
    except StartupError as e:
        logging.getLogger("flnet.control").error("%s", e)  # one line: `flnet up` quotes it
        sys.exit(1)


if __name__ == "__main__":
    main()
