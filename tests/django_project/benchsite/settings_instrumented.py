"""The same project as rungunicorn serves it: the app installed, the route middleware on."""

from .settings_bare import *  # noqa: F403
from .settings_bare import INSTALLED_APPS, MIDDLEWARE

INSTALLED_APPS = [*INSTALLED_APPS, "django_app"]
MIDDLEWARE = ["django_app.middleware.RouteMiddleware", *MIDDLEWARE]
GUNICORN_PROMETHEUS: dict[str, object] = {}
