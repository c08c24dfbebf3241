#!/usr/bin/env bash
# Idempotent set-up: .venv with the package (editable) and its test extras, plus the
# Debian tools some tests use. Safe to run again; only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"

# Debian tools: promtool (package prometheus), wrk, redis-server.
declare -A pkg_of=([promtool]=prometheus [wrk]=wrk [redis-server]=redis-server)
missing=()
for tool in promtool wrk redis-server; do
    # redis-server and friends may live in /usr/sbin, which is not on every user's PATH.
    if ! PATH="$PATH:/usr/sbin:/usr/bin" command -v "$tool" >/dev/null 2>&1; then
        missing+=("${pkg_of[$tool]}")
    fi
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: installing ${missing[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        # -o Dpkg::Use-Pty=0 keeps the progress bars out of the log; errors still reach stderr.
        apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
    else
        echo "bootstrap: note: missing Debian packages: ${missing[*]}" >&2
        echo "bootstrap: install them with: sudo apt-get install -y ${missing[*]}" >&2
        echo "bootstrap: tests that need them will be skipped (or fail when CI=true)." >&2
    fi
fi

# Virtualenv. On Debian, `python3 -m venv` needs python3-venv (ensurepip); without it the
# venv is left without pip, hence the check on pip rather than on the interpreter.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    if ! venv_err=$("$PYTHON" -m venv .venv 2>&1); then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            ver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
            echo "bootstrap: installing python${ver}-venv with apt-get" >&2
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq >/dev/null
            apt-get install -y -qq -o Dpkg::Use-Pty=0 "python${ver}-venv" >/dev/null
            "$PYTHON" -m venv .venv
        else
            echo "$venv_err" >&2
            echo "bootstrap: error: '$PYTHON -m venv .venv' failed; install python3-venv" >&2
            exit 1
        fi
    fi
fi

# pip and setuptools warn a lot even when all goes well: keep their output in a log and
# show it only if something fails.
pip_log=$(mktemp)
trap 'rm -f "$pip_log"' EXIT
pip_install() {
    if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        echo "bootstrap: error: pip install $* failed" >&2
        exit 1
    fi
}
pip_install --upgrade pip
pip_install -e '.[test]'
