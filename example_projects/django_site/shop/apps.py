from django.apps import AppConfig


class ShopConfig(AppConfig):  # type: ignore[misc]  # Django is untyped
    name = "shop"
    default_auto_field = "django.db.models.BigAutoField"
