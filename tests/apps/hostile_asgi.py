"""An ASGI app that fails, streams and misbehaves in the ways the middleware must count.

Paths: ``/ok``; ``/raise-after-start`` (starts a 200, raises before any body);
``/raise-midstream`` (raises after the first body chunk); ``/no-response`` (returns
without answering); ``/start-only`` (starts a 200, returns without a body);
``/stream`` (200 chunks, 10 ms apart); ``/bad-body`` (a body that is not bytes).
Every HTTP request names its route ``/x``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

ROUTE_KEY = "gunicorn_prom_ext.route"
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


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    scope[ROUTE_KEY] = "/x"
    path = scope["path"]
    start = {"type": "http.response.start", "status": 200, "headers": []}
    if path == "/raise-after-start":
        await send(start)
        raise RuntimeError("hostile_asgi: failure after http.response.start")
    if path == "/raise-midstream":
        await send(start)
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        raise RuntimeError("hostile_asgi: failure in the middle of the body")
    if path == "/no-response":
        return
    if path == "/start-only":
        await send(start)
        return
    if path == "/stream":
        await send(start)
        for _ in range(200):
            await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/bad-body":
        await send(start)
        await send({"type": "http.response.body", "body": 12345})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"ok"})
