"""The test project as an ASGI application, wrapped the way an ASGI metrics wrapper reads
the route: from the scope, once Django has produced its response. The wrapper shows it as
an ``x-route`` response header, so a test can see it through a real ASGI server."""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testsite.settings")

ROUTE_KEY = "gunicorn_prom_ext.route"
django_application = get_asgi_application()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    async def send_with_route(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and ROUTE_KEY in scope:
            headers = [*message.get("headers", []), (b"x-route", scope[ROUTE_KEY].encode())]
            message = {**message, "headers": headers}
        await send(message)

    await django_application(scope, receive, send_with_route)
