"""The test matrix: which environments scripts/matrix.py builds and what each one runs.

This is the one source of truth for the README's "Tested combinations" table
(``render_table``; tests/test_matrix_definition.py checks the README against it and each
row against tests/smoke_cases.py). Standard library only: scripts/matrix.py imports it
before any environment exists.
"""

from __future__ import annotations

from dataclasses import dataclass

# The smoke set's worker classes (ids of tests/smoke_cases.py) and the packages they need.
SMOKE_FILE = "tests/test_smoke.py"
WORKER_PACKAGES = {
    "gevent": ("gevent",),
    "gevent-early": ("gevent",),
    "gevent-pywsgi": ("gevent",),
    "tornado": ("tornado",),
    "eventlet": ("eventlet",),
    "uvicorn": ("uvicorn",),
    "uvicorn-worker": ("uvicorn-worker",),
}
SMOKE_BASE = ("pytest>=8",)
FRAMEWORK_TESTS = ("tests/test_django_unit.py", "tests/test_django_e2e.py",
                   "tests/test_django_routes.py", "tests/test_django_routes_e2e.py",
                   "tests/test_django_asgi.py",
                   "tests/test_flask_ext.py", "tests/test_flask_e2e.py")  # fmt: skip

# The core's end-to-end tests, run again on the oldest gunicorn (as before the matrix).
CORE_E2E = ("tests/test_request_metrics.py", "tests/test_lifecycle.py", "tests/test_chaos.py",
            "tests/test_user_hooks.py", "tests/test_startup_errors.py",
            "tests/test_endpoint_e2e.py", "tests/test_launcher.py",
            "tests/test_relay.py")  # fmt: skip
# Worker classes at their edges (tests/test_worker_classes.py): the tests that need nothing
# but gunicorn and eventlet, for the rows that install no other worker package.
WORKER_EDGES = "tests/test_worker_classes.py"
EVENTLET_EDGES = (f"{WORKER_EDGES}::test_metrics_over_tls_from_an_eventlet_master",
                  f"{WORKER_EDGES}::test_scrapes_and_worker_exits_at_once_in_an_eventlet_master",
                  f"{WORKER_EDGES}::test_capacity_of_a_projects_worker_subclass",
                  f"{WORKER_EDGES}::test_gunicorns_asgi_worker_records_a_partial")  # fmt: skip
ALL_NEWEST = ("sync", "gthread", "gevent", "gevent-early", "gevent-pywsgi", "tornado", "asgi",
              "asgi-accesslog", "uvicorn", "uvicorn-worker")  # fmt: skip
ALL_OLDEST = ("sync", "gthread", "gevent", "gevent-early", "gevent-pywsgi", "tornado",
              "eventlet", "uvicorn", "uvicorn-worker")  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One environment (its own virtualenv under .matrix/) and the tests it runs."""

    name: str
    python: str  # "3.12": found under ~/.pyenv/versions/3.12.*, else python3.12 on PATH
    gunicorn: str  # an exact release
    why: str  # what this row shows, for the table and the result line
    cases: tuple[str, ...] = ()  # smoke cases run (GPE_SMOKE_CASES)
    tests: tuple[str, ...] = ()  # pytest paths; defaults to the smoke file
    extras: str = ""  # the package's extras to install ("test" for the full suite)
    pins: tuple[str, ...] = ()  # other requirements, e.g. "prometheus_client==0.20.0"

    @property
    def pytest_paths(self) -> tuple[str, ...]:
        return self.tests or (SMOKE_FILE,)

    def requirements(self) -> list[str]:
        """What uv installs besides the package itself (editable, with ``extras``)."""
        reqs = [f"gunicorn=={self.gunicorn}", *self.pins]
        if not self.extras:
            reqs += SMOKE_BASE
        for case in self.cases:
            for package in WORKER_PACKAGES.get(case, ()):
                if package not in reqs:
                    reqs.append(package)
        return reqs

    def pinned(self, package: str) -> str | None:
        prefix = package.lower() + "=="
        for pin in self.pins:
            if pin.lower().startswith(prefix):
                return pin.split("==", 1)[1]
        return None


ROWS: tuple[Row, ...] = (
    Row(
        name="newest",
        python="3.11",
        gunicorn="27.0.1",
        why="the full suite on the newest releases",
        cases=ALL_NEWEST,
        tests=("tests",),
        extras="test",
        pins=("prometheus_client==0.26.0", "Django==5.2.*", "Flask==3.1.*"),
    ),
    Row(
        name="frameworks-oldest",
        python="3.12",
        gunicorn="27.0.1",
        why="the Django and Flask adapters' tests on the oldest Django and Flask",
        tests=FRAMEWORK_TESTS,
        pins=("Django==4.2.*", "Flask==2.3.*", "pytest-django>=4.5", "trustme>=1.1",
              "uvicorn-worker>=0.2",
              "djangorestframework==3.15.*"),
    ),
    Row(
        name="gunicorn-22.0",
        python="3.10",
        gunicorn="22.0.0",
        why="the oldest gunicorn, Python and prometheus_client together; the core's "
        "end-to-end tests too",
        cases=ALL_OLDEST,
        tests=(SMOKE_FILE, *CORE_E2E, WORKER_EDGES),
        pins=("prometheus_client==0.20.0", "pytest>=8", "trustme>=1.1"),
    ),
    Row(
        name="gunicorn-23.0",
        python="3.12",
        gunicorn="23.0.0",
        why="gunicorn 23.0",
        cases=("sync", "gthread", "eventlet"),
    ),
    Row(
        name="gunicorn-24.1",
        python="3.12",
        gunicorn="24.1.1",
        why="the oldest gunicorn with an asgi worker",
        cases=("sync", "gthread", "eventlet", "asgi", "asgi-accesslog"),
        tests=(SMOKE_FILE, *EVENTLET_EDGES),
        pins=("trustme>=1.1",),
    ),
    Row(
        name="gunicorn-25.3",
        python="3.13",
        gunicorn="25.3.0",
        why="the newest gunicorn with eventlet",
        cases=("sync", "gthread", "eventlet"),
        tests=(SMOKE_FILE, *EVENTLET_EDGES),
        pins=("trustme>=1.1",),
    ),
    Row(
        name="gunicorn-26.2",
        python="3.12",
        gunicorn="26.2.0",
        why="gunicorn 26",
        cases=("sync", "gthread"),
    ),
    Row(
        name="newest-py3.13",
        python="3.13",
        gunicorn="27.0.1",
        why="every worker class on the newest Python",
        cases=ALL_NEWEST,
        pins=("prometheus_client==0.26.0",),
    ),
)
BY_NAME = {row.name: row for row in ROWS}


def render_table(rows: tuple[Row, ...] = ROWS) -> str:
    """The README's "Tested combinations" table (between its tested-combinations markers)."""
    lines = [
        "| row | Python | gunicorn | prometheus_client | Django, Flask | worker classes "
        "(smoke set) | what it shows |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        frameworks = ", ".join(
            v.rstrip(".*") for v in (row.pinned("Django"), row.pinned("Flask")) if v
        )
        if frameworks and row.tests and any("django" in t for t in row.tests):
            frameworks += " (adapters' tests)"
        elif row.tests == ("tests",):
            frameworks += " (full suite)"
        lines.append(
            f"| `{row.name}` | {row.python} | {row.gunicorn} | "
            f"{row.pinned('prometheus_client') or 'newest'} | {frameworks or '—'} | "
            f"{', '.join(row.cases) or '—'} | {row.why} |"
        )
    return "\n".join(lines) + "\n"
