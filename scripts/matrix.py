"""Run the test matrix: one virtualenv per row of scripts/matrix_rows.py, each row's tests.

    .venv/bin/python scripts/matrix.py              # every row
    .venv/bin/python scripts/matrix.py gunicorn-24.1 'gunicorn-2*'   # some rows (globs)
    .venv/bin/python scripts/matrix.py --list       # the rows and what they run
    .venv/bin/python scripts/matrix.py --table      # the README's tested-combinations table

Environments live in .matrix/<row>/venv (git-ignored), made with uv, and are reused while
their Python, requirements and pyproject.toml are unchanged (--rebuild forces it). Each row's
pytest output goes to the console and to .matrix/<row>/pytest.log. One result line per row
at the end; the exit status is 1 if any row failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from matrix_rows import BY_NAME, ROWS, Row, render_table

REPO = Path(__file__).resolve().parent.parent
MATRIX_DIR = REPO / ".matrix"
SMOKE_SELECTION_ENV = "GPE_SMOKE_CASES"
ROW_TIMEOUT = 20 * 60  # seconds; a hung row is stopped and fails
VERSIONS_SHOWN = ("gunicorn", "prometheus_client", "Django", "Flask", "gevent", "eventlet",
                  "uvicorn", "uvicorn-worker")  # fmt: skip


class RowError(Exception):
    """The row could not run (no such Python, an install that failed): its one-line reason."""


@dataclass
class RowResult:
    row: Row
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    error: str = ""  # set when the row could not run at all
    failures: list[tuple[str, str]] = field(default_factory=list)  # (test id, first line)
    versions: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.failed and self.passed > 0


# -- environments --------------------------------------------------------------------------------


def find_python(version: str) -> str:
    """An interpreter of this minor version: the newest ~/.pyenv one, else pythonX.Y on PATH."""
    home = os.path.expanduser("~/.pyenv/versions")
    candidates = []
    for path in glob.glob(os.path.join(home, f"{version}.*", "bin", f"python{version}")):
        patch = re.fullmatch(rf"{re.escape(version)}\.(\d+)", Path(path).parents[1].name)
        if patch:  # 3.12.1, not 3.12-dev nor 3.12.1t
            candidates.append((int(patch.group(1)), path))
    if candidates:
        return max(candidates)[1]
    on_path = shutil.which(f"python{version}")
    if on_path:
        return on_path
    raise RowError(
        f"Python {version} not found (looked for {home}/{version}.*/bin/python{version} and "
        f"python{version} on PATH); install it, e.g. `pyenv install {version}`"
    )


def find_uv() -> str:
    beside = Path(sys.executable).with_name("uv")
    if beside.exists():
        return str(beside)
    on_path = shutil.which("uv")
    if on_path:
        return on_path
    raise SystemExit(
        "matrix: uv not found next to this Python nor on PATH; run `bash scripts/bootstrap.sh` "
        "(it installs the test extras, uv among them) or `.venv/bin/pip install uv`"
    )


def stamp_of(row: Row, python: str) -> str:
    """What an environment was built from; a different stamp means rebuild."""
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    pyproject = (REPO / "pyproject.toml").read_bytes()
    content = json.dumps(
        {
            "python": [os.path.realpath(python), version],
            "extras": row.extras,
            "requirements": row.requirements(),
            "pyproject": hashlib.sha256(pyproject).hexdigest(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(content.encode()).hexdigest()


def ensure_environment(row: Row, uv: str, rebuild: bool) -> Path:
    """The row's virtualenv, built or reused; returns its python."""
    home = MATRIX_DIR / row.name
    venv = home / "venv"
    venv_python = venv / "bin" / "python"
    stamp_file = home / "stamp"
    python = find_python(row.python)
    stamp = stamp_of(row, python)
    if (
        not rebuild
        and venv_python.exists()
        and stamp_file.exists()
        and stamp_file.read_text() == stamp
    ):
        print(f"matrix: {row.name}: reusing {venv.relative_to(REPO)}", flush=True)
        return venv_python
    print(f"matrix: {row.name}: building {venv.relative_to(REPO)} with {python}", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    target = f".[{row.extras}]" if row.extras else "."
    steps = [
        [uv, "venv", "--quiet", "--python", python, str(venv)],
        [uv, "pip", "install", "--quiet", "--python", str(venv_python), "-e", target,
         *row.requirements()],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run(step, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            (home / "install.log").write_text(done.stdout + done.stderr)
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-15:]
            raise RowError(
                f"`{' '.join(step[:3])} …` failed (exit {done.returncode}):\n    "
                + "\n    ".join(last)
            )
    stamp_file.write_text(stamp)
    return venv_python


def installed_versions(venv_python: Path) -> str:
    code = (
        "import importlib.metadata as m, platform\n"
        f"names = {list(VERSIONS_SHOWN)!r}\n"
        "out = ['python ' + platform.python_version()]\n"
        "for n in names:\n"
        "    try: out.append(n + ' ' + m.version(n))\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(', '.join(out))\n"
    )
    done = subprocess.run([str(venv_python), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()[-200:]


# -- running -------------------------------------------------------------------------------------


def run_pytest(row: Row, venv_python: Path, result: RowResult) -> None:
    home = MATRIX_DIR / row.name
    junit = home / "junit.xml"
    junit.unlink(missing_ok=True)
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env[SMOKE_SELECTION_ENV] = ",".join(row.cases)
    command = [str(venv_python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs",
               "--tb=short", f"--junitxml={junit}", *row.pytest_paths]  # fmt: skip
    print(f"matrix: {row.name}: {' '.join(command[1:])}  [{SMOKE_SELECTION_ENV}="
          f"{env[SMOKE_SELECTION_ENV]}]", flush=True)  # fmt: skip
    with open(home / "pytest.log", "wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        assert proc.stdout is not None
        deadline = time.monotonic() + ROW_TIMEOUT
        for line in proc.stdout:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            log.write(line)
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                result.error = f"stopped after {ROW_TIMEOUT // 60} minutes"
                break
        code = proc.wait()
    read_junit(junit, result)
    if not result.error and code not in (0, 1):
        result.error = f"pytest exited {code}" + (" (no tests collected)" if code == 5 else "")


def read_junit(path: Path, result: RowResult) -> None:
    if not path.exists():
        return
    for case in ET.parse(path).getroot().iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            result.failed += 1
            first = (problem.get("message") or problem.text or "").strip().splitlines()
            result.failures.append((case.get("name", "?"), first[0][:300] if first else ""))
        elif case.find("skipped") is not None:
            result.skipped += 1
        else:
            result.passed += 1


def run_row(row: Row, uv: str, rebuild: bool) -> RowResult:
    result = RowResult(row)
    started = time.monotonic()
    try:
        venv_python = ensure_environment(row, uv, rebuild)
        result.versions = installed_versions(venv_python)
        run_pytest(row, venv_python, result)
    except RowError as exc:
        result.error = str(exc)
    result.seconds = time.monotonic() - started
    return result


def result_line(result: RowResult) -> str:
    verdict = "PASS" if result.ok else "FAIL"
    counts = f"{result.passed} passed, {result.failed} failed, {result.skipped} skipped"
    line = f"{verdict}  {result.row.name:<18} {counts:<34} {result.seconds:5.0f} s  "
    line += result.versions or f"python {result.row.python}, gunicorn {result.row.gunicorn}"
    if result.error:
        line += f"\n      error: {result.error}"
    for test, message in result.failures:
        line += f"\n      {test}: {message}"
    return line


def select(patterns: list[str]) -> list[Row]:
    if not patterns:
        return list(ROWS)
    chosen = [row for row in ROWS if any(fnmatch.fnmatchcase(row.name, p) for p in patterns)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in BY_NAME)]
    if unmatched:
        raise SystemExit(f"matrix: no row matches {unmatched}; rows: {', '.join(BY_NAME)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("rows", nargs="*", help="row names or globs (default: every row)")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--table", action="store_true", help="print the README table and exit")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the environments")
    args = parser.parse_args(argv)
    rows = select(args.rows)
    if args.table:
        print(render_table(), end="")
        return 0
    if args.list:
        for row in rows:
            print(f"{row.name:<18} python {row.python}, {' '.join(row.requirements())}; "
                  f"{' '.join(row.pytest_paths)}; cases: {','.join(row.cases) or '-'}")  # fmt: skip
        return 0
    uv = find_uv()
    started = time.monotonic()
    results = []
    for row in rows:
        print(f"\n===== matrix row {row.name}: {row.why}", flush=True)
        results.append(run_row(row, uv, args.rebuild))
    elapsed = time.monotonic() - started
    print(f"\n===== matrix: {len(results)} rows in {elapsed:.0f} s")
    for result in results:
        print(result_line(result))
    passed = sum(r.passed for r in results)
    failed = sum(r.failed + (1 if r.error else 0) for r in results)
    skipped = sum(r.skipped for r in results)
    print(f"matrix: {passed} passed, {failed} failed, {skipped} skipped")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
