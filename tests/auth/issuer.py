"""A tiny OIDC issuer for tests: real HTTP on 127.0.0.1 (aiohttp), serving a discovery
document and a JWKS of keys the test generates, able to rotate them and to fail; tokens
are minted with pyjwt. It counts the requests it serves, per path."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class IssuerKey:
    """A signing key: its kid, private key and algorithm."""

    kid: str
    private: PrivateKey
    alg: str

    @classmethod
    def generate(cls, kty: str = "RSA", kid: str | None = None) -> IssuerKey:
        kid = kid or uuid.uuid4().hex[:12]
        if kty == "EC":
            return cls(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")

    def jwk(self) -> dict[str, Any]:
        """The public JWK, as an issuer publishes it."""
        public = self.private.public_key()
        data = (
            RSAAlgorithm.to_jwk(public, as_dict=True)
            if isinstance(public, rsa.RSAPublicKey)
            else ECAlgorithm.to_jwk(public, as_dict=True)
        )
        return {**data, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def b64(data: bytes | dict[str, Any]) -> str:
    if isinstance(data, dict):
        data = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """See the module docstring. `url` is the issuer (with a Keycloak-like path)."""

    def __init__(self, realm_path: str = "/realms/flnet") -> None:
        self.realm_path = realm_path
        self.keys: list[IssuerKey] = [IssuerKey.generate("RSA"), IssuerKey.generate("EC")]
        self.hits: Counter[str] = Counter()
        self.failing = False
        # client_credentials clients: id -> (secret, claims of their tokens).
        self.clients: dict[str, tuple[str, dict[str, Any]]] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    @property
    def key(self) -> IssuerKey:
        """The current RSA signing key (the first published)."""
        return self.keys[0]

    @property
    def jwks_path(self) -> str:
        return f"{self.realm_path}/protocol/openid-connect/certs"

    @property
    def token_path(self) -> str:
        return f"{self.realm_path}/protocol/openid-connect/token"

    @property
    def jwks_fetches(self) -> int:
        return self.hits[self.jwks_path]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(f"{self.realm_path}/.well-known/openid-configuration", self._discovery)
        app.router.add_get(self.jwks_path, self._jwks)
        app.router.add_post(self.token_path, self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        self.url = self.base + self.realm_path

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _discovery(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        if self.failing:
            return web.Response(status=503)
        return web.json_response(
            {
                "issuer": self.url,
                "jwks_uri": self.base + self.jwks_path,
                "token_endpoint": self.base + self.token_path,
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        if self.failing:
            return web.Response(status=503)
        return web.json_response({"keys": [k.jwk() for k in self.keys]})

    async def _token(self, request: web.Request) -> web.Response:
        """client_credentials with client_secret_basic, for the clients in `clients`."""
        self.hits[request.path] += 1
        form = await request.post()
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        client_id, _, secret = base64.b64decode(encoded or "").decode().partition(":")
        known = self.clients.get(client_id)
        if scheme != "Basic" or known is None or not hmac.compare_digest(known[0], secret):
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        claims = {"sub": client_id, "client_id": client_id, **known[1]}
        return web.json_response(
            {"access_token": self.token(**claims), "token_type": "Bearer", "expires_in": 300}
        )

    def rotate(self, kty: str = "RSA") -> IssuerKey:
        """Publishes a new key and withdraws every old one; returns the new key."""
        key = IssuerKey.generate(kty)
        self.keys = [key]
        return key

    def claims(self, **claims: Any) -> dict[str, Any]:
        """Default claims of a valid user token, with `claims` applied (None removes)."""
        now = int(time.time())
        values: dict[str, Any] = {
            "iss": self.url,
            "aud": "flnet",
            "sub": "alice",
            "tenant": "acme",
            "scope": "runs:read",
            "client_id": "flnet-cli",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        values.update(claims)
        return {k: v for k, v in values.items() if v is not None}

    def token(
        self,
        key: IssuerKey | None = None,
        *,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A token signed by `key` (default: the current RSA key) with its kid."""
        key = key or self.key
        return jwt.encode(
            self.claims(**claims),
            key.private,
            algorithm=key.alg,
            headers={"kid": key.kid, **(headers or {})},
        )

    def unsigned_token(self, **claims: Any) -> str:
        """`alg: none`: no signature at all."""
        return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(self.claims(**claims))}."

    def hs256_with_public_key(self, **claims: Any) -> str:
        """The classic key-confusion forgery: HS256 with the RSA public key (PEM, as the
        JWKS publishes it) as the HMAC secret, and the real key's kid."""
        header = b64({"alg": "HS256", "typ": "JWT", "kid": self.key.kid})
        signing_input = f"{header}.{b64(self.claims(**claims))}"
        mac = hmac.new(self.key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(mac)}"


class ManualClock:
    """Monotonic seconds that move only when told: refresh intervals without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying `token`."""
    return (("authorization", f"Bearer {token}"),)
