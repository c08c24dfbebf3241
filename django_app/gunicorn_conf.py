"""``gunicorn mysite.wsgi -c python:django_app.gunicorn_conf``: plain gunicorn, with
``GUNICORN_PROMETHEUS`` read from the project's Django settings.

Like ``python:gunicorn_prom_ext.gunicorn_conf`` it defines the fifteen server hooks and
nothing else. The settings module is DJANGO_SETTINGS_MODULE (environment or ``-e``),
else the one the app module names in its ``os.environ.setdefault(...)`` line; it is read
in the master's first hook, not at import. In your own gunicorn.conf.py:
``install_hooks(globals(), django_app.gunicorn_conf.hooks)``.
"""

from django_app.hooks import DjangoPrometheusHooks
from gunicorn_prom_ext.hooks import install_hooks

hooks = DjangoPrometheusHooks()
# on_starting, when_ready, … post_request: the fifteen names gunicorn looks for here.
install_hooks(globals(), hooks)
