from django.urls import include, path
from shop import views

urlpatterns = [
    path("", views.index),
    path("items/<int:pk>", views.item),
    path("boom", views.boom),
    path("", include("django_app.urls")),  # optional: /metrics served by the app too
]
