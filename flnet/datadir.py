"""Where platform data lives unless told otherwise: $FLNET_DATA_DIR, else ~/.local/share/flnet."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    return Path(os.environ.get("FLNET_DATA_DIR", "~/.local/share/flnet")).expanduser()
