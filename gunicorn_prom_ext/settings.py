"""The one typed settings object, its defaults, and the table of every setting.

Everything else in the package receives a ``Settings`` instance; nothing reads the
environment or a file on its own. ``sources.py`` builds a ``Settings`` from defaults,
a YAML file, the environment, framework settings and the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
# Body sizes in bytes: 100 B .. 100 MB, one bucket per decade.
DEFAULT_BODY_SIZE_BUCKETS: tuple[float, ...] = (
    100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0, 10_000_000.0, 100_000_000.0,
)


@dataclass(frozen=True)
class Settings:
    # exporter.prometheus
    metrics_port: int = 9091
    bind_address: str = "0.0.0.0"
    multiproc_dir: str | None = None
    namespace: str = ""
    duration_buckets: tuple[float, ...] = DEFAULT_DURATION_BUCKETS
    body_size_buckets: tuple[float, ...] = DEFAULT_BODY_SIZE_BUCKETS
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
    redis_host: str = "localhost"
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: str | None = None
    redis_key_prefix: str = "gunicorn"
    # exporter.gunicorn
    gunicorn_workers: int | None = None
    gunicorn_timeout: int | None = None
    gunicorn_keepalive: int | None = None
