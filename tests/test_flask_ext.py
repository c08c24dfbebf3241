"""flask_ext without gunicorn processes: Flask's test client and CLI runner."""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")

from flask import Flask, abort
from flask.cli import ScriptInfo
from gunicorn.config import Config
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.util import get_arity

import flask_ext.extension as extension
from flask_ext import EXTENSION_KEY, FlaskState, PrometheusGunicorn
from flask_ext.cli import run_gunicorn
from gunicorn_prom_ext.chaining import HOOK_ARITY
from gunicorn_prom_ext.labels import ROUTE_ENVIRON_KEY
from gunicorn_prom_ext.launcher import GunicornLauncher
from gunicorn_prom_ext.settings import SETTINGS, ConfigError

FLASK_APPS = Path(__file__).resolve().parent / "flask_apps"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for spec in SETTINGS:
        monkeypatch.delenv(spec.env, raising=False)
    monkeypatch.delenv("GUNICORN_PROM_EXT_CONFIG", raising=False)
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)


def make_app(name: str = "shop", **config: Any) -> Flask:
    app = Flask(name)
    app.config.update(config)

    @app.route("/items/<int:item_id>", methods=["GET", "POST"])
    def item(item_id: int) -> str:
        return f"item {item_id}"

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    @app.route("/teapot")
    def teapot() -> str:
        abort(418)

    return app


def routes_seen(app: Flask) -> list[tuple[str, int, str | None]]:
    """Wrap the app so each request's (path, status, route label) is recorded."""
    seen: list[tuple[str, int, str | None]] = []
    inner = app.wsgi_app

    def outer(environ: dict[str, Any], start_response: Any) -> Any:
        def recording_start_response(status: str, headers: Any, *exc: Any) -> Any:
            seen.append((environ["PATH_INFO"], int(status.split()[0]), None))
            return start_response(status, headers, *exc)

        body = inner(environ, recording_start_response)
        path, status, _ = seen[-1]
        seen[-1] = (path, status, environ.get(ROUTE_ENVIRON_KEY))
        return body

    app.wsgi_app = outer  # type: ignore[method-assign]
    return seen


# -- configuration ---------------------------------------------------------------------------


def test_every_setting_has_a_config_key_defaulting_to_none() -> None:
    app = make_app(GUNICORN_PROMETHEUS_METRICS_PORT=9300)
    PrometheusGunicorn(app)
    for spec in SETTINGS:
        key = f"GUNICORN_PROMETHEUS_{spec.field.upper()}"
        assert key in app.config
    assert app.config["GUNICORN_PROMETHEUS_METRICS_PORT"] == 9300  # setdefault keeps it
    assert app.config["GUNICORN_PROMETHEUS_NAMESPACE"] is None
    assert app.config["GUNICORN_PROMETHEUS_METRICS_ROUTE"] is None
    assert app.config["GUNICORN_PROMETHEUS_APP_LOGGER"] is True
    state = app.extensions[EXTENSION_KEY]
    assert isinstance(state, FlaskState)
    assert state.settings.metrics_port == 9300
    assert state.framework == {"METRICS_PORT": 9300}


def test_app_config_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_METRICS_PORT", "9301")
    monkeypatch.setenv("PROMETHEUS_NAMESPACE", "fromenv")
    app = make_app(GUNICORN_PROMETHEUS_METRICS_PORT="9302")
    PrometheusGunicorn(app)
    settings = app.extensions[EXTENSION_KEY].settings
    assert (settings.metrics_port, settings.namespace) == (9302, "fromenv")


def test_bad_values_raise_one_error_naming_the_keys() -> None:
    app = make_app(
        GUNICORN_PROMETHEUS_METRICS_PORT="nine",
        GUNICORN_PROMETHEUS_DURATION_BUCKETS=[1, 0.5],
        GUNICORN_PROMETHEUS_METRICS_PROT=9300,
        GUNICORN_PROMETHEUS_METRICS_ROUTE="metrics",
    )
    with pytest.raises(ConfigError) as caught:
        PrometheusGunicorn(app)
    text = str(caught.value)
    assert "4 problems" in text
    assert "GUNICORN_PROMETHEUS_METRICS_PORT (app.config): expected an integer" in text
    assert "GUNICORN_PROMETHEUS_DURATION_BUCKETS (app.config)" in text
    assert "did you mean GUNICORN_PROMETHEUS_METRICS_PORT?" in text
    assert "GUNICORN_PROMETHEUS_METRICS_ROUTE (app.config): expected a URL path" in text
    assert EXTENSION_KEY not in app.extensions


def test_a_secret_is_not_echoed() -> None:
    app = make_app(GUNICORN_PROMETHEUS_AUTH_PASSWORD="hunter2")
    with pytest.raises(ConfigError) as caught:
        PrometheusGunicorn(app)
    assert "hunter2" not in str(caught.value)
    assert "GUNICORN_PROMETHEUS_AUTH_PASSWORD (app.config)" in str(caught.value)


def test_registering_twice_on_one_app_is_an_error() -> None:
    app = make_app()
    prom = PrometheusGunicorn(app)
    with pytest.raises(RuntimeError, match="already registered"):
        prom.init_app(app)
    with pytest.raises(RuntimeError, match="already registered"):
        PrometheusGunicorn(app)


def test_two_apps_in_one_process_each_work() -> None:
    shared = PrometheusGunicorn()
    one = make_app("one", GUNICORN_PROMETHEUS_NAMESPACE="one")
    two = make_app("two", GUNICORN_PROMETHEUS_NAMESPACE="two")
    other = make_app("other")
    shared.init_app(one)
    shared.init_app(two)
    PrometheusGunicorn(other)
    assert not hasattr(shared, "app")
    assert one.extensions[EXTENSION_KEY].settings.namespace == "one"
    assert two.extensions[EXTENSION_KEY].settings.namespace == "two"
    for app in (one, two, other):
        seen = routes_seen(app)
        assert app.test_client().get("/items/1").status_code == 200
        assert seen == [("/items/1", 200, "/items/<int:item_id>")]


# -- route labels ----------------------------------------------------------------------------


def test_route_labels_are_the_rule_templates() -> None:
    from flask import Blueprint

    app = make_app(PROPAGATE_EXCEPTIONS=False)
    bp = Blueprint("bp", __name__, url_prefix="/bp")
    bp.add_url_rule("/things/<name>", "thing", lambda name: name)
    app.register_blueprint(bp)

    @app.before_request
    def short_circuit() -> Any:
        from flask import request

        return ("early", 403) if request.args.get("deny") else None

    PrometheusGunicorn(app)
    seen = routes_seen(app)
    client = app.test_client()
    client.get("/items/3")
    client.post("/items/4")
    client.get("/bp/things/x")
    client.get("/boom")
    client.get("/teapot")
    client.get("/nope")
    client.delete("/items/3")
    client.get("/items/5?deny=1")
    assert seen == [
        ("/items/3", 200, "/items/<int:item_id>"),
        ("/items/4", 200, "/items/<int:item_id>"),
        ("/bp/things/x", 200, "/bp/things/<name>"),
        ("/boom", 500, "/boom"),  # an error Flask handled: the route, and the status sent
        ("/teapot", 418, "/teapot"),
        ("/nope", 404, None),  # unmatched: no route at all, never the raw path
        ("/items/3", 405, None),
        ("/items/5", 403, "/items/<int:item_id>"),  # before_request answered early
    ]


# -- hooks -----------------------------------------------------------------------------------


def test_a_decorator_for_each_of_the_fifteen_hooks() -> None:
    prom = PrometheusGunicorn()
    for name, arity in HOOK_ARITY.items():
        args = ", ".join(f"a{i}" for i in range(arity))
        namespace: dict[str, Any] = {}
        exec(f"def {name}_hook({args}): pass", namespace)
        fn = namespace[f"{name}_hook"]
        assert getattr(prom, name)(fn) is fn
        assert prom.registered(name) == (fn,)
    assert len(HOOK_ARITY) == 15


def test_hooks_are_checked_at_registration() -> None:
    prom = PrometheusGunicorn()
    with pytest.raises(TypeError, match=r"when_ready: .*arity of: 1"):
        prom.when_ready(lambda server, extra: None)
    with pytest.raises(ValueError, match="unknown gunicorn hook"):
        prom.hook("on_start")

    @prom.post_request
    def two(worker: Any, req: Any) -> None:
        pass

    (adapted,) = prom.registered("post_request")
    assert get_arity(adapted) == 4  # called as gunicorn calls it
    assert adapted.__qualname__.endswith("two")


def test_dispatchers_have_gunicorn_arity_and_contain_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()
    prom = PrometheusGunicorn(app)
    calls: list[tuple[str, tuple[Any, ...]]] = []

    @prom.when_ready
    def broken(server: Any) -> None:
        raise RuntimeError("registered hook failed")

    @prom.when_ready
    def fine(server: Any) -> None:
        calls.append(("when_ready", (server,)))

    @prom.child_exit
    def exited(server: Any, worker: Any) -> None:
        calls.append(("child_exit", (server, worker)))

    hooks = prom.gunicorn_hooks(app)
    # Per-request hooks only when something is registered for them.
    assert set(hooks) == set(HOOK_ARITY) - {"pre_request", "post_request"}
    cfg = Config()
    for name, (hook,) in hooks.items():
        cfg.set(name, hook)  # gunicorn's own validation of the arity
    server, worker = object(), object()
    with caplog.at_level(logging.ERROR, logger=app.logger.name):
        cfg.when_ready(server)
        cfg.child_exit(server, worker)
    assert calls == [("when_ready", (server,)), ("child_exit", (server, worker))]
    (record,) = [r for r in caplog.records if r.name == app.logger.name]
    assert "when_ready hook" in record.getMessage() and "broken" in record.getMessage()
    assert record.exc_info is not None and "registered hook failed" in str(record.exc_info[1])


def test_app_logger_writes_into_gunicorns_error_log() -> None:
    app = make_app("logger_test")  # its own logging.Logger: logging is process-global
    PrometheusGunicorn(app)
    cfg = Config()
    cfg.set("loglevel", "info")
    glog = GunicornLogger(cfg)
    received: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            received.append(record)

    capture = Capture()
    glog.error_log.addHandler(capture)
    try:
        hooks = app.extensions[EXTENSION_KEY].extension.gunicorn_hooks(app, ["on_starting"])
        hooks["on_starting"][0](type("Arbiter", (), {"log": glog})())
        app.logger.info("hello from the app")
        app.logger.debug("below gunicorn's --log-level")
        handlers = list(app.logger.handlers)
    finally:
        glog.error_log.removeHandler(capture)
        app.logger.handlers.clear()
    from flask.logging import default_handler

    assert default_handler not in handlers
    assert [type(h) for h in handlers] == [extension.GunicornErrorLogHandler]
    assert [r.getMessage() for r in received] == ["hello from the app"]


def test_not_under_gunicorn_nothing_is_attached() -> None:
    assert extension.serving_hooks() is None


# -- /metrics route --------------------------------------------------------------------------


def test_metrics_route_relays_the_masters_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    import gunicorn_prom_ext.relay

    asked: list[tuple[int, dict[str, str]]] = []

    def fake_relay(settings: Any, headers: dict[str, str]) -> Any:
        asked.append((settings.metrics_port, headers))
        if headers.get("Authorization") != "Bearer s3cret":
            return 401, [("WWW-Authenticate", 'Bearer realm="metrics"')], b"unauthorized\n"
        return 200, [("Content-Type", "text/plain; version=0.0.4")], b"up 1\n"

    monkeypatch.setattr(gunicorn_prom_ext.relay, "relay_scrape", fake_relay)
    app = make_app(GUNICORN_PROMETHEUS_METRICS_ROUTE="/metrics",
                   GUNICORN_PROMETHEUS_METRICS_PORT=9311)  # fmt: skip
    PrometheusGunicorn(app)
    client = app.test_client()
    denied = client.get("/metrics")
    assert denied.status_code == 401 and denied.headers["WWW-Authenticate"].startswith("Bearer")
    ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert (ok.status_code, ok.data, ok.mimetype) == (200, b"up 1\n", "text/plain")
    assert [port for port, _ in asked] == [9311, 9311]
    assert make_app().url_map.bind("x").test("/metrics") is False  # off by default


# -- flask run-gunicorn (CLI runner) ---------------------------------------------------------


class Launched(Exception):
    pass


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[GunicornLauncher]]:
    """Build the GunicornLauncher the command would run (gunicorn parses its arguments),
    without running it or re-executing the test process."""
    import gunicorn_prom_ext.launcher as launcher

    made: list[GunicornLauncher] = []

    class Recorder(GunicornLauncher):
        def run(self) -> None:
            made.append(self)

    monkeypatch.setattr(launcher, "GunicornLauncher", Recorder)
    monkeypatch.setattr(launcher, "export_multiproc_dir", lambda settings: None)
    yield made


def invoke(app: Flask, *args: str) -> Any:
    info = ScriptInfo(create_app=lambda: app)
    return app.test_cli_runner().invoke(run_gunicorn, list(args), obj=info)


def test_run_gunicorn_passes_gunicorn_options_through(
    launches: list[GunicornLauncher], tmp_path: Path
) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("workers = 5\ntimeout = 99\ndef when_ready(server):\n    server.noted = 1\n")
    app = make_app(GUNICORN_PROMETHEUS_NAMESPACE="shop")
    prom = PrometheusGunicorn(app)
    result = invoke(app, "-h", "0.0.0.0", "-p", "6001", "-w", "3", "-k", "gthread",
                    "--threads", "2", "--timeout=61", "-c", str(conf))  # fmt: skip
    assert result.exit_code == 0, result.output
    (launcher,) = launches
    cfg = launcher.cfg
    assert cfg.bind == ["0.0.0.0:6001"]
    assert (cfg.workers, cfg.threads, cfg.timeout) == (3, 2, 61)  # command line beats -c
    assert cfg.worker_class_str == "gthread"
    assert launcher.wsgi() is app
    assert launcher._hooks._framework == {"NAMESPACE": "shop"}
    # The config file's when_ready still runs, and the extension's after it.
    seen: list[str] = []
    prom.when_ready(lambda server: seen.append("extension"))
    server = type("Arbiter", (), {"log": None})()
    cfg.when_ready(server)
    assert server.noted == 1 and seen == ["extension"]


def test_run_gunicorn_defaults_like_flask_run(
    launches: list[GunicornLauncher], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    assert invoke(app).exit_code == 0
    assert launches[-1].cfg.bind == ["127.0.0.1:5000"]
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--bind 127.0.0.1:7000 --workers 4")
    assert invoke(app, "-w", "2").exit_code == 0
    assert launches[-1].cfg.bind == ["127.0.0.1:7000"]  # GUNICORN_CMD_ARGS beats defaults
    assert launches[-1].cfg.workers == 2
    # An app without the extension gets it from the command (route labels, config).
    assert isinstance(app.extensions[EXTENSION_KEY], FlaskState)
    # The core's `gunicorn` settings are defaults of the command.
    monkeypatch.delenv("GUNICORN_CMD_ARGS")
    app = make_app(GUNICORN_PROMETHEUS_GUNICORN_WORKERS=6, GUNICORN_PROMETHEUS_GUNICORN_TIMEOUT=7)
    assert invoke(app, "--timeout", "8").exit_code == 0
    assert (launches[-1].cfg.workers, launches[-1].cfg.timeout) == (6, 8)


def test_run_gunicorn_address_given_twice_is_a_usage_error(
    launches: list[GunicornLauncher],
) -> None:
    result = invoke(make_app(), "-p", "6002", "-b", "127.0.0.1:6003")
    assert result.exit_code == 2 and "-h/-p" in result.output
    assert not launches


def test_run_gunicorn_reports_bad_config_as_one_error(launches: list[GunicornLauncher]) -> None:
    result = invoke(make_app(GUNICORN_PROMETHEUS_METRICS_PORT=0))
    assert result.exit_code == 1
    assert "GUNICORN_PROMETHEUS_METRICS_PORT (app.config)" in result.output
    assert not launches


def test_run_gunicorn_is_a_flask_plugin_command() -> None:
    from flask.cli import cli

    names = {ep.name for ep in importlib.metadata.entry_points(group="flask.commands")}
    assert "run-gunicorn" in names, "pip install -e . registers the flask.commands entry point"
    result = Flask("x").test_cli_runner().invoke(cli, ["run-gunicorn", "--help"])
    assert result.exit_code == 0
    assert "-h, --host" in result.output and "-p, --port" in result.output


def test_importing_the_command_imports_neither_prometheus_client_nor_gunicorn() -> None:
    import subprocess

    code = (
        "import sys, flask_ext.cli, flask_ext; "
        "print(sorted(m for m in ('prometheus_client', 'gunicorn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(FLASK_APPS.parent.parent))  # fmt: skip
    assert out.stdout.strip() == "[]"
