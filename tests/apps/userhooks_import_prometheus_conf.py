"""The prometheus_client trap: a gunicorn config that imports prometheus_client at the top.

prometheus_client picks its storage at first import. Without PROMETHEUS_MULTIPROC_DIR in the
environment by then, the master (and every worker forked from it) stays in single-process
mode and app metrics would silently never reach the endpoint: gunicorn-prom-ext must refuse
to start. With the variable exported first, this config is fine.
"""

from __future__ import annotations

import prometheus_client  # noqa: F401  (the point of this file)

from gunicorn_prom_ext.hooks import install_hooks

install_hooks(globals())
