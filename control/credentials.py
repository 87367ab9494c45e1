"""Run credentials: short-lived JWTs (ES256) that the control plane signs with its own key
(kept in the data directory, so credentials survive a restart). Audience `flnet-runtime`,
scope `runtime`, claims `run_id` and `tenant`: a credential speaks for its own run and
nothing else. It expires an hour after the run's deadline at the latest, and RuntimeService
refuses it once the run has ended."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from flnet.server.auth.jwks import StaticKeys
from flnet.server.auth.tokens import TokenValidator

ISSUER = "flnet-control"
AUDIENCE = "flnet-runtime"
SCOPE = "runtime"
# Lifetime after the run's deadline (or after its creation, when it has none: a day).
GRACE_SECONDS = 3600
NO_DEADLINE_SECONDS = 24 * 3600


class RunCredentials:
    def __init__(self, key_path: Path) -> None:
        self._key = _load_or_create(key_path)
        public = self._key.public_key()
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = hashlib.sha256(der).hexdigest()[:16]
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "ES256"})
        self.jwks = {"keys": [jwk]}

    def mint(self, run: str, lifetime: float | None) -> str:
        """A credential for `run` ("tenants/{t}/runs/{r}"), valid for `lifetime` seconds
        plus a grace (a day when the run has no deadline)."""
        tenant = run.split("/")[1]
        now = int(time.time())
        expires = now + int(lifetime if lifetime else NO_DEADLINE_SECONDS) + GRACE_SECONDS
        claims = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": run, "run_id": run, "tenant": tenant,
            "scope": SCOPE,
            "iat": now, "nbf": now, "exp": expires, "jti": uuid.uuid4().hex,
        }  # fmt: skip
        return jwt.encode(
            claims, self._key, algorithm="ES256", headers={"kid": self.kid, "typ": "at+jwt"}
        )

    def validator(self) -> TokenValidator:
        return TokenValidator(
            StaticKeys(self.jwks), issuer=ISSUER, audiences=[AUDIENCE], audience_kind="runtime",
            algorithms=["ES256"],
        )  # fmt: skip


def _load_or_create(path: Path) -> ec.EllipticCurvePrivateKey:
    """The key at `path`, created when missing. Replicas sharing the file and starting at
    once agree on one key: the first to link its new key in place wins, the others load it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # never replaces a key another replica put there first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key")
    return loaded


def digest(token: str) -> str:
    """What provenance keeps of a credential: never the credential itself."""
    return hashlib.sha256(token.encode()).hexdigest()
