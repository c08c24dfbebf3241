"""Django system checks for ``GUNICORN_PROMETHEUS`` and the route middleware.

They run with ``manage.py check``, before ``rungunicorn`` serves, and with every other
command that runs checks. Every id is documented in the README (Django section):

=================  ==============================================================
django_app.E001    GUNICORN_PROMETHEUS is not a dict (the server refuses it too).
django_app.E002    GUNICORN_PROMETHEUS has an unknown key.
django_app.E003    GUNICORN_PROMETHEUS has a value of the wrong type or range (a
                   number not in ASCII digits, text that is not UTF-8, …).
django_app.E004    GUNICORN_PROMETHEUS names one setting twice (e.g. in two cases).
django_app.E005    GUNICORN_PROMETHEUS values the server would refuse at start:
                   values that do not go together (SSL without a certificate, a TLS
                   file while TLS is off, an empty AUTH_* value), a file that is
                   not there or not PEM, an address the endpoint cannot listen on,
                   a REDIS_URL that does not parse. Every problem of the core's
                   checks (gunicorn_prom_ext.validation) that comes from the setting.
django_app.E006    The environment or the YAML file (GUNICORN_PROM_EXT_CONFIG) has
                   an invalid setting: the server would refuse to start.
django_app.E007    GUNICORN_PROMETHEUS_RAW_REGEX_ROUTES is not True or False.
django_app.W001    The route middleware is not in MIDDLEWARE: http_route stays empty.
=================  ==============================================================

Not known here: gunicorn's own binds (so a metrics port equal to one of them is found
only when the server starts) and what Redis answers (its PING is made at start).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.checks import CheckMessage, Error, Warning

from gunicorn_prom_ext.settings import SPECS_BY_FIELD, ConfigError
from gunicorn_prom_ext.values import InvalidValue, parse_value, shown_key

from .conf import (
    FRAMEWORK_SOURCE,
    RAW_REGEX_ROUTES_SETTING,
    SETTING_NAME,
    raw_regex_routes_setting,
    raw_setting,
)

MIDDLEWARE_PATH = "django_app.middleware.RouteMiddleware"
_OBJ = f"settings.{SETTING_NAME}"

E001 = "django_app.E001"
E002 = "django_app.E002"
E003 = "django_app.E003"
E004 = "django_app.E004"
E005 = "django_app.E005"
E006 = "django_app.E006"
E007 = "django_app.E007"
W001 = "django_app.W001"


def _known_keys() -> list[str]:
    return [field.upper() for field in SPECS_BY_FIELD]


def check_gunicorn_prometheus(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[
    CheckMessage
]:
    """E001 to E006: the setting alone, then every source merged as the server will."""
    value = raw_setting()
    if not isinstance(value, Mapping):
        return [
            Error(
                f"{SETTING_NAME} must be a dict, got {type(value).__name__}.",
                hint=f'For example {SETTING_NAME} = {{"METRICS_PORT": 9091}}.',
                obj=_OBJ,
                id=E001,
            )
        ]
    messages: list[CheckMessage] = []
    reported: set[str] = set()  # field names already reported from the setting itself
    seen: dict[str, str] = {}
    for given_key, raw in value.items():
        key = str(given_key)
        spec = SPECS_BY_FIELD.get(key.lower())
        if spec is None:
            match = difflib.get_close_matches(key.upper(), _known_keys(), n=1)
            hint = (
                f"Did you mean {match[0]}?" if match
                else f"Known keys: {', '.join(_known_keys())}."
            )  # fmt: skip
            messages.append(
                Error(
                    f"{SETTING_NAME} has an unknown key {shown_key(key)!r}.",
                    hint=hint,
                    obj=_OBJ,
                    id=E002,
                )
            )
            continue
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue  # counts as not set, as an empty environment variable does
        if spec.field in seen:
            messages.append(
                Error(
                    f"{SETTING_NAME} sets {spec.field.upper()} twice, as {seen[spec.field]!r} "
                    f"and {shown_key(key)!r}.",
                    hint="Keep one of them (keys are case-insensitive).",
                    obj=_OBJ,
                    id=E004,
                )
            )
            reported.add(spec.field)
            continue
        seen[spec.field] = key
        try:
            parse_value(spec, raw, allow_text=True)
        except InvalidValue as exc:
            reported.add(spec.field)
            messages.append(
                Error(
                    f"{SETTING_NAME}[{shown_key(key)!r}]: expected {exc.expected}, got {exc.got}.",
                    hint=f"{spec.help} Environment equivalent: {spec.env}.",
                    obj=_OBJ,
                    id=E003,
                )
            )
    messages.extend(_merged_problems(reported))
    return messages


def _merged_problems(reported: set[str]) -> list[CheckMessage]:
    """What the server itself would refuse, from whichever source (E005, E006)."""
    from .conf import resolve_settings

    try:
        resolve_settings()
    except ConfigError as error:
        problems = error.problems
    else:
        return []
    messages: list[CheckMessage] = []
    for problem in problems:
        if problem.source == FRAMEWORK_SOURCE:
            spec = SPECS_BY_FIELD.get(problem.key.lower())
            if spec is None or spec.field in reported:
                continue  # already E002/E003/E004
            messages.append(
                Error(
                    f"{SETTING_NAME}[{problem.key!r}]: expected "
                    f"{_in_django_terms(problem.expected)}, got {problem.got}.",
                    hint=problem.hint or "Set the related keys together in "
                    f"{SETTING_NAME} (see the README's settings table).",
                    obj=_OBJ,
                    id=E005,
                )
            )
        else:
            messages.append(
                Error(
                    f"{problem.key} ({problem.source}): expected {problem.expected}, "
                    f"got {problem.got}.",
                    hint=problem.hint or "This comes from outside Django's settings: fix the "
                    "environment variable or the YAML file; the server would not start.",
                    obj=_OBJ,
                    id=E006,
                )
            )
    return messages


def _in_django_terms(text: str) -> str:
    """The core names related settings by YAML key and variable; here, by dict key."""
    for spec in SPECS_BY_FIELD.values():
        text = text.replace(f"{spec.key} ({spec.env})", spec.field.upper())
    return text


def check_middleware(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[
    CheckMessage
]:
    """W001: without the middleware every request is recorded with an empty route."""
    from django.conf import settings

    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    if MIDDLEWARE_PATH in middleware:
        return []
    return [
        Warning(
            f"{MIDDLEWARE_PATH} is not in MIDDLEWARE: request metrics will have an empty "
            "http_route label.",
            hint=f"Add {MIDDLEWARE_PATH!r} at the top of MIDDLEWARE.",
            obj="settings.MIDDLEWARE",
            id=W001,
        )
    ]


def check_raw_regex_routes(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[
    CheckMessage
]:
    """E007: the route setting takes True or False only (anything else reads as False)."""
    value = raw_regex_routes_setting()
    if isinstance(value, bool):
        return []
    return [
        Error(
            f"{RAW_REGEX_ROUTES_SETTING} must be True or False, got {type(value).__name__} "
            f"{value!r:.40}.",
            hint="True labels re_path() routes with their raw regex; False (the default) "
            "with a readable template such as /snippets/<pk>/.",
            obj=f"settings.{RAW_REGEX_ROUTES_SETTING}",
            id=E007,
        )
    ]
