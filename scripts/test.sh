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
