"""A gunicorn.conf.py that patches with gevent before anything else, as gevent's docs advise
for apps whose imports must see the patched modules, then installs the hooks.

The master is patched too: its threads (the /metrics endpoint's) are greenlets there.
"""

from gevent import monkey

monkey.patch_all()

from gunicorn_prom_ext.hooks import install_hooks  # noqa: E402  (after patching, on purpose)

install_hooks(globals())
