#!/usr/bin/env bash
# Serves an example app under gunicorn with the project's hooks and, where the prometheus
# binary is installed, a local Prometheus with the shipped rules scraping it.
#   bash scripts/demo.sh           example_projects/shop_wsgi (plain WSGI, several routes)
#   bash scripts/demo.sh django    example_projects/django_site with manage.py rungunicorn
#   bash scripts/demo.sh flask     example_projects/flask_app with flask run-gunicorn
# Ctrl-C stops everything it started and removes its temporary directory.
# Ports: APP_PORT (8000), PROMETHEUS_METRICS_PORT (9091), DEMO_PROMETHEUS_PORT (9090).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

kind="${1:-wsgi}"
case "$kind" in
wsgi | django | flask) ;;
*)
    echo "usage: bash scripts/demo.sh [wsgi|django|flask]" >&2
    exit 2
    ;;
esac

say() { printf '==> %s\n' "$*"; }

# Everything started here is listed in pids and stopped on exit, whatever the exit: Ctrl-C
# (during set-up too), a failure, or the app exiting by itself.
pids=()
workdir=""
cleanup() {
    local status=$?
    # A second Ctrl-C must not cut the clean-up short (it is bounded: 10 s a process).
    trap '' INT TERM
    trap - EXIT
    if ((${#pids[@]})); then
        say "Stopping"
        local pid index
        for ((index = ${#pids[@]} - 1; index >= 0; index--)); do
            kill -TERM "${pids[index]}" 2>/dev/null || true
        done
        for pid in "${pids[@]}"; do
            # gunicorn's graceful stop waits for requests in flight: 10 s at most here.
            for _ in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        done
    fi
    [[ -n "$workdir" ]] && rm -rf "$workdir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits in the background so that a signal interrupts the wait at once (bash runs a trap
# only after the foreground command ends).
wait_until_up() { # URL PID: until URL answers 200; fails if PID exits or after 60 s
    "$python" scripts/demo_traffic.py wait "$1" --timeout 60 --pid "$2" &
    local helper=$! status=0
    pids+=("$helper")
    wait "$helper" || status=$?
    unset 'pids[${#pids[@]}-1]'
    return "$status"
}

if [[ -z "${DEMO_SKIP_BOOTSTRAP:-}" ]]; then  # tests set it: the virtualenv is there already
    say "Setting up .venv and the tools the tests use (scripts/bootstrap.sh; ~15 s, faster when done before)"
    bash scripts/bootstrap.sh
fi
venv="$repo/.venv"
python="$venv/bin/python"

APP_PORT="${APP_PORT:-8000}"
export PROMETHEUS_METRICS_PORT="${PROMETHEUS_METRICS_PORT:-9091}"
# Local demo: keep the metrics endpoint on loopback unless the caller asks otherwise.
export PROMETHEUS_BIND_ADDRESS="${PROMETHEUS_BIND_ADDRESS:-127.0.0.1}"
DEMO_PROMETHEUS_PORT="${DEMO_PROMETHEUS_PORT:-9090}"
app_url="http://127.0.0.1:${APP_PORT}"
metrics_url="http://127.0.0.1:${PROMETHEUS_METRICS_PORT}/metrics"
prometheus_url="http://127.0.0.1:${DEMO_PROMETHEUS_PORT}"

workdir=$(mktemp -d "${TMPDIR:-/tmp}/gunicorn-prom-ext-demo.XXXXXX")
say "Working directory (removed on exit): $workdir"
# The metric files, gunicorn's control socket and Django's database live there too.
export PROMETHEUS_MULTIPROC_DIR="$workdir/metrics"
export XDG_RUNTIME_DIR="$workdir/run"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR" "$XDG_RUNTIME_DIR"

app_log="$workdir/app.log"
case "$kind" in
wsgi)
    say "Starting example_projects/shop_wsgi under gunicorn (2 workers) on $app_url"
    "$venv/bin/gunicorn" -c python:gunicorn_prom_ext.gunicorn_conf \
        --chdir example_projects/shop_wsgi --bind "127.0.0.1:${APP_PORT}" --workers 2 \
        app:app >"$app_log" 2>&1 &
    ;;
django)
    export DJANGO_SITE_DB="$workdir/db.sqlite3"
    say "Creating the Django example's database (manage.py migrate)"
    (cd example_projects/django_site && "$python" manage.py migrate --verbosity 0)
    say "Starting example_projects/django_site (manage.py rungunicorn, 2 workers) on $app_url"
    (cd example_projects/django_site &&
        exec "$python" manage.py rungunicorn "127.0.0.1:${APP_PORT}" -w 2) >"$app_log" 2>&1 &
    ;;
flask)
    say "Starting example_projects/flask_app (flask run-gunicorn, 2 workers) on $app_url"
    (cd example_projects/flask_app &&
        exec "$venv/bin/flask" --app shop run-gunicorn -h 127.0.0.1 -p "${APP_PORT}" -w 2) \
        >"$app_log" 2>&1 &
    ;;
esac
app_pid=$!
pids+=("$app_pid")

say "Waiting for the app and its metrics endpoint ($metrics_url)"
if ! wait_until_up "$metrics_url" "$app_pid"; then
    echo "demo: the app did not come up; its log:" >&2
    tail -n 30 "$app_log" >&2
    exit 1
fi

prometheus_bin=$(PATH="$PATH:/usr/sbin:/usr/bin" command -v prometheus || true)
if [[ -n "$prometheus_bin" ]]; then
    say "Starting Prometheus on $prometheus_url (5 s scrapes, the shipped rules)"
    "$venv/bin/gunicorn-prom-ext" rules >"$workdir/gunicorn-prom-ext.rules.yml"
    cat >"$workdir/prometheus.yml" <<EOF
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - gunicorn-prom-ext.rules.yml
scrape_configs:
  - job_name: shop
    static_configs:
      - targets: ["127.0.0.1:${PROMETHEUS_METRICS_PORT}"]
EOF
    "$prometheus_bin" --config.file="$workdir/prometheus.yml" \
        --storage.tsdb.path="$workdir/prometheus-data" \
        --web.listen-address="127.0.0.1:${DEMO_PROMETHEUS_PORT}" \
        --log.level=warn >"$workdir/prometheus.log" 2>&1 &
    prometheus_pid=$!
    pids+=("$prometheus_pid")
    if ! wait_until_up "$prometheus_url/-/ready" "$prometheus_pid"; then
        echo "demo: Prometheus did not come up; its log:" >&2
        tail -n 30 "$workdir/prometheus.log" >&2
        exit 1
    fi
else
    say "Prometheus is not installed (apt-get install prometheus): serving the app alone"
fi

say "Sending a little traffic (60 requests over 15 s) so the graphs have something to show"
"$python" scripts/demo_traffic.py drive "$app_url" --profile "$kind" --requests 60 --seconds 15 &
pids+=("$!")

case "$kind" in
wsgi) try="/items/42, /slow, /fail" ;;
django) try="/items/1, /items/99, /boom" ;;
flask) try="/catalog/items/42, /catalog/fail" ;;
esac
echo
echo "App:        $app_url/   (try $try)"
echo "Metrics:    $metrics_url"
if [[ -n "$prometheus_bin" ]]; then
    query='sum by (http_route) (rate(http_server_request_duration_seconds_count{job="shop"}[1m]))'
    echo "Prometheus: $prometheus_url/   (alerts: $prometheus_url/alerts)"
    echo "Requests/s by route: $("$python" scripts/demo_traffic.py link "$prometheus_url" "$query")"
fi
echo "Dashboard:  gunicorn_prom_ext/kit/dashboard.json (Grafana: Dashboards > New > Import),"
echo "            or .venv/bin/gunicorn-prom-ext dashboard > dashboard.json"
echo "Queries:    docs/promql-cookbook.md; alerts: .venv/bin/gunicorn-prom-ext rules"
echo "App log:    $app_log"
echo "(Ctrl-C to stop)"

# Until Ctrl-C, or until the app exits by itself (then its log says why).
wait "$app_pid" || true
echo "demo: the app exited; the end of its log:" >&2
tail -n 20 "$app_log" >&2
exit 1
