"""A gunicorn config file written for plain gunicorn: with rungunicorn it would install
the hooks a second time, which the command refuses."""

from gunicorn_prom_ext.hooks import install_hooks

install_hooks(globals())
