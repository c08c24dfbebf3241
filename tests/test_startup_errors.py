"""Bad configurations stop real gunicorn before it serves, with one clear message.

The settings load in the master's first hook (inside gunicorn's Arbiter constructor, before
binding). A ConfigError is a RuntimeError, which gunicorn prints as one "Error: ..." block and
exits 1. The app port must never accept a connection, and a failed start leaves nothing
behind in the temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import config_cases
import pytest
from harness import APPS_DIR, Gunicorn, GunicornFactory, Samples

pytestmark = pytest.mark.slow

FAST = ("--graceful-timeout", "2")
IMPORT_PROMETHEUS_CONFIG = str(APPS_DIR / "userhooks_import_prometheus_conf.py")
ONE_PROBLEM = "invalid gunicorn-prom-ext configuration (1 problem):"


def fail_to_start(g: Gunicorn, tmp_dir: Path, timeout: float = 15) -> str:
    """Run g until it exits by itself, probing its app port all along; its output.

    Asserts it exited 1 within `timeout` and the app port never accepted a connection.
    `tmp_dir` becomes the server's TMPDIR (see assert_nothing_left).
    """
    tmp_dir.mkdir()
    env = {**g.env, "TMPDIR": str(tmp_dir)}
    accepted: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            try:
                with socket.create_connection(("127.0.0.1", g.app_port), timeout=0.2):
                    accepted.append(time.monotonic())
            except OSError:
                pass
            done.wait(0.01)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    started = time.monotonic()
    proc = subprocess.Popen(
        g.args,
        cwd=g.cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # It started serving (or hangs): end it and any worker it forked, then fail.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"still running after {timeout} s\n{out.decode(errors='replace')}")
    finally:
        done.set()
        prober.join(5)
    output = out.decode(errors="replace")
    assert proc.returncode == 1, f"exit code {proc.returncode}\n{output}"
    assert time.monotonic() - started < timeout
    assert accepted == [], f"the app port accepted a connection\n{output}"
    assert "Listening at" not in output and "Booting worker" not in output, output
    return output


def assert_nothing_left(tmp_dir: Path, output: str) -> None:
    """A failed start leaves no directory of its own (a private metrics directory) behind."""
    assert sorted(p.name for p in tmp_dir.iterdir()) == [], f"left behind in TMPDIR\n{output}"


def assert_one_error(output: str, *fragments: str) -> None:
    """One "Error:" block, one problem, no traceback, and each fragment in that problem."""
    assert output.count("Error:") == 1, output
    assert "Traceback" not in output, output
    error = output[output.index("Error:") :]
    assert ONE_PROBLEM in error, output
    problem_lines = [line for line in error.splitlines() if line.strip().startswith("- ")]
    assert len(problem_lines) == 1, output
    for fragment in fragments:
        assert fragment in problem_lines[0], f"{fragment!r} not in {problem_lines[0]!r}"


def _port(value: str) -> Callable[[Path], tuple[dict[str, str], list[str]]]:
    def make(tmp: Path) -> tuple[dict[str, str], list[str]]:
        return {"PROMETHEUS_METRICS_PORT": value}, ["PROMETHEUS_METRICS_PORT (environment)", value]

    return make


def _yaml(text: str, *fragments: str) -> Callable[[Path], tuple[dict[str, str], list[str]]]:
    def make(tmp: Path) -> tuple[dict[str, str], list[str]]:
        path = tmp / "prom-ext.yml"
        path.write_text(text)
        return {"GUNICORN_PROM_EXT_CONFIG": str(path)}, [f"(file {path})", *fragments]

    return make


def _ssl_without_cert(tmp: Path) -> tuple[dict[str, str], list[str]]:
    key = tmp / "key.pem"
    key.write_text("present, so the certificate is the only problem\n")
    cert = tmp / "missing-cert.pem"
    env = {
        "PROMETHEUS_SSL_ENABLED": "true",
        "PROMETHEUS_SSL_CERTFILE": str(cert),
        "PROMETHEUS_SSL_KEYFILE": str(key),
    }
    return env, ["PROMETHEUS_SSL_CERTFILE (environment)", str(cert)]


CASES: dict[str, Callable[[Path], tuple[dict[str, str], list[str]]]] = {
    "port-out-of-range": _port("70000"),
    "port-not-a-number": _port("abc"),
    "yaml-unknown-key": _yaml(
        "exporter:\n  prometheus:\n    metrics_prot: 9100\n",
        "metrics_prot",
        "did you mean metrics_port?",
    ),
    "yaml-malformed": _yaml("exporter:\n  prometheus: [9100, \n", "valid YAML"),
    "ssl-missing-cert": _ssl_without_cert,
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_setting_stops_gunicorn_before_serving(
    case: str, gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    env, fragments = CASES[case](tmp_path)
    g = gunicorn_factory("testapp:app", *FAST)
    g.env.update(env)  # after construction: the harness itself parses PROMETHEUS_METRICS_PORT
    output = fail_to_start(g, tmp_path / "tmpdir")
    assert_one_error(output, *fragments)
    assert_nothing_left(tmp_path / "tmpdir", output)


def test_prometheus_client_imported_by_config_without_directory(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    g = gunicorn_factory("testapp:app", *FAST, config=IMPORT_PROMETHEUS_CONFIG)
    del g.env["PROMETHEUS_MULTIPROC_DIR"]
    output = fail_to_start(g, tmp_path / "tmpdir")
    assert_one_error(
        output,
        "PROMETHEUS_MULTIPROC_DIR (environment)",
        "export PROMETHEUS_MULTIPROC_DIR=",  # the fix
    )
    # The master created a private directory before it found the problem: it must not stay.
    assert_nothing_left(tmp_path / "tmpdir", output)


def test_prometheus_client_imported_by_config_with_directory(
    gunicorn_factory: GunicornFactory,
) -> None:
    # The harness exports PROMETHEUS_MULTIPROC_DIR: the same config is fine then.
    g = gunicorn_factory("testapp:app", *FAST, config=IMPORT_PROMETHEUS_CONFIG, workers=1)
    g.start()
    for i in range(4):
        assert g.request(f"/items/{i}")[0] == 200
    key = ("http_server_request_duration_seconds_count", (
        ("http_request_method", "GET"),
        ("http_response_status_code", "200"),
        ("http_route", "/items/<n>"),
    ))  # fmt: skip

    def counted() -> Samples | None:
        m = g.metrics()
        return m if m.get(key) == 4 else None

    m = g.wait_for(counted, timeout=5, message="4 requests counted")
    assert m[("gunicorn_workers", ())] == 1
    assert "Error" not in g.log_text()
    assert g.stop() == 0


# --- check-config and the server agree on every bad case ---------------------------------------

# A bound on each subprocess, not a benchmark: a hostile file used to cost 44 s and 5.5 GB
# (nested aliases), or hang start-up forever (a FIFO).
SUBPROCESS_BOUND = 8.0


def problem_lines(text: str) -> list[str]:
    """The "- ..." lines of the one ConfigError in a command's output."""
    return [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("- ")]


@pytest.mark.parametrize("name", list(config_cases.CASES))
def test_check_config_and_gunicorn_refuse_alike(
    name: str, gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    g = gunicorn_factory("testapp:app", *FAST)
    case = config_cases.CASES[name](tmp_path / "case", g.app_port)
    g.env.update(case.env)

    started = time.monotonic()
    checked = subprocess.run(
        [sys.executable, "-m", "gunicorn_prom_ext.cli", "check-config",
         "--bind", f"127.0.0.1:{g.app_port}"],
        env=g.env, cwd=g.cwd, capture_output=True, text=True, timeout=SUBPROCESS_BOUND,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert time.monotonic() - started < SUBPROCESS_BOUND
    assert (checked.returncode, checked.stdout) == (1, ""), checked.stderr
    assert "Traceback" not in checked.stderr, checked.stderr

    output = fail_to_start(g, tmp_path / "tmpdir", timeout=SUBPROCESS_BOUND)
    assert output.count("Error:") == 1 and "Traceback" not in output, output
    served = problem_lines(output[output.index("Error:") :])
    # The same checks, so the very same problems, word for word.
    assert served == problem_lines(checked.stderr), output
    assert len(served) == len(case.problems), served
    for line, expected in zip(served, case.problems, strict=True):
        assert line.startswith(expected), f"{line!r}\ndoes not start with\n{expected!r}"
    assert_nothing_left(tmp_path / "tmpdir", output)
