"""gc beside a running control plane (tests.conftest's `control` and `api`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from flnet.control.app import ControlApp
from tests.retention.support import Gc, gc_of


@pytest.fixture
async def gc(control: ControlApp) -> AsyncIterator[Gc]:
    async with gc_of(control.settings) as side:
        yield side
