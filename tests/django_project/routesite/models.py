from django.db import models


class Snippet(models.Model):  # type: ignore[misc]  # Django is untyped
    title = models.CharField(max_length=100)
    code = models.TextField(blank=True)

    class Meta:
        app_label = "routesite"
