"""The development loop: from saving an edit to the first log line of the next development
test run, against a test run of the unchanged tool in the same session (the baseline).

    python -m bench.dev_loop [--calls 20] [--rounds 3]

A session of a copy of the behave tool (`flnet dev connect` in this process, on a local
platform); each test run prints one line. Arms, alternating in each round, `calls` test
runs each:
- "unchanged": `flnet dev test` of the tool as it is; the time to its first log line;
- "edited": tool.py rewritten (its printed text changes), then the same; the time from the
  file's write to the first log line, which must be the new text.
Target: "edited" p50 at most 1 s (issue 13), and the reload's own cost is the ratio's excess.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from bench.latency import report, run_main
from bench.local_platform import start_platform
from flnet import timeouts
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.cli.dev import connect
from flnet.client import FlnetClient

BEHAVE = Path(__file__).parent.parent / "tests" / "fixtures" / "tools" / "behave"
ARMS = ("unchanged", "edited")


async def first_line(client: FlnetClient, session: str) -> tuple[float, str]:
    """Starts a test run; the seconds until its first printed line, and the line. The run is
    followed to its end before returning."""
    start = time.perf_counter()
    run = await client.dev_test(session)
    seen: tuple[float, str] | None = None
    async for event in client.watch(run.name):
        if seen is None and event.HasField("log") and event.log.logger == "stdout":
            seen = (time.perf_counter() - start, event.log.message)
    assert seen is not None, f"{run.name} printed nothing"
    return seen


async def main(calls: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tool = root / "behave"
        shutil.copytree(BEHAVE, tool, ignore=shutil.ignore_patterns("__pycache__"))
        source = tool / "tool.py"
        original = source.read_text()
        platform = await start_platform(root / "platform")
        try:
            async with FlnetClient(platform.address, platform.token) as client:
                engine = asyncio.create_task(
                    connect(client, tool, {"mode": "print", "lines": 1}, {}, root / "dev", True)
                )
                session = ""
                while not session:
                    assert not engine.done(), "the development session ended"
                    for run in await client.list_runs("", [lc.RUN_STATE_INITIALIZED], 10):
                        if run.dev_session:
                            session = run.name
                    await asyncio.sleep(0.05)
                await first_line(client, session)  # warm up
                results: dict[str, list[list[float]]] = {arm: [] for arm in ARMS}
                edits = 0
                for r in range(rounds):
                    for arm in ARMS if r % 2 == 0 else tuple(reversed(ARMS)):
                        times = []
                        for _ in range(calls):
                            if arm == "unchanged":
                                times.append((await first_line(client, session))[0])
                                continue
                            edits += 1
                            text = f"edit {edits}"
                            written = time.perf_counter()
                            source.write_text(original.replace('f"printed {i}"', f'f"{text}"'))
                            before = time.perf_counter() - written
                            took, line = await first_line(client, session)
                            assert line == text, f"the run printed {line!r}, not {text!r}"
                            times.append(before + took)
                        results[arm].append(times)
                report("development test run: to its first log line (ms)", results, "unchanged")
                await client.cancel(session, "the bench is over")
                with contextlib.suppress(Exception):
                    await timeouts.wait_for(engine, 30)
        finally:
            await platform.stop()


if __name__ == "__main__":
    run_main(__doc__, main, calls=20)
