"""A Django REST Framework viewset with extra actions, registered on a DefaultRouter
(which adds the API root and format-suffix patterns: every route is a regex)."""

from typing import Any

from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import Snippet


class SnippetSerializer(serializers.ModelSerializer):  # type: ignore[misc]
    class Meta:
        model = Snippet
        fields = ("id", "title", "code")


class SnippetViewSet(viewsets.ModelViewSet):  # type: ignore[misc]
    queryset = Snippet.objects.order_by("id")
    serializer_class = SnippetSerializer

    @action(detail=True)  # type: ignore[untyped-decorator]
    def highlight(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({"highlighted": f"<b>{self.get_object().code}</b>"})

    @action(detail=False, url_path=r"by-title/(?P<title>[^/.]+)")  # type: ignore[untyped-decorator]
    def by_title(self, request: Request, title: str, **kwargs: Any) -> Response:
        found = self.get_queryset().filter(title=title)
        return Response(self.get_serializer(found, many=True).data)


class ThingView(APIView):  # type: ignore[misc]
    """A path() route given format suffixes by format_suffix_patterns: still a path()."""

    def get(self, request: Request, pk: int, format: str | None = None) -> Response:
        return Response({"thing": pk})
