"""Control-plane settings: read once at start from arguments and FLNET_* variables."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from flnet.datadir import default_data_dir


@dataclass(frozen=True)
class ControlSettings:
    """Everything the control plane needs to start. Durations are in seconds."""

    data_dir: Path = field(default_factory=default_data_dir)
    # SQLAlchemy async URL; default SQLite in the data directory.
    database_url: str = ""
    # Where the orchestrator listens; empty runs no launches (dev sessions only).
    orchestrator_address: str = ""
    # The address engines dial to reach this control plane; default: our unix socket.
    engine_address: str = ""
    # The single tenant used until identity (OIDC) is configured.
    default_tenant: str = "default"
    heartbeat_interval: float = 2.0
    # A run whose engine is silent this long ends in ERROR(LOST).
    heartbeat_lease: float = 15.0
    # How often timeouts (connect, lease, inactivity, cancel grace) are checked.
    supervision_interval: float = 0.5
    max_upload_bytes: int = 8 * 1024**3
    max_output_bytes: int = 8 * 1024**3
    upload_ttl: float = 24 * 3600.0

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'flnet.db'}"

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
    def artifact_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @classmethod
    def from_env(cls, **overrides: object) -> ControlSettings:
        env = os.environ
        values: dict[str, object] = {
            "database_url": env.get("FLNET_DATABASE_URL", ""),
            "orchestrator_address": env.get("FLNET_ORCHESTRATOR_ADDRESS", ""),
            "engine_address": env.get("FLNET_ENGINE_ADDRESS", ""),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
