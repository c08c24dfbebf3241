"""flask_ext end to end: `flask run-gunicorn` and plain gunicorn as real processes."""

from __future__ import annotations

import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from harness import REPO_ROOT, Gunicorn

pytest.importorskip("flask")

from test_startup_errors import assert_nothing_left, assert_one_error, fail_to_start

pytestmark = pytest.mark.slow
GunicornFactory = Callable[..., Gunicorn]
FLASK_APPS = Path(__file__).resolve().parent / "flask_apps"
DURATION_COUNT = "http_server_request_duration_seconds_count"


def flask_command() -> list[str]:
    script = Path(sys.executable).with_name("flask")
    found = str(script) if script.exists() else shutil.which("flask")
    if not found:
        pytest.skip("the flask command is not installed next to this Python")
    return [found]


def run_gunicorn(
    gunicorn_factory: GunicornFactory,
    tmp_path: Path,
    *args: str,
    command: list[str] | None = None,
    app: str = "metrics_app",
    cwd: Path = FLASK_APPS,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Gunicorn:
    g = gunicorn_factory("unused", env={"FLASK_NOTES": str(tmp_path / "notes"), **(env or {})},
                         cwd=cwd, workers=workers)  # fmt: skip
    g.args = [*(command or flask_command()), "--app", app, "run-gunicorn",
              "-p", str(g.app_port), *args]  # fmt: skip
    # No directory given: the command makes a private one, after the app was found to
    # import prometheus_client (it must not be imported before the directory is set).
    del g.env["PROMETHEUS_MULTIPROC_DIR"]
    return g


def notes(tmp_path: Path) -> list[str]:
    path = tmp_path / "notes"
    return path.read_text().splitlines() if path.exists() else []


def counts(g: Gunicorn, auth: dict[str, str] | None = None) -> dict[tuple[str, str, str], float]:
    """{(method, route, status): requests} from the master's endpoint."""
    out = {}
    for (name, labels), value in g.metrics(auth).items():
        if name == DURATION_COUNT:
            d = dict(labels)
            key = (d["http_request_method"], d["http_route"], d["http_response_status_code"])
            out[key] = value
    return out


def test_run_gunicorn_counts_hooks_logs_relay_and_hup(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    env = {
        "TESTAPP_GUNICORN_PROMETHEUS_METRICS_ROUTE": "/metrics",
        "PROMETHEUS_AUTH_TOKEN": "s3cret",
    }
    g = run_gunicorn(gunicorn_factory, tmp_path, "-w", "2", "--timeout", "30",
                     "-c", "flask_gunicorn_conf.py", workers=2, env=env)  # fmt: skip
    auth = {"Authorization": "Bearer s3cret"}
    g.start(wait_metrics=False)
    master = g.master_pid
    sent = [("GET", "/items/1", 200)] * 3 + [("POST", "/items/2", 200)]
    sent += [("GET", "/bp/things/a", 200)] * 2 + [("GET", "/boom", 500), ("GET", "/teapot", 418)]
    sent += [("GET", "/nope", 404)] * 2 + [("GET", "/", 200), ("GET", "/items/7", 200)]
    for method, path, status in sent:
        assert g.request(path, method=method)[0] == status, path
    expected = {
        ("GET", "/items/<int:item_id>", "200"): 4.0,
        ("POST", "/items/<int:item_id>", "200"): 1.0,
        ("GET", "/bp/things/<name>", "200"): 2.0,
        ("GET", "/boom", "500"): 1.0,
        ("GET", "/teapot", "418"): 1.0,
        ("GET", "", "404"): 2.0,
        ("GET", "/", "200"): 1.0,
    }
    g.wait_for(lambda: counts(g, auth) == expected, message=f"counts {expected}")
    # The app imported prometheus_client at import time; its own counter still adds up
    # over both workers (it would read 0 in single-process mode).
    samples = g.metrics(auth)
    assert samples[("app_hits_total", ())] == 10.0
    assert samples[("gunicorn_workers", ())] == 2.0  # -w 2 beats the config file's workers = 3

    lines = notes(tmp_path)
    workers = g.worker_pids()
    assert lines[:3] == [f"ext on_starting {master}", f"config when_ready {master}",
                         f"ext when_ready {master}"]  # fmt: skip
    assert sorted(lines[3:5]) == sorted(f"ext post_worker_init {pid}" for pid in workers)
    assert any(line.startswith("ext post_request ") for line in lines)
    log = g.log_text()
    assert "[INFO] extension hook says hello" in log  # app.logger, in gunicorn's log
    assert "when_ready hook metrics_app.broken failed" in log
    assert 'raise RuntimeError("a registered hook that fails")' in log  # the traceback

    # The app's /metrics relays the master's endpoint, behind the same token.
    assert g.request("/metrics")[0] == 401
    relayed, body = g.request("/metrics", headers=auth)
    assert relayed == 200 and b'http_route="/bp/things/<name>"' in body

    # HUP: new workers, config file and extension on_reload hooks, counting goes on.
    g.signal(signal.SIGHUP)
    g.wait_for(lambda: not set(g.worker_pids()) & set(workers) and len(g.worker_pids()) == 2,
               message="workers replaced after HUP")  # fmt: skip
    g.wait_for(lambda: {"config on_reload", "ext on_reload"}
               <= {line.rsplit(" ", 1)[0] for line in notes(tmp_path)})  # fmt: skip
    assert g.request("/items/9")[0] == 200
    g.wait_for(lambda: counts(g, auth)[("GET", "/items/<int:item_id>", "200")] == 5.0)
    assert g.master_pid == master and psutil.pid_exists(master)


@pytest.mark.parametrize("how", ["flask", "python -m flask"])
def test_usr2_replays_the_command(
    gunicorn_factory: GunicornFactory, tmp_path: Path, how: str
) -> None:
    command = flask_command() if how == "flask" else [sys.executable, "-m", "flask"]
    g = run_gunicorn(gunicorn_factory, tmp_path, command=command)
    g.start()
    assert g.request("/items/1")[0] == 200
    old = g.master_pid
    successor = g.usr2_handover()
    assert g.request("/items/2")[0] == 200
    g.wait_for(lambda: counts(g).get(("GET", "/items/<int:item_id>", "200")) == 2.0,
               message="both generations' requests counted")  # fmt: skip
    starts = [line for line in notes(tmp_path) if line.startswith("ext on_starting")]
    assert starts == [f"ext on_starting {old}", f"ext on_starting {successor.pid}"]


def test_app_imported_before_the_command_runs(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    # flask_manage.py imports the app, and so prometheus_client, before any command runs.
    g = run_gunicorn(gunicorn_factory, tmp_path, "-w", "2", workers=2,
                     command=[sys.executable, "flask_manage.py"])  # fmt: skip
    g.args.remove("--app")
    g.args.remove("metrics_app")
    g.start()
    for _ in range(6):
        assert g.request("/items/1")[0] == 200
    g.wait_for(lambda: g.value("app_hits_total") == 6.0, message="the app's own counter")
    assert counts(g) == {("GET", "/items/<int:item_id>", "200"): 6.0}
    # Re-executed in place (same pid), so the master is still the process we started.
    assert notes(tmp_path)[0] == f"ext on_starting {g.master_pid}"


def test_multiproc_dir_from_app_config(gunicorn_factory: GunicornFactory, tmp_path: Path) -> None:
    # Known only once the app is loaded, after prometheus_client was imported with the
    # private directory: the command switches over (re-executing itself once).
    chosen = tmp_path / "from-app-config"
    env = {"TESTAPP_GUNICORN_PROMETHEUS_MULTIPROC_DIR": str(chosen)}
    g = run_gunicorn(gunicorn_factory, tmp_path, env=env).start()
    assert g.request("/items/1")[0] == 200
    g.wait_for(lambda: g.value("app_hits_total") == 1.0, message="the app's own counter")
    assert counts(g) == {("GET", "/items/<int:item_id>", "200"): 1.0}
    assert f"metrics directory {chosen} (shared)" in g.log_text()
    assert any(p.name.startswith("counter_") for p in chosen.iterdir())
    assert notes(tmp_path)[0] == f"ext on_starting {g.master_pid}"


def test_plain_gunicorn_route_labels_and_worker_hooks(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    env = {"FLASK_NOTES": str(tmp_path / "notes"),
           "TESTAPP_GUNICORN_PROMETHEUS_NAMESPACE": "ignored"}  # fmt: skip
    g = gunicorn_factory("metrics_app:create_app()", env=env, cwd=FLASK_APPS).start()
    for path in ("/items/1", "/items/7", "/bp/things/z", "/nope"):
        g.request(path)
    expected = {
        ("GET", "/items/<int:item_id>", "200"): 2.0,
        ("GET", "/bp/things/<name>", "200"): 1.0,
        ("GET", "", "404"): 1.0,
    }
    g.wait_for(lambda: counts(g) == expected, message=f"counts {expected}")
    assert g.value("app_hits_total") == 3.0
    (worker,) = g.worker_pids()
    assert notes(tmp_path) == [f"ext post_worker_init {worker}", f"ext post_request {worker}"]
    log = g.log_text()
    assert ("registered on_starting, on_reload, when_ready hook(s) will not run: gunicorn "
            "ran them before it loaded the app") in log  # fmt: skip
    assert "GUNICORN_PROMETHEUS_NAMESPACE in app.config not applied" in log


def test_plain_gunicorn_preload_runs_master_hooks(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    env = {"FLASK_NOTES": str(tmp_path / "notes")}
    g = gunicorn_factory("metrics_app:create_app()", "--preload", env=env, cwd=FLASK_APPS)
    g.start()
    master, (worker,) = g.master_pid, g.worker_pids()
    lines = notes(tmp_path)
    assert lines[:3] == [f"ext on_starting {master}", f"ext when_ready {master}",
                         f"ext post_worker_init {worker}"]  # fmt: skip
    g.signal(signal.SIGHUP)
    g.wait_for(lambda: f"ext on_reload {master}" in notes(tmp_path), message="on_reload")


def test_example_project(gunicorn_factory: GunicornFactory, tmp_path: Path) -> None:
    g = run_gunicorn(gunicorn_factory, tmp_path, app="shop",
                     cwd=REPO_ROOT / "example_projects" / "flask_app")  # fmt: skip
    g.start()
    assert g.request("/catalog/items/42")[0] == 200
    assert g.request("/catalog/items/43")[0] == 200
    assert g.request("/catalog/fail")[0] == 500
    assert g.request("/missing")[0] == 404
    expected = {
        ("GET", "/catalog/items/<int:item_id>", "200"): 2.0,
        ("GET", "/catalog/fail", "500"): 1.0,
        ("GET", "", "404"): 1.0,
    }
    g.wait_for(lambda: counts(g) == expected, message=f"counts {expected}")
    status, body = g.request("/metrics")
    assert status == 200 and b"/catalog/fail" in body


# --- a bad value stops the command, and leaves no private directory behind -------------------


def test_bad_app_config_stops_run_gunicorn_with_one_error(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    # Found by init_app while the app loads: after the command made the private directory.
    env = {"TESTAPP_GUNICORN_PROMETHEUS_METRICS_PORT": "0"}
    g = run_gunicorn(gunicorn_factory, tmp_path, env=env)
    output = fail_to_start(g, tmp_path / "tmpdir")
    assert_one_error(output, "GUNICORN_PROMETHEUS_METRICS_PORT (app.config): expected an "
                     "integer from 1 to 65535, got 0")  # fmt: skip
    assert_nothing_left(tmp_path / "tmpdir", output)


def test_a_metrics_port_gunicorn_binds_stops_run_gunicorn(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    # Found only in the master's first hook, which knows gunicorn's binds.
    g = run_gunicorn(gunicorn_factory, tmp_path)
    g.env["PROMETHEUS_METRICS_PORT"] = str(g.app_port)
    output = fail_to_start(g, tmp_path / "tmpdir")
    assert_one_error(output, "PROMETHEUS_METRICS_PORT (environment): expected a port other than "
                     f"gunicorn's own (it binds 127.0.0.1:{g.app_port}), got {g.app_port}")
    assert_nothing_left(tmp_path / "tmpdir", output)


def test_an_asgi_worker_class_stops_run_gunicorn_with_one_error(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    # A Flask app is WSGI: gunicorn's asgi worker (or uvicorn's) answered 500 to everything.
    pytest.importorskip("gunicorn.workers.gasgi")  # gunicorn 24 and later
    g = run_gunicorn(gunicorn_factory, tmp_path, "-k", "asgi")
    output = fail_to_start(g, tmp_path / "tmpdir")
    assert output.count("Error:") == 1 and "Traceback" not in output, output
    assert ("Error: worker class asgi serves ASGI apps, and a Flask app is a WSGI app: use a "
            "WSGI worker class") in output  # fmt: skip
    assert_nothing_left(tmp_path / "tmpdir", output)
