"""Network addresses as the components take them on their command lines: `host:port`, or
`[v6]:port`."""

from __future__ import annotations


def split_address(address: str, *, any_port: bool = False) -> tuple[str, int]:
    """`host:port` → (host, port), brackets of an IPv6 host removed. Port 0 ("any free
    port", for a server about to listen) only with `any_port`. Raises ValueError naming the
    address."""
    host, sep, port = address.rpartition(":")
    lowest = 0 if any_port else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        raise ValueError(f"an address must be host:port, not {address!r}")
    return host.strip("[]"), int(port)
