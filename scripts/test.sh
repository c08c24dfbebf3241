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

# The framework adapters also support the oldest framework releases we claim (Django 4.2
# LTS, Flask 2.3): run their tests again in a second virtualenv with those.
echo "== pytest (Django 4.2, Flask 2.3)"
if ! .venv-compat/bin/python -m pip --version >/dev/null 2>&1; then
    "${PYTHON:-python3}" -m venv .venv-compat
fi
compat_log=$(mktemp)
if ! .venv-compat/bin/python -m pip install --quiet --disable-pip-version-check \
        -e . 'Django>=4.2,<5.0' 'Flask>=2.3,<2.4' pytest pytest-django >"$compat_log" 2>&1; then
    cat "$compat_log" >&2
    exit 1
fi
rm -f "$compat_log"
.venv-compat/bin/pytest -p no:cacheprovider tests/test_django*.py tests/test_flask*.py
