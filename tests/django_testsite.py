"""Django configured in-process from the test project's settings (tests/django_project).

Not through DJANGO_SETTINGS_MODULE, which would leak into the environment of every server
other tests start. The first test module to call ``configure()`` does it; later calls
find Django configured already.
"""

from __future__ import annotations

import sys
from pathlib import Path

DJANGO_DIR = Path(__file__).resolve().parent / "django_project"


def configure() -> None:
    if str(DJANGO_DIR) not in sys.path:
        sys.path.insert(0, str(DJANGO_DIR))
    import django
    from django.conf import settings

    if settings.configured:
        return
    from testsite import settings as project_settings

    names = [name for name in dir(project_settings) if name.isupper()]
    settings.configure(**{name: getattr(project_settings, name) for name in names})
    django.setup()
