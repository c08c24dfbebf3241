"""``gunicorn mysite.wsgi -c python:django_app.gunicorn_conf``: plain gunicorn, with
``GUNICORN_PROMETHEUS`` read from the project's Django settings.

Like ``python:gunicorn_prom_ext.gunicorn_conf`` it defines the fifteen server hooks and
nothing else. The settings module is DJANGO_SETTINGS_MODULE (environment or ``-e``),
else the one the app module names in its ``os.environ.setdefault(...)`` line; it is read
in the master's first hook, not at import. In your own gunicorn.conf.py:
``install_hooks(globals(), django_app.gunicorn_conf.hooks)``.
"""

from django_app.hooks import DjangoPrometheusHooks

hooks = DjangoPrometheusHooks()

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
