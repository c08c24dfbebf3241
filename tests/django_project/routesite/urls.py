from django.contrib import admin
from django.urls import include, path, re_path
from rest_framework.routers import DefaultRouter
from rest_framework.urlpatterns import format_suffix_patterns

from . import api, views

router = DefaultRouter()
router.register("snippets", api.SnippetViewSet)

# A regex include prefix in front of a path() and a re_path() (include chains join the
# route strings: "^v(?P<version>[12])/items/<int:pk>").
versioned = [
    path("items/<int:pk>", views.item),
    re_path(r"^notes/(?P<slug>[-\w]+)\.txt$", views.note),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
    re_path(r"^v(?P<version>[12])/", include(versioned)),
    path("robots.txt", views.robots),
    *format_suffix_patterns([path("things/<int:pk>", api.ThingView.as_view())]),
]
