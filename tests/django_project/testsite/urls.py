from django.urls import include, path, re_path

from . import views

api = [path("things/<slug:name>", views.thing)]

urlpatterns = [
    path("", views.index),
    path("items/<int:pk>", views.item),
    path("boom", views.boom),
    path("gone", views.gone),
    path("async/items/<int:pk>", views.async_item),
    path("async/boom", views.async_boom),
    path("api/", include(api)),
    re_path(r"^legacy/(?P<year>[0-9]{4})/$", views.legacy),
    path("", include("django_app.urls")),
]
