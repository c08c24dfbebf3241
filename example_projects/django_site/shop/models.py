from django.db import models


class Item(models.Model):  # type: ignore[misc]  # Django is untyped
    name = models.CharField(max_length=100)
    price_cents = models.PositiveIntegerField()

    def __str__(self) -> str:
        return str(self.name)
