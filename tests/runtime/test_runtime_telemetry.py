"""Telemetry batching: tool threads append, the loop cuts sequenced batches (size and linger),
keeps them until acknowledged, resends them in order after a reconnect, and blocks the tool
when too much is un-acked."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from pathlib import Path

import pytest

from flnet import timeouts
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.runtime.context import Context, Outputs
from flnet.runtime.telemetry import (
    LOG,
    METRIC,
    ROUTER,
    Batcher,
    EntryBuffer,
    Outbox,
    PlatformLogHandler,
    entries_of,
    severity_of,
)

S = lc.RunState


def _log_item(i: int) -> tuple[object, ...]:
    return (LOG, time.time_ns(), logging.INFO, f"line {i}", "tool", "/x/tool.py", i, "main", None)


def _sequences(outbox: Outbox) -> list[int]:
    return [r.batch.sequence for r in outbox.unacked()]


def _messages(requests: list[rt.ConnectRequest]) -> list[str]:
    return [e.log.message for r in requests for e in r.batch.entries]


async def _until(condition: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def _pipeline(
    *, batch: int = 1000, linger: float = 0.01, max_unacked: int = 100, max_buffered: int = 0
) -> tuple[EntryBuffer, Outbox, Batcher]:
    buffer = EntryBuffer(batch_entries=batch, max_buffered=max_buffered)
    outbox = Outbox(max_unacked=max_unacked)
    return buffer, outbox, Batcher(buffer, outbox, linger=linger)


async def test_full_batches_are_cut_at_once_with_consecutive_sequences() -> None:
    buffer, outbox, batcher = _pipeline(batch=100, linger=10.0)  # linger never expires here
    batcher.start()
    try:

        def tool() -> None:
            for i in range(250):
                buffer.append(_log_item(i))

        thread = threading.Thread(target=tool)
        thread.start()
        # Not joined on the loop: the tool waits for the loop whenever a whole batch is buffered.
        await asyncio.to_thread(thread.join)
        await _until(lambda: outbox.unacked_count >= 2)
        batches = outbox.unacked()
        assert [len(b.batch.entries) for b in batches[:2]] == [100, 100]
        batcher.flush()
        assert _sequences(outbox) == list(range(1, outbox.last_sequence + 1))
        assert sum(len(b.batch.entries) for b in outbox.unacked()) == 250
        assert all(len(b.batch.entries) <= 100 for b in outbox.unacked())
        assert _messages(outbox.unacked()) == [f"line {i}" for i in range(250)]
    finally:
        await batcher.stop()


async def test_a_partial_batch_waits_for_the_linger_only() -> None:
    buffer, outbox, batcher = _pipeline(linger=0.05)
    batcher.start()
    try:
        threading.Thread(target=buffer.append, args=(_log_item(0),)).start()
        await asyncio.sleep(0.02)
        assert outbox.unacked_count == 0  # still lingering
        started = time.monotonic()
        await _until(lambda: outbox.unacked_count == 1)
        assert time.monotonic() - started < 0.2
        assert _messages(outbox.unacked()) == ["line 0"]
    finally:
        await batcher.stop()


async def test_default_linger_delivers_quickly() -> None:
    buffer, outbox, batcher = _pipeline()
    batcher.start()
    try:
        started = time.monotonic()
        threading.Thread(target=buffer.append, args=(_log_item(0),)).start()
        await _until(lambda: outbox.unacked_count == 1)
        assert time.monotonic() - started < 0.05
    finally:
        await batcher.stop()


async def test_a_transition_is_cut_at_once_after_what_came_before() -> None:
    buffer, outbox, batcher = _pipeline(linger=10.0)
    batcher.start()
    try:
        buffer.append(_log_item(0))
        buffer.append(_log_item(1))
        sequence = batcher.propose(rt.Transition(to_state=S.RUN_STATE_RUNNING))
        assert sequence == 1 == outbox.last_sequence
        entries = list(outbox.unacked()[0].batch.entries)
        assert [e.WhichOneof("entry") for e in entries] == ["log", "log", "transition"]
        assert entries[2].transition.to_state == S.RUN_STATE_RUNNING
    finally:
        await batcher.stop()


def _numbered(outbox: Outbox, count: int) -> None:
    for i in range(count):
        request = rt.ConnectRequest()
        request.batch.entries.add().log.message = f"batch {i + 1}"
        outbox.add(request)


def test_acks_are_cumulative_and_unacked_batches_are_kept() -> None:
    outbox = Outbox()
    _numbered(outbox, 5)
    assert outbox.resend_from() == 1
    sent = [outbox.next_unsent() for _ in range(5)]
    assert [r.batch.sequence for r in sent if r is not None] == [1, 2, 3, 4, 5]
    assert outbox.next_unsent() is None
    outbox.ack(3)
    assert _sequences(outbox) == [4, 5]
    assert outbox.resend_from() == 4
    outbox.ack(2)  # stale acks change nothing
    assert _sequences(outbox) == [4, 5]
    outbox.ack(5)
    assert outbox.unacked_count == 0
    assert outbox.resend_from() == 0


def test_after_a_reconnect_unacked_batches_are_resent_in_order() -> None:
    outbox = Outbox()
    _numbered(outbox, 6)
    for _ in range(6):
        outbox.next_unsent()  # all written on the first stream ...
    outbox.ack(2)  # ... which broke after acknowledging 1-2
    # The new stream's Welcome says the store holds up to 4 (acks 3-4 were lost in flight).
    outbox.rewind(4)
    resent = []
    while (request := outbox.next_unsent()) is not None:
        resent.append(request.batch.sequence)
    assert resent == [5, 6]
    # A second break before any ack: everything still un-acked goes again, in order.
    outbox.rewind(4)
    _numbered(outbox, 1)
    again = []
    while (request := outbox.next_unsent()) is not None:
        again.append(request.batch.sequence)
    assert again == [5, 6, 7]


def test_sequences_continue_after_what_the_store_has() -> None:
    outbox = Outbox()
    _numbered(outbox, 2)
    outbox.rewind(10)  # the control plane stored more than this engine numbered
    _numbered(outbox, 1)
    assert _sequences(outbox) == [11]


async def test_wait_acked() -> None:
    outbox = Outbox()
    _numbered(outbox, 3)
    waiter = asyncio.create_task(outbox.wait_acked(2))
    await asyncio.sleep(0)
    outbox.ack(1)
    await asyncio.sleep(0)
    assert not waiter.done()
    outbox.ack(3)
    await timeouts.wait_for(waiter, 1)
    await outbox.wait_acked(1)  # already acked: returns at once


class _Tool(threading.Thread):
    """A tool thread appending `lines` log lines to `buffer`, counting those appended."""

    def __init__(self, buffer: EntryBuffer, lines: int) -> None:
        super().__init__(daemon=True)
        self.buffer, self.lines, self.appended = buffer, lines, 0

    def run(self) -> None:
        for i in range(self.lines):
            self.buffer.append(_log_item(i))
            self.appended += 1


async def test_backpressure_blocks_the_tool_until_acks_make_room() -> None:
    buffer, outbox, batcher = _pipeline(batch=10, linger=0.001, max_unacked=3, max_buffered=20)
    batcher.start()
    thread = _Tool(buffer, 500)
    try:
        thread.start()
        await asyncio.sleep(0.3)
        assert thread.is_alive()  # blocked: nothing is acknowledged
        blocked_at = thread.appended
        assert blocked_at < 500
        # Bounded: at most the un-acked limit plus what the buffer may hold.
        assert outbox.unacked_count <= 3 + 20 // 10 + 2
        await asyncio.sleep(0.1)
        assert thread.appended == blocked_at
        while thread.is_alive() or len(buffer):
            outbox.ack(outbox.last_sequence)
            await asyncio.sleep(0.005)
        batcher.flush()
        outbox.ack(outbox.last_sequence)
        assert thread.appended == 500
        assert outbox.last_sequence >= 50
    finally:
        buffer.close()
        await batcher.stop()


async def test_a_tool_waits_once_a_whole_batch_is_buffered_until_the_loop_cuts_it() -> None:
    """By default the buffer holds one batch: the tool thread waits (and the loop gets the
    GIL) as soon as a batch is full, instead of running batches ahead of the loop."""
    buffer = EntryBuffer(batch_entries=10)
    woken: list[bool] = []
    buffer.attach(asyncio.get_running_loop(), woken.append)
    thread = _Tool(buffer, 25)
    thread.start()
    await _until(lambda: woken == [False, True])
    await asyncio.sleep(0.05)
    assert thread.appended == 9 and thread.is_alive()  # waiting inside its 10th append
    assert len(buffer.drain()) == 10
    buffer.set_room(True)
    await _until(lambda: thread.appended == 19)
    await asyncio.sleep(0.05)
    assert thread.appended == 19 and thread.is_alive()  # the next batch is full again
    assert len(buffer.drain()) == 10
    buffer.set_room(True)
    thread.join(5)
    assert thread.appended == 25 and len(buffer.drain()) == 5


def test_an_unattached_buffer_never_blocks() -> None:
    buffer = EntryBuffer(batch_entries=2, max_buffered=3)
    for i in range(10):
        buffer.append(_log_item(i))
    assert len(buffer.drain()) == 10


def _context(buffer: EntryBuffer, tmp_path: Path) -> Context[dict[str, object]]:
    return Context(
        run="tenants/t/runs/r",
        config={},
        raw_config={},
        inputs={},
        outputs=Outputs(tmp_path, []),
        buffer=buffer,
        log_level=logging.DEBUG,
    )


def test_tool_log_records_carry_severity_caller_and_traceback(tmp_path: Path) -> None:
    buffer = EntryBuffer()
    ctx = _context(buffer, tmp_path)
    ctx.log.debug("debug %s", "x")
    ctx.log.info("rows=%(rows)d", {"rows": 3})
    ctx.log.warning("bad %d", "format")  # a broken format is reported, not raised
    try:
        raise KeyError("missing")
    except KeyError:
        ctx.log.exception("it failed")
    ctx.log.log(logging.CRITICAL, "the end", stack_info=True)
    entries = [e.log for e in entries_of(buffer.drain())]

    assert [e.severity for e in entries] == [
        tm.LOG_SEVERITY_DEBUG,
        tm.LOG_SEVERITY_INFO,
        tm.LOG_SEVERITY_WARNING,
        tm.LOG_SEVERITY_ERROR,
        tm.LOG_SEVERITY_CRITICAL,
    ]
    assert [e.message for e in entries][:2] == ["debug x", "rows=3"]
    assert "cannot format" in entries[2].message
    assert all(e.logger == "tool" for e in entries)
    assert all(
        e.caller.startswith("test_runtime_telemetry.py:")
        and e.caller.endswith(" in test_tool_log_records_carry_severity_caller_and_traceback")
        for e in entries
    )
    assert "KeyError: 'missing'" in entries[3].traceback
    assert 'raise KeyError("missing")' in entries[3].traceback
    assert "Stack (most recent call last)" in entries[4].traceback
    assert entries[0].time.seconds > 1_600_000_000


def test_a_log_handler_added_by_the_tool_still_sees_records(tmp_path: Path) -> None:
    buffer = EntryBuffer()
    ctx = _context(buffer, tmp_path)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    ctx.log.addHandler(Keep())
    ctx.log.info("both %d", 2)
    assert [r.getMessage() for r in seen] == ["both 2"]
    (entry,) = entries_of(buffer.drain())
    assert entry.log.message == "both 2"
    assert entry.log.caller.startswith("test_runtime_telemetry.py:")


def _log_every_way(log: logging.Logger) -> int:
    """Logs one line per level method, log(), exception() and stacklevel; returns the line
    number of the first call (each call is on the next line)."""
    first = sys._getframe().f_lineno + 2
    try:
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        log.log(logging.INFO, "l")
        log.info("x", extra={"k": 1})
        raise ValueError("v")
    except ValueError:
        log.exception("x")
    return first


def _called_from_here(log: logging.Logger) -> None:
    log.info("one frame out", stacklevel=2)


@pytest.mark.parametrize("way", ["direct", "with another handler"])
def test_every_log_call_names_its_caller_whichever_way_it_takes(tmp_path: Path, way: str) -> None:
    """The level methods' direct path and the logging module's way (another handler, or
    keyword arguments) name the same caller, line by line."""
    buffer = EntryBuffer()
    ctx = _context(buffer, tmp_path)
    if way != "direct":
        ctx.log.addHandler(logging.NullHandler())
    first = _log_every_way(ctx.log)
    _called_from_here(ctx.log)
    entries = [e.log for e in entries_of(buffer.drain())]
    function = "_log_every_way"
    lines = [first + i for i in range(7)] + [first + 9]
    assert [e.caller for e in entries[:8]] == [
        f"test_runtime_telemetry.py:{n} in {function}" for n in lines
    ]
    assert entries[-1].caller.endswith(
        " in test_every_log_call_names_its_caller_whichever_way_it_takes"
    )
    assert "ValueError: v" in entries[7].traceback
    assert [e.severity for e in entries[:5]] == [
        tm.LOG_SEVERITY_DEBUG,
        tm.LOG_SEVERITY_INFO,
        tm.LOG_SEVERITY_WARNING,
        tm.LOG_SEVERITY_ERROR,
        tm.LOG_SEVERITY_CRITICAL,
    ]


def test_what_filters_or_silences_records_applies_to_the_direct_path(tmp_path: Path) -> None:
    """The level methods skip LogRecords only while nothing could act on one: a filter, a
    handler level, a disabled logger or logging.disable() each take effect at once."""
    buffer = EntryBuffer()
    ctx = _context(buffer, tmp_path)
    log = ctx.log
    handler = ctx.log_handler

    def no_secrets(record: logging.LogRecord) -> bool:
        return "secret" not in record.getMessage()

    handler.addFilter(no_secrets)
    log.info("a secret")
    log.info("kept 1")
    handler.removeFilter(no_secrets)
    log.info("a secret again")
    log.addFilter(no_secrets)
    log.info("secret 3")
    log.removeFilter(no_secrets)
    handler.setLevel(logging.ERROR)
    log.warning("below the handler")
    log.error("kept 2")
    handler.setLevel(logging.NOTSET)
    log.disabled = True
    log.error("disabled")
    log.disabled = False
    logging.disable(logging.WARNING)
    try:
        log.warning("logging disabled")
        log.error("kept 3")
    finally:
        logging.disable(logging.NOTSET)
    log.debug("kept 4")
    assert [e.log.message for e in entries_of(buffer.drain())] == [
        "kept 1",
        "a secret again",
        "kept 2",
        "kept 3",
        "kept 4",
    ]


def test_root_logger_records_of_the_tool_thread_are_captured() -> None:
    buffer = EntryBuffer()
    handler = PlatformLogHandler(buffer)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(ROUTER)
    root.setLevel(logging.INFO)

    def tool() -> None:
        ident = threading.get_ident()
        ROUTER.route(ident, handler)
        try:
            logging.getLogger("library").info("from the tool thread")
            try:
                1 / 0  # noqa: B018
            except ZeroDivisionError:
                logging.exception("boom")
        finally:
            ROUTER.unroute(ident)

    try:
        thread = threading.Thread(target=tool)
        thread.start()
        thread.join()
        logging.getLogger("library").warning("from another thread")  # not the tool's
    finally:
        root.removeHandler(ROUTER)
        root.setLevel(previous)
    entries = [e.log for e in entries_of(buffer.drain())]
    assert [e.message for e in entries] == ["from the tool thread", "boom"]
    assert entries[0].logger == "library"
    assert entries[0].caller.endswith(" in tool")
    assert "ZeroDivisionError" in entries[1].traceback


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (5, tm.LOG_SEVERITY_DEBUG),
        (logging.DEBUG, tm.LOG_SEVERITY_DEBUG),
        (logging.INFO, tm.LOG_SEVERITY_INFO),
        (25, tm.LOG_SEVERITY_WARNING),
        (logging.WARNING, tm.LOG_SEVERITY_WARNING),
        (logging.ERROR, tm.LOG_SEVERITY_ERROR),
        (logging.CRITICAL, tm.LOG_SEVERITY_CRITICAL),
    ],
)
def test_severity_mapping(level: int, severity: int) -> None:
    assert severity_of(level) == severity


def test_strings_protobuf_refuses_are_repaired() -> None:
    item = (LOG, time.time_ns(), logging.INFO, "bad \udcff byte", "tool", "/t.py", 1, "f", None)
    (entry,) = entries_of([item])
    assert entry.log.message.startswith("bad ")
    assert entry.log.caller == "t.py:1 in f"


def test_tool_log_level_changes_apply_at_once(tmp_path: Path) -> None:
    buffer = EntryBuffer()
    ctx = _context(buffer, tmp_path)
    ctx.log.setLevel(logging.INFO)
    ctx.log.debug("hidden")
    ctx.log.setLevel(logging.DEBUG)
    ctx.log.debug("shown")
    ctx.log.setLevel(logging.WARNING)
    ctx.log.info("hidden too")
    assert [e.log.message for e in entries_of(buffer.drain())] == ["shown"]


def test_huge_lines_are_cut_and_batches_fit_a_message() -> None:
    """A batch over the 8 MiB message limit could never be delivered (and would be resent
    forever): long texts are cut and batches are split by size."""
    buffer, outbox, batcher = _pipeline()
    huge = "x" * (3 * 1024 * 1024)
    for i in range(40):
        buffer.append((LOG, time.time_ns(), logging.INFO, huge, "tool", "", i, "main", huge))
    batcher.flush()
    requests = outbox.unacked()
    assert all(r.ByteSize() <= 2 * 1024 * 1024 for r in requests)
    entries = [e for r in requests for e in r.batch.entries]
    assert len(entries) == 40  # nothing lost
    assert all(
        len(e.log.message) < 70 * 1024 and "characters cut" in e.log.message for e in entries
    )
    assert _sequences(outbox) == list(range(1, len(requests) + 1))


def test_an_item_protobuf_refuses_becomes_an_error_line() -> None:
    buffer, outbox, batcher = _pipeline()
    buffer.append(_log_item(0))
    buffer.append((METRIC, time.time_ns(), "loss", 1.0, 2**70, ""))  # step overflows int64
    buffer.append(_log_item(2))
    batcher.flush()
    [request] = outbox.unacked()
    kinds = [e.WhichOneof("entry") for e in request.batch.entries]
    assert kinds == ["log", "log", "log"]
    assert "telemetry item dropped" in request.batch.entries[1].log.message
