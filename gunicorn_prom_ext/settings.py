"""The one typed settings object, its defaults, and the table of every setting.

Everything else in the package receives a ``Settings`` instance; nothing reads the
environment or a file on its own. ``sources.py`` builds a ``Settings`` from defaults,
a YAML file, the environment, framework settings and the command line; ``values.py``
parses one value and ``validation.py`` checks the merged result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

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
    response_timeout: float = 30.0
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

# "path": a file or directory name, which may hold any bytes but NUL (a "str" must be UTF-8).
Kind = Literal["bool", "int", "seconds", "str", "path", "buckets", "namespace", "header"]
# The largest database number Redis can have (its `databases` setting is a C int).
REDIS_MAX_DB = 2**31 - 1


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

    @property
    def reference(self) -> str:
        """How a problem about another setting names this one: YAML key and variable."""
        return f"{self.key} ({self.env})"


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("metrics_port", "prometheus.metrics_port", "PROMETHEUS_METRICS_PORT", "int",
                "TCP port of the metrics endpoint.", minimum=1, maximum=65535),
    SettingSpec("bind_address", "prometheus.bind_address", "PROMETHEUS_BIND_ADDRESS", "str",
                "Address the metrics endpoint listens on."),
    SettingSpec("multiproc_dir", "prometheus.multiproc_dir", "PROMETHEUS_MULTIPROC_DIR", "path",
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
                "int", "Connections the metrics endpoint holds at once, half of them from "
                "one client address (from 4 on); past it, the one idle longest is closed.",
                minimum=1, maximum=10000),
    SettingSpec("header_timeout", "prometheus.header_timeout", "PROMETHEUS_HEADER_TIMEOUT",
                "seconds", "Seconds a metrics client has to send its request (and finish "
                "the TLS handshake) before the endpoint closes the connection."),
    SettingSpec("response_timeout", "prometheus.response_timeout",
                "PROMETHEUS_RESPONSE_TIMEOUT", "seconds", "Seconds a metrics client has, "
                "from the end of its request, to receive the whole answer; then the "
                "endpoint resets the connection."),
    SettingSpec("auth_username", "auth.username", "PROMETHEUS_AUTH_USERNAME", "str",
                "Basic-auth user name for scrapes (set together with the password)."),
    SettingSpec("auth_password", "auth.password", "PROMETHEUS_AUTH_PASSWORD", "str",
                "Basic-auth password for scrapes.", secret=True),
    SettingSpec("auth_token", "auth.bearer_token", "PROMETHEUS_AUTH_TOKEN", "str",
                "Bearer token for scrapes.", secret=True),
    SettingSpec("ssl_enabled", "ssl.enabled", "PROMETHEUS_SSL_ENABLED", "bool",
                "Serve the metrics endpoint over HTTPS."),
    SettingSpec("ssl_certfile", "ssl.certfile", "PROMETHEUS_SSL_CERTFILE", "path",
                "PEM certificate (chain) of the metrics endpoint."),
    SettingSpec("ssl_keyfile", "ssl.keyfile", "PROMETHEUS_SSL_KEYFILE", "path",
                "PEM private key of that certificate."),
    SettingSpec("ssl_client_cafile", "ssl.client_cafile", "PROMETHEUS_SSL_CLIENT_CAFILE", "path",
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
    SettingSpec("redis_db", "redis.db", "REDIS_DB", "int", "Redis database number.", minimum=0,
                maximum=REDIS_MAX_DB),
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


MAX_LISTED_PROBLEMS = 20


class ConfigError(RuntimeError):
    """Every problem of one load. A RuntimeError so gunicorn prints it as one clean error."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        count = len(self.problems)
        lines = [f"invalid gunicorn-prom-ext configuration ({count} problem{'s' * (count != 1)}):"]
        # A hostile file can hold thousands of unknown keys: the message stays readable.
        lines += [f"  - {problem}" for problem in self.problems[:MAX_LISTED_PROBLEMS]]
        if count > MAX_LISTED_PROBLEMS:
            lines.append(f"  - ... and {count - MAX_LISTED_PROBLEMS} more")
        super().__init__("\n".join(lines))


# --- where a value came from --------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    key: str  # the key as written where the value came from
    source: str  # where, as shown in a Problem
    label: str  # where, as shown in ResolvedSettings.sources


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
