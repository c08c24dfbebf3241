from typing import Any

from django.db import migrations, models


def seed(apps: Any, schema_editor: Any) -> None:
    item = apps.get_model("shop", "Item")
    for name, price in (("teapot", 2500), ("kettle", 4000), ("mug", 900)):
        item.objects.create(name=name, price_cents=price)


class Migration(migrations.Migration):  # type: ignore[misc]  # Django is untyped
    initial = True
    dependencies: list[tuple[str, str]] = []  # noqa: RUF012
    operations = [  # noqa: RUF012
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=100)),
                ("price_cents", models.PositiveIntegerField()),
            ],
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
