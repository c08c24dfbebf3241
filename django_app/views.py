"""The optional in-app ``/metrics`` view: ``path("", include("django_app.urls"))``.

It relays the gunicorn master's metrics endpoint over loopback, so it serves exactly the
page the master serves (every worker's metrics and the master's own), behind the same
authentication settings: the client's Authorization header is passed through and checked
by the master.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse, HttpResponseNotAllowed

from gunicorn_prom_ext.relay import relay_scrape

from .conf import running_settings


def metrics(request: Any) -> Any:
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    status, headers, body = relay_scrape(running_settings(), request.headers)
    response = HttpResponse(body, status=status)
    for name, value in headers:
        response[name] = value
    response["Cache-Control"] = "no-store"
    return response
