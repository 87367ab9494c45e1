"""`python -m flnet.issuer`: run the development OIDC issuer until SIGTERM/SIGINT.

Usage:
    python -m flnet.issuer --listen 127.0.0.1:0 --data-dir DIR [--config FILE] [--port-file F]
    python -m flnet.issuer --data-dir DIR --rotate-keys   # new signing key; a running issuer
                                                        # picks it up on its next request
    python -m flnet.issuer --hash-secret < secret         # a password_hash / secret_hash
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from pathlib import Path

from flnet.datadir import default_data_dir, private_umask, write_private
from flnet.issuer.app import Issuer, issuer_dir, load_or_create_config
from flnet.issuer.config import ConfigError
from flnet.issuer.keys import KeyStore
from flnet.issuer.passwords import hash_secret
from flnet.issuer.tokens import CLOCK_SKEW
from flnet.server.serving import run_until_signalled


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m flnet.issuer", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free)")
    p.add_argument("--data-dir", type=Path, help="default $FLNET_DATA_DIR")
    p.add_argument("--config", type=Path, help="default <data-dir>/oidc/issuer.yaml (created)")
    p.add_argument(
        "--issuer", help="public issuer URL (default: the config's, else the listen URL)"
    )
    p.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--rotate-keys", action="store_true", help="rotate the signing key, exit")
    action.add_argument("--hash-secret", action="store_true", help="hash a secret read on stdin")
    args = p.parse_args(argv)
    private_umask()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s oidc %(levelname)s %(message)s")

    if args.hash_secret:
        secret = getpass.getpass("secret: ") if sys.stdin.isatty() else sys.stdin.readline()
        print(hash_secret(secret.rstrip("\n")))
        return 0
    data_dir = (args.data_dir or default_data_dir()).resolve()
    try:
        config = load_or_create_config(data_dir, args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.rotate_keys:
        keys = KeyStore(issuer_dir(data_dir) / "keys")
        keys.open(config.signing_alg, config.max_token_ttl + CLOCK_SKEW)
        print(keys.rotate(config.max_token_ttl + CLOCK_SKEW))
        return 0

    issuer = Issuer(config, data_dir, issuer_url=args.issuer)

    async def start() -> None:
        port = await issuer.start(args.listen)
        if args.port_file:
            write_private(args.port_file, str(port))

    asyncio.run(run_until_signalled(start, issuer.stop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
