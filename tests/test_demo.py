"""scripts/demo.sh, run for real: it comes up with the app, its metrics and a Prometheus
loaded with the shipped rules, and Ctrl-C (at any point) leaves no process and no
directory behind."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from harness import REPO_ROOT, clean_environ, free_port, require_tool

pytestmark = pytest.mark.slow

READY_LINE = "(Ctrl-C to stop)"


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    tmp: Path
    ports: dict[str, int]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def read_until(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} in the demo's output:\n" + "".join(self.lines))

    def output(self) -> str:
        while True:
            try:
                line = self._queue.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return "".join(self.lines)

    def leftovers(self) -> list[str]:
        """Processes of the demo's session still alive, and files left in its TMPDIR."""
        left = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getsid(process.pid) == self.proc.pid and process.status() != "zombie":
                    left.append(" ".join(process.info["cmdline"] or []))
        left += [str(path) for path in self.tmp.iterdir()]
        return left


@contextlib.contextmanager
def demo(tmp_path: Path, *args: str) -> Iterator[Demo]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    ports = {"APP_PORT": free_port(), "PROMETHEUS_METRICS_PORT": free_port(),
             "DEMO_PROMETHEUS_PORT": free_port()}  # fmt: skip
    env = clean_environ() | {name: str(port) for name, port in ports.items()}
    env |= {"TMPDIR": str(tmp), "DEMO_SKIP_BOOTSTRAP": "1"}
    # Its own session, as a terminal would give it: Ctrl-C reaches every process of it.
    proc = subprocess.Popen(
        ["bash", "scripts/demo.sh", *args], cwd=REPO_ROOT, env=env, text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    running = Demo(proc, tmp, ports)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            running._queue.put(line)
        running._queue.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield running
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ctrl_c(running: Demo) -> int:
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
    os.killpg(running.proc.pid, signal.SIGINT)
    return running.proc.wait(30)


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


@pytest.mark.parametrize("kind", ["wsgi", "django", "flask"])
def test_demo_serves_the_app_metrics_and_prometheus_then_ctrl_c_stops_all(
    kind: str, tmp_path: Path
) -> None:
    require_tool("prometheus")
    with demo(tmp_path, kind) as running:
        running.read_until(READY_LINE)
        out = "".join(running.lines)
        ports = running.ports
        for expected in (
            "==> Starting", "==> Waiting for the app", "==> Starting Prometheus",
            "==> Sending a little traffic", f"App:        http://127.0.0.1:{ports['APP_PORT']}/",
            f"Metrics:    http://127.0.0.1:{ports['PROMETHEUS_METRICS_PORT']}/metrics",
            f"Prometheus: http://127.0.0.1:{ports['DEMO_PROMETHEUS_PORT']}/",
            "Dashboard:  gunicorn_prom_ext/kit/dashboard.json",
        ):  # fmt: skip
            assert expected in out, out
        assert get(f"http://127.0.0.1:{ports['APP_PORT']}/")[0] == 200
        status, metrics = get(f"http://127.0.0.1:{ports['PROMETHEUS_METRICS_PORT']}/metrics")
        assert status == 200 and "gunicorn_workers 2.0" in metrics
        prometheus = f"http://127.0.0.1:{ports['DEMO_PROMETHEUS_PORT']}"
        rules = get(f"{prometheus}/api/v1/rules")[1]
        assert rules.count('"type":"alerting"') == 11 and rules.count('"type":"recording"') == 10
        # The printed query link is a query Prometheus answers, on the app's data.
        link = next(line for line in running.lines if "/graph?g0.expr=" in line).split(": ")[1]
        expr = urllib.parse.parse_qs(urllib.parse.urlsplit(link.strip()).query)["g0.expr"][0]
        deadline = time.monotonic() + 20
        while '"http_route"' not in (answer := get(
            f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        )[1]) and time.monotonic() < deadline:  # fmt: skip
            time.sleep(0.5)
        assert '"http_route"' in answer, answer
        assert ctrl_c(running) == 130
        out = running.output()
        assert "==> Stopping" in out
        assert running.leftovers() == [], out


@pytest.mark.parametrize(
    "stage",
    ["==> Working directory", "==> Waiting for the app", "==> Starting Prometheus",
     "==> Sending a little traffic"],
)  # fmt: skip
def test_ctrl_c_during_set_up_leaves_nothing(stage: str, tmp_path: Path) -> None:
    with demo(tmp_path) as running:
        running.read_until(stage)
        assert ctrl_c(running) == 130
        out = running.output()
        assert READY_LINE not in out
        assert running.leftovers() == [], out


def test_ctrl_c_twice_still_cleans_up(tmp_path: Path) -> None:
    with demo(tmp_path) as running:
        running.read_until(READY_LINE)
        os.killpg(running.proc.pid, signal.SIGINT)
        running.read_until("==> Stopping")
        os.killpg(running.proc.pid, signal.SIGINT)  # impatient
        assert running.proc.wait(30) == 130
        out = running.output()
        assert running.leftovers() == [], out


def test_the_query_link_follows_the_namespace(tmp_path: Path) -> None:
    env = clean_environ() | {"PROMETHEUS_NAMESPACE": "shop"}
    result = subprocess.run(
        [sys.executable, "scripts/demo_traffic.py", "link",
         "http://127.0.0.1:9090", "sum(rate(http_server_request_duration_seconds_count[1m]))"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expr = urllib.parse.parse_qs(urllib.parse.urlsplit(result.stdout.strip()).query)["g0.expr"]
    assert expr == ["sum(rate(shop_http_server_request_duration_seconds_count[1m]))"]


def test_a_terminate_signal_to_the_script_alone_stops_everything(tmp_path: Path) -> None:
    """Not a terminal: only the script gets the signal; it stops what it started."""
    with demo(tmp_path) as running:
        running.read_until(READY_LINE)
        children = psutil.Process(running.proc.pid).children(recursive=True)
        assert len(children) >= 4  # gunicorn master and workers, prometheus, traffic
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(30) == 143
        running.output()
        assert running.leftovers() == []
        assert not any(child.is_running() and child.status() != "zombie" for child in children)


def test_a_busy_port_is_reported_and_cleaned_up(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        tmp = tmp_path / "again"
        tmp.mkdir()
        env = clean_environ() | {"APP_PORT": str(port), "TMPDIR": str(tmp),
                                 "PROMETHEUS_METRICS_PORT": str(free_port()),
                                 "DEMO_PROMETHEUS_PORT": str(free_port()),
                                 "DEMO_SKIP_BOOTSTRAP": "1"}  # fmt: skip
        result = subprocess.run(
            ["bash", "scripts/demo.sh"], cwd=REPO_ROOT, env=env, text=True,
            capture_output=True, timeout=90, start_new_session=True,
        )  # fmt: skip
    assert result.returncode == 1
    assert "demo: the app did not come up; its log:" in result.stderr
    assert "Address already in use" in result.stderr or "Connection in use" in result.stderr
    assert list(tmp.iterdir()) == []
