"""The benchmark's Django project, bare: one hello-world view, no gunicorn-prom-ext."""

SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "benchsite.urls"
DATABASES: dict[str, object] = {}
USE_TZ = True
