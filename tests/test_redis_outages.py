"""A Redis that is slow, restarted mid-scrape, or refusing writes: what the sidecar and the
pusher make of it. Real redis-server and gunicorn; the slowness is a TCP relay that holds
back Redis's replies (tests/redis_harness.py, DelayProxy)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Gunicorn, GunicornFactory, parse_metrics, wait_for
from redis_harness import (
    DelayProxy,
    RedisFactory,
    Sidecar,
    SidecarFactory,
    redis_env,
    redis_servers,
    sidecars,
)
from test_redis_hostile import faults, log_lines, master_faults, requests_per_instance


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    yield from redis_servers(tmp_path)


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[SidecarFactory]:
    yield from sidecars(tmp_path)


@pytest.fixture
def proxies() -> Iterator[list[DelayProxy]]:
    started: list[DelayProxy] = []
    yield started
    for proxy in started:
        proxy.stop()


def timed_get(sidecar: Sidecar) -> tuple[float, int, bytes]:
    started = time.monotonic()
    status, body = sidecar.get()
    return time.monotonic() - started, status, body


def pushing_instance(gunicorn_factory: GunicornFactory, env: dict[str, str], requests: int
                     ) -> Gunicorn:  # fmt: skip
    g = gunicorn_factory("testapp:app", env={**env, "REDIS_INSTANCE_ID": "good",
                                             "REDIS_PUSH_INTERVAL": "0.3"}).start()  # fmt: skip
    for _ in range(requests):
        assert g.request("/")[0] == 200
    return g


@pytest.mark.slow
def test_eight_scrapers_of_a_slow_redis_wait_for_one_read_not_eight(
    redis_factory: RedisFactory,
    gunicorn_factory: GunicornFactory,
    sidecar_factory: SidecarFactory,
    proxies: list[DelayProxy],
) -> None:
    server = redis_factory().start()
    pushing_instance(gunicorn_factory, redis_env(server), requests=3)
    proxy = DelayProxy(server.port, delay=0.25).start()  # every reply 250 ms late
    proxies.append(proxy)
    sidecar = sidecar_factory(redis_env(server, REDIS_PORT=str(proxy.port)))
    wait_for(lambda: requests_per_instance(sidecar.samples()) == {"good": 3.0}, timeout=10)
    alone = min(timed_get(sidecar)[0] for _ in range(3))
    assert alone >= 0.5  # two round trips: the index, then the snapshots

    results: list[tuple[float, int, bytes]] = []
    start = threading.Barrier(8)

    def scrape(n: int) -> None:
        start.wait()
        for _ in range(3):
            # 25 ms apart, all within one read: eight SYNs at once would overflow the
            # endpoint's listen backlog (socketserver's 5); a dropped SYN is retried after 1 s.
            time.sleep(n * 0.025)
            results.append(timed_get(sidecar))

    threads = [threading.Thread(target=scrape, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 24
    for _, status, body in results:
        assert status == 200
        assert requests_per_instance(parse_metrics(body.decode())) == {"good": 3.0}
    slowest = max(latency for latency, _, _ in results)
    print(f"slow Redis: a lone scrape {alone:.2f} s, slowest of 8 concurrent {slowest:.2f} s")
    # Queued one after another, the last of eight would wait about eight reads.
    assert slowest < 3 * alone
    log = sidecar.log_text()
    assert "ERROR" not in log and "Traceback" not in log, log


@pytest.mark.slow
def test_redis_restarted_mid_scrape(
    redis_factory: RedisFactory,
    gunicorn_factory: GunicornFactory,
    sidecar_factory: SidecarFactory,
    proxies: list[DelayProxy],
) -> None:
    server = redis_factory().start()
    g = pushing_instance(gunicorn_factory, redis_env(server), requests=2)
    proxy = DelayProxy(server.port, delay=0.6).start()
    proxies.append(proxy)
    sidecar = sidecar_factory(redis_env(server, REDIS_PORT=str(proxy.port)))
    wait_for(lambda: requests_per_instance(sidecar.samples()) == {"good": 2.0}, timeout=10)

    in_flight: list[tuple[float, int, bytes]] = []
    scrape = threading.Thread(target=lambda: in_flight.append(timed_get(sidecar)))
    scrape.start()
    time.sleep(0.3)  # the index was asked for; its answer is still on its way
    server.kill()
    server.start()  # same port, empty: the master must list itself again
    scrape.join(10)
    assert [(status, body) for _, status, body in in_flight] == [
        (503, f"Redis unavailable at redis://127.0.0.1:{proxy.port}/0\n".encode())
    ]
    assert g.request("/")[0] == 200
    wait_for(lambda: requests_per_instance(sidecar.samples()) == {"good": 3.0}, timeout=10,
             message="the instance listed again, with its totals")  # fmt: skip
    assert faults(sidecar.samples())["redis_unavailable"] == 1.0
    log = sidecar.log_text()
    assert (len(log_lines(log, "Redis unreachable at")), len(log_lines(log, "reachable again"))) \
        == (1, 1), log  # fmt: skip
    master_log = g.log_text()
    assert len(log_lines(master_log, "Redis unreachable at")) <= 1  # if a push hit the gap
    assert len(log_lines(master_log, "reconnected")) == len(
        log_lines(master_log, "Redis unreachable at"))
    assert sidecar.proc is not None and sidecar.proc.poll() is None


@pytest.mark.slow
def test_redis_refusing_writes_is_not_an_outage(
    redis_factory: RedisFactory, gunicorn_factory: GunicornFactory, sidecar_factory: SidecarFactory
) -> None:
    server = redis_factory().start()
    g = pushing_instance(gunicorn_factory, redis_env(server), requests=2)
    sidecar = sidecar_factory(redis_env(server))
    wait_for(lambda: requests_per_instance(sidecar.samples()) == {"good": 2.0}, timeout=10)
    client = server.client()
    client.config_set("maxmemory", 1)  # noeviction: every write is refused with OOM
    wait_for(lambda: master_faults(g, "redis_push") >= 3, timeout=5)
    assert g.request("/")[0] == 200
    # Reads still work: the sidecar serves the last snapshot Redis took.
    assert requests_per_instance(sidecar.samples()) == {"good": 2.0}
    client.config_set("maxmemory", 0)
    wait_for(lambda: requests_per_instance(sidecar.samples()) == {"good": 3.0}, timeout=5)
    log = g.log_text()
    refused = log_lines(log, "refuses the push: OutOfMemoryError: command not allowed when used "
                       "memory > 'maxmemory'")  # fmt: skip
    assert len(refused) == 1, log
    again = log_lines(log, "accepts this master's pushes again, after")
    assert len(again) == 1, log
    assert "unreachable" not in log and master_faults(g, "redis_stale") == 0
