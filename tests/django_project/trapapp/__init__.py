"""An installed app that imports prometheus_client when Django loads it, as
django-prometheus does: before `rungunicorn` could export the multiprocess directory."""

import prometheus_client  # noqa: F401
