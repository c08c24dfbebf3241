"""scripts/matrix_rows.py against what it must cover, the smoke cases and the README table."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from harness import REPO_ROOT
from smoke_cases import BY_ID, CASES, release_of
from test_readme_tables import README, between_markers

PYPROJECT = REPO_ROOT / "pyproject.toml"
GUNICORN_SERIES = ((22, 0), (23, 0), (24, 1), (25, None), (26, None), (27, None))
PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def _load(name: str) -> ModuleType:
    path = REPO_ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows() -> ModuleType:
    return _load("matrix_rows")


def _declared_floor(package: str) -> str:
    text = PYPROJECT.read_text(encoding="utf-8")
    found = re.search(rf'"{re.escape(package)}>=([\d.]+)', text, re.IGNORECASE)
    assert found, f"pyproject.toml declares no lower bound for {package}"
    return found.group(1)


def test_readme_table_is_the_matrix(rows: ModuleType) -> None:
    # On failure, paste `python scripts/matrix.py --table` between the markers.
    table = between_markers(README.read_text(encoding="utf-8"), "tested-combinations")
    assert table == rows.render_table()


def test_rows_run_known_cases_on_gunicorns_that_have_them(rows: ModuleType) -> None:
    assert len({row.name for row in rows.ROWS}) == len(rows.ROWS)
    for row in rows.ROWS:
        release = release_of(row.gunicorn)
        for case_id in row.cases:
            assert case_id in BY_ID, f"{row.name}: unknown smoke case {case_id!r}"
            assert BY_ID[case_id].exists_in(release), f"{row.name}: {case_id} on {row.gunicorn}"
            # Every module the case needs is installed by the row.
            needed = {m.replace("_", "-") for m in BY_ID[case_id].modules}
            assert needed <= set(rows.WORKER_PACKAGES.get(case_id, ())), (row.name, case_id)
        if row.cases:
            assert rows.SMOKE_FILE in row.pytest_paths or "tests" in row.pytest_paths, row.name


def test_every_release_series_and_python_is_covered(rows: ModuleType) -> None:
    releases = {release_of(row.gunicorn) for row in rows.ROWS}
    for major, minor in GUNICORN_SERIES:
        assert any(r[0] == major and (minor is None or r[1] == minor) for r in releases), (
            f"no row runs gunicorn {major}.{minor if minor is not None else 'x'}"
        )
    smoke_pythons = {row.python for row in rows.ROWS if {"sync", "gthread"} <= set(row.cases)}
    assert smoke_pythons == set(PYTHONS)
    # PYTHONS starts at the declared floor.
    declared = re.search(r'requires-python = ">=([\d.]+)"', PYPROJECT.read_text("utf-8"))
    assert declared and declared.group(1) == PYTHONS[0]


def test_oldest_and_newest_of_each_worker_class_are_run(rows: ModuleType) -> None:
    newest = max(release_of(row.gunicorn) for row in rows.ROWS)
    oldest_row = min(rows.ROWS, key=lambda r: release_of(r.gunicorn))
    assert f"{oldest_row.gunicorn.rsplit('.', 1)[0]}" == _declared_floor("gunicorn")
    for case in CASES:
        having = [release_of(r.gunicorn) for r in rows.ROWS if case.id in r.cases]
        tested = sorted({release_of(g) for g in (r.gunicorn for r in rows.ROWS)})
        existing = [r for r in tested if case.exists_in(r)]
        assert having, f"no row runs {case.id}"
        assert min(having) == existing[0], f"{case.id}: oldest release that has it not run"
        assert max(having) == existing[-1], f"{case.id}: newest release that has it not run"
        if case.removed_in is None:
            assert max(having) == newest, case.id


def test_oldest_and_newest_dependencies_declared_are_run(rows: ModuleType) -> None:
    pins = {pin for row in rows.ROWS for pin in row.pins}
    floor = _declared_floor("prometheus_client")
    assert f"prometheus_client=={floor}.0" in pins
    assert f"Django=={_declared_floor('Django')}.*" in pins
    assert f"Flask=={_declared_floor('Flask')}.*" in pins
    full = [row for row in rows.ROWS if row.pytest_paths == ("tests",)]
    assert len(full) == 1 and full[0].extras == "test", "one row runs the full suite"


def test_a_missing_python_is_one_clear_error(
    rows: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix = _load("matrix")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pyenv there
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(matrix.RowError) as caught:
        matrix.find_python("3.12")
    message = str(caught.value)
    assert message.startswith("Python 3.12 not found")
    assert f"{tmp_path}/.pyenv/versions/3.12.*/bin/python3.12" in message
    assert "pyenv install 3.12" in message
    # A pyenv build of that version is found, the newest patch level first.
    for patch in ("3.12.1", "3.12.10", "3.12-dev"):
        binary = tmp_path / ".pyenv" / "versions" / patch / "bin" / "python3.12"
        binary.parent.mkdir(parents=True)
        binary.write_text("")
    assert matrix.find_python("3.12") == str(
        tmp_path / ".pyenv" / "versions" / "3.12.10" / "bin" / "python3.12"
    )


def test_unknown_rows_are_refused_by_name(rows: ModuleType) -> None:
    matrix = _load("matrix")
    assert [r.name for r in matrix.select(["gunicorn-2*"])] == [
        r.name for r in rows.ROWS if r.name.startswith("gunicorn-2")
    ]
    with pytest.raises(SystemExit, match=r"no row matches \['nope'\]; rows: newest, "):
        matrix.select(["nope"])
