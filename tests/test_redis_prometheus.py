"""A real Prometheus scrapes the sidecar while bad snapshots sit under the key prefix.

Prometheus asks for OpenMetrics and drops a whole scrape it cannot parse, so this is the
reader the page has to satisfy in the end.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import free_port, require_tool, wait_for
from redis_harness import RedisFactory, SidecarFactory, redis_env, redis_servers, sidecars
from test_redis_hostile import HOSTILE, gauge, put, snapshot


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    yield from redis_servers(tmp_path)


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[SidecarFactory]:
    yield from sidecars(tmp_path)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(port: int, promql: str) -> dict[str, float]:
    """{gunicorn_instance or kind label: value} of an instant query."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        result = json.load(response)["data"]["result"]
    return {
        r["metric"].get("gunicorn_instance", r["metric"].get("kind", "")): float(r["value"][1])
        for r in result
    }


@pytest.mark.slow
def test_prometheus_ingests_the_page_whatever_else_is_in_redis(
    redis_factory: RedisFactory,
    sidecar_factory: SidecarFactory,
    prometheus: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    binary = require_tool("prometheus")
    server = redis_factory().start()
    put(server, "gunicorn", "good", snapshot("good", gauge(["things", {"a": "b"}, 42.0])))
    bad = ("label-int", "surrogate", "deep", "metric-name", "no-inf-bucket", "names-collide")
    for instance_id in bad:
        put(server, "gunicorn", instance_id, HOSTILE[instance_id][0])
    sidecar = sidecar_factory(redis_env(server))
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: sidecar\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{sidecar.port}']}}]\n"
    )
    with open(tmp_path / "prometheus.log", "wb") as log:
        prometheus.append(subprocess.Popen(
            [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
            stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip

    def scraped() -> dict[str, float] | None:
        things = query(port, "things")
        return things if query(port, "up") == {"": 1.0} and things else None

    assert wait_for(scraped, timeout=30, interval=0.5, message="a scrape") == {"good": 42.0}
    skipped = query(port, 'gunicorn_prom_ext_sidecar_faults_total{kind="snapshot"}')
    assert skipped["snapshot"] >= len(bad) and skipped["snapshot"] % len(bad) == 0
    assert set(query(port, "count by (gunicorn_instance) ({gunicorn_instance!=''})")) == {
        "good"
    }
