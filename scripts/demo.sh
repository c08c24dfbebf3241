#!/usr/bin/env bash
# Runs an example app under gunicorn with the project's hooks, in the foreground.
#   bash scripts/demo.sh           the plain WSGI app (gunicorn -c python:gunicorn_prom_ext.gunicorn_conf)
#   bash scripts/demo.sh django    example_projects/django_site with manage.py rungunicorn
#   bash scripts/demo.sh flask     example_projects/flask_app with flask run-gunicorn
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh

APP_PORT="${APP_PORT:-8000}"
export PROMETHEUS_METRICS_PORT="${PROMETHEUS_METRICS_PORT:-9091}"
# Local demo: keep the metrics endpoint on loopback unless the caller asks otherwise.
export PROMETHEUS_BIND_ADDRESS="${PROMETHEUS_BIND_ADDRESS:-127.0.0.1}"
venv="$PWD/.venv"

echo "App:     http://127.0.0.1:${APP_PORT}/"
echo "Metrics: http://127.0.0.1:${PROMETHEUS_METRICS_PORT}/metrics"
echo "(Ctrl-C to stop)"

case "${1:-wsgi}" in
wsgi)
    exec "$venv/bin/gunicorn" -c python:gunicorn_prom_ext.gunicorn_conf \
        --chdir example_projects/hello_wsgi \
        --bind "127.0.0.1:${APP_PORT}" --workers 2 \
        app:app
    ;;
django)
    cd example_projects/django_site
    "$venv/bin/python" manage.py migrate --verbosity 0
    exec "$venv/bin/python" manage.py rungunicorn "127.0.0.1:${APP_PORT}" -w 2
    ;;
flask)
    cd example_projects/flask_app
    exec "$venv/bin/flask" --app shop run-gunicorn -h 127.0.0.1 -p "${APP_PORT}" -w 2
    ;;
*)
    echo "usage: bash scripts/demo.sh [wsgi|django|flask]" >&2
    exit 2
    ;;
esac
