"""A gunicorn configuration module: ``gunicorn -c python:gunicorn_prom_ext.gunicorn_conf app:app``.

It defines the fifteen server hooks and nothing else, so every gunicorn setting stays
yours (command line, GUNICORN_CMD_ARGS). Settings of this package come from the
environment and the YAML file named by GUNICORN_PROM_EXT_CONFIG; they are read by the
first hook, not here.

``hooks`` is the one instance for this process tree. It lives here because gunicorn
re-executes a config *file* on HUP while a module import is cached: a gunicorn.conf.py
that calls ``install_hooks(globals())`` reuses this instance, so its state survives.
"""

from gunicorn_prom_ext.hooks import PrometheusHooks

hooks = PrometheusHooks()

on_starting = hooks.on_starting
on_reload = hooks.on_reload
when_ready = hooks.when_ready
pre_fork = hooks.pre_fork
post_fork = hooks.post_fork
post_worker_init = hooks.post_worker_init
worker_int = hooks.worker_int
worker_abort = hooks.worker_abort
pre_exec = hooks.pre_exec
pre_request = hooks.pre_request
post_request = hooks.post_request
child_exit = hooks.child_exit
worker_exit = hooks.worker_exit
nworkers_changed = hooks.nworkers_changed
on_exit = hooks.on_exit
