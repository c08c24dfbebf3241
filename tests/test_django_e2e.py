"""The Django app end to end: `manage.py rungunicorn` and plain gunicorn, as subprocesses.

The test project (tests/django_project) imports prometheus_client from its settings and
from an installed app, before anything could export the multiprocess directory, and the
harness's PROMETHEUS_MULTIPROC_DIR is removed: prometheus_client, imported that early,
would keep each worker's metrics in its own memory. The project's own counter
(testsite_item_views_total) only reaches the master's page if the workers really run in
multiprocess mode.
"""

from __future__ import annotations

import base64
import http.client
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from harness import REPO_ROOT, Gunicorn, clean_environ, free_port, parse_metrics, require_module
from test_startup_errors import assert_nothing_left, assert_one_error, fail_to_start

pytest.importorskip("django")

pytestmark = pytest.mark.slow
GunicornFactory = Callable[..., Gunicorn]
DJANGO_DIR = Path(__file__).resolve().parent / "django_project"
COUNT = "http_server_request_duration_seconds_count"
Key = tuple[str, str, str]  # method, route, status


def django_server(
    gunicorn_factory: GunicornFactory,
    *args: str,
    gunicorn_prometheus: dict[str, object] | None = None,
    env: dict[str, str] | None = None,
    workers: int = 1,
    plain: bool = False,
) -> Gunicorn:
    """The test project under `manage.py rungunicorn` (or plain gunicorn with our conf)."""
    config = "python:django_app.gunicorn_conf" if plain else None
    g = gunicorn_factory(
        "testsite.wsgi", *args, env=env or {}, cwd=DJANGO_DIR, workers=workers, config=config
    )
    # The metrics port comes from GUNICORN_PROMETHEUS, which beats the environment's
    # PROMETHEUS_METRICS_PORT the harness set.
    g.metrics_port = free_port()
    settings = {"METRICS_PORT": g.metrics_port, "BIND_ADDRESS": "127.0.0.1"}
    settings.update(gunicorn_prometheus or {})
    g.env["TEST_GUNICORN_PROMETHEUS"] = json.dumps(settings)
    del g.env["PROMETHEUS_MULTIPROC_DIR"]  # the trap: nothing set before the settings load
    g.env.pop("DJANGO_SETTINGS_MODULE", None)  # plain gunicorn finds it in testsite/wsgi.py
    if not plain:
        g.args = [
            sys.executable, "manage.py", "rungunicorn", f"127.0.0.1:{g.app_port}", *args,
        ]  # fmt: skip
    return g


def counts(g: Gunicorn, headers: dict[str, str] | None = None) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for (name, labels), value in g.metrics(headers).items():
        if name == COUNT:
            d = dict(labels)
            key = (d["http_request_method"], d["http_route"], d["http_response_status_code"])
            out[key] = value
    return out


def send(g: Gunicorn, requests: list[tuple[str, str, int]]) -> None:
    for method, path, status in requests:
        assert g.request(path, method=method)[0] == status, (method, path)


def test_rungunicorn_counts_every_route_and_status(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    env = {"TEST_NOTES": str(notes), "GUNICORN_CMD_ARGS": "--timeout 50"}
    g = django_server(
        gunicorn_factory, "-w", "2", "-c", "gunicorn_extra_conf.py", env=env, workers=2
    )
    g.start()
    send(g, [
        ("GET", "/", 200), ("GET", "/", 200),
        ("GET", "/items/1", 200), ("GET", "/items/2", 200), ("GET", "/items/3", 200),
        ("POST", "/items/9", 201),
        ("GET", "/api/things/blue", 200),
        ("GET", "/legacy/2024/", 200),
        ("GET", "/boom", 500), ("GET", "/boom", 500),   # the view raises; Django's 500
        ("GET", "/gone", 404),                           # Http404 from a matched route
        ("GET", "/nope", 404), ("GET", "/nope/2", 404), ("DELETE", "/x", 404),  # no route
    ])  # fmt: skip
    expected = {
        ("GET", "/", "200"): 2.0,
        ("GET", "/items/<int:pk>", "200"): 3.0,
        ("POST", "/items/<int:pk>", "201"): 1.0,
        ("GET", "/api/things/<slug:name>", "200"): 1.0,
        ("GET", "/legacy/<year>/", "200"): 1.0,  # re_path(), read as a template
        ("GET", "/boom", "500"): 2.0,
        ("GET", "/gone", "404"): 1.0,
        ("GET", "", "404"): 2.0,
        ("DELETE", "", "404"): 1.0,
    }
    g.wait_for(lambda: sum(counts(g).values()) == 14, message="14 requests counted")
    assert counts(g) == expected
    # The project's own counter: prometheus_client is in multiprocess mode in the workers.
    assert g.value("testsite_item_views_total") == 4.0
    # Precedence: -w 2 (command line) beats workers = 3 (config file); GUNICORN_CMD_ARGS'
    # --timeout 50 beats the file's 45.
    assert g.value("gunicorn_workers") == 2.0
    master = g.master_pid
    assert notes.read_text().splitlines() == [f"config when_ready {master} timeout=50 workers=2"]

    log = g.log_text()
    assert log.count("Performing system checks") == 1  # not again after the re-exec
    assert "restarting in multiprocess mode" in log
    assert f"App:     http://127.0.0.1:{g.app_port}/" in log
    assert f"Metrics: http://127.0.0.1:{g.metrics_port}/metrics" in log
    assert psutil.Process(master).cmdline()[1:3] == ["manage.py", "rungunicorn"]

    # The in-app view relays the master's page: same figures.
    status, body = g.request("/metrics")
    assert status == 200
    relayed = parse_metrics(body.decode())
    assert relayed[("testsite_item_views_total", ())] == 4.0
    assert relayed[(COUNT, (
        ("http_request_method", "GET"), ("http_response_status_code", "500"),
        ("http_route", "/boom"),
    ))] == 2.0  # fmt: skip


def test_rungunicorn_survives_hup_and_usr2(gunicorn_factory: GunicornFactory) -> None:
    # GUNICORN_WORKERS from GUNICORN_PROMETHEUS: a default for gunicorn's --workers.
    g = django_server(gunicorn_factory, gunicorn_prometheus={"GUNICORN_WORKERS": 2}, workers=2)
    g.start()
    assert g.value("gunicorn_workers") == 2.0
    assert g.request("/items/1")[0] == 200
    first_worker = g.worker_pids()
    g.signal(signal.SIGHUP)
    g.wait_for(lambda: g.value("gunicorn_reloads_total") == 1.0, message="reload counted")
    g.wait_for(
        lambda: g.worker_pids() and not set(g.worker_pids()) & set(first_worker),
        message="new workers",
    )
    assert g.request("/items/2")[0] == 200
    g.wait_for(lambda: g.value("testsite_item_views_total") == 2.0, message="2 items after HUP")

    # `python manage.py rungunicorn …` replayed, not gunicorn's own command line.
    g.usr2_handover(workers=2)
    # The new master took the metrics port over; counts survived the change of master.
    g.wait_for(lambda: g.value("testsite_item_views_total") == 2.0, timeout=15)
    assert g.request("/items/3")[0] == 200
    g.wait_for(lambda: counts(g) == {("GET", "/items/<int:pk>", "200"): 3.0}, timeout=10)


@pytest.mark.parametrize(
    ("worker_class", "asgi_application"),
    [("uvicorn_worker.UvicornWorker", ""),
     ("uvicorn_worker.UvicornWorker", "testsite.asgi.application"),
     ("asgi", "")],
    ids=["uvicorn", "uvicorn-asgi-application-setting", "gunicorn-asgi"],
)  # fmt: skip
def test_rungunicorn_serves_the_asgi_application_to_an_asgi_worker_class(
    gunicorn_factory: GunicornFactory, worker_class: str, asgi_application: str
) -> None:
    """uvicorn's and gunicorn's asgi workers call the app as ASGI: rungunicorn hands them
    the project's ASGI application (ASGI_APPLICATION when set, else Django's own), not
    WSGI_APPLICATION, which answered 500 to every request."""
    if worker_class.startswith("uvicorn"):
        require_module("uvicorn_worker")
    else:
        pytest.importorskip("gunicorn.workers.gasgi")  # gunicorn 24 and later
    env = {"TEST_ASGI_APPLICATION": asgi_application}
    g = django_server(gunicorn_factory, "-k", worker_class, env=env)
    g.start()

    def get(path: str) -> tuple[int, str | None]:
        conn = http.client.HTTPConnection("127.0.0.1", g.app_port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status, response.getheader("x-route")
        finally:
            conn.close()

    # testsite.asgi.application shows the route as an x-route header; Django's own does not.
    named = asgi_application != ""
    assert get("/items/4") == (200, "/items/<int:pk>" if named else None)
    assert get("/async/items/5") == (200, "/async/items/<int:pk>" if named else None)
    assert get("/boom")[0] == 500
    assert get("/nope")[0] == 404
    expected = {
        ("GET", "/items/<int:pk>", "200"): 1.0,
        ("GET", "/async/items/<int:pk>", "200"): 1.0,
        ("GET", "/boom", "500"): 1.0,
        ("GET", "", "404"): 1.0,
    }
    g.wait_for(lambda: counts(g) == expected, message=f"counted: {expected}")
    # The project's counter (the sync item view), in multiprocess mode under ASGI too.
    assert g.value("testsite_item_views_total") == 1.0


def manage(
    *args: str, gunicorn_prometheus: object, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = clean_environ()
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["TEST_GUNICORN_PROMETHEUS"] = json.dumps(gunicorn_prometheus)
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=DJANGO_DIR, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_system_checks_run_before_the_server_starts() -> None:
    port = free_port()
    bad = {"METRICS_PORT": "ninety", "NAMESPCE": "shop"}
    result = manage("rungunicorn", f"127.0.0.1:{port}", gunicorn_prometheus=bad)
    assert result.returncode == 1
    assert "django_app.E003" in result.stderr and "django_app.E002" in result.stderr
    assert "Did you mean NAMESPACE?" in result.stderr
    assert "Starting gunicorn" not in result.stdout + result.stderr

    result = manage("check", gunicorn_prometheus=bad)
    assert result.returncode == 1
    assert "django_app.E003" in result.stderr

    # --skip-checks: the core still refuses, with every problem in one message.
    result = manage("rungunicorn", f"127.0.0.1:{port}", "--skip-checks", gunicorn_prometheus=bad)
    assert result.returncode == 1
    assert "invalid gunicorn-prom-ext configuration (2 problems)" in result.stderr

    # A config file that installs the hooks itself would count every request twice.
    result = manage(
        "rungunicorn", f"127.0.0.1:{port}", "-c", "gunicorn_install_hooks_conf.py",
        gunicorn_prometheus={},
    )  # fmt: skip
    assert result.returncode == 1
    assert "imported gunicorn_prom_ext.gunicorn_conf (install_hooks?)" in result.stderr

    # An option gunicorn does not know: gunicorn's own usage error, nothing started.
    result = manage("rungunicorn", "--no-such-option", gunicorn_prometheus={})
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-option" in result.stderr


def test_plain_gunicorn_reads_gunicorn_prometheus_and_the_view_keeps_its_auth(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = django_server(
        gunicorn_factory,
        plain=True,
        gunicorn_prometheus={"AUTH_USERNAME": "scraper", "AUTH_PASSWORD": "s3cret"},
    )
    g.start(wait_metrics=False)
    auth = {"Authorization": "Basic " + base64.b64encode(b"scraper:s3cret").decode()}
    g.wait_for(lambda: g.metrics_response(auth)[0] == 200, message="metrics endpoint up")
    assert g.metrics_response()[0] == 401
    assert g.request("/items/5")[0] == 200
    assert g.request("/metrics")[0] == 401  # the in-app view: same auth as the master
    status, body = g.request("/metrics", headers=auth)
    assert status == 200
    assert parse_metrics(body.decode())[("testsite_item_views_total", ())] == 1.0
    g.wait_for(lambda: sum(counts(g, auth).values()) == 3, message="3 requests counted")
    assert counts(g, auth) == {
        ("GET", "/items/<int:pk>", "200"): 1.0,
        ("GET", "/metrics", "401"): 1.0,
        ("GET", "/metrics", "200"): 1.0,
    }
    assert "restarting the master once" in g.log_text()


def test_the_example_project_runs_as_the_readme_says(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    site = REPO_ROOT / "example_projects" / "django_site"
    env = {"DJANGO_SITE_DB": str(tmp_path / "db.sqlite3")}
    migrate_env = {**clean_environ(), "PYTHONPATH": str(REPO_ROOT), **env}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=site, env=migrate_env, check=True, timeout=60,
    )  # fmt: skip
    g = gunicorn_factory("mysite.wsgi", env=env, cwd=site, workers=2)
    g.args = [sys.executable, "manage.py", "rungunicorn", f"127.0.0.1:{g.app_port}", "-w", "2"]
    g.start()
    send(g, [
        ("GET", "/", 200), ("GET", "/items/1", 200), ("GET", "/items/99", 404),
        ("GET", "/boom", 500), ("GET", "/nothing/here", 404),
    ])  # fmt: skip
    g.wait_for(lambda: sum(counts(g).values()) == 5, message="5 requests counted")
    assert counts(g) == {
        ("GET", "/", "200"): 1.0,
        ("GET", "/items/<int:pk>", "200"): 1.0,
        ("GET", "/items/<int:pk>", "404"): 1.0,
        ("GET", "/boom", "500"): 1.0,
        ("GET", "", "404"): 1.0,
    }
    assert g.request("/items/2")[1] == b'{"id": 2, "name": "kettle", "price_cents": 4000}'


def test_plain_gunicorn_usr2_keeps_the_private_directory(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = django_server(gunicorn_factory, plain=True)
    # The console script: gunicorn's USR2 replays `python /…/gunicorn/__main__.py` for
    # `python -m gunicorn`, which cannot start.
    g.args[:3] = [sys.executable, str(Path(sys.executable).parent / "gunicorn")]
    g.start()
    assert g.request("/items/1")[0] == 200
    g.usr2_handover()
    # Same directory: the old generation's counts are still there.
    g.wait_for(lambda: g.value("testsite_item_views_total") == 1.0, timeout=15)
    assert g.request("/items/2")[0] == 200
    g.wait_for(lambda: counts(g) == {("GET", "/items/<int:pk>", "200"): 2.0}, timeout=10)


# --- a bad GUNICORN_PROMETHEUS never serves, and leaves nothing behind ------------------------


def test_plain_gunicorn_refuses_a_setting_that_is_not_a_dict(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    # Once read as {}: the server started and served metrics to anonymous clients.
    g = django_server(gunicorn_factory, plain=True)
    g.env["TEST_GUNICORN_PROMETHEUS"] = json.dumps("AUTH_TOKEN=secret")
    output = fail_to_start(g, tmp_path / "tmpdir")
    assert_one_error(output, "GUNICORN_PROMETHEUS (Django settings): expected a dict of "
                     'settings, e.g. GUNICORN_PROMETHEUS = {"METRICS_PORT": 9091}, got a string')
    assert "secret" not in output
    assert_nothing_left(tmp_path / "tmpdir", output)


def test_rungunicorn_refuses_a_setting_that_is_not_a_dict(tmp_path: Path) -> None:
    port = free_port()
    result = manage("rungunicorn", f"127.0.0.1:{port}", gunicorn_prometheus="AUTH_TOKEN=secret")
    assert result.returncode == 1
    assert "django_app.E001" in result.stderr and "secret" not in result.stderr
    result = manage("rungunicorn", f"127.0.0.1:{port}", "--skip-checks",
                    gunicorn_prometheus="AUTH_TOKEN=secret")  # fmt: skip
    assert result.returncode == 1
    assert "GUNICORN_PROMETHEUS (Django settings): expected a dict" in result.stderr
    assert "Starting gunicorn" not in result.stdout + result.stderr


@pytest.mark.parametrize("plain", [False, True], ids=["rungunicorn", "plain-gunicorn"])
def test_a_metrics_port_gunicorn_binds_stops_it_and_nothing_is_left(
    plain: bool, gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    # Known only in the master's first hook, after the command (or the Django hooks under
    # plain gunicorn) made the private metrics directory.
    g = django_server(gunicorn_factory, plain=plain)
    settings = json.loads(g.env["TEST_GUNICORN_PROMETHEUS"])
    g.env["TEST_GUNICORN_PROMETHEUS"] = json.dumps({**settings, "METRICS_PORT": g.app_port})
    output = fail_to_start(g, tmp_path / "tmpdir")
    assert_one_error(output, "METRICS_PORT (GUNICORN_PROMETHEUS setting): expected a port other "
                     f"than gunicorn's own (it binds 127.0.0.1:{g.app_port}), got {g.app_port}")
    assert_nothing_left(tmp_path / "tmpdir", output)


def test_rungunicorn_stopped_after_making_its_directory_leaves_nothing(tmp_path: Path) -> None:
    # The command refuses a config file that installs the hooks itself only once gunicorn
    # has read it, after the private metrics directory was made.
    tmp_dir = tmp_path / "tmpdir"
    tmp_dir.mkdir()
    result = manage("rungunicorn", f"127.0.0.1:{free_port()}", "-c",
                    "gunicorn_install_hooks_conf.py", gunicorn_prometheus={},
                    TMPDIR=str(tmp_dir))  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "imported gunicorn_prom_ext.gunicorn_conf (install_hooks?)" in result.stderr
    assert_nothing_left(tmp_dir, result.stdout + result.stderr)
