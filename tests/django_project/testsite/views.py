from typing import Any

from django.http import Http404, HttpResponse
from prometheus_client import Counter

# The project's own metric: it reaches the master's page only if prometheus_client runs
# in multiprocess mode in the workers.
ITEM_VIEWS = Counter("testsite_item_views", "Item pages served.")


def index(request: Any) -> HttpResponse:
    return HttpResponse(b"home\n")


def item(request: Any, pk: int) -> HttpResponse:
    ITEM_VIEWS.inc()
    status = 201 if request.method == "POST" else 200
    return HttpResponse(f"item {pk}\n".encode(), status=status)


def thing(request: Any, name: str) -> HttpResponse:
    return HttpResponse(f"thing {name}\n".encode())


def legacy(request: Any, year: str) -> HttpResponse:
    return HttpResponse(f"year {year}\n".encode())


def boom(request: Any) -> HttpResponse:
    raise RuntimeError("boom (on purpose)")


def gone(request: Any) -> HttpResponse:
    raise Http404("no such thing")


async def async_item(request: Any, pk: int) -> HttpResponse:
    return HttpResponse(f"async item {pk}\n".encode())


async def async_boom(request: Any) -> HttpResponse:
    raise RuntimeError("async boom (on purpose)")
