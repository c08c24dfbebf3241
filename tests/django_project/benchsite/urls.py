from typing import Any

from django.http import HttpResponse
from django.urls import path


def hello(request: Any) -> HttpResponse:
    return HttpResponse(b"Hello, world!\n", content_type="text/plain")


urlpatterns = [path("", hello)]
