"""Pages are bounded in bytes as well as in items (issue 12, item 3): a page of 1000 runs with
64 KiB configurations would be 64 MB, past the 4 MiB an ordinary gRPC client accepts. Here the
budget is made small so that a few runs cross it; the walk still visits every item once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from google.protobuf.message import Message

from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control import pagination
from flnet.toolspec import load_tool_spec
from tests.conftest import FIXTURES, TENANT, Clients
from tests.control.hand_engine import HandEngine, dev_run

NOOP = FIXTURES / "tools" / "noop"
BUDGET = 1500


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pagination, "MAX_PAGE_BYTES", BUDGET)


async def walk(
    page: Callable[[str], Awaitable[tuple[list[Message], str]]],
) -> list[list[Message]]:
    pages: list[list[Message]] = []
    token = ""
    while True:
        items, token = await page(token)
        pages.append(items)
        if not token:
            return pages


def within_budget(pages: list[list[Message]]) -> None:
    for items in pages:
        assert items, "a page always moves on"
        # Only a single item may exceed the budget on its own.
        assert len(items) == 1 or sum(i.ByteSize() for i in items) <= BUDGET


@pytest.mark.usefixtures("small_pages")
async def test_run_pages_are_bounded_in_bytes(api: Clients) -> None:
    version = await api.register(NOOP)
    artifact = await api.upload(b"a\n1\n")
    created = [(await dev_run(api, version.name, artifact))[0].name for _ in range(12)]
    one = (await api.runs.GetRun(rs.GetRunRequest(name=created[0]))).run.ByteSize()
    assert 12 * one > 2 * BUDGET  # the runs need at least three pages

    async def page(token: str) -> tuple[list[Message], str]:
        request = rs.ListRunsRequest(parent=TENANT, page_size=1000, page_token=token)
        res = await api.runs.ListRuns(request)
        return list(res.runs), res.next_page_token

    pages = await walk(page)
    assert len(pages) >= 3
    within_budget(pages)
    listed = [r.name for items in pages for r in items]  # type: ignore[attr-defined]
    assert sorted(listed) == sorted(created) and len(set(listed)) == len(listed)


@pytest.mark.usefixtures("small_pages")
async def test_event_pages_are_bounded_in_bytes(api: Clients) -> None:
    version = await api.register(NOOP)
    run, credential = await dev_run(api, version.name, await api.upload(b"a\n1\n"))
    engine = HandEngine(api, run.name, credential)
    await engine.connect()
    lines = [rt.Entry(log=tm.LogRecord(message=f"line {i} " + "x" * 200)) for i in range(20)]
    await engine.outgoing.put(rt.ConnectRequest(batch=rt.Batch(sequence=1, entries=lines)))
    assert (await engine.receive_kind("ack")).ack.sequence == 1
    await engine.close()

    async def page(token: str) -> tuple[list[Message], str]:
        request = rs.ListRunEventsRequest(parent=run.name, page_size=1000, page_token=token)
        res = await api.runs.ListRunEvents(request)
        return list(res.events), res.next_page_token

    pages = await walk(page)
    assert len(pages) >= 2
    within_budget(pages)
    events = [e for items in pages for e in items]
    sequences = [e.sequence for e in events]  # type: ignore[attr-defined]
    assert sequences == list(range(1, len(events) + 1))  # no gap, no duplicate
    logged = [e.log.message for e in events if e.HasField("log")]  # type: ignore[attr-defined]
    assert [m.split(" x")[0] for m in logged if m.startswith("line ")] == [
        f"line {i}" for i in range(20)
    ]


@pytest.mark.usefixtures("small_pages")
async def test_tool_version_pages_are_bounded_in_bytes(api: Clients) -> None:
    registered = []
    for minor in range(4):
        spec_version = await api.with_source(load_tool_spec(NOOP))
        spec_version.version = f"1.{minor}.0"
        res = await api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(parent=f"{TENANT}/tools/noop", tool_version=spec_version)
        )
        registered.append(res.tool_version.name)

    async def page(token: str) -> tuple[list[Message], str]:
        request = ts.ListToolVersionsRequest(
            parent=f"{TENANT}/tools/noop", page_size=1000, page_token=token
        )
        res = await api.tools.ListToolVersions(request)
        return list(res.tool_versions), res.next_page_token

    pages = await walk(page)
    assert len(pages) >= 2
    within_budget(pages)
    listed = [v.name for items in pages for v in items]  # type: ignore[attr-defined]
    assert sorted(listed) == sorted(registered)
