"""Flask adapter for gunicorn-prom-ext (arrives with issue 6)."""
