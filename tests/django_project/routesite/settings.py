"""Settings of the routes test project: Django's admin and a Django REST Framework router,
whose URL patterns are regexes (re_path), next to path() routes and include() chains
mixing both.

The SQLite file comes from ROUTESITE_DB (the test runs ``migrate --run-syncdb`` into
it); GUNICORN_PROMETHEUS from TEST_GUNICORN_PROMETHEUS (JSON), and
GUNICORN_PROMETHEUS_RAW_REGEX_ROUTES from TEST_RAW_REGEX_ROUTES (JSON, when set).
"""

import json
import os

SECRET_KEY = "not-a-secret-test-key"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "routesite",
    "django_app",
]
MIDDLEWARE = [
    "django_app.middleware.RouteMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "routesite.urls"
WSGI_APPLICATION = "routesite.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("ROUTESITE_DB", ":memory:"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"
USE_TZ = True
REST_FRAMEWORK = {"DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]}

GUNICORN_PROMETHEUS = json.loads(os.environ.get("TEST_GUNICORN_PROMETHEUS", "{}"))
if "TEST_RAW_REGEX_ROUTES" in os.environ:
    GUNICORN_PROMETHEUS_RAW_REGEX_ROUTES = json.loads(os.environ["TEST_RAW_REGEX_ROUTES"])
