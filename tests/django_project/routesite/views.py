from typing import Any

from django.http import HttpResponse


def item(request: Any, pk: int, version: str = "") -> HttpResponse:
    return HttpResponse(f"item {pk} v{version}\n".encode())


def note(request: Any, slug: str, version: str = "") -> HttpResponse:
    return HttpResponse(f"note {slug}\n".encode())


def robots(request: Any) -> HttpResponse:
    return HttpResponse(b"User-agent: *\n")
