"""A real redis-server per test, and the ``gunicorn-prom-ext serve`` sidecar as a subprocess.

Each redis-server listens on its own free loopback port, keeps nothing on disk, and is
stopped at teardown; the tests kill, restart (same port), freeze and thaw it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from harness import (
    REPO_ROOT,
    GunicornError,
    Samples,
    clean_environ,
    free_port,
    parse_metrics,
    require_tool,
)
from harness import wait_for as _wait_for

START_TIMEOUT = 10.0


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


class RedisServer:
    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.binary = binary
        self.workdir = Path(tempfile.mkdtemp(prefix="redis-", dir=workdir))
        self.port = free_port()
        self.password = password
        self.tls = tls
        self.log_path = self.workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        args = [self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.workdir)]
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            args += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            args += ["--tls-ca-cert-file", str(self.tls.ca)]
        if self.password is not None:
            args += ["--requirepass", self.password]
        return args

    def start(self) -> RedisServer:
        """Start (again, on the same port) and wait until it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            raise GunicornError("redis-server already running")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

        def pong() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise GunicornError(f"redis-server exited:\n{self.log_path.read_text()}")
            with contextlib.closing(self.client()) as client:
                return bool(client.ping())

        _wait_for(pong, timeout=START_TIMEOUT, interval=0.05, message="redis-server PING")
        return self

    def client(self, db: int = 0) -> redis.Redis:
        tls = {"ssl": True, "ssl_ca_certs": str(self.tls.ca)} if self.tls else {}
        return redis.Redis(
            host="127.0.0.1", port=self.port, db=db, password=self.password,
            socket_timeout=2, socket_connect_timeout=2, **tls,  # type: ignore[arg-type]
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def freeze(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def redis_env(server: RedisServer, **extra: str) -> dict[str, str]:
    """The environment that points an instance (or the sidecar) at this server."""
    env = {"REDIS_ENABLED": "true", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(server.port)}
    return {**env, **extra}


class Sidecar:
    """``python -m gunicorn_prom_ext.cli serve`` on a free loopback port."""

    def __init__(self, workdir: Path, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.log_path = Path(tempfile.mkdtemp(prefix="sidecar-", dir=workdir)) / "serve.log"
        self.env = clean_environ()
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        self.env.update(env)
        self.args = [sys.executable, "-m", "gunicorn_prom_ext.cli", "serve"]
        self.args += ["--bind", "127.0.0.1", "--port", str(self.port), *args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sidecar:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise GunicornError(f"sidecar exited {self.proc.returncode}:\n{self.log_text()}")
            return "metrics endpoint: serving" in self.log_text()

        _wait_for(listening, timeout=START_TIMEOUT, interval=0.05, message="sidecar listening")
        return self

    def get(self, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/metrics", headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def text(self, headers: dict[str, str] | None = None) -> str:
        status, body = self.get(headers)
        if status != 200:
            raise GunicornError(f"sidecar answered {status}: {body[:300]!r}")
        return body.decode("utf-8")

    def samples(self) -> Samples:
        return parse_metrics(self.text())

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


RedisFactory = Callable[..., RedisServer]
SidecarFactory = Callable[..., Sidecar]


def redis_servers(workdir: Path) -> Iterator[RedisFactory]:
    """Body of a ``redis_factory`` fixture: build (not start) servers; stop them after."""
    binary = require_tool("redis-server")
    servers: list[RedisServer] = []

    def make(**kwargs: object) -> RedisServer:
        server = RedisServer(binary, workdir, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def sidecars(workdir: Path) -> Iterator[SidecarFactory]:
    """Body of a ``sidecar_factory`` fixture: ``make(env, *serve_args)`` starts one."""
    started: list[Sidecar] = []

    def make(env: dict[str, str], *args: str) -> Sidecar:
        sidecar = Sidecar(workdir, env, *args)
        started.append(sidecar)
        return sidecar.start()

    yield make
    for sidecar in started:
        sidecar.stop()


class DelayProxy:
    """A TCP relay to a local port that holds back every byte coming back for ``delay``
    seconds: a Redis that answers slowly (or, killed behind it, mid-answer)."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> DelayProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()  # Redis is down: so is the connection
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            self._relay(client, upstream, 0.0)
            self._relay(upstream, client, self.delay)

    @staticmethod
    def _relay(src: socket.socket, dst: socket.socket, delay: float) -> None:
        chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def receive() -> None:
            data = b"x"
            while data:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                chunks.put((time.monotonic() + delay, data))

        def send() -> None:
            while True:
                due, data = chunks.get()
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    if not data:
                        raise OSError("closed")
                    dst.sendall(data)
                except OSError:
                    for sock in (src, dst):
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                    return

        threading.Thread(target=receive, daemon=True).start()
        threading.Thread(target=send, daemon=True).start()
