"""Returns at once."""

from __future__ import annotations

from typing import Any

from flnet.runtime import Context


def main(ctx: Context[dict[str, Any]]) -> None:
    ctx.log.info("nothing to do")
