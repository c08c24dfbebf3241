"""The Django app in-process, with pytest-django: system checks, middleware, view, command.

Django is configured from the test project's settings by ``django_testsite``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("django")
pytest.importorskip("pytest_django")

import django_testsite

django_testsite.configure()

from django.core.checks import run_checks  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.management.base import CommandError, SystemCheckError  # noqa: E402
from django.test import Client, RequestFactory, override_settings  # noqa: E402

from django_app import conf, views  # noqa: E402
from django_app.hooks import settings_module_for, settings_module_in_source  # noqa: E402
from django_app.management.commands.rungunicorn import (  # noqa: E402
    bind_address,
    metrics_url,
    split_arguments,
)
from django_app.middleware import RouteMiddleware  # noqa: E402
from gunicorn_prom_ext.labels import ROUTE_ENVIRON_KEY  # noqa: E402
from gunicorn_prom_ext.settings import SETTINGS, ConfigError, Settings  # noqa: E402
from gunicorn_prom_ext.sources import CONFIG_FILE_ENV  # noqa: E402

# pytest-django's `settings` fixture (its class was renamed across versions).
DjangoSettings = Any


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PROMETHEUS_* (or YAML file) from the developer's shell in the merged settings."""
    for spec in SETTINGS:
        monkeypatch.delenv(spec.env, raising=False)
    monkeypatch.delenv(CONFIG_FILE_ENV, raising=False)
    conf.set_running_settings(None)


def messages() -> list[Any]:
    return [m for m in run_checks() if str(m.id).startswith("django_app.")]


def ids() -> list[str]:
    return [m.id for m in messages()]


# -- system checks: one test per id -----------------------------------------------------


def test_valid_or_absent_setting_gives_no_message(settings: DjangoSettings) -> None:
    settings.GUNICORN_PROMETHEUS = {
        "METRICS_PORT": 9100, "namespace": "shop", "DURATION_BUCKETS": [0.1, 1],
        "AUTH_TOKEN": "t", "CLEANUP_DB_FILES": "yes", "GUNICORN_WORKERS": None,
    }  # fmt: skip
    assert ids() == []
    del settings.GUNICORN_PROMETHEUS
    assert ids() == []


def test_e001_not_a_dict(settings: DjangoSettings) -> None:
    settings.GUNICORN_PROMETHEUS = [("METRICS_PORT", 9100)]
    assert ids() == ["django_app.E001"]
    assert "must be a dict, got list" in messages()[0].msg


def test_not_a_dict_is_refused_by_the_server_path_too(settings: DjangoSettings) -> None:
    # Once it counted as {} there: the server started and served anonymous scrapes.
    settings.GUNICORN_PROMETHEUS = "AUTH_TOKEN=secret"
    assert ids() == ["django_app.E001"]
    assert "secret" not in messages()[0].msg
    with pytest.raises(ConfigError) as info:
        conf.resolve_settings()
    assert [str(p) for p in info.value.problems] == [
        "GUNICORN_PROMETHEUS (Django settings): expected a dict of settings, e.g. "
        'GUNICORN_PROMETHEUS = {"METRICS_PORT": 9091}, got a string'
    ]


def test_e002_unknown_key_with_a_suggestion(settings: DjangoSettings) -> None:
    settings.GUNICORN_PROMETHEUS = {"METRIC_PORT": 9100, "COLOUR": "blue"}
    found = messages()
    assert [m.id for m in found] == ["django_app.E002", "django_app.E002"]
    assert "'METRIC_PORT'" in found[0].msg and found[0].hint == "Did you mean METRICS_PORT?"
    assert "Known keys: METRICS_PORT, BIND_ADDRESS" in found[1].hint


def test_e003_bad_values(settings: DjangoSettings) -> None:
    settings.GUNICORN_PROMETHEUS = {
        "METRICS_PORT": 70000, "SSL_ENABLED": "maybe", "NAMESPACE": "9lives",
        "DURATION_BUCKETS": [1, 0.5], "AUTH_PASSWORD": 1234,
    }  # fmt: skip
    found = messages()
    assert [m.id for m in found] == ["django_app.E003"] * 5
    assert found[0].msg == (
        "GUNICORN_PROMETHEUS['METRICS_PORT']: expected an integer from 1 to 65535, got 70000."
    )
    assert "PROMETHEUS_METRICS_PORT" in found[0].hint
    assert "1234" not in found[4].msg  # a secret's value is never shown


def test_e004_one_setting_twice(settings: DjangoSettings) -> None:
    settings.GUNICORN_PROMETHEUS = {"METRICS_PORT": 9100, "metrics_port": 9101}
    assert ids() == ["django_app.E004"]


def test_e005_values_that_do_not_go_together(settings: DjangoSettings, tmp_path: Path) -> None:
    settings.GUNICORN_PROMETHEUS = {"SSL_ENABLED": True, "AUTH_USERNAME": "u"}
    found = messages()
    assert [m.id for m in found] == ["django_app.E005"] * 3
    assert "expected SSL_CERTFILE set when SSL is enabled" in found[0].msg
    missing = tmp_path / "missing.pem"
    settings.GUNICORN_PROMETHEUS = {"SSL_CLIENT_CAFILE": str(missing)}
    found = messages()
    assert [m.msg for m in found] == [
        "GUNICORN_PROMETHEUS['SSL_CLIENT_CAFILE']: expected SSL_ENABLED true as well: a TLS "
        "setting is never ignored, got TLS not enabled.",
        "GUNICORN_PROMETHEUS['SSL_CLIENT_CAFILE']: expected a readable file, got no such "
        f"file {missing}.",
    ]
    assert ids() == ["django_app.E005"] * 2


def test_e005_every_start_up_check_is_reported(settings: DjangoSettings, tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert, other = ca.issue_cert("localhost"), ca.issue_cert("elsewhere")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    other.private_key_pem.write_to_path(str(tmp_path / "other-key.pem"))
    settings.GUNICORN_PROMETHEUS = {
        "AUTH_TOKEN": "",  # empty: must not mean "no auth"
        "SSL_ENABLED": True,
        "SSL_CERTFILE": str(tmp_path / "cert.pem"),
        "SSL_KEYFILE": str(tmp_path / "other-key.pem"),
        "BIND_ADDRESS": "192.0.2.1",  # TEST-NET-1: never an address of this host
        "REDIS_URL": "redis://cache:6379/x",
    }
    found = messages()
    assert [m.id for m in found] == ["django_app.E005"] * 4
    assert [m.msg.split(":", 1)[0] for m in found] == [
        "GUNICORN_PROMETHEUS['AUTH_TOKEN']",
        "GUNICORN_PROMETHEUS['SSL_KEYFILE']",
        "GUNICORN_PROMETHEUS['BIND_ADDRESS']",
        "GUNICORN_PROMETHEUS['REDIS_URL']",
    ]
    assert "expected the private key of the certificate in SSL_CERTFILE" in found[1].msg
    assert "which is not an address of this host" in found[2].msg


def test_e003_numbers_in_ascii_digits_only(settings: DjangoSettings) -> None:
    settings.GUNICORN_PROMETHEUS = {"METRICS_PORT": "9_0_9_1", "REDIS_DB": "\u0663"}
    assert ids() == ["django_app.E003"] * 2


def test_e006_problems_from_the_environment(
    settings: DjangoSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.GUNICORN_PROMETHEUS = {}
    monkeypatch.setenv("PROMETHEUS_BIND_ADDRESS", "127.0.0.1")
    monkeypatch.setenv("PROMETHEUS_SSL_ENABLED", "perhaps")
    found = messages()
    assert [m.id for m in found] == ["django_app.E006"]
    assert found[0].msg.startswith("PROMETHEUS_SSL_ENABLED (environment): expected a boolean")
    # GUNICORN_PROMETHEUS beats the environment, so it can also fix it.
    settings.GUNICORN_PROMETHEUS = {"SSL_ENABLED": False}
    assert ids() == ["django_app.E006"]  # the bad variable is still reported: it is read


def test_e006_numbers_and_text_from_the_environment(
    settings: DjangoSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.GUNICORN_PROMETHEUS = {}
    monkeypatch.setenv("PROMETHEUS_METRICS_PORT", "\u0669\u0660\u0669\u0661")  # Arabic-Indic 9091
    monkeypatch.setenv("PROMETHEUS_AUTH_TOKEN", "abc\udcff")  # the byte 0xff, undecodable
    found = messages()
    assert [m.id for m in found] == ["django_app.E006"] * 2
    assert found[0].msg.startswith("PROMETHEUS_METRICS_PORT (environment): expected an integer")
    assert found[1].msg == (
        "PROMETHEUS_AUTH_TOKEN (environment): expected text that is valid UTF-8, got a string "
        "with bytes that are not UTF-8."
    )


def test_w001_middleware_missing(settings: DjangoSettings) -> None:
    settings.MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
    assert ids() == ["django_app.W001"]


def test_settings_are_read_lazily_and_manage_check_shows_them() -> None:
    with override_settings(GUNICORN_PROMETHEUS={"METRICS_PORT": "x"}):
        with pytest.raises(SystemCheckError, match=r"django_app\.E003"):
            call_command("check")
        assert conf.framework_settings() == {"METRICS_PORT": "x"}
    call_command("check")
    assert conf.framework_settings() == {}


def test_running_settings_follow_the_setting(settings: DjangoSettings) -> None:
    settings.GUNICORN_PROMETHEUS = {"METRICS_PORT": 9345}
    assert conf.running_settings().metrics_port == 9345
    settings.GUNICORN_PROMETHEUS = {"METRICS_PORT": 9346}
    assert conf.running_settings().metrics_port == 9346
    assert conf.resolve_settings().sources["metrics_port"] == (
        "GUNICORN_PROMETHEUS setting METRICS_PORT"
    )


# -- middleware -------------------------------------------------------------------------


def route(client: Client, path: str, method: str = "GET") -> tuple[int, str | None]:
    response = client.generic(method, path)
    return response.status_code, response.wsgi_request.environ.get(ROUTE_ENVIRON_KEY)


def test_routes_are_url_patterns() -> None:
    client = Client(raise_request_exception=False)
    assert route(client, "/") == (200, "/")
    assert route(client, "/items/42") == (200, "/items/<int:pk>")
    assert route(client, "/items/42", "POST") == (201, "/items/<int:pk>")
    assert route(client, "/api/things/red") == (200, "/api/things/<slug:name>")
    # A re_path() route reads as a template.
    assert route(client, "/legacy/1999/") == (200, "/legacy/<year>/")
    # A view that raises: Django's 500, under its route. Http404 from a matched route too.
    assert route(client, "/boom") == (500, "/boom")
    assert route(client, "/gone") == (404, "/gone")
    # Nothing matched: no route (the core records an empty label), never the raw path.
    assert route(client, "/no/such/page") == (404, None)


def test_raw_regex_routes_setting_keeps_the_regex(settings: DjangoSettings) -> None:
    settings.GUNICORN_PROMETHEUS_RAW_REGEX_ROUTES = True
    client = Client()  # its handler builds the middleware chain, reading the setting
    assert route(client, "/legacy/1999/") == (200, "/legacy/(?P<year>[0-9]{4})/$")
    assert route(client, "/items/42") == (200, "/items/<int:pk>")
    assert ids() == []
    # Anything but True keeps the readable labels, and system check E007 reports it.
    settings.GUNICORN_PROMETHEUS_RAW_REGEX_ROUTES = "yes"
    assert route(Client(), "/legacy/1999/") == (200, "/legacy/<year>/")
    found = messages()
    assert [m.id for m in found] == ["django_app.E007"]
    assert found[0].msg == (
        "GUNICORN_PROMETHEUS_RAW_REGEX_ROUTES must be True or False, got str 'yes'."
    )
    settings.GUNICORN_PROMETHEUS_RAW_REGEX_ROUTES = False
    assert route(Client(), "/legacy/1999/") == (200, "/legacy/<year>/")
    assert ids() == []


def test_middleware_alone_leaves_unresolved_requests_alone() -> None:
    request = RequestFactory().get("/whatever")
    response = RouteMiddleware(lambda r: "response")(request)
    assert response == "response"
    assert ROUTE_ENVIRON_KEY not in request.environ


def test_middleware_sets_the_route_even_when_the_inner_handler_raises() -> None:
    request = RequestFactory().get("/items/1")
    request.resolver_match = SimpleNamespace(route="items/<int:pk>")

    def failing(r: Any) -> Any:
        raise RuntimeError("propagated (DEBUG_PROPAGATE_EXCEPTIONS)")

    with pytest.raises(RuntimeError):
        RouteMiddleware(failing)(request)
    assert request.environ[ROUTE_ENVIRON_KEY] == "/items/<int:pk>"


# -- the /metrics view ------------------------------------------------------------------


def test_view_relays_with_the_clients_authorization(
    settings: DjangoSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Settings, str | None]] = []

    def fake_relay(s: Settings, headers: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        seen.append((s, headers.get("Authorization")))
        return 401, [("WWW-Authenticate", 'Basic realm="metrics"')], b"unauthorized\n"

    monkeypatch.setattr(views, "relay_scrape", fake_relay)
    settings.GUNICORN_PROMETHEUS = {"METRICS_PORT": 9876}
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Basic Zm9vOmJhcg==")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Basic realm="metrics"'
    assert response.content == b"unauthorized\n"
    assert [(s.metrics_port, auth) for s, auth in seen] == [(9876, "Basic Zm9vOmJhcg==")]
    assert Client().post("/metrics").status_code == 405

    # In a gunicorn worker, the master's own settings win (it is their endpoint).
    conf.set_running_settings(Settings(metrics_port=9111))
    Client().get("/metrics")
    assert seen[-1][0].metrics_port == 9111


def test_view_without_a_master_says_so(settings: DjangoSettings) -> None:
    from harness import free_port

    settings.GUNICORN_PROMETHEUS = {"METRICS_PORT": free_port(), "BIND_ADDRESS": "127.0.0.1"}
    response = Client().get("/metrics")
    assert response.status_code == 503
    assert b"not reachable" in response.content


# -- rungunicorn's command line and plain gunicorn's settings module --------------------


def test_split_arguments_gives_django_its_options_and_gunicorn_the_rest() -> None:
    django_opts, gunicorn_args, wants_help = split_arguments([
        "0:8000", "-w", "4", "--settings", "testsite.settings", "-k", "gthread",
        "--threads=8", "--verbosity=2", "--traceback", "-c", "gunicorn.conf.py", "-v",
    ])  # fmt: skip
    assert django_opts == {"settings": "testsite.settings", "verbosity": 2, "traceback": True}
    assert gunicorn_args == [
        "0:8000", "-w", "4", "-k", "gthread", "--threads=8", "-c", "gunicorn.conf.py", "-v",
    ]  # fmt: skip
    assert not wants_help
    assert split_arguments(["--help"])[2]
    with pytest.raises(CommandError):
        split_arguments(["--settings"])


def test_addresses_and_urls() -> None:
    assert bind_address("8000") == "127.0.0.1:8000"
    assert bind_address("0:8000") == "0.0.0.0:8000"
    assert bind_address("[::1]:8000") == "[::1]:8000"
    assert bind_address("unix:/run/app.sock") == "unix:/run/app.sock"
    assert metrics_url(Settings()) == "http://0.0.0.0:9091/metrics"
    assert metrics_url(Settings(bind_address="::1", metrics_port=1)) == "http://[::1]:1/metrics"


def test_rungunicorn_refuses_our_config_module_and_two_addresses() -> None:
    with pytest.raises(CommandError, match="installs the hooks a second time"):
        call_command("rungunicorn", "-c", "python:django_app.gunicorn_conf")
    with pytest.raises(CommandError, match="one \\[addr:\\]port at most"):
        call_command("rungunicorn", "127.0.0.1:1", "127.0.0.1:2")


def test_settings_module_is_found_without_importing_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    sys.modules.pop("testsite.wsgi", None)
    assert settings_module_in_source("testsite.wsgi") == "testsite.settings"
    assert "testsite.wsgi" not in sys.modules
    assert settings_module_in_source("testsite.views") is None
    assert settings_module_in_source("no.such.module") is None

    def arbiter(env: dict[str, str], app_uri: str | None) -> Any:
        return SimpleNamespace(
            cfg=SimpleNamespace(env=env, wsgi_app=None), app=SimpleNamespace(app_uri=app_uri)
        )

    assert settings_module_for(arbiter({}, "testsite.wsgi:application")) == "testsite.settings"
    assert settings_module_for(arbiter({"DJANGO_SETTINGS_MODULE": "a.b"}, None)) == "a.b"
    assert settings_module_for(arbiter({}, None)) is None
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "from.env")
    assert settings_module_for(arbiter({"DJANGO_SETTINGS_MODULE": "a.b"}, None)) == "from.env"
    assert os.environ["DJANGO_SETTINGS_MODULE"] == "from.env"


def test_readme_documents_every_check_id() -> None:
    from harness import REPO_ROOT

    from django_app import checks

    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- django-checks:start -->\n", "<!-- django-checks:end -->"
    rows = text.split(start, 1)[1].split(end, 1)[0].splitlines()[2:]
    documented = [row.split("|")[1].strip(" `") for row in rows]
    defined = [
        getattr(checks, name) for name in dir(checks) if name[:1] in "EW" and name[1:].isdigit()
    ]
    assert sorted(documented) == sorted(defined)
    assert all(row.count("|") == 4 and row.split("|")[3].strip() for row in rows)  # hints
