"""The ASGI app of the smoke set: the paths, statuses and routes of smoke_wsgi.py.

The route template goes into the ASGI scope under the key the WSGI app uses in its environ
(``gunicorn_prom_ext.route``): the scope is one dict shared by the server, any middleware
and the app, so a wrapper sees it once the app has answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from smoke_wsgi import ROUTE_KEY, route_and_response, sleep_seconds

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    body = await _read_body(receive)
    route, code, out = route_and_response(scope["method"], scope["path"], body)
    if route is not None:
        scope[ROUTE_KEY] = route
    seconds = sleep_seconds(scope["path"])
    if seconds:
        await asyncio.sleep(seconds)
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(out)).encode())]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": out})
