"""Settings of the test project.

They import prometheus_client, and so does the installed app ``trapapp``, before the
multiprocess directory could be set: the trap `rungunicorn` must get out of (by
re-executing itself).
GUNICORN_PROMETHEUS comes from the TEST_GUNICORN_PROMETHEUS variable (JSON), so a test
can give the server any value, valid or not.
"""

import json
import os

import prometheus_client  # noqa: F401  (the trap: imported with the settings)

SECRET_KEY = "not-a-secret-test-key"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["trapapp", "django_app"]
MIDDLEWARE = [
    "django_app.middleware.RouteMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "testsite.urls"
WSGI_APPLICATION = "testsite.wsgi.application"
DATABASES: dict[str, object] = {}
USE_TZ = True
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    # The view that raises on purpose: keep its traceback out of the server log.
    "loggers": {"django.request": {"handlers": ["null"], "propagate": False}},
}

GUNICORN_PROMETHEUS = json.loads(os.environ.get("TEST_GUNICORN_PROMETHEUS", "{}"))
# Served by `rungunicorn -k <an ASGI worker class>` when set (as Daphne and Channels read it).
ASGI_APPLICATION = os.environ.get("TEST_ASGI_APPLICATION") or None
