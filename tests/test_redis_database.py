"""A database number Redis does not have: its answer to the start-up PING ("DB index is
out of range") is a configuration error, for check-config and a real gunicorn alike.

Apart from test_startup_errors.py because it needs redis-py, which the compatibility
stage (scripts/test.sh) does not install.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from harness import GunicornFactory, require_tool
from redis_harness import RedisServer
from test_startup_errors import (
    FAST,
    SUBPROCESS_BOUND,
    assert_nothing_left,
    assert_one_error,
    fail_to_start,
    problem_lines,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("in_url", [False, True], ids=["REDIS_DB", "REDIS_URL"])
def test_a_database_redis_does_not_have_is_refused_alike(
    in_url: bool, gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    server = RedisServer(require_tool("redis-server"), tmp_path).start()  # 16 databases
    try:
        g = gunicorn_factory("testapp:app", *FAST)
        target = f"redis://127.0.0.1:{server.port}"
        if in_url:
            g.env.update(REDIS_ENABLED="true", REDIS_URL=f"{target}/16")
            key = "REDIS_URL"
        else:
            g.env.update(REDIS_ENABLED="true", REDIS_HOST="127.0.0.1",
                         REDIS_PORT=str(server.port), REDIS_DB="16")  # fmt: skip
            key = "REDIS_DB"
        expected = (f"{key} (environment): expected a database number {target} has, "
                    "got 16 (DB index is out of range)")  # fmt: skip
        checked = subprocess.run(
            [sys.executable, "-m", "gunicorn_prom_ext.cli", "check-config",
             "--bind", f"127.0.0.1:{g.app_port}"],
            env=g.env, capture_output=True, text=True, timeout=SUBPROCESS_BOUND,
        )  # fmt: skip
        assert (checked.returncode, problem_lines(checked.stderr)) == (1, [expected])
        output = fail_to_start(g, tmp_path / "tmpdir")
        assert_one_error(output, expected)
        assert_nothing_left(tmp_path / "tmpdir", output)
    finally:
        server.stop()
