"""Django adapter for gunicorn-prom-ext (arrives with issue 5)."""
