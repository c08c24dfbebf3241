"""Fixtures for the end-to-end tests; the machinery itself lives in harness.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import APPS_DIR, Gunicorn, GunicornFactory


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
