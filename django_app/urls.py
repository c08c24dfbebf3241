"""``path("", include("django_app.urls"))`` serves the aggregated metrics at ``/metrics``."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "gunicorn_prometheus"
urlpatterns = [
    path("metrics", views.metrics, name="metrics"),
]
