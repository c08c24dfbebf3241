"""A real Prometheus server for the end-to-end tests: Debian's /usr/bin/prometheus on a free
loopback port, with its own temporary storage, and a small client of its HTTP API."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from harness import GunicornError, free_port, require_tool, wait_for

START_TIMEOUT = 30.0


class PrometheusError(AssertionError):
    """The server did not come up, or a query failed; the message carries its log."""


class Prometheus:
    """``Prometheus(config, rules).start()``, or a context manager; ``stop()`` removes its
    storage. ``config`` is a prometheus.yml as a mapping; ``rules`` the text of one rule
    file, listed under rule_files in place of whatever the config names there."""

    def __init__(self, config: dict[str, Any], rules: str | None = None) -> None:
        self.binary = require_tool("prometheus")
        self.dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = dict(config)
        if rules is not None:
            (self.dir / "rules.yml").write_text(rules, encoding="utf-8")
            config["rule_files"] = [str(self.dir / "rules.yml")]
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.log_path = self.dir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.proc.returncode}")
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)

        try:
            wait_for(ready, timeout=START_TIMEOUT, interval=0.1, message="prometheus ready")
        except (GunicornError, PrometheusError) as exc:
            self.stop()
            raise PrometheusError(f"{exc}\n{self.log_text()}") from None
        return self

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Prometheus:
        return self.start() if self.proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        return ""

    # -- HTTP API ----------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the "data" of a successful answer, else PrometheusError."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the vector's samples, each {"metric": {...}, "value": [t, "v"]}."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} gave a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        """Range query as Grafana sends it: each series {"metric": {...}, "values": [...]}."""
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}",
                        step=f"{step:g}")  # fmt: skip
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Instant query as {sorted label items: value}."""
        return {
            tuple(sorted(sample["metric"].items())): float(sample["value"][1])
            for sample in self.query(expr)
        }

    def wait_value(self, expr: str, expected: float, timeout: float = 20.0) -> None:
        """Until the instant query's single value equals ``expected``."""
        seen: list[float] = []

        def equal() -> bool:
            values = list(self.values(expr).values())
            seen[:] = values
            return values == [expected]

        try:
            wait_for(equal, timeout=timeout, interval=0.2, message=expr)
        except GunicornError as exc:
            raise PrometheusError(f"{exc}: last {seen}, expected {expected}") from None


def finite_points(series: list[dict[str, Any]]) -> int:
    """How many points of a range query's answer are numbers (not NaN or ±Inf)."""
    return sum(
        1 for one in series for _, value in one["values"] if math.isfinite(float(value))
    )


def now() -> float:
    return time.time()
