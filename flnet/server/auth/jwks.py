"""Signing keys of a token issuer: its JWKS, found through OIDC discovery and cached.

`JwksClient` fetches `{issuer}/.well-known/openid-configuration`, checks that the document
names the same issuer, then fetches its `jwks_uri` and keeps the keys:

- a token whose `kid` is not in the cache triggers one refetch (the issuer rotated its
  keys): rotation needs no restart;
- refetches are rate-limited, at most one per `min_refresh_interval` (failed attempts
  included), so a flood of made-up `kid`s, or an issuer that is down, costs the issuer at
  most one request per interval; concurrent callers share one fetch;
- keys older than `max_age` are refetched on next use (removed keys stop being accepted);
  if that fails the old keys stay in use and a warning is logged;
- HTTP only over https, except to loopback (or with `allow_http`); no redirects; a size
  limit; a timeout per request. Failures raise `Unavailable(ISSUER_UNAVAILABLE)`.

Only asymmetric signature keys are kept (RSA of 2048 bits or more, EC P-256/384/521,
Ed25519/Ed448); symmetric (`oct`) keys, keys with `use` other than "sig" and keys that do
not parse are skipped. `StaticKeys` is the same lookup over a fixed JWKS (keys the process
holds itself, e.g. for credentials it mints), without HTTP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from flnet.errors import Unavailable

from .errors import Reason

log = logging.getLogger(__name__)

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

DISCOVERY_PATH = "/.well-known/openid-configuration"
MIN_RSA_BITS = 2048
DEFAULT_TIMEOUT = 5.0
DEFAULT_MIN_REFRESH_INTERVAL = 10.0
DEFAULT_MAX_AGE = 3600.0
MAX_DOCUMENT_BYTES = 1024 * 1024

_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}


@dataclass(frozen=True)
class SigningKey:
    """One public key of a JWKS. `alg` is the algorithm the JWK itself pins, if any."""

    kid: str | None
    key: PublicKey
    alg: str | None = None

    def accepts(self, alg: str) -> bool:
        """Whether a token signed with `alg` may be verified with this key: the algorithm
        family must match the key type (RSA keys verify RS*/PS*, EC keys ES* on their own
        curve, OKP keys EdDSA), and a key that pins an `alg` verifies that one only."""
        if self.alg is not None and self.alg != alg:
            return False
        if isinstance(self.key, rsa.RSAPublicKey):
            return alg in {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
        if isinstance(self.key, ec.EllipticCurvePublicKey):
            curve = _EC_CURVES.get(alg)
            return curve is not None and isinstance(self.key.curve, curve)
        return alg == "EdDSA"


def _public(key: Any) -> PublicKey | None:
    if isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        key = key.public_key()
    if isinstance(
        key,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        return key
    return None


def parse_jwk(jwk: Mapping[str, Any]) -> SigningKey | None:
    """A signature key of one JWK, or None for keys FLNet never verifies with (symmetric,
    encryption-only, too small, unparsable). A private JWK yields its public half."""
    kty, use, kid, alg = jwk.get("kty"), jwk.get("use"), jwk.get("kid"), jwk.get("alg")
    if use not in (None, "sig") or not isinstance(kid, str | None):
        return None
    if alg is not None and (not isinstance(alg, str) or alg.startswith("HS") or alg == "none"):
        return None
    data = dict(jwk)
    parsed: Any
    try:
        if kty == "RSA":
            parsed = RSAAlgorithm.from_jwk(data)
        elif kty == "EC":
            parsed = ECAlgorithm.from_jwk(data)
        elif kty == "OKP":
            parsed = OKPAlgorithm.from_jwk(data)
        else:
            return None  # "oct" (symmetric) above all: never a verification key here
    except Exception:
        return None
    key = _public(parsed)
    if key is None:
        return None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return None
    return SigningKey(kid=kid, key=key, alg=alg)


class KeySet:
    """Parsed keys of one JWKS document, by `kid`."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        self.keys = tuple(keys)
        self._by_kid: dict[str, SigningKey] = {}
        for key in self.keys:
            if key.kid is not None:
                self._by_kid.setdefault(key.kid, key)

    @classmethod
    def from_document(cls, document: Any) -> KeySet:
        """Keys of a JWKS document (`{"keys": [...]}`); ValueError when it is not one."""
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWKS document")
        keys: list[SigningKey] = []
        for jwk in document["keys"]:
            key = parse_jwk(jwk) if isinstance(jwk, dict) else None
            if key is None:
                log.warning(
                    "JWKS: skipping a key FLNet cannot verify with (kid %r)",
                    jwk.get("kid") if isinstance(jwk, dict) else None,
                )
            else:
                keys.append(key)
        return cls(keys)

    def find(self, kid: str | None) -> list[SigningKey]:
        """The key with `kid`; for a token without `kid`, every key."""
        if kid is None:
            return list(self.keys)
        key = self._by_kid.get(kid)
        return [key] if key is not None else []

    @property
    def kids(self) -> list[str]:
        return list(self._by_kid)


class KeySource(Protocol):
    """Where a TokenValidator finds verification keys."""

    async def find(self, kid: str | None) -> Sequence[SigningKey]:
        """The candidate keys for a token's `kid` (every key when None); empty when unknown.
        May raise Unavailable."""
        ...

    async def close(self) -> None: ...


class StaticKeys:
    """A fixed key set (e.g. the public half of keys this process signs with)."""

    def __init__(self, jwks: Mapping[str, Any] | Sequence[SigningKey]) -> None:
        if isinstance(jwks, Mapping):
            self.key_set = KeySet.from_document(dict(jwks))
        else:
            self.key_set = KeySet(jwks)

    async def find(self, kid: str | None) -> Sequence[SigningKey]:
        return self.key_set.find(kid)

    async def close(self) -> None:
        return None


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_http: bool = False) -> None:
    """ValueError unless `url` is https (or http to loopback, or `allow_http`)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and (allow_http or _is_loopback(parts.hostname)):
        return
    raise ValueError(f"not an https URL (http only to loopback): {url!r}")


def discovery_url(issuer: str) -> str:
    """OIDC Discovery 1.0 §4: the issuer URL without its trailing slash, plus the path."""
    return issuer.rstrip("/") + DISCOVERY_PATH


class JwksClient:
    """The cached JWKS of one OIDC issuer (see the module docstring). Create it anywhere;
    use it inside the event loop that serves; `close()` at shutdown.

    - `issuer`: the issuer URL, exactly as tokens carry it in `iss`.
    - `jwks_uri`: skip discovery and fetch keys from here.
    - `timeout`: seconds per HTTP request (connect and read).
    - `min_refresh_interval`: at most one fetch attempt per this many seconds.
    - `max_age`: keys older than this are refetched on next use.
    - `ssl_context`: for https (e.g. with a private CA); default: the system's.
    - `allow_http`: allow plain http to hosts other than loopback (private networks).
    """

    def __init__(
        self,
        issuer: str,
        *,
        jwks_uri: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        min_refresh_interval: float = DEFAULT_MIN_REFRESH_INTERVAL,
        max_age: float = DEFAULT_MAX_AGE,
        ssl_context: ssl.SSLContext | None = None,
        allow_http: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_url(issuer, allow_http=allow_http)
        if jwks_uri is not None:
            check_url(jwks_uri, allow_http=allow_http)
        self.issuer = issuer
        self._configured_jwks_uri = jwks_uri
        self._jwks_uri = jwks_uri
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.min_refresh_interval = min_refresh_interval
        self.max_age = max_age
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._allow_http = allow_http
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._lock: asyncio.Lock | None = None
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._last_attempt: float | None = None
        self._generation = 0
        #: Completed fetches of the JWKS (observability).
        self.fetches = 0

    async def find(self, kid: str | None) -> Sequence[SigningKey]:
        now = self._clock()
        if self._keys is None or now - self._fetched_at >= self.max_age:
            await self._refresh()
        if self._keys is None:
            raise self._unavailable()
        found = self._keys.find(kid)
        if not found and kid is not None:
            # Perhaps a rotation: one refetch, unless one happened within the interval.
            await self._refresh()
            found = self._keys.find(kid)
        return found

    async def refresh(self) -> None:
        """Fetches the keys now if the rate limit allows (e.g. to warm up at start)."""
        await self._refresh()
        if self._keys is None:
            raise self._unavailable()

    @property
    def kids(self) -> list[str]:
        """`kid`s of the cached keys."""
        return self._keys.kids if self._keys is not None else []

    def _unavailable(self) -> Unavailable:
        error = Unavailable("identity provider unavailable", Reason.ISSUER_UNAVAILABLE)
        if self._last_attempt is not None:
            wait = self.min_refresh_interval - (self._clock() - self._last_attempt)
            error.retry_after = max(wait, 0.1)
        return error

    async def _refresh(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        generation = self._generation
        async with self._lock:
            if self._generation != generation:
                return  # another caller fetched while this one waited: share its result
            now = self._clock()
            if (
                self._last_attempt is not None
                and now - self._last_attempt < self.min_refresh_interval
            ):
                return
            self._last_attempt = now
            try:
                keys = await self._fetch()
            except Unavailable:
                if self._keys is not None:
                    log.warning("keeping the cached keys of %s", self.issuer)
                return
            self._keys, self._fetched_at = keys, now
            self._generation += 1
            self.fetches += 1
            log.info("fetched %d signing keys of %s", len(keys.keys), self.issuer)

    async def _fetch(self) -> KeySet:
        try:
            if self._jwks_uri is None:
                self._jwks_uri = await self._discover()
            return KeySet.from_document(await self._get_json(self._jwks_uri))
        except Unavailable:
            self._jwks_uri = self._configured_jwks_uri  # rediscover next time
            raise

    async def _discover(self) -> str:
        document = await self._get_json(discovery_url(self.issuer))
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            log.error("the discovery document of %s names another issuer", self.issuer)
            raise Unavailable("identity provider unavailable", Reason.ISSUER_UNAVAILABLE)
        jwks_uri = document.get("jwks_uri")
        try:
            if not isinstance(jwks_uri, str):
                raise ValueError("no jwks_uri")
            check_url(jwks_uri, allow_http=self._allow_http)
        except ValueError as e:
            log.error("the discovery document of %s: %s", self.issuer, e)
            raise Unavailable("identity provider unavailable", Reason.ISSUER_UNAVAILABLE) from e
        return jwks_uri

    async def _get_json(self, url: str) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(
                url,
                ssl=self._ssl,
                allow_redirects=False,
                headers={"Accept": "application/json"},
            ) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                if (response.content_length or 0) > MAX_DOCUMENT_BYTES:
                    raise ValueError("document too large")
                body = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise ValueError("document too large")
            return json.loads(body)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.warning("cannot fetch %s: %s", url, e or type(e).__name__)
            raise Unavailable("identity provider unavailable", Reason.ISSUER_UNAVAILABLE) from e

    async def close(self) -> None:
        """Closes the HTTP session. Safe to call twice; a later use opens a new one."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
