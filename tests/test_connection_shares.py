"""Who a connection to the metrics port counts as, and how many one client may hold.

Pure functions of the address and the limit; test_endpoint_attacks.py shows the share at
work against a real gunicorn (slow readers from one address, probes from another).
"""

from __future__ import annotations

import pytest

from gunicorn_prom_ext.http_server import Limits, client_of


@pytest.mark.parametrize(
    ("address", "client"),
    [
        (("127.0.0.2", 5000), "127.0.0.2"),
        (("::ffff:127.0.0.2", 5000, 0, 0), "127.0.0.2"),  # a dual-stack socket's IPv4 client
        (("2001:db8:1:2:aaaa::1", 5000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff:ffff:ffff:ffff", 1, 0, 0), "2001:db8:1:2::/64"),  # same /64
        (("2001:db8:1:3::1", 5000, 0, 0), "2001:db8:1:3::/64"),  # the next one: another
        (("::1", 5000, 0, 0), "::/64"),
        (("fe80::1%lo", 5000, 0, 1), "fe80::/64"),
        (("not an address", 1), "not an address"),
        ("/run/metrics.sock", "/run/metrics.sock"),
        ((), "()"),
    ],
)
def test_client_of(address: object, client: str) -> None:
    assert client_of(address) == client


@pytest.mark.parametrize(
    ("max_connections", "share"), [(1, 1), (2, 2), (3, 3), (4, 2), (5, 2), (32, 16), (10000, 5000)]
)
def test_one_client_holds_half_except_where_half_would_be_one(
    max_connections: int, share: int
) -> None:
    assert Limits(max_connections).per_address == share
