"""``gunicorn-prom-ext check-config``, run the way users run it: as a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gunicorn_prom_ext.settings import SETTINGS
from gunicorn_prom_ext.sources import CONFIG_FILE_ENV

REPO = Path(__file__).resolve().parent.parent
SEED = Path(__file__).parent / "data" / "seed-config.yml"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # A clean environment, so settings of the machine running the tests cannot leak in.
    environ = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, *args], env=environ, capture_output=True, text=True, timeout=60
    )


def test_check_config_prints_every_setting_with_its_source() -> None:
    result = run(
        "-m", "gunicorn_prom_ext.cli", "check-config", str(SEED),
        PROMETHEUS_METRICS_PORT="9200", PROMETHEUS_AUTH_USERNAME="scraper",
        PROMETHEUS_AUTH_PASSWORD="s3cret",
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == ["configuration", "file:", str(SEED)]
    assert lines[1] == ["gunicorn", "binds:", "127.0.0.1:8000"]
    assert lines[2] == ["KEY", "VALUE", "SOURCE"]
    rows = {line[0]: line[1:] for line in lines[3:]}
    assert len(rows) == len(SETTINGS)
    assert rows["exporter.prometheus.metrics_port"] == [
        "9200",
        "environment",
        "PROMETHEUS_METRICS_PORT",
    ]
    assert rows["exporter.gunicorn.workers"] == ["2", "file", str(SEED)]
    assert rows["exporter.redis.host"] == ["localhost", "file", str(SEED)]
    assert rows["exporter.redis.key_prefix"] == ["gunicorn", "default"]
    assert rows["exporter.auth.password"] == ["***", "environment", "PROMETHEUS_AUTH_PASSWORD"]
    assert rows["exporter.auth.bearer_token"] == ["(unset)", "default"]
    assert "s3cret" not in result.stdout


def test_check_config_reads_the_file_named_by_the_environment() -> None:
    result = run("-m", "gunicorn_prom_ext.cli", "check-config", **{CONFIG_FILE_ENV: str(SEED)})
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == f"configuration file: {SEED}"


def test_check_config_without_any_file() -> None:
    result = run("-m", "gunicorn_prom_ext.cli", "check-config")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "configuration file: (none)"


def test_check_config_reports_a_bad_file_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("exporter:\n  prometheus:\n    metrics_port: 70000\n  ssl:\n    enable: true\n")
    result = run("-m", "gunicorn_prom_ext.cli", "check-config", str(path))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == [
        "invalid gunicorn-prom-ext configuration (2 problems):",
        f"  - exporter.prometheus.metrics_port (file {path}): "
        "expected an integer from 1 to 65535, got 70000",
        f"  - exporter.ssl.enable (file {path}): expected a key of exporter.ssl among enabled, "
        "certfile, keyfile, client_cafile, client_auth_required, got an unknown key; "
        "did you mean enabled?",
    ]


def test_no_subcommand_prints_usage_and_exits_2() -> None:
    result = run("-m", "gunicorn_prom_ext.cli")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: gunicorn-prom-ext")


def test_package_and_gunicorn_conf_do_not_import_prometheus_client() -> None:
    # prometheus_client picks its value class at import; importing it before the
    # multiprocess directory is set would silently break multiprocess mode.
    code = (
        "import sys, gunicorn_prom_ext, gunicorn_prom_ext.gunicorn_conf, gunicorn_prom_ext.cli; "
        "print('prometheus_client' in sys.modules)"
    )
    result = run("-c", code)
    assert (result.returncode, result.stdout) == (0, "False\n")


def test_check_config_knows_gunicorns_binds() -> None:
    check = ("-m", "gunicorn_prom_ext.cli", "check-config")
    conflict = ("expected a port other than gunicorn's own (it binds {bind}), got {port}")
    # By default, what gunicorn itself would bind: $PORT (on every interface) ...
    result = run(*check, PORT="9091")
    assert result.returncode == 1
    assert result.stderr.splitlines()[1] == (
        "  - exporter.prometheus.metrics_port (default): "
        + conflict.format(bind="0.0.0.0:9091", port=9091)
    )
    # ... or GUNICORN_CMD_ARGS's --bind, which gunicorn reads too.
    result = run(*check, GUNICORN_CMD_ARGS="-w 2 --bind=127.0.0.1:9300 -b [::1]:9301",
                 PROMETHEUS_METRICS_PORT="9301")  # fmt: skip
    assert result.returncode == 1
    assert conflict.format(bind="[::1]:9301", port=9301) in result.stderr
    # --bind, repeatable, says it explicitly (unix sockets take no port).
    binds = ("--bind", "unix:/run/app.sock", "-b", "127.0.0.1:9400")
    result = run(*check, *binds, PROMETHEUS_METRICS_PORT="9400")
    assert result.returncode == 1
    assert conflict.format(bind="127.0.0.1:9400", port=9400) in result.stderr
    result = run(*check, *binds, PROMETHEUS_METRICS_PORT="9401")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[1] == "gunicorn binds: unix:/run/app.sock 127.0.0.1:9400"


def test_check_config_refuses_a_bind_gunicorn_would_refuse() -> None:
    result = run("-m", "gunicorn_prom_ext.cli", "check-config", "--bind", "127.0.0.1:http")
    assert result.returncode == 2
    assert result.stderr == (
        "gunicorn-prom-ext check-config: --bind: 'http' is not a valid port number.\n"
    )


def test_check_config_shows_paths_that_are_not_utf8(tmp_path: Path) -> None:
    directory = tmp_path / "m\udcffetrics"  # a byte that is no UTF-8, as Linux allows
    result = run("-m", "gunicorn_prom_ext.cli", "check-config",
                 PROMETHEUS_MULTIPROC_DIR=str(directory))  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    assert f"{tmp_path}/m\\xffetrics" in result.stdout
