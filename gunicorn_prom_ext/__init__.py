"""gunicorn-prom-ext: Prometheus metrics for apps served by Gunicorn.

Importing this package (or ``gunicorn_prom_ext.gunicorn_conf``) does nothing but define
names: in particular it does not import prometheus_client, which must first see
PROMETHEUS_MULTIPROC_DIR, set by the first gunicorn hook.
"""

from gunicorn_prom_ext.hooks import PrometheusHooks, install_hooks
from gunicorn_prom_ext.labels import ROUTE_ENVIRON_KEY
from gunicorn_prom_ext.settings import ConfigError, Settings
from gunicorn_prom_ext.sources import load_settings, load_yaml_config

__all__ = [
    "ROUTE_ENVIRON_KEY",
    "ConfigError",
    "PrometheusHooks",
    "Settings",
    "install_hooks",
    "load_settings",
    "load_yaml_config",
]
