"""The in-app /metrics view relays the master's page, behind the same auth."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from harness import Gunicorn, parse_metrics

pytestmark = pytest.mark.slow


def test_relay_serves_the_masters_page_behind_its_auth(
    gunicorn_factory: Callable[..., Gunicorn],
) -> None:
    env = {"PROMETHEUS_AUTH_USERNAME": "u", "PROMETHEUS_AUTH_PASSWORD": "p"}
    g = gunicorn_factory("relay_app:app", env=env, workers=2).start(wait_metrics=False)
    assert g.request("/")[0] == 200
    status, body = g.request("/metrics")
    assert status == 401 and b"gunicorn_workers" not in body
    auth = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    status, body = g.request("/metrics", headers=auth)
    assert status == 200
    samples = parse_metrics(body.decode())
    assert samples[("gunicorn_workers", ())] == 2.0
    count = (
        "http_server_request_duration_seconds_count",
        (
            ("http_request_method", "GET"),
            ("http_response_status_code", "200"),
            ("http_route", ""),
        ),
    )
    assert samples[count] >= 1.0
