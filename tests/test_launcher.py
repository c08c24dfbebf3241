"""GunicornLauncher, the base of the framework commands, end to end."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from harness import APPS_DIR, Gunicorn

pytestmark = pytest.mark.slow
GunicornFactory = Callable[..., Gunicorn]


def launched(
    gunicorn_factory: GunicornFactory, tmp_path: Path, *args: str, env: dict[str, str]
) -> Gunicorn:
    g = gunicorn_factory("unused", env=env)
    # The launcher replaces gunicorn's own command line; keep the harness's ports.
    g.args = [
        sys.executable,
        str(APPS_DIR / "launcher_main.py"),
        "--bind",
        f"127.0.0.1:{g.app_port}",
        *args,
    ]
    del g.env["PROMETHEUS_MULTIPROC_DIR"]  # let the launcher make a private one
    return g


def test_precedence_config_hooks_and_the_prometheus_client_trap(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    env = {"LAUNCHER_NOTES": str(notes), "GUNICORN_CMD_ARGS": "--workers 3"}
    g = launched(
        gunicorn_factory, tmp_path, "-c", str(APPS_DIR / "launcher_conf.py"), "-w", "1", env=env
    )
    g.workers = 1
    g.start()
    # command line (-w 1) beats GUNICORN_CMD_ARGS (3) beats config file (2) beats defaults (3).
    assert g.value("gunicorn_workers") == 1.0
    for i in range(5):
        assert g.request(f"/items/{i}")[0] == 200
    assert g.wait_for(lambda: g.sum_values("http_server_request_duration_seconds_count") == 5)
    lines = notes.read_text().splitlines()
    master = psutil.Process(g.master_pid)
    # prometheus_client was imported before the directory existed: the command
    # re-executed itself (same pid, exec), so the master is the one we started.
    assert lines == [f"config when_ready {master.pid}", f"extra when_ready {master.pid}"]
    assert "private" in g.log_text()


def test_usr2_replays_the_command(gunicorn_factory: GunicornFactory, tmp_path: Path) -> None:
    env = {"LAUNCHER_NOTES": str(tmp_path / "notes")}
    g = launched(gunicorn_factory, tmp_path, "-w", "1", env=env)
    g.workers = 1
    g.start()
    assert g.request("/")[0] == 200
    g.usr2_handover()
    assert g.wait_for(
        lambda: g.sum_values("http_server_request_duration_seconds_count") == 1.0, timeout=15
    )
    assert g.request("/")[0] == 200
