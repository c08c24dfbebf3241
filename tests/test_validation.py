"""Checks of the merged settings, in-process: every case of config_cases.py, then the rules
one by one (empty values, TLS files, addresses, gunicorn's ports, Redis URLs)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from config_cases import CASES, tls_files
from harness import free_port

from gunicorn_prom_ext.host_checks import bind_trouble
from gunicorn_prom_ext.settings import ConfigError, Problem
from gunicorn_prom_ext.sources import CONFIG_FILE_ENV, ResolvedSettings, load_settings
from gunicorn_prom_ext.validation import redis_url_trouble


def harness_environ(**extra: str) -> dict[str, str]:
    """What the end-to-end harness gives every server, plus ``extra``."""
    return {"PROMETHEUS_BIND_ADDRESS": "127.0.0.1", "PROMETHEUS_METRICS_PORT": str(free_port()),
            **extra}  # fmt: skip


def problems(environ: dict[str, str], **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ, **kwargs)  # type: ignore[arg-type]
    return [str(problem) for problem in info.value.problems]


def load(environ: dict[str, str], **kwargs: object) -> ResolvedSettings:
    return load_settings(environ=environ, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(CASES))
def test_every_bad_case_is_refused_in_process(name: str, tmp_path: Path) -> None:
    app_port = free_port()
    case = CASES[name](tmp_path, app_port)
    started = time.monotonic()
    found = problems(harness_environ(**case.env), gunicorn_addresses=[("127.0.0.1", app_port)])
    assert time.monotonic() - started < 2.0  # a bound, not a benchmark (hostile files)
    assert len(found) == len(case.problems), found
    for line, expected in zip(found, case.problems, strict=True):
        assert line.startswith(expected), f"{line!r}\ndoes not start with\n{expected!r}"


# --- empty values ----------------------------------------------------------------------------


def test_an_empty_variable_alone_still_counts_as_unset() -> None:
    environ = harness_environ(PROMETHEUS_AUTH_TOKEN="", PROMETHEUS_AUTH_USERNAME=" ",
                              PROMETHEUS_AUTH_PASSWORD="", PROMETHEUS_SSL_CERTFILE="")  # fmt: skip
    settings = load(environ).settings
    assert (settings.auth_token, settings.auth_username, settings.ssl_certfile) == (None,) * 3


def test_an_empty_value_elsewhere_is_refused_unless_a_value_wins(tmp_path: Path) -> None:
    framework = {"AUTH_TOKEN": "", "auth_username": "  "}
    assert problems(harness_environ(), framework=framework, framework_source="DJ") == [
        "AUTH_TOKEN (DJ): expected a non-empty bearer token, or no key at all (empty must not "
        "mean no auth), got an empty string",
        "auth_username (DJ): expected a non-empty user name, or no key at all (empty must not "
        "mean no auth), got an empty string",
    ]
    # A value from any source makes the empty one moot (it never replaces a value).
    environ = harness_environ(PROMETHEUS_AUTH_TOKEN="t0ken")
    assert load(environ, framework={"AUTH_TOKEN": ""}).settings.auth_token == "t0ken"
    path = tmp_path / "c.yml"
    path.write_text('exporter:\n  auth:\n    bearer_token: ""\n')
    environ = harness_environ(**{CONFIG_FILE_ENV: str(path)})
    assert load(environ, command_line={"auth_token": "t"}).settings.auth_token == "t"
    # None means "not set here" (Flask's app.config holds None for every key).
    assert load(harness_environ(), framework={"AUTH_TOKEN": None}).settings.auth_token is None


def test_an_empty_tls_file_matters_only_when_tls_is_on(tmp_path: Path) -> None:
    tls = tls_files(tmp_path)
    framework = {"SSL_CLIENT_CAFILE": ""}
    assert load(harness_environ(), framework=framework).settings.ssl_client_cafile is None
    environ = harness_environ(PROMETHEUS_SSL_ENABLED="1", PROMETHEUS_SSL_CERTFILE=tls.cert,
                              PROMETHEUS_SSL_KEYFILE=tls.key)  # fmt: skip
    assert problems(environ, framework=framework, framework_source="DJ") == [
        "SSL_CLIENT_CAFILE (DJ): expected a client CA file, or no key at all (TLS is enabled), "
        "got an empty string"
    ]


def test_a_refused_value_is_not_reported_again_as_missing() -> None:
    environ = harness_environ(PROMETHEUS_AUTH_USERNAME="u", PROMETHEUS_AUTH_PASSWORD="\udcff",
                              PROMETHEUS_SSL_ENABLED="maybe",
                              PROMETHEUS_SSL_CERTFILE="/nonexistent/cert.pem")  # fmt: skip
    found = problems(environ)
    assert [line.split(" ", 1)[0] for line in found] == [
        "PROMETHEUS_AUTH_PASSWORD", "PROMETHEUS_SSL_ENABLED", "PROMETHEUS_SSL_CERTFILE"
    ]  # no "TLS not enabled", no "username without password"
    assert found[2].endswith("got no such file /nonexistent/cert.pem")


# --- TLS ---------------------------------------------------------------------------------------


def test_a_complete_tls_setup_loads(tmp_path: Path) -> None:
    tls = tls_files(tmp_path)
    environ = harness_environ(
        PROMETHEUS_SSL_ENABLED="on", PROMETHEUS_SSL_CERTFILE=tls.cert,
        PROMETHEUS_SSL_KEYFILE=tls.key, PROMETHEUS_SSL_CLIENT_CAFILE=tls.ca,
        PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED="true",
    )  # fmt: skip
    settings = load(environ).settings
    assert (settings.ssl_keyfile, settings.ssl_client_cafile) == (tls.key, tls.ca)


def test_a_tls_file_of_gigabytes_is_not_read(tmp_path: Path) -> None:
    tls = tls_files(tmp_path)
    huge = tmp_path / "huge.pem"
    with open(huge, "wb") as handle:
        handle.truncate(5 * 1024**3)  # sparse: costs nothing on disk
    environ = harness_environ(PROMETHEUS_SSL_ENABLED="on", PROMETHEUS_SSL_CERTFILE=tls.cert,
                              PROMETHEUS_SSL_KEYFILE=str(huge))  # fmt: skip
    started = time.monotonic()
    assert problems(environ) == [
        "PROMETHEUS_SSL_KEYFILE (environment): expected a readable file, got a file of "
        f"5368709120 bytes (a PEM file is a few KiB) {huge}"
    ]
    assert time.monotonic() - started < 2.0


def test_tls_paths_may_hold_any_byte_but_nul(tmp_path: Path) -> None:
    tls = tls_files(tmp_path / "caf\udce9")  # a directory whose name is not UTF-8
    environ = harness_environ(PROMETHEUS_SSL_ENABLED="on", PROMETHEUS_SSL_CERTFILE=tls.cert,
                              PROMETHEUS_SSL_KEYFILE=tls.key)  # fmt: skip
    assert load(environ).settings.ssl_certfile == tls.cert
    assert problems(harness_environ(), framework={"MULTIPROC_DIR": "/tmp/a\0b"},
                    framework_source="DJ") == [
        "MULTIPROC_DIR (DJ): expected a path without NUL characters, got a string '/tmp/a\\x00b'"
    ]  # fmt: skip


# --- addresses and ports ------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "localhost"])
def test_local_addresses_can_be_bound(address: str) -> None:
    assert bind_trouble(address) is None


@pytest.mark.parametrize(
    ("address", "trouble"),
    [
        ("", "which does not resolve"),
        ("host\udcff", "which does not resolve"),
        ("a" * 300, "which does not resolve"),
        ("192.0.2.1", "which is not an address of this host"),
    ],
)
def test_addresses_the_endpoint_cannot_listen_on(address: str, trouble: str) -> None:
    found = bind_trouble(address)
    assert found is not None and found.startswith(trouble)


def test_the_metrics_port_must_not_be_gunicorns() -> None:
    port = free_port()
    environ = harness_environ(PROMETHEUS_METRICS_PORT=str(port))
    addresses: list[object] = ["/run/app.sock", 3, ("::1", port + 1), ("::", port)]
    assert problems(environ, gunicorn_addresses=addresses) == [
        f"PROMETHEUS_METRICS_PORT (environment): expected a port other than gunicorn's own "
        f"(it binds [::]:{port}), got {port}"
    ]
    # Unknown binds (Django's system checks) or other ports: fine.
    assert load(environ).settings.metrics_port == port
    assert load(environ, gunicorn_addresses=addresses[:3]).settings.metrics_port == port


def test_the_default_port_is_checked_too() -> None:
    environ = {"PROMETHEUS_BIND_ADDRESS": "127.0.0.1"}
    assert problems(environ, gunicorn_addresses=[("0.0.0.0", 9091)]) == [
        "exporter.prometheus.metrics_port (default): expected a port other than gunicorn's own "
        "(it binds 0.0.0.0:9091), got 9091"
    ]


# --- Redis URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0", "redis://:p%40ss@cache.internal:6380/2147483647",
        "rediss://cache/3?ssl_cert_reqs=none&socket_timeout=1.5", "redis://[::1]:6379",
        "unix:///run/redis.sock?db=4", "redis://cache?db=7&health_check_interval=30",
        "redis://", "redis://cache/",
    ],
)  # fmt: skip
def test_redis_urls_that_redis_py_takes(url: str) -> None:
    assert redis_url_trouble(url) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://[::1", "a URL that parses"),
        ("redis://h:99999/0", "a URL whose port is a number from 0 to 65535"),
        ("redis://h:-1/0", "a URL whose port is a number from 0 to 65535"),
        ("redis://h/-1", "a database number from 0 to 2147483647 (in the path or ?db=)"),
        ("redis://h/\u0663", "a database number from 0 to 2147483647 (in the path or ?db=)"),
        ("redis://h/0?db=", None),  # an empty ?db= is dropped, as redis-py drops it
        ("redis://h?socket_timeout=fast", "a number in ?socket_timeout="),
        ("redis://h?max_connections=1.5", "a number in ?max_connections="),
        ("unix://", "a unix:// URL with the path of the socket (unix:///run/redis.sock)"),
    ],
)
def test_redis_urls_that_redis_py_would_refuse_or_misread(url: str, expected: str | None) -> None:
    trouble = redis_url_trouble(url)
    assert (trouble[0] if trouble else None) == expected


def test_a_redis_url_is_never_echoed() -> None:
    found = problems(harness_environ(REDIS_URL="redis://:hunter2@[::1:6379/0"))
    assert found == [
        "REDIS_URL (environment): expected a URL that parses, got an unclosed or invalid [IPv6] "
        "host"
    ]
    assert "hunter2" not in found[0]


def test_problem_type_is_unchanged() -> None:
    # Django's checks and the Flask extension take problems apart by field.
    with pytest.raises(ConfigError) as info:
        load_settings(environ=harness_environ(REDIS_DB="x"))
    assert info.value.problems == [
        Problem("REDIS_DB", "environment", "an integer from 0 to 2147483647", "a string 'x'")
    ]
