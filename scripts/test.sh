#!/usr/bin/env bash
# Every check and test. Any failure (including pytest collecting nothing, exit 5) fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict"
.venv/bin/mypy --strict
echo "== pytest"
.venv/bin/pytest -p no:cacheprovider "$@"

# The oldest releases we claim, in a second virtualenv: gunicorn 23.0 (before signals
# were queued and control sockets existed), Django 4.2 LTS and Flask 2.3. The adapters'
# tests and the core's end-to-end tests run again there.
echo "== pytest (gunicorn 23.0, Django 4.2, Flask 2.3)"
if ! .venv-compat/bin/python -m pip --version >/dev/null 2>&1; then
    "${PYTHON:-python3}" -m venv .venv-compat
fi
compat_log=$(mktemp)
if ! .venv-compat/bin/python -m pip install --quiet --disable-pip-version-check \
        -e . 'gunicorn==23.0.0' 'Django>=4.2,<5.0' 'Flask>=2.3,<2.4' \
        pytest pytest-django trustme djangorestframework >"$compat_log" 2>&1; then
    cat "$compat_log" >&2
    exit 1
fi
rm -f "$compat_log"
.venv-compat/bin/pytest -p no:cacheprovider tests/test_django*.py tests/test_flask*.py \
    tests/test_request_metrics.py tests/test_lifecycle.py tests/test_chaos.py \
    tests/test_user_hooks.py tests/test_startup_errors.py tests/test_endpoint_e2e.py \
    tests/test_launcher.py tests/test_relay.py
