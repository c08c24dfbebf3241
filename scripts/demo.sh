#!/usr/bin/env bash
# Runs the example WSGI app under gunicorn with the project's hooks, in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh

APP_PORT="${APP_PORT:-8000}"
export PROMETHEUS_METRICS_PORT="${PROMETHEUS_METRICS_PORT:-9091}"
# Local demo: keep the metrics endpoint on loopback unless the caller asks otherwise.
export PROMETHEUS_BIND_ADDRESS="${PROMETHEUS_BIND_ADDRESS:-127.0.0.1}"

echo "App:     http://127.0.0.1:${APP_PORT}/"
echo "Metrics: http://127.0.0.1:${PROMETHEUS_METRICS_PORT}/metrics"
echo "(Ctrl-C to stop)"

exec .venv/bin/gunicorn -c python:gunicorn_prom_ext.gunicorn_conf \
    --chdir example_projects/hello_wsgi \
    --bind "127.0.0.1:${APP_PORT}" --workers 2 \
    app:app
