"""Fixtures for the end-to-end tests; the machinery itself lives in harness.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import APPS_DIR, Gunicorn, GunicornFactory


@pytest.hookimpl(tryfirst=True)
def pytest_collectreport(report: pytest.CollectReport) -> None:
    """In CI a test file skipped because a module it needs is missing fails instead: the
    row that runs it must install it (pytest.importorskip at the top of a file)."""
    if os.environ.get("CI") == "true" and report.skipped:
        report.outcome = "failed"
        _MISSING_IN_CI.append(report.nodeid)


# Files the CI run could not collect for a missing module (see pytest_collectreport).
_MISSING_IN_CI: list[str] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _MISSING_IN_CI and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def gunicorn_factory(tmp_path: Path) -> Iterator[GunicornFactory]:
    """Build (not start) Gunicorn instances; every one is stopped at teardown.

    ``g = gunicorn_factory("testapp:app", "--threads", "2", workers=2).start()``
    Takes the same arguments as ``Gunicorn``; logs go under the test's tmp_path.
    """
    instances: list[Gunicorn] = []

    def make(app: str, *extra_args: str, **kwargs: object) -> Gunicorn:
        kwargs.setdefault("tmp_dir", tmp_path)
        g = Gunicorn(app, *extra_args, **kwargs)  # type: ignore[arg-type]
        instances.append(g)
        return g

    yield make
    for g in reversed(instances):
        g.stop()


@pytest.fixture
def gunicorn(gunicorn_factory: GunicornFactory) -> Gunicorn:
    """testapp with the project's hooks, one sync worker, started and ready."""
    return gunicorn_factory("testapp:app").start()


@pytest.fixture
def apps_dir() -> Path:
    return APPS_DIR
