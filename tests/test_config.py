"""The configuration layer: sources, precedence, and every way a value can be wrong."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from gunicorn_prom_ext.settings import (
    SETTINGS,
    ConfigError,
    Problem,
    Settings,
    settings_reference_markdown,
)
from gunicorn_prom_ext.sources import CONFIG_FILE_ENV, load_settings, load_yaml_config

DATA = Path(__file__).parent / "data"


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def yaml_problems(tmp_path: Path, text: str) -> tuple[str, list[Problem]]:
    """(source as it appears in problems, problems) for a YAML file with that text."""
    path = write_yaml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_yaml_config(path)
    return f"file {path}", info.value.problems


def env_problems(**environ: str) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    return info.value.problems


# --- loading and precedence -------------------------------------------------------------------


def test_seed_config_loads_as_is() -> None:
    settings = load_yaml_config(DATA / "seed-config.yml")
    assert settings == Settings(
        multiproc_dir="/tmp/prometheus_multiproc",
        gunicorn_workers=2,
        gunicorn_timeout=30,
        gunicorn_keepalive=2,
    )


def test_nothing_given_means_defaults() -> None:
    resolved = load_settings(environ={})
    assert resolved.settings == Settings()
    assert set(resolved.sources.values()) == {"default"}
    assert list(resolved.sources) == [spec.field for spec in SETTINGS]


def test_precedence_file_environment_framework_command_line(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        "exporter:\n  prometheus:\n    metrics_port: 9001\n    namespace: from_file\n"
        "    bind_address: 127.0.0.1\n  redis:\n    port: 7000\n",
    )
    resolved = load_settings(
        config_file=str(path),
        environ={"PROMETHEUS_METRICS_PORT": "9002", "PROMETHEUS_NAMESPACE": "from_env"},
        framework={"METRICS_PORT": 9003, "redis_port": "7001"},
        command_line={"metrics_port": "9004"},
        framework_source="GUNICORN_PROMETHEUS setting",
    )
    assert resolved.settings == Settings(
        metrics_port=9004, namespace="from_env", bind_address="127.0.0.1", redis_port=7001
    )
    assert resolved.sources["metrics_port"] == "command line"
    assert resolved.sources["namespace"] == "environment PROMETHEUS_NAMESPACE"
    assert resolved.sources["bind_address"] == f"file {path}"
    assert resolved.sources["redis_port"] == "GUNICORN_PROMETHEUS setting redis_port"
    assert resolved.sources["redis_host"] == "default"


def test_config_file_comes_from_the_environment(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "exporter:\n  prometheus:\n    metrics_port: 9005\n")
    resolved = load_settings(environ={CONFIG_FILE_ENV: str(path)})
    assert resolved.settings.metrics_port == 9005
    assert resolved.sources["metrics_port"] == f"file {path}"


def test_yaml_file_alone_ignores_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_METRICS_PORT", "9999")
    path = write_yaml(tmp_path, "exporter:\n  prometheus:\n    metrics_port: 9005\n")
    assert load_yaml_config(path).metrics_port == 9005


def test_environment_strings_are_parsed() -> None:
    settings = load_settings(
        environ={
            "PROMETHEUS_METRICS_PORT": " 9100 ",
            "CLEANUP_DB_FILES": "Off",
            "PROMETHEUS_DURATION_BUCKETS": "0.1, 0.5,2",
            "GUNICORN_WORKERS": "3",
            "REDIS_KEY_PREFIX": "app",
        }
    ).settings
    assert settings == Settings(
        metrics_port=9100,
        cleanup_db_files=False,
        duration_buckets=(0.1, 0.5, 2.0),
        gunicorn_workers=3,
        redis_key_prefix="app",
    )


@pytest.mark.parametrize(
    ("word", "value"),
    [("true", True), ("TRUE", True), ("1", True), ("Yes", True), ("on", True),
     ("false", False), ("0", False), ("NO", False), ("off", False)],
)  # fmt: skip
def test_environment_booleans(word: str, value: bool) -> None:
    assert load_settings(environ={"CLEANUP_DB_FILES": word}).settings.cleanup_db_files is value


def test_empty_environment_variable_counts_as_unset(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "exporter:\n  prometheus:\n    metrics_port: 9005\n")
    resolved = load_settings(
        environ={CONFIG_FILE_ENV: str(path), "PROMETHEUS_METRICS_PORT": "", "REDIS_DB": "  "}
    )
    assert resolved.settings.metrics_port == 9005
    assert resolved.sources["redis_db"] == "default"


def test_framework_keys_are_case_insensitive_and_typed_values_work() -> None:
    resolved = load_settings(
        environ={},
        framework={"NAMESPACE": "shop", "Duration_Buckets": [0.5, 1], "SSL_ENABLED": False},
        command_line={"CLEANUP_DB_FILES": "no", "gunicorn_workers": None},
    )
    assert resolved.settings == Settings(
        namespace="shop", duration_buckets=(0.5, 1.0), cleanup_db_files=False
    )
    assert resolved.sources["namespace"] == "framework settings NAMESPACE"
    assert resolved.sources["gunicorn_workers"] == "default"


# --- unknown keys and layout -------------------------------------------------------------------


def test_unknown_key_suggests_the_nearest(tmp_path: Path) -> None:
    source, problems = yaml_problems(tmp_path, "exporter:\n  prometheus:\n    metrics_prot: 1\n")
    assert problems == [
        Problem(
            "exporter.prometheus.metrics_prot",
            source,
            "a key of exporter.prometheus among metrics_port, bind_address, multiproc_dir, "
            "namespace, duration_buckets, body_size_buckets, queue_time_header, "
            "max_connections, header_timeout, response_timeout",
            "an unknown key",
            "did you mean metrics_port?",
        )
    ]


def test_unknown_section_suggests_the_nearest(tmp_path: Path) -> None:
    source, problems = yaml_problems(tmp_path, "exporter:\n  prometheos:\n    metrics_port: 1\n")
    assert problems == [
        Problem(
            "exporter.prometheos",
            source,
            "a section among prometheus, auth, ssl, cleanup, redis, gunicorn",
            "an unknown section",
            "did you mean prometheus?",
        )
    ]


@pytest.mark.parametrize(
    ("text", "key", "got"),
    [
        ("", "(top level)", "an empty document"),
        ("- exporter\n", "(top level)", "a list ['exporter']"),
        ("exportr:\n  prometheus: {}\n", "exportr", "an unknown key"),
    ],
)
def test_top_level_must_be_the_single_key_exporter(
    tmp_path: Path, text: str, key: str, got: str
) -> None:
    source, problems = yaml_problems(tmp_path, text)
    hint = "did you mean exporter?" if key == "exportr" else ""
    expected = "a mapping with the single key exporter"
    assert problems == [Problem(key, source, expected, got, hint)]


def test_exporter_must_be_a_mapping(tmp_path: Path) -> None:
    source, problems = yaml_problems(tmp_path, "exporter: 0\n")
    assert problems == [Problem("exporter", source, "a mapping", "a number 0")]


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    source, problems = yaml_problems(tmp_path, "exporter:\n  ssl: true\n")
    assert problems == [Problem("exporter.ssl", source, "a mapping", "a boolean true")]


def test_empty_sections_are_allowed(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "exporter:\n  auth:\n  ssl:\n")
    assert load_yaml_config(path) == Settings()


def test_unknown_framework_key_suggests_in_the_same_case() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, framework={"METRICS_PROT": 1}, framework_source="DJ setting")
    expected = "a setting name (see gunicorn-prom-ext check-config)"
    assert info.value.problems == [
        Problem(
            "METRICS_PROT", "DJ setting", expected, "an unknown key", "did you mean METRICS_PORT?"
        )
    ]


# --- wrong types -------------------------------------------------------------------------------

PORT = "an integer from 1 to 65535"
BUCKETS = "a list of numbers, non-empty, finite, > 0 and strictly increasing"
ENV_BUCKETS = "comma-separated numbers, non-empty, finite, > 0 and strictly increasing"


@pytest.mark.parametrize(
    ("section", "line", "key", "expected", "got"),
    [
        ("prometheus", 'metrics_port: "9091"', "metrics_port", PORT, "a string '9091'"),
        ("prometheus", "metrics_port: true", "metrics_port", PORT, "a boolean true"),
        ("prometheus", "metrics_port: 9091.5", "metrics_port", PORT, "a number 9091.5"),
        ("prometheus", "bind_address: 0", "bind_address", "a string", "a number 0"),
        ("cleanup", 'db_files: "yes"', "db_files", "true or false", "a string 'yes'"),
        ("cleanup", "db_files: 1", "db_files", "true or false", "a number 1"),
        ("cleanup", "db_files: null", "db_files", "true or false", "null"),
        ("prometheus", "duration_buckets: [0.1, fast]", "duration_buckets", BUCKETS,
         "a list [0.1, 'fast']"),
        ("prometheus", 'duration_buckets: "0.1,0.2"', "duration_buckets", BUCKETS,
         "a string '0.1,0.2'"),
        ("prometheus", "duration_buckets: [0.1, true]", "duration_buckets", BUCKETS,
         "a list [0.1, True]"),
    ],
)  # fmt: skip
def test_yaml_wrong_type(
    tmp_path: Path, section: str, line: str, key: str, expected: str, got: str
) -> None:
    source, problems = yaml_problems(tmp_path, f"exporter:\n  {section}:\n    {line}\n")
    assert problems == [Problem(f"exporter.{section}.{key}", source, expected, got)]


@pytest.mark.parametrize(
    ("name", "value", "expected", "got"),
    [
        ("PROMETHEUS_METRICS_PORT", "90a1", PORT, "a string '90a1'"),
        ("REDIS_PORT", "6379.0", PORT, "a string '6379.0'"),
        ("PROMETHEUS_SSL_ENABLED", "maybe", "a boolean (true/false/1/0/yes/no/on/off)",
         "a string 'maybe'"),
        ("PROMETHEUS_DURATION_BUCKETS", "0.1,,0.5", ENV_BUCKETS, "a string '0.1,,0.5'"),
    ],
)  # fmt: skip
def test_environment_wrong_type(name: str, value: str, expected: str, got: str) -> None:
    assert env_problems(**{name: value}) == [Problem(name, "environment", expected, got)]


def test_framework_wrong_type_names_the_framework() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, framework={"REDIS_PORT": True}, framework_source="DJ setting")
    assert info.value.problems == [Problem("REDIS_PORT", "DJ setting", PORT, "a boolean true")]


def test_secrets_are_never_echoed(tmp_path: Path) -> None:
    source, problems = yaml_problems(tmp_path, "exporter:\n  redis:\n    password: 123456\n")
    assert problems == [Problem("exporter.redis.password", source, "a string", "a number")]


# --- ranges and formats ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PROMETHEUS_METRICS_PORT", "0", PORT),
        ("PROMETHEUS_METRICS_PORT", "65536", PORT),
        ("REDIS_PORT", "-1", PORT),
        ("REDIS_DB", "-1", "an integer from 0 to 2147483647"),
        ("REDIS_DB", "2147483648", "an integer from 0 to 2147483647"),
        ("GUNICORN_WORKERS", "0", "an integer >= 1"),
        ("GUNICORN_TIMEOUT", "-5", "an integer >= 0"),
        ("GUNICORN_KEEPALIVE", "-1", "an integer >= 0"),
    ],
)
def test_integer_ranges(name: str, value: str, expected: str) -> None:
    assert env_problems(**{name: value}) == [Problem(name, "environment", expected, value)]


def test_integer_range_bounds_are_inclusive() -> None:
    environ = {"PROMETHEUS_METRICS_PORT": "65535", "REDIS_PORT": "1", "GUNICORN_TIMEOUT": "0"}
    settings = load_settings(environ=environ).settings
    assert (settings.metrics_port, settings.redis_port, settings.gunicorn_timeout) == (65535, 1, 0)


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("[]", "an empty list"),
        ("[0.1, .inf]", "[0.1, inf] (+Inf is added automatically)"),
        ("[0.1, .nan]", "[0.1, nan] (+Inf is added automatically)"),
        ("[0, 1]", "[0, 1] (not > 0)"),
        ("[-1, 1]", "[-1, 1] (not > 0)"),
        ("[0.5, 0.1]", "[0.5, 0.1] (not strictly increasing)"),
        ("[0.5, 0.5]", "[0.5, 0.5] (not strictly increasing)"),
    ],
)
def test_bucket_rules(tmp_path: Path, value: str, got: str) -> None:
    text = f"exporter:\n  prometheus:\n    body_size_buckets: {value}\n"
    source, problems = yaml_problems(tmp_path, text)
    assert problems == [Problem("exporter.prometheus.body_size_buckets", source, BUCKETS, got)]


def test_bucket_rules_apply_to_the_environment_form() -> None:
    name = "PROMETHEUS_BODY_SIZE_BUCKETS"
    got = "[10, 5] (not strictly increasing)"
    assert env_problems(**{name: "10,5"}) == [Problem(name, "environment", ENV_BUCKETS, got)]


@pytest.mark.parametrize("namespace", ["9lives", "my-app", "a b"])
def test_namespace_must_be_a_metric_name(namespace: str) -> None:
    expected = "a name matching [a-zA-Z_][a-zA-Z0-9_]* or empty"
    assert env_problems(PROMETHEUS_NAMESPACE=namespace) == [
        Problem("PROMETHEUS_NAMESPACE", "environment", expected, f"a string {namespace!r}")
    ]


def test_namespace_may_be_empty_or_a_name(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "exporter:\n  prometheus:\n    namespace: ''\n")
    assert load_yaml_config(path).namespace == ""
    settings = load_settings(environ={"PROMETHEUS_NAMESPACE": "_My_app2"}).settings
    assert settings.namespace == "_My_app2"


# --- checks across fields and against the filesystem ------------------------------------------


def tls_files(tmp_path: Path) -> dict[str, str]:
    """A certificate, its key and a CA bundle, real PEM (the checks load them)."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    paths = {name: str(tmp_path / name) for name in ("cert.pem", "key.pem", "ca.pem")}
    issued.cert_chain_pems[0].write_to_path(paths["cert.pem"])
    issued.private_key_pem.write_to_path(paths["key.pem"])
    ca.cert_pem.write_to_path(paths["ca.pem"])
    return paths


def test_ssl_with_readable_files_loads(tmp_path: Path) -> None:
    files = tls_files(tmp_path)
    environ = {
        "PROMETHEUS_SSL_ENABLED": "true",
        "PROMETHEUS_SSL_CERTFILE": files["cert.pem"],
        "PROMETHEUS_SSL_KEYFILE": files["key.pem"],
        "PROMETHEUS_SSL_CLIENT_CAFILE": files["ca.pem"],
        "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED": "yes",
    }
    settings = load_settings(environ=environ).settings
    assert (settings.ssl_enabled, settings.ssl_certfile) == (True, files["cert.pem"])


def test_ssl_enabled_requires_certfile_and_keyfile(tmp_path: Path) -> None:
    source, problems = yaml_problems(tmp_path, "exporter:\n  ssl:\n    enabled: true\n")
    assert problems == [
        Problem(
            "exporter.ssl.enabled",
            source,
            "exporter.ssl.certfile (PROMETHEUS_SSL_CERTFILE) set when SSL is enabled",
            "no certificate file",
        ),
        Problem(
            "exporter.ssl.enabled",
            source,
            "exporter.ssl.keyfile (PROMETHEUS_SSL_KEYFILE) set when SSL is enabled",
            "no private key file",
        ),
    ]


def test_tls_files_must_exist_and_be_files(tmp_path: Path) -> None:
    files = tls_files(tmp_path)
    missing = str(tmp_path / "missing.pem")
    environ = {
        "PROMETHEUS_SSL_ENABLED": "1",
        "PROMETHEUS_SSL_CERTFILE": files["cert.pem"],
        "PROMETHEUS_SSL_KEYFILE": missing,
        "PROMETHEUS_SSL_CLIENT_CAFILE": str(tmp_path),
    }
    assert env_problems(**environ) == [
        Problem(
            "PROMETHEUS_SSL_KEYFILE", "environment", "a readable file", f"no such file {missing}"
        ),
        Problem(
            "PROMETHEUS_SSL_CLIENT_CAFILE",
            "environment",
            "a readable file",
            f"a directory {tmp_path}",
        ),
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_tls_files_must_be_readable(tmp_path: Path) -> None:
    files = tls_files(tmp_path)
    os.chmod(files["key.pem"], 0)
    got = f"an unreadable file {files['key.pem']}"
    environ = {"PROMETHEUS_SSL_ENABLED": "true", "PROMETHEUS_SSL_CERTFILE": files["cert.pem"],
               "PROMETHEUS_SSL_KEYFILE": files["key.pem"]}  # fmt: skip
    assert env_problems(**environ) == [
        Problem("PROMETHEUS_SSL_KEYFILE", "environment", "a readable file", got)
    ]


def test_client_auth_requires_client_cafile(tmp_path: Path) -> None:
    files = tls_files(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings(
            environ={"PROMETHEUS_SSL_CERTFILE": files["cert.pem"],
                     "PROMETHEUS_SSL_KEYFILE": files["key.pem"]},
            command_line={"ssl_client_auth_required": True, "ssl_enabled": "yes"},
        )  # fmt: skip
    assert info.value.problems == [
        Problem(
            "ssl_client_auth_required",
            "command line",
            "exporter.ssl.client_cafile (PROMETHEUS_SSL_CLIENT_CAFILE) set when client "
            "certificates are required",
            "no client CA file",
        )
    ]


def test_auth_username_and_password_go_together(tmp_path: Path) -> None:
    assert env_problems(PROMETHEUS_AUTH_USERNAME="scraper") == [
        Problem(
            "PROMETHEUS_AUTH_USERNAME",
            "environment",
            "exporter.auth.password (PROMETHEUS_AUTH_PASSWORD) as well: "
            "username and password go together",
            "no password",
        )
    ]
    source, problems = yaml_problems(tmp_path, "exporter:\n  auth:\n    password: s3cret\n")
    assert problems == [
        Problem(
            "exporter.auth.password",
            source,
            "exporter.auth.username (PROMETHEUS_AUTH_USERNAME) as well: "
            "username and password go together",
            "no username",
        )
    ]


def test_auth_from_two_sources_combines(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "exporter:\n  auth:\n    username: scraper\n")
    environ = {CONFIG_FILE_ENV: str(path), "PROMETHEUS_AUTH_PASSWORD": "s3cret"}
    settings = load_settings(environ=environ).settings
    assert (settings.auth_username, settings.auth_password) == ("scraper", "s3cret")


def test_multiproc_dir_must_be_a_directory_if_it_exists(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    expected = "a directory (or a path that does not exist yet)"
    assert env_problems(PROMETHEUS_MULTIPROC_DIR=str(a_file)) == [
        Problem("PROMETHEUS_MULTIPROC_DIR", "environment", expected, f"a file {a_file}")
    ]
    for fine in (tmp_path, tmp_path / "not-yet"):
        environ = {"PROMETHEUS_MULTIPROC_DIR": str(fine)}
        assert load_settings(environ=environ).settings.multiproc_dir == str(fine)


def test_redis_settings_load_from_env_and_yaml(tmp_path: Path) -> None:
    environ = {
        "REDIS_ENABLED": "true",
        "REDIS_URL": "rediss://:pw@cache.internal:6380/2",
        "REDIS_INSTANCE_ID": "web 1: ü",
        "REDIS_PUSH_INTERVAL": "0.5",
        "REDIS_RETENTION": "2",
    }
    settings = load_settings(environ=environ).settings
    assert (settings.redis_enabled, settings.redis_url, settings.redis_instance_id) == (
        True, "rediss://:pw@cache.internal:6380/2", "web 1: ü",
    )  # fmt: skip
    assert (settings.redis_push_interval, settings.redis_retention) == (0.5, 2.0)
    path = write_yaml(
        tmp_path, "exporter:\n  redis:\n    url: unix:///run/redis.sock\n    push_interval: 3\n"
        "    retention: 60.5\n    instance_id: a\n",
    )  # fmt: skip
    settings = load_yaml_config(path)
    assert (settings.redis_url, settings.redis_push_interval, settings.redis_retention) == (
        "unix:///run/redis.sock", 3.0, 60.5,
    )  # fmt: skip
    assert settings.redis_instance_id == "a"


@pytest.mark.parametrize(
    ("raw", "got"),
    [("0", "0"), ("-1", "-1"), ("abc", "a string 'abc'"), ("inf", "a string 'inf'")],
)
def test_push_interval_must_be_positive_seconds(raw: str, got: str) -> None:
    assert env_problems(REDIS_PUSH_INTERVAL=raw) == [
        Problem("REDIS_PUSH_INTERVAL", "environment", "a number of seconds > 0", got)
    ]


def test_push_interval_in_yaml_is_a_number_not_text(tmp_path: Path) -> None:
    source, problems = yaml_problems(tmp_path, "exporter:\n  redis:\n    push_interval: '5'\n")
    assert problems == [
        Problem("exporter.redis.push_interval", source, "a number of seconds > 0", "a string '5'")
    ]
    source, problems = yaml_problems(tmp_path, "exporter:\n  redis:\n    retention: true\n")
    assert problems == [
        Problem("exporter.redis.retention", source, "a number of seconds > 0", "a boolean true")
    ]


def test_retention_must_exceed_the_push_interval() -> None:
    assert env_problems(REDIS_PUSH_INTERVAL="10", REDIS_RETENTION="10") == [
        Problem(
            "REDIS_RETENTION",
            "environment",
            "more seconds than exporter.redis.push_interval (REDIS_PUSH_INTERVAL), 10, "
            "or instances would flicker",
            "10",
        )
    ]


def test_redis_url_scheme_is_checked_without_echoing_the_url() -> None:
    expected = "a URL starting with redis://, rediss:// or unix://"
    assert env_problems(REDIS_URL="http://:secret@host:6379") == [
        Problem("REDIS_URL", "environment", expected, "scheme 'http'")
    ]
    assert env_problems(REDIS_URL="host:6379") == [
        Problem("REDIS_URL", "environment", expected, "scheme 'host'")
    ]
    assert env_problems(REDIS_URL="//host") == [
        Problem("REDIS_URL", "environment", expected, "no scheme")
    ]


def test_redis_enabled_without_redis_py_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules is how Python spells "this module cannot be imported".
    monkeypatch.setitem(sys.modules, "redis", None)
    assert env_problems(REDIS_ENABLED="true") == [
        Problem(
            "REDIS_ENABLED",
            "environment",
            "the redis package installed with it: pip install 'gunicorn-prom-ext[redis]'",
            "true, but redis-py is not installed",
        )
    ]
    assert load_settings(environ={}).settings.redis_enabled is False  # not needed when off


# --- files that cannot be read -----------------------------------------------------------------


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    source, problems = yaml_problems(tmp_path, "exporter:\n  prometheus:\n    port: [1, 2\n")
    assert problems == [
        Problem(
            "line 4, column 1", source, "valid YAML", "expected ',' or ']', but got '<stream end>'"
        )
    ]


def test_missing_file_given_directly(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError) as info:
        load_yaml_config(missing)
    assert info.value.problems == [
        Problem(str(missing), "config file", "a readable YAML file", "No such file or directory")
    ]


def test_missing_file_named_by_the_environment(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    assert env_problems(**{CONFIG_FILE_ENV: str(missing)}) == [
        Problem(
            CONFIG_FILE_ENV,
            "environment",
            "a readable YAML file",
            f"No such file or directory: {missing}",
        )
    ]


# --- the error as people read it ---------------------------------------------------------------


def test_all_problems_of_one_load_are_reported_together(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "exporter:\n  prometheus:\n    metrics_prot: 9091\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={CONFIG_FILE_ENV: str(path), "REDIS_PORT": "abc"})
    assert str(info.value) == (
        "invalid gunicorn-prom-ext configuration (2 problems):\n"
        f"  - exporter.prometheus.metrics_prot (file {path}): expected a key of "
        "exporter.prometheus among metrics_port, bind_address, multiproc_dir, namespace, "
        "duration_buckets, body_size_buckets, queue_time_header, max_connections, "
        "header_timeout, response_timeout, got an unknown key; did you mean metrics_port?\n"
        "  - REDIS_PORT (environment): expected an integer from 1 to 65535, got a string 'abc'"
    )
    assert isinstance(info.value, RuntimeError)


def test_reference_table_has_one_row_per_setting() -> None:
    lines = settings_reference_markdown().splitlines()
    assert lines[0] == "| YAML key | Environment variable | Default | Meaning |"
    assert len(lines) == 2 + len(SETTINGS)
    assert lines[2] == (
        "| `exporter.prometheus.metrics_port` | `PROMETHEUS_METRICS_PORT` | `9091` "
        "| TCP port of the metrics endpoint. |"
    )
    assert lines[13] == (
        "| `exporter.auth.password` | `PROMETHEUS_AUTH_PASSWORD` | unset "
        "| Basic-auth password for scrapes. Secret. |"
    )


def test_every_field_has_exactly_one_spec() -> None:
    from dataclasses import fields

    assert [spec.field for spec in SETTINGS] == [f.name for f in fields(Settings)]
    assert len({spec.env for spec in SETTINGS}) == len(SETTINGS)
