"""gunicorn-prom-ext: Prometheus metrics for apps served by Gunicorn."""
