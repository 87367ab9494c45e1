"""Logs `lines` lines through the platform's logger."""

from __future__ import annotations

import time
from dataclasses import dataclass

from flnet.runtime import Context


@dataclass
class Config:
    lines: int = 100_000
    rate: float = 0.0
    delay: float = 0.0


def main(ctx: Context[Config]) -> None:
    log = ctx.log
    n, rate = ctx.config.lines, ctx.config.rate
    time.sleep(ctx.config.delay)  # lets a subscriber connect before the first line
    if rate <= 0:
        for i in range(n):
            log.info("line %d", i)
        return
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        log.info("line %d", i)
