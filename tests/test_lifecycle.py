"""Worker and master life cycle against real gunicorn: recycling, HUP, TTIN/TTOU, SIGKILL,
timeout, a worker dying of an exception, USR2 re-exec, and the multiprocess directory.

Every test reads the real /metrics page of a real gunicorn master on 127.0.0.1 and asserts
exact values. Each server runs without gunicorn 27's control socket (parallel instances would
share ~/.gunicorn/gunicorn.ctl) and with a short graceful timeout, to keep the suite quick.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from harness import Gunicorn, GunicornFactory, Samples

pytestmark = pytest.mark.slow

FAST = ("--graceful-timeout", "2")
DURATION_COUNT = "http_server_request_duration_seconds_count"
ACTIVE = "http_server_active_requests"
EXITS = "gunicorn_worker_exits_total"
REASONS = ("graceful", "max_requests", "timeout", "killed", "error")
PER_WORKER = (
    "gunicorn_worker_resident_memory_bytes",
    "gunicorn_worker_cpu_seconds_total",
    "gunicorn_worker_open_fds",
)
ITEMS_ROUTE = "/items/<n>"
PRIVATE_DIR_LINE = re.compile(r"gunicorn-prom-ext: metrics directory (\S+) \(private\)")


# -- reading one scrape --------------------------------------------------------------------------


def sample(m: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels; KeyError when absent (so wait_for keeps waiting)."""
    return m[(name, tuple(sorted(labels.items())))]


def requests_counted(m: Samples, route: str, status: str, method: str = "GET") -> float:
    key = (DURATION_COUNT, tuple(sorted({
        "http_request_method": method,
        "http_route": route,
        "http_response_status_code": status,
    }.items())))  # fmt: skip
    return m.get(key, 0.0)


def wait_counted(g: Gunicorn, count: int, route: str = ITEMS_ROUTE, timeout: float = 5) -> Samples:
    """Wait until `count` GET requests to `route` answered 200 are counted; that scrape."""

    def counted() -> Samples | None:
        m = g.metrics()
        return m if requests_counted(m, route, "200") == count else None

    return g.wait_for(counted, timeout=timeout, message=f"{count} requests to {route} counted")


def active_get(m: Samples) -> float:
    """Active GET requests; 0 when no live worker has the series."""
    return m.get((ACTIVE, (("http_request_method", "GET"),)), 0.0)


def all_requests_counted(m: Samples) -> float:
    return sum(v for (name, _), v in m.items() if name == DURATION_COUNT)


def exits(m: Samples) -> dict[str, float]:
    return {reason: sample(m, EXITS, reason=reason) for reason in REASONS}


def worker_labels(m: Samples, name: str) -> set[str]:
    return {dict(labels)["worker"] for (n, labels) in m if n == name}


def all_worker_labels(m: Samples) -> dict[str, set[str]]:
    return {name: worker_labels(m, name) for name in PER_WORKER}


def state(m: Samples) -> dict[str, float]:
    """The server metrics of one scrape, for comparisons and readable failure messages."""
    out = {
        "workers": sample(m, "gunicorn_workers"),
        "desired": sample(m, "gunicorn_workers_desired"),
        "spawns": sample(m, "gunicorn_worker_spawns_total"),
        "reloads": sample(m, "gunicorn_reloads_total"),
    }
    out.update({f"exits_{reason}": value for reason, value in exits(m).items()})
    return out


def no_exits_but(**expected: float) -> dict[str, float]:
    """Every exit reason, with the ones not named expected to be 0."""
    return {reason: expected.get(reason, 0.0) for reason in REASONS}


# -- tests ---------------------------------------------------------------------------------------


def test_max_requests_churn_keeps_every_count(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory(
        "testapp:app", *FAST, "--max-requests", "5", "--max-requests-jitter", "0", workers=2
    ).start()
    for i in range(60):
        assert g.request(f"/items/{i}") == (200, f"item {i}".encode()), f"request {i}"

    def settled() -> Samples | None:
        m = g.metrics()
        s = state(m)
        done = (
            requests_counted(m, ITEMS_ROUTE, "200") == 60
            and active_get(m) == 0
            and s["workers"] == 2
            and len(g.worker_pids()) == 2
            and s["exits_max_requests"] == s["spawns"] - 2
            # Each worker serves exactly 5 requests, then exits: at most 2 x 4 of the 60 are
            # held by live workers, so at least 11 have exited once the last ones are reaped.
            and s["exits_max_requests"] >= 11
        )
        return m if done else None

    m = g.wait_for(settled, timeout=20, message="60 requests counted, workers recycled")
    s = state(m)
    assert s["exits_max_requests"] == s["spawns"] - s["workers"], s
    assert exits(m) == no_exits_but(max_requests=s["exits_max_requests"])
    assert all_requests_counted(m) == 60
    assert active_get(m) == 0


def test_hup_reload_keeps_counts_and_worker_labels(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app", *FAST, workers=2).start()
    old_pids = set(g.worker_pids())
    assert len(old_pids) == 2
    for i in range(7):
        assert g.request(f"/items/{i}")[0] == 200
    wait_counted(g, 7)

    # Scrape continuously while the reload happens: every scrape must answer 200.
    failures: list[str] = []
    scrapes = 0
    stop = threading.Event()

    def scrape_loop() -> None:
        nonlocal scrapes
        while not stop.is_set():
            try:
                status, _, body = g.metrics_response(timeout=5)
                if status != 200:
                    failures.append(f"{status}: {body[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                failures.append(repr(exc))
            scrapes += 1  # back to back: a scrape must never fail while workers change

    scraper = threading.Thread(target=scrape_loop, daemon=True)
    scraper.start()
    try:
        g.wait_for(lambda: scrapes >= 3, timeout=10)  # under way before the HUP
        before_hup = scrapes
        g.signal(signal.SIGHUP)

        def reloaded() -> Samples | None:
            pids = set(g.worker_pids())
            m = g.metrics()
            s = state(m)
            done = (
                s["reloads"] == 1
                and len(pids) == 2
                and not pids & old_pids
                and s["workers"] == 2
                and s["exits_graceful"] == 2
                and all(labels == {"0", "1"} for labels in all_worker_labels(m).values())
            )
            return m if done else None

        m = g.wait_for(
            reloaded, timeout=15,
            message=f"HUP settled with 2 new workers: {state(g.metrics())}, "
            f"{all_worker_labels(g.metrics())}, {g.worker_pids()} (old {old_pids})",
        )  # fmt: skip
    finally:
        stop.set()
        scraper.join(10)

    assert failures == [], f"{failures}\n{g.log_text()}"
    assert scrapes > before_hup  # some ran while the workers changed (a HUP can take 0.1 s)
    assert not old_pids & set(g.worker_pids())
    s = state(m)
    assert (s["reloads"], s["workers"], s["desired"], s["spawns"]) == (1, 2, 2, 4), s
    assert exits(m) == no_exits_but(graceful=2)
    assert all_worker_labels(m) == {name: {"0", "1"} for name in PER_WORKER}
    assert requests_counted(m, ITEMS_ROUTE, "200") == 7
    assert all_requests_counted(m) == 7
    # The new workers record into the same counts.
    assert g.request("/items/99")[0] == 200
    wait_counted(g, 8)


def test_ttin_ttou(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app", *FAST, workers=2).start()
    first = set(g.worker_pids())

    g.signal(signal.SIGTTIN)

    def three() -> Samples | None:
        m = g.metrics()
        s = state(m)
        done = (
            s["desired"] == 3
            and s["workers"] == 3
            and len(g.worker_pids()) == 3
            and all(labels == {"0", "1", "2"} for labels in all_worker_labels(m).values())
        )
        return m if done else None

    m = g.wait_for(three, timeout=10, message="TTIN: 3 workers")
    assert state(m)["spawns"] == 3
    assert exits(m) == no_exits_but()
    assert all_worker_labels(m) == {name: {"0", "1", "2"} for name in PER_WORKER}

    g.signal(signal.SIGTTOU)

    def two() -> Samples | None:
        m = g.metrics()
        s = state(m)
        done = (
            s["desired"] == 2
            and s["workers"] == 2
            and len(g.worker_pids()) == 2
            and s["exits_graceful"] == 1
        )
        return m if done else None

    m = g.wait_for(two, timeout=10, message="TTOU: 2 workers")
    s = state(m)
    assert s["spawns"] == 3, s
    assert exits(m) == no_exits_but(graceful=1)
    # TTOU stops the oldest worker (slot 0); the others keep their labels: a process's
    # series never change label while it lives (its CPU counter stays its own).
    assert len(first - set(g.worker_pids())) == 1
    assert all_worker_labels(m) == {name: {"1", "2"} for name in PER_WORKER}

    # The next worker takes the lowest free slot, so labels stay within 0..max-1.
    g.signal(signal.SIGTTIN)
    g.wait_for(lambda: all_worker_labels(g.metrics()) ==
               {name: {"0", "1", "2"} for name in PER_WORKER}, timeout=10)  # fmt: skip


def test_sigkill_worker_is_counted_and_replaced(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app", *FAST, workers=1).start()
    (victim,) = g.worker_pids()

    result: list[tuple[int | None, bytes]] = []
    client = threading.Thread(
        target=lambda: result.append(g.request("/sleep/30", timeout=40)), daemon=True
    )
    client.start()
    g.wait_for(
        lambda: sample(g.metrics(), ACTIVE, http_request_method="GET") == 1,
        timeout=10,
        message="the /sleep/30 request is active",
    )

    os.kill(victim, signal.SIGKILL)

    def replaced() -> Samples | None:
        pids = g.worker_pids()
        m = g.metrics()
        s = state(m)
        done = (
            s["exits_killed"] == 1
            and s["workers"] == 1
            and s["spawns"] == 2
            and len(pids) == 1
            and victim not in pids
        )
        return m if done else None

    m = g.wait_for(replaced, timeout=10, message="killed worker replaced")
    client.join(10)
    assert result == [(None, b"")]  # the connection died with the worker
    assert exits(m) == no_exits_but(killed=1)
    assert all_requests_counted(m) == 0  # it never finished: nothing to count
    assert all_worker_labels(m) == {name: {"0"} for name in PER_WORKER}
    # The killed worker's in-flight request does not stay active (a scrape taken between
    # the exit being counted and the dead worker's gauge file going may still show it).
    g.wait_for(lambda: active_get(g.metrics()) == 0, timeout=5, message="active requests back to 0")

    assert g.request("/items/1")[0] == 200

    def served() -> bool:
        m = g.metrics()
        return requests_counted(m, ITEMS_ROUTE, "200") == 1 and active_get(m) == 0

    g.wait_for(served, timeout=5, message="the new worker's request counted, none active")
    m = g.metrics()
    assert state(m)["exits_killed"] == 1
    assert sample(m, ACTIVE, http_request_method="GET") == 0  # present again, and 0


def test_timeout_counts_one_500_and_replaces_worker(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app", *FAST, "--timeout", "2", workers=1).start()
    (stuck,) = g.worker_pids()

    started = time.monotonic()
    status, _ = g.request("/sleep/10", timeout=20)
    elapsed = time.monotonic() - started
    assert status in (None, 500), status
    assert elapsed < 9, f"the worker was not aborted after --timeout 2 ({elapsed:.1f}s)"

    def replaced() -> Samples | None:
        pids = g.worker_pids()
        m = g.metrics()
        s = state(m)
        done = (
            s["exits_timeout"] == 1
            and s["workers"] == 1
            and s["spawns"] == 2
            and len(pids) == 1
            and stuck not in pids
            and requests_counted(m, "", "500") == 1
        )
        return m if done else None

    m = g.wait_for(replaced, timeout=10, message="timed-out worker replaced, request counted")
    assert exits(m) == no_exits_but(timeout=1)
    assert all_requests_counted(m) == 1  # counted once, as a 500
    assert active_get(m) == 0


def test_worker_exiting_through_an_exception_counts_as_error(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("lifecycle_app:app", *FAST, workers=1).start()
    (doomed,) = g.worker_pids()

    assert g.request("/lifecycle/close-listener") == (200, b"closed 1")

    def replaced() -> Samples | None:
        pids = g.worker_pids()
        m = g.metrics()
        s = state(m)
        done = (
            s["exits_error"] == 1
            and s["workers"] == 1
            and s["spawns"] == 2
            and len(pids) == 1
            and doomed not in pids
        )
        return m if done else None

    m = g.wait_for(replaced, timeout=10, message="worker exited with an exception, replaced")
    assert exits(m) == no_exits_but(error=1)
    assert requests_counted(m, "/lifecycle/close-listener", "200") == 1
    log = g.log_text()
    assert "Exception in worker process" in log
    assert f"Worker (pid:{doomed}) exited with code 255" in log
    # The replacement serves from the listener the master kept.
    assert g.request("/items/3") == (200, b"item 3")


# -- USR2 and the multiprocess directory ---------------------------------------------------------


def _new_master(g: Gunicorn) -> int | None:
    """The USR2 child of g's master once it has exec'd: gunicorn execs it with GUNICORN_PID
    (the old master's pid) in its environment. Its command line is the old master's."""
    for child in psutil.Process(g.master_pid).children():
        try:
            if child.environ().get("GUNICORN_PID") == str(g.master_pid):
                return child.pid
        except psutil.Error:
            continue
    return None


def _live_children(pid: int) -> list[int]:
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return []
    alive = []
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child.pid)
        except psutil.Error:
            continue
    return alive


def test_usr2_reexec_adopts_private_directory_and_removes_it_at_exit(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app", *FAST, workers=1)
    del g.env["PROMETHEUS_MULTIPROC_DIR"]  # let the project create a private directory
    # USR2 re-executes [sys.executable] + sys.argv. Under `python -m gunicorn` sys.argv[0] is
    # gunicorn/__main__.py, so the new master's sys.path[0] is gunicorn's package directory and
    # its `http` subpackage shadows the standard library's: run the console script instead.
    script = Path(sys.executable).with_name("gunicorn")
    assert g.args[1:3] == ["-m", "gunicorn"], g.args
    g.args[1:3] = [str(script)]
    g.start()
    (private_dir,) = set(PRIVATE_DIR_LINE.findall(g.log_text()))
    assert os.path.isdir(private_dir)
    assert not os.listdir(g.multiproc_dir)  # the harness's directory is not used

    for i in range(5):
        assert g.request(f"/items/{i}")[0] == 200
    wait_counted(g, 5)
    old_master, old_workers = g.master_pid, set(g.worker_pids())

    g.signal(signal.SIGUSR2)
    new_master = g.wait_for(lambda: _new_master(g), timeout=10, message="USR2 child master")
    g.wait_for(lambda: len(_live_children(new_master)) == 1, timeout=10,
               message="the new master's worker")  # fmt: skip

    g.signal(signal.SIGTERM)
    assert g.proc is not None
    assert g.proc.wait(10) == 0
    assert not any(psutil.pid_exists(pid) for pid in old_workers)

    # Only the new master can answer now (same port, after its background bind retry).
    m = wait_counted(g, 5, timeout=10)
    assert psutil.Process(new_master).ppid() != old_master
    assert state(m)["workers"] == 1
    assert all_requests_counted(m) == 5
    assert g.request("/items/5")[0] == 200
    wait_counted(g, 6)

    # The new master adopted the same private directory and logged it.
    assert set(PRIVATE_DIR_LINE.findall(g.log_text())) == {private_dir}
    assert os.path.isdir(private_dir)

    os.kill(new_master, signal.SIGTERM)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(new_master).wait(10)
    assert not os.path.exists(private_dir), g.log_text()


def _write_stale_counter(directory: Path) -> Path:
    """A genuine prometheus_client multiprocess file, as a crashed earlier run leaves it."""
    code = (
        "from prometheus_client import Counter\n"
        "Counter('lifecycle_stale_events', 'From an earlier run.').inc(42)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)
    (written,) = directory.glob("counter_*.db")
    stale = directory / "counter_999.db"
    written.rename(stale)
    return stale


def test_user_directory_is_wiped_at_start_and_kept_at_exit(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app", *FAST, workers=1)
    directory = g.multiproc_dir  # exported by the harness as PROMETHEUS_MULTIPROC_DIR
    stale = _write_stale_counter(directory)

    # The file is valid: prometheus_client reads the stale series from it.
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    assert registry.get_sample_value("lifecycle_stale_events_total") == 42

    g.start()
    assert f"metrics directory {directory} (shared)" in g.log_text()
    assert not stale.exists()
    assert g.request("/items/1")[0] == 200
    m = wait_counted(g, 1)
    assert not [key for key in m if key[0].startswith("lifecycle_stale_events")]

    assert g.stop() == 0
    assert directory.is_dir()
