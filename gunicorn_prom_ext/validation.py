"""Checks of the merged settings: values that go together, files, addresses, Redis URLs.

``check_settings`` is the one place these live. Every path that loads settings reaches it
through ``sources.load_settings``: the master's first hook (plain gunicorn, with either
config module), both framework commands, ``gunicorn-prom-ext check-config``, Django's
system checks and the sidecar. So what one accepts, all accept.

The rule behind most of them: a server whose user set any auth or TLS setting never serves
without it. A TLS file while TLS is off, an empty token, a certificate that does not load,
an address the endpoint cannot listen on, a metrics port gunicorn itself binds: each would
otherwise start a server that serves metrics openly, or not at all.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from .host_checks import bind_trouble, file_state, pem_problems
from .settings import REDIS_MAX_DB, SPECS_BY_FIELD, Origin, Problem, Settings, format_number
from .values import DECIMAL_TEXT, INTEGER_TEXT, describe

# Settings that switch a protection on. Given empty (an empty string, or null in YAML)
# they are never quietly dropped: see _check_blank_protections.
GUARDED_FIELDS = frozenset({
    "auth_username", "auth_password", "auth_token",
    "ssl_certfile", "ssl_keyfile", "ssl_client_cafile",
})  # fmt: skip
_WHAT = {
    "auth_username": "user name", "auth_password": "password", "auth_token": "bearer token",
    "ssl_certfile": "certificate file", "ssl_keyfile": "private key file",
    "ssl_client_cafile": "client CA file",
}  # fmt: skip
_TLS_FILES = ("ssl_certfile", "ssl_keyfile", "ssl_client_cafile")
ENVIRONMENT = "environment"


@dataclass(frozen=True)
class Blank:
    """A guarded setting given empty: where, and how it was written."""

    origin: Origin
    got: str  # "an empty string", "null"


class _Report:
    def __init__(self, origins: Mapping[str, Origin]) -> None:
        self.origins = origins
        self.problems: list[Problem] = []

    def on(self, field: str, expected: str, got: str) -> None:
        origin = self.origins.get(field) or Origin(SPECS_BY_FIELD[field].key, "default", "default")
        self.at(origin, expected, got)

    def at(self, origin: Origin, expected: str, got: str) -> None:
        self.problems.append(Problem(origin.key, origin.source, expected, got))


def named(field: str) -> str:
    """A setting as problems name another one: its YAML key and its variable."""
    return SPECS_BY_FIELD[field].reference


def check_settings(
    settings: Settings,
    origins: Mapping[str, Origin],
    blanks: Mapping[str, Blank] | None = None,
    gunicorn_addresses: Sequence[object] | None = None,
    invalid: Collection[str] = (),
) -> list[Problem]:
    """Every problem of the merged settings, each naming the offending value.

    ``gunicorn_addresses``: gunicorn's ``cfg.address`` ((host, port) tuples, unix socket
    paths, file descriptors); None where it is not known (Django's system checks).
    ``invalid``: fields whose given value was refused already; what depends on them is not
    reported again (a password that is not UTF-8 is not also "missing").
    """
    report = _Report(origins)
    blanks = blanks or {}
    reported = _check_blank_protections(settings, blanks, report) | set(invalid)
    _check_tls(settings, blanks, reported, report)
    _check_auth(settings, blanks, reported, report)
    _check_endpoint_address(settings, gunicorn_addresses, reported, report)
    path = settings.multiproc_dir
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        report.on("multiproc_dir", "a directory (or a path that does not exist yet)",
                  f"a file {path}")  # fmt: skip
    _check_redis(settings, report)
    return report.problems


# --- auth -------------------------------------------------------------------------------------


def _check_blank_protections(
    settings: Settings, blanks: Mapping[str, Blank], report: _Report
) -> set[str]:
    """An empty auth value, or an empty TLS file while TLS is on: the user meant to protect
    the endpoint, and an empty value would silently not. In the environment an empty
    variable counts as unset (``FOO= cmd`` is how scripts unset things), so there only a
    partner's absence reports it (see _check_auth and _check_tls)."""
    reported: set[str] = set()
    for field, blank in blanks.items():
        if getattr(settings, field) is not None or blank.origin.source == ENVIRONMENT:
            continue
        what = _WHAT[field]
        if field.startswith("auth_"):
            expected = f"a non-empty {what}, or no key at all (empty must not mean no auth)"
        elif settings.ssl_enabled:
            expected = f"a {what}, or no key at all (TLS is enabled)"
        else:
            continue  # an empty TLS file while TLS is off protects nothing either way
        report.at(blank.origin, expected, blank.got)
        reported.add(field)
    return reported


def _check_auth(
    settings: Settings, blanks: Mapping[str, Blank], reported: set[str], report: _Report
) -> None:
    if (settings.auth_username is None) == (settings.auth_password is None):
        return
    given, missing = (
        ("auth_username", "auth_password") if settings.auth_password is None
        else ("auth_password", "auth_username")
    )  # fmt: skip
    if missing in reported:
        return
    if missing in blanks:
        blank = blanks[missing]
        report.at(blank.origin, f"a non-empty {_WHAT[missing]}: {named(given)} is set", blank.got)
        return
    spec = SPECS_BY_FIELD[missing]
    report.on(given, f"{named(missing)} as well: username and password go together",
              f"no {spec.path.split('.')[-1]}")  # fmt: skip


# --- TLS --------------------------------------------------------------------------------------


def _check_tls(
    settings: Settings, blanks: Mapping[str, Blank], reported: set[str], report: _Report
) -> None:
    enabled = named("ssl_enabled")
    if "ssl_enabled" in reported:
        pass  # given, but not as a boolean: whether TLS is meant is unknown
    elif not settings.ssl_enabled:
        for field in (*_TLS_FILES, "ssl_client_auth_required"):
            if getattr(settings, field) not in (None, False):
                report.on(field, f"{enabled} true as well: a TLS setting is never ignored",
                          "TLS not enabled")  # fmt: skip
    else:
        for field, what in (("ssl_certfile", "certificate"), ("ssl_keyfile", "private key")):
            if getattr(settings, field) is not None or field in reported:
                continue
            if field in blanks:
                blank = blanks[field]
                report.at(blank.origin, f"a {what} file: TLS is enabled", blank.got)
            else:
                report.on("ssl_enabled", f"{named(field)} set when SSL is enabled",
                          f"no {what} file")  # fmt: skip
        if (settings.ssl_client_auth_required and settings.ssl_client_cafile is None
                and "ssl_client_cafile" not in reported):  # fmt: skip
            report.on("ssl_client_auth_required",
                      f"{named('ssl_client_cafile')} set when client certificates are required",
                      "no client CA file")  # fmt: skip
    files_ok = True
    for field in _TLS_FILES:
        path = getattr(settings, field)
        state = file_state(path) if path is not None else None
        if state is not None:
            report.on(field, "a readable file", f"{state} {path}")
            files_ok = False
    if settings.ssl_enabled and files_ok and settings.ssl_certfile and settings.ssl_keyfile:
        for field, expected, got in pem_problems(settings):
            report.on(field, expected, got)


# --- the endpoint's address -----------------------------------------------------------------


def _check_endpoint_address(
    settings: Settings,
    gunicorn_addresses: Sequence[object] | None,
    reported: set[str],
    report: _Report,
) -> None:
    trouble = None if "bind_address" in reported else bind_trouble(settings.bind_address)
    if trouble is not None:
        report.on("bind_address", "an address the metrics endpoint can listen on",
                  f"{describe(settings.bind_address)}, {trouble}")  # fmt: skip
    if "metrics_port" in reported:
        return
    for address in gunicorn_addresses or ():
        # (host, port) for TCP; a unix socket path (str) or a file descriptor (int) never
        # takes a port.
        if isinstance(address, tuple) and len(address) == 2 and address[1] == settings.metrics_port:
            host, port = address
            shown = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
            report.on("metrics_port", f"a port other than gunicorn's own (it binds {shown})",
                      str(settings.metrics_port))  # fmt: skip
            break


# --- Redis ------------------------------------------------------------------------------------

_REDIS_SCHEMES = ("redis", "rediss", "unix")
# Query arguments redis-py converts with int() or float() (a failure there is a ValueError
# at connect time, not a RedisError).
_URL_INTEGERS = frozenset({"socket_read_size", "max_connections", "health_check_interval",
                           "ssl_min_version", "protocol"})  # fmt: skip
_URL_DECIMALS = frozenset({"socket_timeout", "socket_connect_timeout", "timeout"})


def _check_redis(settings: Settings, report: _Report) -> None:
    if settings.redis_url is not None:
        trouble = redis_url_trouble(settings.redis_url)
        if trouble is not None:
            report.on("redis_url", *trouble)
    if settings.redis_retention <= settings.redis_push_interval:
        report.on("redis_retention",
                  f"more seconds than {named('redis_push_interval')}, "
                  f"{format_number(settings.redis_push_interval)}, or instances would flicker",
                  format_number(settings.redis_retention))  # fmt: skip
    # find_spec, not import: redis-py stays unloaded until the master actually pushes.
    if settings.redis_enabled and importlib.util.find_spec("redis") is None:
        report.on("redis_enabled",
                  "the redis package installed with it: pip install 'gunicorn-prom-ext[redis]'",
                  "true, but redis-py is not installed")  # fmt: skip


def redis_url_trouble(url: str) -> tuple[str, str] | None:
    """(expected, got) if redis-py could not use the URL as meant; nothing of it is echoed
    but its scheme and what is wrong with it: it may hold a password."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        got = "an unclosed or invalid [IPv6] host" if "IPv6" in str(exc) else "one that does not"
        return "a URL that parses", got
    if parts.scheme not in _REDIS_SCHEMES:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        return "a URL starting with redis://, rediss:// or unix://", got
    try:
        parts.port  # noqa: B018  (a property that raises ValueError)
    except ValueError:
        return "a URL whose port is a number from 0 to 65535", "a port that is not"
    if parts.scheme == "unix" and not parts.path:
        return "a unix:// URL with the path of the socket (unix:///run/redis.sock)", "no path"
    query = parse_qs(parts.query)
    db_texts = query.get("db", [])[:1] or (
        [unquote(parts.path).replace("/", "")] if parts.scheme != "unix" else []
    )  # redis-py: the query's db wins over the path's
    for text in db_texts:
        if text and not (INTEGER_TEXT.fullmatch(text) and len(text) <= 12
                         and 0 <= int(text) <= REDIS_MAX_DB):  # fmt: skip
            return (f"a database number from 0 to {REDIS_MAX_DB} (in the path or ?db=)",
                    "one that is not")  # fmt: skip
    for name, values in query.items():
        form = INTEGER_TEXT if name in _URL_INTEGERS else (
            DECIMAL_TEXT if name in _URL_DECIMALS else None
        )  # fmt: skip
        if form is not None and not form.fullmatch(values[0]):
            return f"a number in ?{name}=", "one that is not"
    return None
