"""Password and client-secret hashes for the issuer's configuration file: scrypt from the
standard library, in the self-describing form `scrypt$<n>$<r>$<p>$<salt>$<hash>` (base64url
salt and hash), compared in constant time."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

_SCHEME = "scrypt"
# 16 MiB and about 50 ms per hash: slow for a guesser, fine for an interactive login.
_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32
_MAX_MEMORY = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEMORY, dklen=length
    )


def hash_secret(secret: str) -> str:
    """The configuration-file form of a password or client secret."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(secret, salt, _N, _R, _P, _HASH_BYTES)
    return f"{_SCHEME}${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def is_secret_hash(text: str) -> bool:
    """Whether `text` has the form hash_secret() produces (parameters are not checked)."""
    parts = text.split("$")
    return len(parts) == 6 and parts[0] == _SCHEME and all(parts[1:])


def verify_secret(secret: str, hashed: str) -> bool:
    """Whether `secret` matches `hashed`; False for a malformed hash, never an exception."""
    try:
        scheme, n, r, p, salt, digest = hashed.split("$")
        if scheme != _SCHEME:
            return False
        expected = _unb64(digest)
        actual = _scrypt(secret, _unb64(salt), int(n), int(r), int(p), len(expected))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def dummy_hash() -> str:
    """Verified instead of a real hash when a user name is unknown, so that a failed login
    takes as long whether or not the user exists."""
    return hash_secret(secrets.token_urlsafe(16))


def random_secret(nbytes: int = 32) -> str:
    """A fresh random password or client secret (URL-safe text)."""
    return secrets.token_urlsafe(nbytes)
