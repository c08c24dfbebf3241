"""Settings of the example project: the three lines gunicorn-prom-ext asks for are marked."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "shop",
    "django_app",  # gunicorn-prom-ext (1/3): system checks, `manage.py rungunicorn`
]

MIDDLEWARE = [
    "django_app.middleware.RouteMiddleware",  # gunicorn-prom-ext (2/3): the http_route label
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# gunicorn-prom-ext (3/3): any core setting, by its upper-case name (README, Configuration).
# Between the environment and the command line in precedence: PROMETHEUS_METRICS_PORT in
# the environment still picks the port here, since METRICS_PORT is not set.
GUNICORN_PROMETHEUS = {
    "BIND_ADDRESS": "127.0.0.1",
}

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_SITE_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# Unhandled errors (GET /boom) on gunicorn's stderr, as runserver would show them.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR"}},
}
