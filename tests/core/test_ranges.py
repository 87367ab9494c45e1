"""The edge's checks of values a request can carry but the code cannot hold: timestamps and
durations out of range (flnet.server.ranges), NaN and ±Infinity in JSON structs
(flnet.structs), and the throttled log line (flnet.server.throttle)."""

from __future__ import annotations

import logging
import math

import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from flnet.errors import FieldViolation, InvalidArgument
from flnet.server.ranges import (
    MAX_DURATION_SECONDS,
    duration_seconds,
    duration_violation,
    timestamp_us,
    timestamp_violation,
)
from flnet.server.throttle import Throttle
from flnet.structs import dict_to_struct, struct_to_dict

BIG = 2**62


def ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def dur(seconds: int, nanos: int = 0) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def test_timestamps_in_range_convert_to_microseconds() -> None:
    assert timestamp_us(ts(1, 999_999_999), "t") == 1_999_999
    assert timestamp_us(ts(-62_135_596_800), "t") == -62_135_596_800 * 10**6  # 0001-01-01
    assert timestamp_us(ts(253_402_300_799), "t") == 253_402_300_799 * 10**6  # 9999-12-31


@pytest.mark.parametrize(
    ("stamp", "field"),
    [
        (ts(BIG), "time_start"),
        (ts(-BIG), "time_start"),
        (ts(253_402_300_800), "time_start"),
        (ts(-62_135_596_801), "time_start"),
        (ts(0, -1), "time_start.nanos"),
        (ts(0, 1_000_000_000), "time_start.nanos"),
    ],
)
def test_timestamps_out_of_range_name_their_field(
    stamp: timestamp_pb2.Timestamp, field: str
) -> None:
    violation = timestamp_violation(stamp, "time_start")
    assert violation is not None and violation.field == field
    with pytest.raises(InvalidArgument) as raised:
        timestamp_us(stamp, "time_start", "SOME_REASON")
    assert raised.value.violations == [violation]
    assert raised.value.reason == "SOME_REASON"
    assert raised.value.message.startswith(f"{field}: ")


def test_durations_in_range_convert_to_seconds() -> None:
    assert duration_seconds(dur(0), "d") == 0.0
    assert duration_seconds(dur(1, 500_000_000), "d") == 1.5
    assert duration_seconds(dur(int(MAX_DURATION_SECONDS)), "d") == MAX_DURATION_SECONDS
    assert duration_seconds(dur(3600), "d", maximum=3600) == 3600


TOO_LONG = FieldViolation("grace_period", "must be at most 3155760000 seconds")
NEGATIVE = FieldViolation("grace_period", "must not be negative")
NANOS = FieldViolation(
    "grace_period.nanos", "must be in [-999999999, 999999999], with the sign of seconds"
)


@pytest.mark.parametrize(
    ("duration", "violation"),
    [
        (dur(BIG), TOO_LONG),
        (dur(int(MAX_DURATION_SECONDS) + 1), TOO_LONG),
        (dur(-1), NEGATIVE),
        (dur(0, -1), NEGATIVE),
        (dur(-BIG), NEGATIVE),
        (dur(1, -1), NANOS),
        (dur(-1, 1), NANOS),
        (dur(0, 10**9), NANOS),
    ],
)
def test_durations_out_of_range_name_their_field(
    duration: duration_pb2.Duration, violation: tuple[str, str]
) -> None:
    assert duration_violation(duration, "grace_period") == violation
    with pytest.raises(InvalidArgument) as raised:
        duration_seconds(duration, "grace_period", "GRACE_PERIOD_INVALID")
    assert (raised.value.reason, raised.value.violations) == ("GRACE_PERIOD_INVALID", [violation])


def test_a_duration_past_a_smaller_maximum() -> None:
    assert duration_violation(dur(61), "d", maximum=60) == ("d", "must be at most 60 seconds")


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"rate": math.nan}, "run.config.rate"),
        ({"a": {"b": [1, 2, math.inf]}}, "run.config.a.b[2]"),
        ({"x": [[{"y": -math.inf}]]}, "run.config.x[0][0].y"),
    ],
)
def test_non_finite_numbers_in_a_struct_are_invalid_arguments(
    config: dict[str, object], path: str
) -> None:
    """Formerly a ValueError of json_format, answered INTERNAL."""
    with pytest.raises(InvalidArgument) as raised:
        struct_to_dict(dict_to_struct(config), "run.config", "CONFIG_INVALID")
    assert raised.value.reason == "CONFIG_INVALID"
    assert [v.field for v in raised.value.violations] == [path]


def test_finite_structs_convert_as_before() -> None:
    config = {"rate": 0.5, "epochs": 10, "big": 1e308, "nested": {"xs": [1, None, "s", True]}}
    assert struct_to_dict(dict_to_struct(config)) == config
    assert struct_to_dict(struct_pb2.Struct()) == {}


def test_a_struct_nested_as_deep_as_the_parser_allows() -> None:
    s = struct_pb2.Struct()
    value = s.fields["deep"]
    for _ in range(48):  # two message levels each: the protobuf parser accepts 100
        value = value.list_value.values.add()
    value.number_value = math.nan
    s = struct_pb2.Struct.FromString(s.SerializeToString())
    with pytest.raises(InvalidArgument) as raised:
        struct_to_dict(s)
    assert raised.value.violations[0].field == "config.deep" + "[0]" * 48


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_lets_one_line_per_key_and_interval_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    throttle = Throttle(logging.getLogger("tests.throttle"), 10.0, clock=clock)
    sent = [throttle.log(logging.WARNING, "a", "bad %s", i) for i in range(1000)]
    assert sent == [True] + [False] * 999
    assert throttle.log(logging.WARNING, "b", "bad b")  # each key on its own
    clock.now += 9.9
    assert not throttle.log(logging.WARNING, "a", "bad late")
    clock.now += 0.1
    assert throttle.log(logging.WARNING, "a", "bad again")
    assert [r.getMessage() for r in caplog.records] == [
        "bad 0",
        "bad b",
        "bad again (and 1000 more like it in the last 10 s, not logged)",
    ]


def test_the_throttle_counts_nothing_below_the_loggers_level() -> None:
    logger = logging.getLogger("tests.throttle.quiet")
    logger.setLevel(logging.ERROR)
    throttle = Throttle(logger, 10.0, clock=Clock())
    assert not throttle.log(logging.WARNING, "a", "ignored")
    assert throttle.log(logging.ERROR, "a", "shown")
