"""ASGI apps in the shapes servers accept besides a coroutine function (test_worker_classes.py).

Each answers 201 with the route ``/form`` in the scope and its own name as the body, so a
test sees both that the app ran and that the request was recorded under its route.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

ROUTE_KEY = "gunicorn_prom_ext.route"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def _answer(scope: Scope, receive: Receive, send: Send, name: bytes = b"app") -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    scope[ROUTE_KEY] = "/form"
    # A length: gunicorn 24's asgi worker never ends a response without one.
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(name)).encode())]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": name})


# gunicorn's asgi worker calls it as ASGI 3; uvicorn's rule takes it for ASGI 2.
partial_app = functools.partial(_answer, name=b"partial")


class Asgi2App:
    """An ASGI 2 app: instantiated with the scope, then called with receive and send
    (uvicorn runs it; gunicorn's asgi worker calls every app as ASGI 3)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, receive: Receive, send: Send) -> None:
        await _answer(self.scope, receive, send, b"asgi2")
