"""What gunicorn's tornado worker serves as it is, without a WSGIContainer of its own: a
tornado Application (nothing to record: tornado serves it, not WSGI) and a WSGIContainer
(the WSGI app inside it is recorded)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import tornado.web
from tornado.wsgi import WSGIContainer


class ItemHandler(tornado.web.RequestHandler):
    def get(self, item: str) -> None:
        self.write(f"item {item}")


application = tornado.web.Application([(r"/items/(\d+)", ItemHandler)])


def _wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ["gunicorn_prom_ext.route"] = "/contained"
    start_response("202 Accepted", [("Content-Type", "text/plain")])
    return [b"contained"]


container = WSGIContainer(_wsgi)
