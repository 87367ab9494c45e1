"""`host:port` as the components take it (flnet.addresses)."""

from __future__ import annotations

import pytest

from flnet.addresses import split_address


def test_hosts_and_ports_are_split() -> None:
    assert split_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert split_address("[::1]:50051") == ("::1", 50051)
    assert split_address("gateway.internal:443") == ("gateway.internal", 443)
    assert split_address("127.0.0.1:0", any_port=True) == ("127.0.0.1", 0)


@pytest.mark.parametrize(
    "address", ["8080", ":8080", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:65536", "127.0.0.1:0"]
)
def test_a_malformed_address_is_refused_by_name(address: str) -> None:
    with pytest.raises(ValueError, match=f"an address must be host:port, not {address!r}"):
        split_address(address)
