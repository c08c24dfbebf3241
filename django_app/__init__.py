"""Django adapter for gunicorn-prom-ext.

``INSTALLED_APPS += ["django_app"]``, ``"django_app.middleware.RouteMiddleware"`` at the
top of ``MIDDLEWARE``, ``GUNICORN_PROMETHEUS = {...}`` in settings, then
``python manage.py rungunicorn`` (or ``gunicorn mysite.wsgi -c
python:django_app.gunicorn_conf``). Importing this package imports neither Django nor
prometheus_client.
"""
