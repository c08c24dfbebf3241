"""A gunicorn configuration module: ``gunicorn -c python:gunicorn_prom_ext.gunicorn_conf app:app``.

It defines the fifteen server hooks and nothing else, so every gunicorn setting stays
yours (command line, GUNICORN_CMD_ARGS). Settings of this package come from the
environment and the YAML file named by GUNICORN_PROM_EXT_CONFIG; they are read by the
first hook, not here.

``hooks`` is the one instance for this process tree. It lives here because gunicorn
re-executes a config *file* on HUP while a module import is cached: a gunicorn.conf.py
that calls ``install_hooks(globals())`` reuses this instance, so its state survives.
"""

from gunicorn_prom_ext.hooks import PrometheusHooks, install_hooks

hooks = PrometheusHooks()
# on_starting, when_ready, … post_request: the fifteen names gunicorn looks for here.
install_hooks(globals(), hooks)
