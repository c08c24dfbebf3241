"""The one typed settings object, its defaults, and the table of every setting.

Everything else in the package receives a ``Settings`` instance; nothing reads the
environment or a file on its own. ``sources.py`` builds a ``Settings`` from defaults,
a YAML file, the environment, framework settings and the command line; this module
knows how to parse one value and how to check the merged result.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

DEFAULT_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
# Body sizes in bytes: 100 B .. 100 MB, one bucket per decade.
DEFAULT_BODY_SIZE_BUCKETS: tuple[float, ...] = (
    100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0, 10_000_000.0, 100_000_000.0,
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    # exporter.prometheus
    metrics_port: int = 9091
    bind_address: str = "0.0.0.0"
    multiproc_dir: str | None = None
    namespace: str = ""
    duration_buckets: tuple[float, ...] = DEFAULT_DURATION_BUCKETS
    body_size_buckets: tuple[float, ...] = DEFAULT_BODY_SIZE_BUCKETS
    queue_time_header: str = "X-Request-Start"
    max_connections: int = 32
    header_timeout: float = 5.0
    # exporter.auth
    auth_username: str | None = None
    auth_password: str | None = None
    auth_token: str | None = None
    # exporter.ssl
    ssl_enabled: bool = False
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_client_cafile: str | None = None
    ssl_client_auth_required: bool = False
    # exporter.cleanup
    cleanup_db_files: bool = True
    # exporter.redis
    redis_enabled: bool = False
    redis_url: str | None = None
    redis_host: str = "localhost"
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: str | None = None
    redis_key_prefix: str = "gunicorn"
    redis_instance_id: str | None = None
    redis_push_interval: float = 5.0
    redis_retention: float = 300.0
    # exporter.gunicorn
    gunicorn_workers: int | None = None
    gunicorn_timeout: int | None = None
    gunicorn_keepalive: int | None = None


DEFAULTS: Mapping[str, object] = {f.name: f.default for f in dataclasses.fields(Settings)}

Kind = Literal["bool", "int", "seconds", "str", "buckets", "namespace", "header"]


@dataclass(frozen=True)
class SettingSpec:
    field: str  # name of the Settings field
    path: str  # under ``exporter:``, e.g. "prometheus.metrics_port"
    env: str
    kind: Kind
    help: str
    secret: bool = False
    minimum: int | None = None
    maximum: int | None = None

    @property
    def key(self) -> str:
        return f"exporter.{self.path}"

    @property
    def default(self) -> object:
        return DEFAULTS[self.field]


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("metrics_port", "prometheus.metrics_port", "PROMETHEUS_METRICS_PORT", "int",
                "TCP port of the metrics endpoint.", minimum=1, maximum=65535),
    SettingSpec("bind_address", "prometheus.bind_address", "PROMETHEUS_BIND_ADDRESS", "str",
                "Address the metrics endpoint listens on."),
    SettingSpec("multiproc_dir", "prometheus.multiproc_dir", "PROMETHEUS_MULTIPROC_DIR", "str",
                "Directory of the metric files the worker processes share."),
    SettingSpec("namespace", "prometheus.namespace", "PROMETHEUS_NAMESPACE", "namespace",
                "Prefix of every metric name; empty for none."),
    SettingSpec("duration_buckets", "prometheus.duration_buckets", "PROMETHEUS_DURATION_BUCKETS",
                "buckets", "Request duration histogram buckets, in seconds."),
    SettingSpec("body_size_buckets", "prometheus.body_size_buckets",
                "PROMETHEUS_BODY_SIZE_BUCKETS", "buckets",
                "Request and response body size histogram buckets, in bytes."),
    SettingSpec("queue_time_header", "prometheus.queue_time_header",
                "PROMETHEUS_QUEUE_TIME_HEADER", "header",
                "Request header holding the front proxy's start stamp, for queue time; "
                "`off` (or an empty string in YAML) disables it."),
    SettingSpec("max_connections", "prometheus.max_connections", "PROMETHEUS_MAX_CONNECTIONS",
                "int", "Connections the metrics endpoint holds at once; past it, the one "
                "idle longest is closed.", minimum=1, maximum=10000),
    SettingSpec("header_timeout", "prometheus.header_timeout", "PROMETHEUS_HEADER_TIMEOUT",
                "seconds", "Seconds a metrics client has to send its request (and finish "
                "the TLS handshake) before the endpoint closes the connection."),
    SettingSpec("auth_username", "auth.username", "PROMETHEUS_AUTH_USERNAME", "str",
                "Basic-auth user name for scrapes (set together with the password)."),
    SettingSpec("auth_password", "auth.password", "PROMETHEUS_AUTH_PASSWORD", "str",
                "Basic-auth password for scrapes.", secret=True),
    SettingSpec("auth_token", "auth.bearer_token", "PROMETHEUS_AUTH_TOKEN", "str",
                "Bearer token for scrapes.", secret=True),
    SettingSpec("ssl_enabled", "ssl.enabled", "PROMETHEUS_SSL_ENABLED", "bool",
                "Serve the metrics endpoint over HTTPS."),
    SettingSpec("ssl_certfile", "ssl.certfile", "PROMETHEUS_SSL_CERTFILE", "str",
                "PEM certificate (chain) of the metrics endpoint."),
    SettingSpec("ssl_keyfile", "ssl.keyfile", "PROMETHEUS_SSL_KEYFILE", "str",
                "PEM private key of that certificate."),
    SettingSpec("ssl_client_cafile", "ssl.client_cafile", "PROMETHEUS_SSL_CLIENT_CAFILE", "str",
                "CA bundle that verifies client certificates."),
    SettingSpec("ssl_client_auth_required", "ssl.client_auth_required",
                "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED", "bool",
                "Require scrapers to present a certificate signed by client_cafile."),
    SettingSpec("cleanup_db_files", "cleanup.db_files", "CLEANUP_DB_FILES", "bool",
                "Remove stale metric files from the multiprocess directory at startup."),
    SettingSpec("redis_enabled", "redis.enabled", "REDIS_ENABLED", "bool",
                "The master pushes this instance's metrics to Redis (needs the `redis` extra)."),
    SettingSpec("redis_url", "redis.url", "REDIS_URL", "str",
                "redis://, rediss:// (TLS) or unix:// URL; when set, host and port are ignored, "
                "and password and db apply only where the URL has none.", secret=True),
    SettingSpec("redis_host", "redis.host", "REDIS_HOST", "str", "Redis host."),
    SettingSpec("redis_port", "redis.port", "REDIS_PORT", "int", "Redis port.",
                minimum=1, maximum=65535),
    SettingSpec("redis_db", "redis.db", "REDIS_DB", "int", "Redis database number.", minimum=0),
    SettingSpec("redis_password", "redis.password", "REDIS_PASSWORD", "str", "Redis password.",
                secret=True),
    SettingSpec("redis_key_prefix", "redis.key_prefix", "REDIS_KEY_PREFIX", "str",
                "Prefix of every Redis key: one per service (any characters)."),
    SettingSpec("redis_instance_id", "redis.instance_id", "REDIS_INSTANCE_ID", "str",
                "This instance's id in Redis and its `gunicorn_instance` label "
                "(unset: `<hostname>-<master start time>-<master pid>`)."),
    SettingSpec("redis_push_interval", "redis.push_interval", "REDIS_PUSH_INTERVAL", "seconds",
                "Seconds between two pushes of this instance's metrics to Redis."),
    SettingSpec("redis_retention", "redis.retention", "REDIS_RETENTION", "seconds",
                "Seconds an instance stays listed after its last push (more than the interval)."),
    SettingSpec("gunicorn_workers", "gunicorn.workers", "GUNICORN_WORKERS", "int",
                "Number of Gunicorn workers (unset: Gunicorn's own setting).", minimum=1),
    SettingSpec("gunicorn_timeout", "gunicorn.timeout", "GUNICORN_TIMEOUT", "int",
                "Gunicorn worker timeout in seconds (unset: Gunicorn's own setting).", minimum=0),
    SettingSpec("gunicorn_keepalive", "gunicorn.keepalive", "GUNICORN_KEEPALIVE", "int",
                "Gunicorn keep-alive in seconds (unset: Gunicorn's own setting).", minimum=0),
)  # fmt: skip

SPECS_BY_FIELD: Mapping[str, SettingSpec] = {spec.field: spec for spec in SETTINGS}


# --- problems -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    key: str  # as the user wrote it: YAML path, environment variable, framework key
    source: str  # "file /abs/x.yml", "environment", "command line", a framework's name
    expected: str
    got: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.key} ({self.source}): expected {self.expected}, got {self.got}"
        return f"{text}; {self.hint}" if self.hint else text


class ConfigError(RuntimeError):
    """Every problem of one load. A RuntimeError so gunicorn prints it as one clean error."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        count = len(self.problems)
        lines = [f"invalid gunicorn-prom-ext configuration ({count} problem{'s' * (count != 1)}):"]
        lines += [f"  - {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


# --- one value ------------------------------------------------------------------------------


class InvalidValue(ValueError):
    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"expected {expected}, got {got}")
        self.expected = expected
        self.got = got


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_NAMESPACE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


def describe(value: object, *, secret: bool = False) -> str:
    """How a wrong value is shown in a problem; a secret's content is never echoed."""
    if value is None:
        return "null"
    kind = (
        "a boolean" if isinstance(value, bool)
        else "a string" if isinstance(value, str)
        else "a number" if isinstance(value, int | float)
        else "a list" if isinstance(value, list | tuple)
        else "a mapping" if isinstance(value, Mapping)
        else f"a {type(value).__name__}"
    )  # fmt: skip
    if secret:
        return kind
    if isinstance(value, bool):
        return f"{kind} {str(value).lower()}"
    return f"{kind} {value!r}" if isinstance(value, str | int | float) else f"{kind} {value}"


def expected_text(spec: SettingSpec, *, allow_text: bool) -> str:
    if spec.kind == "bool":
        return "a boolean (true/false/1/0/yes/no/on/off)" if allow_text else "true or false"
    if spec.kind == "int":
        if spec.maximum is not None:
            return f"an integer from {spec.minimum} to {spec.maximum}"
        return f"an integer >= {spec.minimum}"
    if spec.kind == "seconds":
        return "a number of seconds > 0"
    if spec.kind == "buckets":
        form = "comma-separated numbers" if allow_text else "a list of numbers"
        return f"{form}, non-empty, finite, > 0 and strictly increasing"
    if spec.kind == "namespace":
        return "a name matching [a-zA-Z_][a-zA-Z0-9_]* or empty"
    if spec.kind == "header":
        return "an HTTP header name (letters, digits and -), or off (or empty) for none"
    return "a string"


def parse_value(spec: SettingSpec, raw: object, *, allow_text: bool) -> object:
    """The typed value of ``raw`` for ``spec``, or InvalidValue.

    ``allow_text`` is False for YAML, whose values are already typed (a quoted "9091" is a
    mistake there), and True for the environment, framework settings and the command line.
    """
    expected = expected_text(spec, allow_text=allow_text)
    if raw is None or raw == "":
        if spec.default is None:
            return None
        if raw == "" and spec.kind in ("str", "namespace", "header"):
            return ""
        raise InvalidValue(expected, describe(raw))
    got = describe(raw, secret=spec.secret)
    if spec.kind == "bool":
        return _parse_bool(raw, expected, got, allow_text)
    if spec.kind == "int":
        return _parse_int(spec, raw, expected, got, allow_text)
    if spec.kind == "seconds":
        return _parse_seconds(raw, expected, got, allow_text)
    if spec.kind == "buckets":
        return _parse_buckets(raw, expected, got, allow_text)
    if not isinstance(raw, str):
        raise InvalidValue(expected, got)
    if spec.kind == "namespace" and not _NAMESPACE.fullmatch(raw):
        raise InvalidValue(expected, got)
    if spec.kind == "header":
        raw = raw.strip()
        if raw.lower() == "off":  # an empty environment variable means "unset" instead
            return ""
        if raw and not _HEADER.fullmatch(raw):
            raise InvalidValue(expected, got)
    return raw


def _parse_bool(raw: object, expected: str, got: str, allow_text: bool) -> bool:
    if isinstance(raw, bool):
        return raw
    if allow_text and isinstance(raw, str):
        word = raw.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
    raise InvalidValue(expected, got)


def _parse_int(spec: SettingSpec, raw: object, expected: str, got: str, allow_text: bool) -> int:
    # bool is an int subclass, but `metrics_port: true` is a mistake, not port 1.
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif allow_text and isinstance(raw, str):
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise InvalidValue(expected, got) from None
    else:
        raise InvalidValue(expected, got)
    too_low = spec.minimum is not None and value < spec.minimum
    too_high = spec.maximum is not None and value > spec.maximum
    if too_low or too_high:
        raise InvalidValue(expected, str(value))
    return value


def _parse_seconds(raw: object, expected: str, got: str, allow_text: bool) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif allow_text and isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise InvalidValue(expected, got) from None
    else:
        raise InvalidValue(expected, got)
    if not (math.isfinite(value) and value > 0):
        raise InvalidValue(expected, format_number(value) if math.isfinite(value) else got)
    return value


def _parse_buckets(raw: object, expected: str, got: str, allow_text: bool) -> tuple[float, ...]:
    if allow_text and isinstance(raw, str):
        try:
            values = [float(part) for part in raw.split(",")]
        except ValueError:
            raise InvalidValue(expected, got) from None
    elif isinstance(raw, list | tuple) and all(_is_number(v) for v in raw):
        values = [float(v) for v in raw]
    else:
        raise InvalidValue(expected, got)
    shown = ", ".join(format_number(v) for v in values)
    if not values:
        raise InvalidValue(expected, "an empty list")
    if not all(math.isfinite(v) for v in values):
        raise InvalidValue(expected, f"[{shown}] (+Inf is added automatically)")
    if values[0] <= 0:
        raise InvalidValue(expected, f"[{shown}] (not > 0)")
    if any(a >= b for a, b in itertools.pairwise(values)):
        raise InvalidValue(expected, f"[{shown}] (not strictly increasing)")
    return tuple(values)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- the merged result ----------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    key: str  # the key as written where the value came from
    source: str  # where, as shown in a Problem
    label: str  # where, as shown in ResolvedSettings.sources


def check_settings(settings: Settings, origins: Mapping[str, Origin]) -> list[Problem]:
    """Checks that span fields or touch the filesystem; each names the offending value."""
    problems: list[Problem] = []

    def problem(field: str, expected: str, got: str) -> None:
        origin = origins.get(field) or Origin(SPECS_BY_FIELD[field].key, "default", "default")
        problems.append(Problem(origin.key, origin.source, expected, got))

    if settings.ssl_enabled:
        for field, what in (("ssl_certfile", "certificate"), ("ssl_keyfile", "private key")):
            if getattr(settings, field) is None:
                spec = SPECS_BY_FIELD[field]
                problem("ssl_enabled", f"{spec.key} ({spec.env}) set when SSL is enabled",
                        f"no {what} file")  # fmt: skip
    for field in ("ssl_certfile", "ssl_keyfile", "ssl_client_cafile"):
        path = getattr(settings, field)
        if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            state = "a directory" if os.path.isdir(path) else (
                "an unreadable file" if os.path.exists(path) else "no such file"
            )  # fmt: skip
            problem(field, "a readable file", f"{state} {path}")
    if settings.ssl_client_auth_required and settings.ssl_client_cafile is None:
        spec = SPECS_BY_FIELD["ssl_client_cafile"]
        problem("ssl_client_auth_required",
                f"{spec.key} ({spec.env}) set when client certificates are required",
                "no client CA file")  # fmt: skip
    if (settings.auth_username is None) != (settings.auth_password is None):
        given, missing = (
            ("auth_username", "auth_password") if settings.auth_password is None
            else ("auth_password", "auth_username")
        )  # fmt: skip
        spec = SPECS_BY_FIELD[missing]
        problem(given, f"{spec.key} ({spec.env}) as well: username and password go together",
                f"no {spec.path.split('.')[-1]}")  # fmt: skip
    path = settings.multiproc_dir
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        problem("multiproc_dir", "a directory (or a path that does not exist yet)",
                f"a file {path}")  # fmt: skip
    _check_redis(settings, problem)
    return problems


_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _check_redis(settings: Settings, problem: Callable[[str, str, str], None]) -> None:
    if settings.redis_url is not None:
        scheme = urlsplit(settings.redis_url).scheme
        if scheme not in _REDIS_SCHEMES:
            # Only the scheme is shown: the rest of the URL may hold a password.
            got = f"scheme {scheme!r}" if scheme else "no scheme"
            problem("redis_url", "a URL starting with redis://, rediss:// or unix://", got)
    if settings.redis_retention <= settings.redis_push_interval:
        interval = SPECS_BY_FIELD["redis_push_interval"]
        problem("redis_retention",
                f"more seconds than {interval.key} ({interval.env}), "
                f"{format_number(settings.redis_push_interval)}, or instances would flicker",
                format_number(settings.redis_retention))  # fmt: skip
    # find_spec, not import: redis-py stays unloaded until the master actually pushes.
    if settings.redis_enabled and importlib.util.find_spec("redis") is None:
        problem("redis_enabled",
                "the redis package installed with it: pip install 'gunicorn-prom-ext[redis]'",
                "true, but redis-py is not installed")  # fmt: skip


# --- rendering ------------------------------------------------------------------------------


def format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def format_value(value: object) -> str:
    """A value as a user would write it in YAML; ``(unset)`` for None."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, tuple):
        return ", ".join(format_number(v) for v in value)
    if value == "":
        return '""'
    return str(value)


def settings_reference_markdown() -> str:
    """The README's configuration table, generated so it cannot drift from SETTINGS."""
    lines = [
        "| YAML key | Environment variable | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for spec in SETTINGS:
        meaning = f"{spec.help} Secret." if spec.secret else spec.help
        default = "unset" if spec.default is None else f"`{format_value(spec.default)}`"
        lines.append(f"| `{spec.key}` | `{spec.env}` | {default} | {meaning} |")
    return "\n".join(lines) + "\n"
