"""Signing keys of the issuer, persisted in a directory so that a restart keeps them.

Layout: `<kid>.pem` (private key, 0600) per key and `keys.json`, the manifest: which key signs
(`active`) and, for each retired key, until when it stays published in the JWKS
(`publish_until`: its retirement plus the longest token lifetime, so that every token it
signed can still be verified). `rotate()` generates a new signing key, retires the previous
one and deletes keys no longer published. Another process may rotate (`python -m flnet.issuer
--rotate-keys`): a running issuer notices the changed manifest on its next use (`refresh()`).
The key id is the key's RFC 7638 thumbprint.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, KeyParameters, KeySet, RSAKey

from flnet.datadir import private_dir, write_private

log = logging.getLogger(__name__)

Clock = Callable[[], float]
SigningKey = RSAKey | ECKey
MANIFEST = "keys.json"
_RSA_BITS = 2048


@dataclass(frozen=True)
class KeyRecord:
    """One key of the manifest."""

    kid: str
    alg: str
    created_at: float
    retired_at: float | None = None
    publish_until: float | None = None

    def published(self, now: float) -> bool:
        return self.publish_until is None or now < self.publish_until


def generate_key(alg: str) -> SigningKey:
    """A new private key for `alg` (RS256: RSA 2048, ES256: P-256), its thumbprint as kid."""
    params: KeyParameters = {"alg": alg, "use": "sig"}
    if alg == "RS256":
        return RSAKey.generate_key(_RSA_BITS, parameters=params, private=True, auto_kid=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=params, private=True, auto_kid=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}")


def _load_key(pem: bytes, record: KeyRecord) -> SigningKey:
    params: KeyParameters = {"kid": record.kid, "alg": record.alg, "use": "sig"}
    if record.alg == "RS256":
        return RSAKey.import_key(pem, parameters=params)
    return ECKey.import_key(pem, parameters=params)


class KeyStore:
    """The keys in `directory`: one signs, the published ones verify."""

    def __init__(self, directory: Path, clock: Clock = time.time) -> None:
        self.directory = directory
        self._clock = clock
        self._records: list[KeyRecord] = []
        self._active = ""
        self._keys: dict[str, SigningKey] = {}
        self._stamp: tuple[int, int, int] | None = None

    # ------------------------------------------------------------------------- reading

    def open(self, alg: str, retain_for: float) -> None:
        """Loads the keys, creating the first one if there is none. When the active key is not
        an `alg` key (the configuration changed), rotates to one."""
        private_dir(self.directory)
        with self._locked():
            if not (self.directory / MANIFEST).exists():
                key = generate_key(alg)
                kid = key.thumbprint()
                self._write([KeyRecord(kid, alg, self._clock())], kid, {kid: key})
                log.info("created signing key %s (%s)", kid, alg)
            self._load()
        if self.active.alg != alg:
            log.info("signing algorithm changed from %s to %s", self.active.alg, alg)
            self.rotate(retain_for, alg)

    def refresh(self) -> None:
        """Reloads the keys when the manifest changed on disk (another process rotated)."""
        if self._stamp != self._manifest_stamp():
            with self._locked():
                self._load()

    @property
    def active(self) -> KeyRecord:
        return next(r for r in self._records if r.kid == self._active)

    def signing_key(self) -> SigningKey:
        self.refresh()
        return self._keys[self._active]

    def published(self) -> list[KeyRecord]:
        """The keys whose tokens may still be valid, the signing key first."""
        self.refresh()
        now = self._clock()
        return sorted(
            (r for r in self._records if r.published(now)),
            key=lambda r: (r.kid != self._active, -r.created_at),
        )

    def jwks(self) -> dict[str, Any]:
        """The JWK Set document: public parts of the published keys."""
        return {"keys": [self._keys[r.kid].as_dict(private=False) for r in self.published()]}

    def verification_keys(self) -> KeySet:
        return KeySet([self._keys[r.kid] for r in self.published()])

    # ------------------------------------------------------------------------ rotation

    def rotate(self, retain_for: float, alg: str | None = None) -> str:
        """Makes a new key the signing key; the previous one stays published for
        `retain_for` seconds (the longest token lifetime). Deletes keys no longer published.
        Returns the new key id."""
        with self._locked():
            self._load()
            now = self._clock()
            new_alg = alg or self.active.alg
            key = generate_key(new_alg)
            kid = key.thumbprint()
            records = [
                replace(r, retired_at=now, publish_until=now + retain_for)
                if r.kid == self._active
                else r
                for r in self._records
            ]
            records = [r for r in records if r.published(now)]
            records.append(KeyRecord(kid, new_alg, now))
            self._write(records, kid, {kid: key})
            self._load()
        log.info("rotated signing key to %s (%s)", kid, new_alg)
        return kid

    # ------------------------------------------------------------------------ internals

    def _manifest_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = (self.directory / MANIFEST).stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> None:
        stamp = self._manifest_stamp()
        data = json.loads((self.directory / MANIFEST).read_text())
        records = [KeyRecord(**r) for r in data["keys"]]
        keys = {r.kid: self._keys.get(r.kid) or self._read_key(r) for r in records}
        if data["active"] not in keys:
            raise ValueError(f"{self.directory / MANIFEST}: active key {data['active']} is missing")
        self._records, self._active, self._keys, self._stamp = records, data["active"], keys, stamp

    def _read_key(self, record: KeyRecord) -> SigningKey:
        return _load_key((self.directory / f"{record.kid}.pem").read_bytes(), record)

    def _write(
        self, records: list[KeyRecord], active: str, new_keys: dict[str, SigningKey]
    ) -> None:
        for kid, key in new_keys.items():
            write_private(self.directory / f"{kid}.pem", key.as_pem(private=True))
        manifest = {"active": active, "keys": [asdict(r) for r in records]}
        write_private(self.directory / MANIFEST, json.dumps(manifest, indent=2))
        kept = {r.kid for r in records}
        for pem in self.directory.glob("*.pem"):
            if pem.stem not in kept:
                pem.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialises writers across processes (the issuer and a --rotate-keys command)."""
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
