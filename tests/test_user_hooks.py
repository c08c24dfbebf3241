"""A project's own gunicorn.conf.py hooks chained with ours by ``install_hooks(globals())``.

Real gunicorn, tests/apps/userhooks_conf.py: every user hook must still run (each writes a
line to a file), with gunicorn's own semantics when one raises, and the metrics stay exact.
"""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from harness import APPS_DIR, Gunicorn, GunicornFactory, Samples

pytestmark = pytest.mark.slow

FAST = ("--graceful-timeout", "2")
USER_CONFIG = str(APPS_DIR / "userhooks_conf.py")
DURATION_COUNT = "http_server_request_duration_seconds_count"
ITEMS_ROUTE = "/items/<n>"
REASONS = ("graceful", "max_requests", "timeout", "killed", "error")
MASTER_HOOKS = {"nworkers_changed", "when_ready", "pre_fork", "child_exit", "on_exit"}
WORKER_HOOKS = {"post_fork", "post_request", "worker_exit"}


def items_counted(m: Samples) -> float:
    key = (DURATION_COUNT, tuple(sorted({
        "http_request_method": "GET",
        "http_route": ITEMS_ROUTE,
        "http_response_status_code": "200",
    }.items())))  # fmt: skip
    return m.get(key, 0.0)


def exits(m: Samples) -> dict[str, float]:
    return {r: m[("gunicorn_worker_exits_total", (("reason", r),))] for r in REASONS}


def hook_lines(path: Path) -> list[list[str]]:
    """[[hook, pid, details...], ...] in the order written."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line.split() for line in text.splitlines()]


def hook_counts(path: Path) -> Counter[str]:
    return Counter(line[0] for line in hook_lines(path))


def run_to_exit(
    g: Gunicorn, timeout: float = 15, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run g's command line until gunicorn exits by itself: (exit code, stdout + stderr)."""
    proc = subprocess.run(
        g.args,
        cwd=g.cwd,
        env={**g.env, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        start_new_session=True,
    )
    return proc.returncode, proc.stdout.decode(errors="replace")


def test_user_hooks_all_run_and_metrics_stay_exact(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    lines = tmp_path / "hooks.log"
    g = gunicorn_factory(
        "testapp:app", *FAST, config=USER_CONFIG, workers=2, env={"USERHOOKS_LOG": str(lines)}
    ).start()
    first_workers = set(g.worker_pids())
    for i in range(3):
        assert g.request(f"/items/{i}") == (200, f"item {i}".encode())

    def served() -> Samples | None:
        m = g.metrics()
        return m if items_counted(m) == 3 and hook_counts(lines)["post_request"] == 3 else None

    m = g.wait_for(served, timeout=5, message="3 requests counted and seen by the user hook")
    assert m[("gunicorn_workers_desired", ())] == 2
    assert m[("gunicorn_worker_spawns_total", ())] == 2

    # TTOU: one worker leaves gracefully. Our exit reason needs our worker_exit (the note) and
    # child_exit; the user's run too.
    g.signal(signal.SIGTTOU)

    def one_left() -> Samples | None:
        m = g.metrics()
        done = (
            m[("gunicorn_workers", ())] == 1
            and m[("gunicorn_workers_desired", ())] == 1
            and exits(m)["graceful"] == 1
            and hook_counts(lines)["child_exit"] == 1
        )
        return m if done else None

    m = g.wait_for(one_left, timeout=10, message="TTOU settled")
    assert exits(m) == {**dict.fromkeys(REASONS, 0.0), "graceful": 1.0}
    assert items_counted(m) == 3

    master = g.master_pid
    assert g.stop() == 0

    counts = hook_counts(lines)
    assert counts == Counter({
        "nworkers_changed": 2, "when_ready": 1, "pre_fork": 2, "post_fork": 2,
        "post_request": 3, "worker_exit": 2, "child_exit": 2, "on_exit": 1,
    }), hook_lines(lines)  # fmt: skip
    recorded = hook_lines(lines)
    for hook, pid, *_ in recorded:
        if hook in MASTER_HOOKS:
            assert int(pid) == master, (hook, pid)
        else:
            assert hook in WORKER_HOOKS
            assert int(pid) in first_workers, (hook, pid)
    assert [line[2:] for line in recorded if line[0] == "nworkers_changed"] == [
        ["2", "None"],
        ["1", "2"],
    ]
    assert sorted(line[2] for line in recorded if line[0] == "post_request") == [
        "/items/0",
        "/items/1",
        "/items/2",
    ]
    order = [line[0] for line in recorded]
    assert order[:2] == ["nworkers_changed", "when_ready"]
    assert order[-1] == "on_exit"
    exited = {int(line[2]) for line in recorded if line[0] == "child_exit"}
    assert exited == first_workers


def test_user_post_request_that_raises(gunicorn_factory: GunicornFactory, tmp_path: Path) -> None:
    lines = tmp_path / "hooks.log"
    env = {"USERHOOKS_LOG": str(lines), "USERHOOKS_RAISE": "post_request"}
    g = gunicorn_factory("testapp:app", *FAST, config=USER_CONFIG, workers=1, env=env).start()
    (worker,) = g.worker_pids()
    for i in range(3):
        # gunicorn runs post_request after the response went out: the client is unaffected.
        assert g.request(f"/items/{i}") == (200, f"item {i}".encode())

    def counted() -> Samples | None:
        m = g.metrics()
        done = items_counted(m) == 3 and g.log_text().count("Exception in post_request hook") == 3
        return m if done else None

    m = g.wait_for(counted, timeout=5, message="3 requests counted, 3 hook exceptions logged")
    assert hook_counts(lines)["post_request"] == 3
    assert "userhooks: post_request failed on purpose" in g.log_text()
    # gunicorn logs and carries on: same worker, nothing exited, nothing of ours faulted.
    assert g.worker_pids() == [worker]
    assert m[("gunicorn_worker_spawns_total", ())] == 1
    assert exits(m) == dict.fromkeys(REASONS, 0.0)
    assert m.get(("http_server_active_requests", (("http_request_method", "GET"),))) == 0
    assert not [k for k, v in m.items() if k[0] == "gunicorn_prom_ext_faults_total" and v]


def test_user_when_ready_that_raises_stops_the_master_as_without_us(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    results: dict[str, tuple[int, str]] = {}
    for variant in ("bare", "installed"):
        lines = tmp_path / f"hooks-{variant}.log"
        env = {"USERHOOKS_LOG": str(lines), "USERHOOKS_RAISE": "when_ready"}
        if variant == "bare":
            env["USERHOOKS_BARE"] = "1"
        g = gunicorn_factory("testapp:app", *FAST, config=USER_CONFIG, env=env)
        results[variant] = run_to_exit(g)
        assert hook_counts(lines) == Counter({"nworkers_changed": 1, "when_ready": 1}), variant

    bare_code, bare_out = results["bare"]
    code, out = results["installed"]
    assert bare_code != 0, bare_out
    assert code == bare_code, out
    for output in (bare_out, out):
        assert "userhooks: when_ready failed on purpose" in output
        assert "Booting worker" not in output
    assert "hook failed" not in out, out  # none of our own hooks had a problem


def test_user_when_ready_that_raises_leaves_no_private_directory(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    # The master dies without on_exit; the directory it created for itself must still go.
    tmp_dir = tmp_path / "tmpdir"
    tmp_dir.mkdir()
    env = {"USERHOOKS_LOG": str(tmp_path / "hooks.log"), "USERHOOKS_RAISE": "when_ready"}
    g = gunicorn_factory("testapp:app", *FAST, config=USER_CONFIG, env=env)
    del g.env["PROMETHEUS_MULTIPROC_DIR"]
    code, out = run_to_exit(g, env={"TMPDIR": str(tmp_dir)})
    assert code == 1, out
    assert f"metrics directory {tmp_dir}/gunicorn-prom-ext-" in out, out
    assert sorted(p.name for p in tmp_dir.iterdir()) == [], out


def test_a_worker_reaped_behind_gunicorns_back_still_counts_as_an_exit(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    """gunicorn drops such a worker through worker_exit in the master, not child_exit."""
    log, trigger = tmp_path / "reaper.log", tmp_path / "reap"
    g = gunicorn_factory(
        "testapp:app", *FAST, "--timeout", "1",
        config=str(APPS_DIR / "reaper_conf.py"), workers=2,
        env={"REAPER_LOG": str(log), "REAPER_TRIGGER": str(tmp_path / "reap")},
    ).start()  # fmt: skip
    reaped = 0
    for _attempt in range(5):  # gunicorn's own reaping can win the race; then try again
        victim = g.worker_pids()[0]
        trigger.write_text(str(victim))
        heard = f" {victim}\n"
        g.wait_for(lambda: log.exists() and heard in log.read_text(), timeout=10)  # noqa: B023
        if f"reaped {victim}" in log.read_text():
            reaped += 1
            break
        g.wait_for(lambda: len(g.worker_pids()) == 2, timeout=10)
    assert reaped == 1, log.read_text()
    spawned = 3 + _attempt  # two at start, a replacement for each worker gone

    def replaced() -> Samples | None:
        # gunicorn notices at its next signal to the worker (its timeout check), forgets
        # it and starts a replacement.
        m = g.metrics()
        return m if m[("gunicorn_worker_spawns_total", ())] == spawned else None

    g.wait_for(replaced, timeout=10, message="a replacement for the reaped worker")
    m = g.metrics()
    assert m[("gunicorn_workers", ())] == 2.0
    # SIGKILLed, each of them: `killed`, although gunicorn found it by its timeout check.
    assert exits(m) == {**dict.fromkeys(REASONS, 0.0), "killed": spawned - 2}
