"""Route labels end to end: Django REST Framework's router and Django's admin (regex URL
patterns) under real gunicorn, read back from the master's metrics page.

The project is tests/django_project/routesite, on a SQLite file the test migrates first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import REPO_ROOT, Gunicorn, clean_environ, free_port

pytest.importorskip("django")
pytest.importorskip("rest_framework")

pytestmark = pytest.mark.slow
GunicornFactory = Callable[..., Gunicorn]
DJANGO_DIR = Path(__file__).resolve().parent / "django_project"
COUNT = "http_server_request_duration_seconds_count"
SETTINGS_MODULE = "routesite.settings"
JSON = {"Content-Type": "application/json"}
Key = tuple[str, str, str]  # method, route, status


def routesite(
    gunicorn_factory: GunicornFactory, tmp_path: Path, *, plain: bool, raw: bool | None = None
) -> Gunicorn:
    """The project under `manage.py rungunicorn` (2 workers) or plain gunicorn, its
    database migrated."""
    env = {"ROUTESITE_DB": str(tmp_path / "routesite.sqlite3")}
    if raw is not None:
        env["TEST_RAW_REGEX_ROUTES"] = json.dumps(raw)
    migrate_env = {**clean_environ(), "PYTHONPATH": str(REPO_ROOT), **env}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--run-syncdb", "-v", "0",
         "--settings", SETTINGS_MODULE],
        cwd=DJANGO_DIR, env=migrate_env, check=True, timeout=60,
    )  # fmt: skip
    workers = 1 if plain else 2
    config = "python:django_app.gunicorn_conf" if plain else None
    g = gunicorn_factory(
        "routesite.wsgi", env=env, cwd=DJANGO_DIR, workers=workers, config=config
    )
    # GUNICORN_PROMETHEUS names the metrics port (it beats the harness's variable).
    g.metrics_port = free_port()
    g.env["TEST_GUNICORN_PROMETHEUS"] = json.dumps(
        {"METRICS_PORT": g.metrics_port, "BIND_ADDRESS": "127.0.0.1"}
    )
    if not plain:
        g.env["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
        g.args = [
            sys.executable, "manage.py", "rungunicorn", f"127.0.0.1:{g.app_port}",
            "-w", str(workers),
        ]  # fmt: skip
    return g.start()


def counts(g: Gunicorn) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for (name, labels), value in g.metrics().items():
        if name == COUNT:
            d = dict(labels)
            key = (d["http_request_method"], d["http_route"], d["http_response_status_code"])
            out[key] = value
    return out


def send(g: Gunicorn, requests: list[tuple[str, str, int]]) -> None:
    for method, path, status in requests:
        body = b'{"title": "hello", "code": "x = 1"}' if method == "POST" else None
        assert g.request(path, method=method, body=body, headers=JSON)[0] == status, path


def test_router_and_admin_routes_read_as_templates(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    g = routesite(gunicorn_factory, tmp_path, plain=False)
    send(g, [
        ("GET", "/api/", 200),                              # the router's API root
        ("GET", "/api/snippets/", 200),
        ("POST", "/api/snippets/", 201), ("POST", "/api/snippets/", 201),
        ("GET", "/api/snippets/1/", 200), ("GET", "/api/snippets/2/", 200),
        ("GET", "/api/snippets/999/", 404),                 # Http404 from a matched route
        ("DELETE", "/api/snippets/2/", 204),
        ("GET", "/api/snippets/1.json", 200),               # format suffixes
        ("GET", "/api/snippets.json", 200),
        ("GET", "/api/snippets/1/highlight/", 200),         # @action(detail=True)
        ("GET", "/api/snippets/1/highlight.json", 200),
        ("GET", "/api/snippets/by-title/hello/", 200),      # @action with a url_path regex
        ("GET", "/admin/", 302),
        ("GET", "/admin/login/", 200),
        ("GET", "/admin/auth/", 302),                       # the admin's app index (regex)
        ("GET", "/admin/auth/user/1/change/", 302),
        ("GET", "/admin/no/such/thing", 302),               # the admin's catch-all (regex)
        ("GET", "/v1/items/5", 200),                        # re_path include + path()
        ("GET", "/v2/notes/hello.txt", 200),                # re_path include + re_path()
        ("GET", "/robots.txt", 200),
        ("GET", "/things/3.json", 200),                     # path() with format suffixes
        ("GET", "/nowhere", 404),                           # no route
    ])  # fmt: skip
    expected = {
        ("GET", "/api/", "200"): 1.0,
        ("GET", "/api/snippets/", "200"): 1.0,
        ("POST", "/api/snippets/", "201"): 2.0,
        ("GET", "/api/snippets/<pk>/", "200"): 2.0,
        ("GET", "/api/snippets/<pk>/", "404"): 1.0,
        ("DELETE", "/api/snippets/<pk>/", "204"): 1.0,
        ("GET", "/api/snippets/<pk>.<format>", "200"): 1.0,
        ("GET", "/api/snippets.<format>", "200"): 1.0,
        ("GET", "/api/snippets/<pk>/highlight/", "200"): 1.0,
        ("GET", "/api/snippets/<pk>/highlight.<format>", "200"): 1.0,
        ("GET", "/api/snippets/by-title/<title>/", "200"): 1.0,
        ("GET", "/admin/", "302"): 1.0,
        ("GET", "/admin/login/", "200"): 1.0,
        ("GET", "/admin/<app_label>/", "302"): 1.0,
        ("GET", "/admin/auth/user/<path:object_id>/change/", "302"): 1.0,
        ("GET", "/admin/<url>", "302"): 1.0,
        ("GET", "/v<version>/items/<int:pk>", "200"): 1.0,
        ("GET", "/v<version>/notes/<slug>.txt", "200"): 1.0,
        ("GET", "/robots.txt", "200"): 1.0,
        ("GET", "/things/<int:pk><drf_format_suffix:format>", "200"): 1.0,
        ("GET", "", "404"): 1.0,
    }
    g.wait_for(lambda: sum(counts(g).values()) == 23, message="23 requests counted")
    assert counts(g) == expected


def test_raw_regex_routes_setting_under_plain_gunicorn(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    g = routesite(gunicorn_factory, tmp_path, plain=True, raw=True)
    send(g, [
        ("POST", "/api/snippets/", 201),
        ("GET", "/api/snippets/1.json", 200),
        ("GET", "/admin/auth/", 302),
        ("GET", "/v1/items/5", 200),
        ("GET", "/robots.txt", 200),
    ])  # fmt: skip
    g.wait_for(lambda: sum(counts(g).values()) == 5, message="5 requests counted")
    assert counts(g) == {
        ("POST", "/api/snippets/$", "201"): 1.0,
        ("GET", "/api/snippets/(?P<pk>[^/.]+)\\.(?P<format>[a-z0-9]+)/?$", "200"): 1.0,
        ("GET", "/admin/(?P<app_label>auth|routesite)/$", "302"): 1.0,
        ("GET", "/v(?P<version>[12])/items/<int:pk>", "200"): 1.0,
        ("GET", "/robots.txt", "200"): 1.0,
    }
