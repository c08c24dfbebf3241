"""The protected endpoint on a real gunicorn master: auth and TLS from the environment."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from harness import Gunicorn

pytestmark = pytest.mark.slow
GunicornFactory = Callable[..., Gunicorn]


def test_basic_auth_and_bearer_token(gunicorn_factory: GunicornFactory) -> None:
    env = {
        "PROMETHEUS_AUTH_USERNAME": "prom",
        "PROMETHEUS_AUTH_PASSWORD": "s3cret",
        "PROMETHEUS_AUTH_TOKEN": "tok-123",
    }
    g = gunicorn_factory("testapp:app", env=env).start(wait_metrics=False)
    g.request("/items/1")
    status, headers, body = g.metrics_response()
    assert status == 401
    assert "www-authenticate" in headers
    assert b"http_server" not in body and b"gunicorn_" not in body
    wrong = base64.b64encode(b"prom:nope").decode()
    assert g.metrics_response({"Authorization": f"Basic {wrong}"})[0] == 401
    right = base64.b64encode(b"prom:s3cret").decode()
    samples = g.metrics({"Authorization": f"Basic {right}"})
    key = (
        "http_server_request_duration_seconds_count",
        (
            ("http_request_method", "GET"),
            ("http_response_status_code", "200"),
            ("http_route", "/items/<n>"),
        ),
    )
    assert samples[key] == 1.0
    assert g.metrics_response({"Authorization": "Bearer tok-123"})[0] == 200
    assert g.metrics_response({"Authorization": "Bearer tok-124"})[0] == 401


def test_tls_with_required_client_certificate(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    env = {
        "PROMETHEUS_SSL_ENABLED": "true",
        "PROMETHEUS_SSL_CERTFILE": str(tmp_path / "server.pem"),
        "PROMETHEUS_SSL_KEYFILE": str(tmp_path / "server.pem"),
        "PROMETHEUS_SSL_CLIENT_CAFILE": str(tmp_path / "ca.pem"),
        "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED": "true",
    }
    client = ssl.create_default_context()
    ca.configure_trust(client)
    ca.issue_cert("prometheus").configure_cert(client)
    g = gunicorn_factory("testapp:app", env=env, metrics_ssl_context=client).start()
    g.request("/")
    assert g.wait_for(lambda: g.sum_values("http_server_request_duration_seconds_count") == 1.0)

    anonymous = ssl.create_default_context()
    ca.configure_trust(anonymous)
    g.metrics_ssl_context = anonymous
    try:
        status = g.metrics_response()[0]
    except (ssl.SSLError, ConnectionError):
        status = None
    assert status is None
