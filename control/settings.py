"""Control-plane settings: read once at start from arguments and FLNET_* variables."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from flnet.control.fleet.scheduler import Quota
from flnet.control.tenant_limits import TenantShare
from flnet.datadir import default_data_dir
from flnet.server.auth import AuthSettings


def default_database_url(data_dir: Path) -> str:
    """The embedded default: SQLite in the data directory."""
    return f"sqlite+aiosqlite:///{data_dir / 'flnet.db'}"


def default_artifact_url(data_dir: Path) -> str:
    """The embedded default: files in the data directory."""
    return (data_dir / "artifacts").absolute().as_uri()


@dataclass(frozen=True, kw_only=True)
class ControlSettings:
    """Everything the control plane needs to start. Durations are in seconds.

    Identity: `auth` (the OIDC issuer whose tokens are accepted; FLNET_OIDC_*): users' tokens,
    and the orchestrators' own client-credentials tokens (audience "orchestrator", scope
    orchestrator) when they attach.
    """

    auth: AuthSettings
    data_dir: Path = field(default_factory=default_data_dir)
    # SQLAlchemy async URL; default SQLite in the data directory.
    database_url: str = ""
    # Where artifacts are stored: file:///<dir> (default: <data-dir>/artifacts) or
    # s3://<bucket>/<prefix>, on `s3_endpoint` when it is not AWS (credentials: AWS_*).
    artifact_url: str = ""
    s3_endpoint: str = ""
    s3_region: str = ""
    # The key run credentials are signed with (created when missing). Replicas share one:
    # FLNET_RUNTIME_KEY_FILE. Default: <data-dir>/keys/runtime.pem.
    runtime_key_file: Path | None = None
    # The address engines dial to reach this control plane; default: our unix socket.
    engine_address: str = ""
    # The group engine containers run with (FLNET_ENGINE_GID; the docker backend's is 10001):
    # besides this user, the only one that may connect to the socket (engine_socket.py).
    engine_gid: int | None = None
    heartbeat_interval: float = 2.0
    # A run whose engine is silent this long ends in ERROR(LOST).
    heartbeat_lease: float = 15.0
    # How often timeouts (connect, lease, inactivity, cancel grace) are checked.
    supervision_interval: float = 0.5
    # An orchestrator away this long is LOST: its runs are judged (requeued or ERROR(LOST)).
    orchestrator_lease: float = 30.0
    # How often queued runs are placed when nothing prompts it (a quota or another replica
    # changed).
    placement_interval: float = 1.0
    # The quota of a tenant an operator has not given one (FLNET_TENANT_QUOTA).
    default_quota: Quota = field(default_factory=Quota)
    # Each tenant's share of calls (control.tenant_limits; FLNET_TENANT_SHARE).
    tenant_share: TenantShare = field(default_factory=TenantShare)
    max_upload_bytes: int = 8 * 1024**3
    max_output_bytes: int = 8 * 1024**3
    upload_ttl: float = 24 * 3600.0

    @property
    def resolved_runtime_key_file(self) -> Path:
        return self.runtime_key_file or self.data_dir / "keys" / "runtime.pem"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or default_database_url(self.data_dir)

    @property
    def socket_path(self) -> Path:
        """The unix socket engines connect through (containers have no network). Unix socket
        paths are limited to about 100 bytes: a deep data directory gets one under /tmp."""
        path = self.data_dir / "sockets" / "control.sock"
        if len(str(path)) > 100:
            digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
            path = Path(tempfile.gettempdir()) / f"flnet-{digest}" / "control.sock"
        return path

    @property
    def resolved_artifact_url(self) -> str:
        return self.artifact_url or default_artifact_url(self.data_dir)

    @classmethod
    def from_env(cls, **overrides: object) -> ControlSettings:
        """Settings from the environment; ValueError names a variable at fault."""
        env = os.environ
        artifact_url = env.get("FLNET_ARTIFACT_URL", "")
        if artifact_url and urlsplit(artifact_url).scheme not in ("file", "s3"):
            raise ValueError(
                "FLNET_ARTIFACT_URL: must be file:///<directory> or s3://<bucket>/<prefix>"
            )
        values: dict[str, object] = {
            "auth": AuthSettings.from_env(),
            "database_url": env.get("FLNET_DATABASE_URL", ""),
            "artifact_url": artifact_url,
            "s3_endpoint": env.get("FLNET_S3_ENDPOINT", ""),
            "runtime_key_file": Path(key) if (key := env.get("FLNET_RUNTIME_KEY_FILE")) else None,
            # botocore itself reads AWS_DEFAULT_REGION only.
            "s3_region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION", ""),
            "engine_address": env.get("FLNET_ENGINE_ADDRESS", ""),
            "engine_gid": _group_id(env.get("FLNET_ENGINE_GID", "")),
        }
        if quota := env.get("FLNET_TENANT_QUOTA", ""):
            try:
                values["default_quota"] = parse_quota(quota)
            except ValueError as e:
                raise ValueError(f"FLNET_TENANT_QUOTA: {e}") from None
        if share := env.get("FLNET_TENANT_SHARE", ""):
            try:
                values["tenant_share"] = TenantShare.parse(share)
            except ValueError as e:
                raise ValueError(f"FLNET_TENANT_SHARE: {e}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _group_id(text: str) -> int | None:
    if not text:
        return None
    if not (text.isascii() and text.isdecimal()):
        raise ValueError(f"FLNET_ENGINE_GID: {text!r} is not a group id (a number)")
    return int(text)


def parse_quota(text: str) -> Quota:
    """ "runs=4,cpu=4000,memory=8589934592" (millicores, bytes; any of them, 0: unlimited)."""
    keys = {"runs": "max_runs", "cpu": "max_cpu_millis", "memory": "max_memory_bytes"}
    values: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in keys:
            raise ValueError(f"{item!r}: expected runs=, cpu= or memory=")
        if not (value.strip().isascii() and value.strip().isdecimal()):
            raise ValueError(f"{key.strip()} must be a whole number (0: unlimited)")
        values[keys[key.strip()]] = int(value)
    return Quota(**values)
