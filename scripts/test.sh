#!/usr/bin/env bash
# Every check and test: ruff, mypy --strict, then the test matrix (scripts/matrix_rows.py):
# the full suite on the newest releases, and the smoke set of every worker class on each
# gunicorn from 22.0, each Python from 3.10 and the oldest prometheus_client, Django and
# Flask, each row in its own virtualenv under .matrix/ (made with uv, reused while its
# requirements are unchanged). Arguments pick rows: `bash scripts/test.sh gunicorn-24.1`.
# Any failure (a row whose pytest collected nothing included) fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict"
.venv/bin/mypy --strict
echo "== test matrix"
.venv/bin/python scripts/matrix.py "$@"
