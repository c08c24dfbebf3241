from typing import Any

from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404

from .models import Item


def index(request: Any) -> HttpResponse:
    lines = [f"{item.pk}: {item.name}" for item in Item.objects.order_by("pk")]
    return HttpResponse("\n".join(["Items (try /items/1, /items/99, /boom):", *lines]) + "\n",
                        content_type="text/plain")


def item(request: Any, pk: int) -> JsonResponse:
    found = get_object_or_404(Item, pk=pk)  # /items/99: 404, still under its route
    return JsonResponse({"id": found.pk, "name": found.name, "price_cents": found.price_cents})


def boom(request: Any) -> HttpResponse:
    raise RuntimeError("an unhandled error: Django answers 500, and it is counted as such")
