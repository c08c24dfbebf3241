"""End-to-end test harness: real gunicorn processes on free ports, and helpers around them.

Every instance gets its own app port, metrics port, log file and multiprocess directory, and
an environment stripped of the caller's PROMETHEUS_*/REDIS_*/GUNICORN_* variables, so tests
neither see each other nor the developer's shell.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import importlib
import os
import resource
import shutil
import signal as _signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import psutil
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parent.parent
APPS_DIR = Path(__file__).resolve().parent / "apps"
DEFAULT_CONFIG = "python:gunicorn_prom_ext.gunicorn_conf"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

# Variables from the caller's environment that would change what the server under test does.
_STRIPPED_PREFIXES = ("PROMETHEUS_", "REDIS_", "GUNICORN_")

SampleKey = tuple[str, tuple[tuple[str, str], ...]]
Samples = dict[SampleKey, float]
T = TypeVar("T")


class GunicornError(AssertionError):
    """The server did not come up / a wait timed out. The message carries the server log."""


def free_port() -> int:
    """A TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def require_tool(name: str) -> str:
    """Path of an external tool; skips the test when it is missing (fails when CI=true)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path:
        return path
    msg = f"required tool {name!r} not found (bash scripts/bootstrap.sh installs it as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def require_module(name: str) -> object:
    """Import a third-party module a test needs; skip without it (fail when CI=true: a
    matrix row that runs the test must install it)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        msg = f"required module {name!r} not installed: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def status_of(port: int, path: str) -> int | str:
    """GET ``path`` on a loopback port: the status the client got, or the name of the
    error it met instead."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        connection.close()


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 15.0,
    interval: float = 0.1,
    message: str = "",
) -> T:
    """Poll until predicate() is truthy and return that value; raise GunicornError on timeout.

    A predicate returning ``X | None`` gives an ``X``: None is never returned.
    Exceptions from the predicate count as "not yet" (the server may still be starting), and
    the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise GunicornError(f"timed out after {timeout}s: {message}{detail}")
        time.sleep(interval)


def parse_metrics(text: str, openmetrics: bool = False) -> Samples:
    """Exposition text → {(sample name, sorted label items): value}."""
    families = (
        openmetrics_families(text)  # type: ignore[no-untyped-call]
        if openmetrics
        else text_string_to_metric_families(text)
    )
    out: Samples = {}
    for family in families:
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def clean_environ() -> dict[str, str]:
    """os.environ without the variables that configure this project, Redis or gunicorn."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_PREFIXES)}


class Gunicorn:
    """One real gunicorn master (+ workers) in a subprocess.

    ``Gunicorn("testapp:app", "--threads", "2", env={...}).start()`` or use it as a context
    manager (``__enter__`` starts it if needed, ``__exit__`` stops it). ``config=None`` runs
    bare gunicorn, without the project's hooks.
    """

    def __init__(
        self,
        app: str,
        *extra_args: str,
        env: dict[str, str] | None = None,
        config: str | None = DEFAULT_CONFIG,
        workers: int = 1,
        cwd: str | os.PathLike[str] | None = None,
        tmp_dir: str | os.PathLike[str] | None = None,
        metrics_ssl_context: ssl.SSLContext | None = None,
        nofile: int | None = None,
    ) -> None:
        """``nofile``: the file-descriptor limit (RLIMIT_NOFILE) to run the server under."""
        self.app = app
        self.nofile = nofile
        self.config = config
        self.workers = workers
        self.cwd = os.fspath(cwd) if cwd is not None else str(APPS_DIR)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="gunicorn-", dir=tmp_dir))
        self.log_path = self.tmp_dir / "gunicorn.log"
        self.multiproc_dir = self.tmp_dir / "multiproc"
        self.multiproc_dir.mkdir()
        # TLS for the metrics endpoint: when given, metrics are fetched over https with it.
        self.metrics_ssl_context = metrics_ssl_context
        self.app_port = free_port()

        full_env = clean_environ()
        # The package is importable even from a virtualenv where it is not installed.
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env["PROMETHEUS_METRICS_PORT"] = str(free_port())
        full_env["PROMETHEUS_BIND_ADDRESS"] = "127.0.0.1"
        # One directory per instance, so tests never read each other's files.
        full_env["PROMETHEUS_MULTIPROC_DIR"] = str(self.multiproc_dir)
        # gunicorn >= 25.1 opens a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl (else
        # ~/.gunicorn/): one per instance, or concurrent servers take each other's. Kept
        # short under /tmp because a unix socket path is limited to 107 bytes.
        self.run_dir = Path(tempfile.mkdtemp(prefix="gpe-run-"))
        full_env["XDG_RUNTIME_DIR"] = str(self.run_dir)
        full_env.update(env or {})
        self.env = full_env
        self.metrics_port = int(full_env["PROMETHEUS_METRICS_PORT"])

        self.args: list[str] = [sys.executable, "-m", "gunicorn"]
        if config is not None:
            self.args += ["-c", config]
        self.args += ["--bind", f"127.0.0.1:{self.app_port}", "--workers", str(workers)]
        self.args += [*extra_args, app]

        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def metrics_url(self) -> str:
        scheme = "https" if self.metrics_ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}/"

    @property
    def control_socket(self) -> Path:
        """Where gunicorn >= 25.1 puts its control socket (for gunicornc -s)."""
        return self.run_dir / "gunicorn.ctl"

    @property
    def master_pid(self) -> int:
        if self.proc is None:
            raise GunicornError("gunicorn was not started")
        return self.proc.pid

    def start(self, wait_metrics: bool | None = None, timeout: float = START_TIMEOUT) -> Gunicorn:
        """Start and wait until the app port accepts, the workers exist and (if wait_metrics)
        the metrics URL answers 200. wait_metrics defaults to "a config was given"."""
        if self.proc is not None:
            raise GunicornError("already started")
        if wait_metrics is None:
            wait_metrics = self.config is not None
        with open(self.log_path, "wb") as log:
            # Own session: a Ctrl-C in the test terminal does not reach it, and stop() can
            # clean up the whole process group (workers, a USR2 child master).
            self.proc = subprocess.Popen(
                self.args,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._limit_fds if self.nofile is not None else None,
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise GunicornError(f"gunicorn exited with code {self.proc.returncode}")
            if not _port_accepts(self.app_port):
                return False
            if len(self.worker_pids()) < self.workers:
                return False
            if wait_metrics:
                status, _, _ = self.metrics_response()
                return status == 200
            return True

        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return self
            except GunicornError as exc:
                self.stop()
                raise GunicornError(f"{exc}\n{self._describe()}") from None
            except (OSError, http.client.HTTPException):
                pass  # metrics endpoint not up yet
            if time.monotonic() >= deadline:
                self.stop()
                raise GunicornError(
                    f"gunicorn not ready after {timeout}s (app port {self.app_port}, "
                    f"metrics {self.metrics_url if wait_metrics else 'not awaited'})\n"
                    + self._describe()
                )
            time.sleep(0.05)

    def _limit_fds(self) -> None:  # runs in the child, before exec
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def stop(self) -> int | None:
        """SIGTERM the master, wait up to 10 s, then SIGKILL; kill whatever of its process
        group is left. Returns the master's exit code. Safe to call twice."""
        try:
            return self._stop()
        finally:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _stop(self) -> int | None:
        if self.proc is None:
            return None
        pgid = self.proc.pid  # start_new_session: the group id is the master's pid
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(_signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Workers that outlived their master, or a new master from USR2.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, _signal.SIGKILL)
        return self.proc.returncode

    def __enter__(self) -> Gunicorn:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- processes ---------------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        os.kill(self.master_pid, sig)

    def usr2_handover(self, workers: int = 1, timeout: float = 20) -> psutil.Process:
        """USR2, wait for the new master (a child of the old one, re-executed with
        GUNICORN_PID, same command line) and its workers, then TERM the old master and wait
        until it is gone. Returns the new master; stop() still ends it (same session)."""
        old = psutil.Process(self.master_pid)
        self.signal(_signal.SIGUSR2)

        def new_master() -> psutil.Process | None:
            for child in old.children():
                if child.cmdline() == old.cmdline() and "GUNICORN_PID" in child.environ():
                    return child
            return None

        successor = self.wait_for(new_master, timeout=timeout, message="new master after USR2")
        self.wait_for(
            lambda: len(successor.children()) == workers,
            timeout=timeout,
            message="the new master's workers",
        )
        old.send_signal(_signal.SIGTERM)
        self.wait_for(
            lambda: not old.is_running() or old.status() == psutil.STATUS_ZOMBIE,
            timeout=timeout,
            message="the old master exits",
        )
        return successor

    def worker_pids(self) -> list[int]:
        """Live workers of the master. Workers are plain forks, so their command line equals
        the master's; a USR2 child master was re-exec'd and differs, as does any other child."""
        try:
            master = psutil.Process(self.master_pid)
            master_cmd = master.cmdline()
            children = master.children(recursive=False)
        except psutil.Error:
            return []
        pids = []
        for child in children:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
                cmd = child.cmdline()
            except psutil.Error:
                continue
            # With setproctitle installed, gunicorn renames its processes instead.
            if cmd == master_cmd or (cmd and cmd[0].startswith("gunicorn: worker")):
                pids.append(child.pid)
        return sorted(pids)

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 15.0,
        interval: float = 0.1,
        message: str = "",
    ) -> T:
        """Like the module's wait_for, with the server log in the failure message."""
        try:
            return wait_for(predicate, timeout=timeout, interval=interval, message=message)
        except GunicornError as exc:
            raise GunicornError(f"{exc}\n{self._describe()}") from None

    # -- HTTP --------------------------------------------------------------------------------

    def request(
        self,
        path: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> tuple[int | None, bytes]:
        """One request to the app. (None, b"") if the connection closed without a response;
        (status, partial body) if it closed in the middle of the body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.app_port, timeout=timeout)
        try:
            try:
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                return None, b""
            try:
                return resp.status, resp.read()
            except http.client.IncompleteRead as exc:
                return resp.status, exc.partial
            except ConnectionResetError:
                return resp.status, b""
        finally:
            conn.close()

    def metrics_response(
        self, headers: dict[str, str] | None = None, path: str = "/metrics", timeout: float = 10
    ) -> tuple[int, dict[str, str], bytes]:
        """Raw GET on the metrics port: (status, headers with lower-case names, body as sent)."""
        conn: http.client.HTTPConnection
        if self.metrics_ssl_context is not None:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.metrics_port, timeout=timeout, context=self.metrics_ssl_context
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def metrics_text(self, headers: dict[str, str] | None = None) -> str:
        """The metrics page as text (gunzipped if it came gzipped); raises unless 200."""
        return self._fetch_metrics(headers)[0]

    def metrics(self, headers: dict[str, str] | None = None) -> Samples:
        """The metrics page parsed: {(sample name, sorted label items): value}."""
        text, content_type = self._fetch_metrics(headers)
        return parse_metrics(text, openmetrics=content_type.startswith("application/openmetrics"))

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; 0.0 when absent."""
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def sum_values(self, name: str, **labels: str) -> float:
        """Sum over the samples of this name whose labels include the given ones."""
        wanted = set(labels.items())
        return sum(
            v for (n, lbls), v in self.metrics().items() if n == name and wanted <= set(lbls)
        )

    def _fetch_metrics(self, headers: dict[str, str] | None) -> tuple[str, str]:
        status, resp_headers, body = self.metrics_response(headers)
        if status != 200:
            raise GunicornError(f"GET {self.metrics_url} -> {status}: {body[:500]!r}")
        if resp_headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        return body.decode("utf-8"), resp_headers.get("content-type", "")

    # -- logs --------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _describe(self) -> str:
        return f"command: {' '.join(self.args)}\n--- gunicorn log ---\n{self.log_text()}"


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# What the conftest fixture ``gunicorn_factory`` yields: Gunicorn's constructor, tracked.
GunicornFactory = Callable[..., Gunicorn]
