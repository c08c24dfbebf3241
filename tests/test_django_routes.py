"""Route labels for re_path() patterns (django_app.routes): the patterns Django REST
Framework's routers and the admin produce, the reading rules, and hostile patterns.
End to end through gunicorn: test_django_routes_e2e.py."""

from __future__ import annotations

import random
import re
import time

import pytest

pytest.importorskip("django")

import django_testsite

django_testsite.configure()

from django_app.routes import (  # noqa: E402
    ROUTE_CACHE_SIZE,
    readable_route_label,
    route_label,
)

# What ResolverMatch.route holds (include() chains joined, the inner "^" dropped) → label.
FRAMEWORK_ROUTES = [
    # Django REST Framework's DefaultRouter under path("api/", include(router.urls)).
    ("api/snippets/$", "/api/snippets/"),
    ("api/snippets\\.(?P<format>[a-z0-9]+)/?$", "/api/snippets.<format>"),
    ("api/snippets/(?P<pk>[^/.]+)/$", "/api/snippets/<pk>/"),
    ("api/snippets/(?P<pk>[^/.]+)\\.(?P<format>[a-z0-9]+)/?$", "/api/snippets/<pk>.<format>"),
    ("api/snippets/(?P<pk>[^/.]+)/highlight/$", "/api/snippets/<pk>/highlight/"),
    ("^snippets/(?P<pk>[^/.]+)/$", "/snippets/<pk>/"),
    ("^$", "/"),
    ("^\\.(?P<format>[a-z0-9]+)/?$", "/.<format>"),
    # The admin under path("admin/", admin.site.urls).
    ("admin/(?P<app_label>auth|routesite)/$", "/admin/<app_label>/"),
    ("admin/(?P<url>.*)$", "/admin/<url>"),
    ("^admin/(?P<app_label>auth)/$", "/admin/<app_label>/"),
    # A regex include() prefix in front of path() and re_path() routes.
    ("^v(?P<version>[12])/items/<int:pk>", "/v<version>/items/<int:pk>"),
    ("^v(?P<version>[12])/notes/(?P<slug>[-\\w]+)\\.txt$", "/v<version>/notes/<slug>.txt"),
    ("api/<int:v>/snippets/(?P<pk>[^/.]+)/$", "/api/<int:v>/snippets/<pk>/"),
    # The README's examples.
    ("^(?:en|fr)/page[0-9]+/(\\d+)/$", "/<var>/page<var>/<var>/"),
    ("^(?P<app_label>auth|sites)/$", "/<app_label>/"),
]

RULES = [
    # Escapes read as the character; a class of one character too.
    ("^a\\/b\\-c/$", "/a/b-c/"),
    ("^[.]json$", "/.json"),
    ("^[\\.]json$", "/.json"),
    ("^\\x2e\\u002e\\N{LATIN SMALL LETTER A}/$", "/..a/"),
    ("^a/\\\\(?P<x>\\d+)/$", "/a/\\<x>/"),  # an escaped backslash, then a group
    # A bare "." is itself (sloppy regexes mean a dot); repeated, it is <var>.
    ("^robots.txt$", "/robots.txt"),
    ("^files/.+$", "/files/<var>"),
    # Classes, class escapes, unnamed groups: <var>, several in a row one <var>.
    ("^page[0-9]+/$", "/page<var>/"),
    ("^\\d{4}-\\d{2}/$", "/<var>-<var>/"),
    ("^[a-z][0-9]\\w/$", "/<var>/"),
    ("^(\\d+)/(\\d+)/$", "/<var>/<var>/"),
    ("^[^]]x$", "/<var>x"),
    ("^[]]x$", "/]x"),
    ("^a/(?P<x>[)(])/$", "/a/<x>/"),  # parentheses inside a class are no group
    # Groups: named (whatever is inside), non-capturing (its content), alternation.
    ("^(?P<p>(?:[^/]+/)*[^/]+)$", "/<p>"),
    ("^items(?:/(?P<pk>\\d+))?/$", "/items/<pk>/"),
    ("^(?:en|fr)/about/$", "/<var>/about/"),
    ("^(a|b)/(?P<c>x|y)/$", "/<var>/<c>/"),
    ("^a/$|^b/$", "/<var>"),
    ("^(?>ab)/(?s:.)x/$", "/ab/.x/"),
    ("^(?P<a>x)/(?P=a)/$", "/<a>/<a>/"),
    ("^(?(1)a|b)/$", "/<var>/"),
    # Zero width: anchors, lookarounds, flags, comments.
    ("(?i)^abc/$", "/abc/"),
    ("api/(?i)abc/\\Z", "/api/abc/"),  # flags after an include() prefix
    ("^a/(?=x)(?P<y>\\w+)(?!z)$", "/a/<y>"),
    ("^(?<=x)a(?<!y)/\\b$", "/a/"),
    ("^(?#a comment)a/$", "/a/"),
    ("(?x) ^ a / (?P<b> \\d+ )  # trailing comment\n / $", "/a/<b>/"),
    ("^a(?x: b c )d e$", "/abcd e"),
    # Quantifiers: an optional literal is left out, "+" keeps it once, {2} and more <var>.
    ("^snippets/?$", "/snippets"),
    ("^colou?r/$", "/color/"),
    ("^(?:/)?x/$", "/x/"),
    ("^x{,2}y/$", "/y/"),
    ("^a+/$", "/a/"),
    ("^a++/$", "/a/"),
    ("^a*?b/$", "/b/"),
    ("^x{2}/$", "/<var>/"),
    ("^(?P<x>a)?/$", "/<x>/"),
    ("^x(?=a)?/$", "/x/"),
    ("^a{}/b{x}/c{/$", "/a{}/b{x}/c{/"),  # braces that are no quantifier
    # Control characters never reach a label.
    ("^\\n\\t/$", "/<var>/"),
]

# Routes this reader does not follow come out raw, as before.
UNREADABLE = ["^(unclosed/$", "^a)/$", "^(?<bad>x)/$", "^(?P<1x>a)/$", "^[abc$", "^a\\"]

PATH_ROUTES = [
    "",
    "items/<int:pk>",
    "robots.txt",
    ".well-known/security.txt",
    "things/<int:pk><drf_format_suffix:format>",
    "admin/auth/user/<path:object_id>/change/",
    "a-b_c~d/<slug:s>/",
    "c++/{x}*",
]


@pytest.mark.parametrize(("route", "label"), FRAMEWORK_ROUTES + RULES)
def test_regex_routes_read_as_templates(route: str, label: str) -> None:
    assert readable_route_label(route) == label


@pytest.mark.parametrize("route", PATH_ROUTES)
def test_routes_without_regex_syntax_come_out_as_written(route: str) -> None:
    assert readable_route_label(route) == "/" + route == route_label(route)


@pytest.mark.parametrize("route", UNREADABLE)
def test_unreadable_patterns_come_out_raw(route: str) -> None:
    assert readable_route_label(route) == route_label(route) == "/" + route.removeprefix("^")


def test_simple_patterns_agree_with_djangos_admindocs() -> None:
    """Where Django's own reader (admindocs' simplify_regex) gets a pattern right, the
    label is the same."""
    from django.contrib.admindocs.views import simplify_regex

    simple = [
        r"^snippets/(?P<pk>[^/.]+)/$", r"^(?P<app_label>auth)/$", r"^(?P<url>.*)$",
        r"^(?P<a>\w+)/b/(?P<c>\w+)/$", r"^(?P<a>(x|y))/b/(?P<c>\w+)$",
        r"^(?P<a>\w+)/b/(\w+)$", r"^(\d+)/(?P<b>\w+)/$", r"^a/b/$", r"^$",
    ]  # fmt: skip
    assert [readable_route_label(p) for p in simple] == [simplify_regex(p) for p in simple]
    # Where they differ, on purpose: admindocs drops a non-capturing group with what is in
    # it and leaves escapes and optional slashes in place.
    assert simplify_regex(r"^items(?:/(?P<pk>\d+))?/$") == "/items/"
    assert readable_route_label(r"^items(?:/(?P<pk>\d+))?/$") == "/items/<pk>/"
    assert simplify_regex(r"^s/(?P<pk>[^/.]+)\.(?P<format>[a-z0-9]+)/?$") == (
        "/s/<pk>\\.<format>/"
    )


def test_random_patterns_never_raise_and_stay_bounded() -> None:
    """Any string at all (valid regex or not): a label, never an exception, at most a few
    times the pattern's length, the same every time."""
    rng = random.Random(20240607)
    alphabet = "^$()[]{}\\|?*+.:<>=!#Pax01,/-_ \n"
    for _ in range(20000):
        route = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))
        label = readable_route_label(route)
        assert label.startswith("/")
        assert len(label) <= 3 * len(route) + 6
        assert readable_route_label.__wrapped__(route) == label


def test_a_valid_regex_reads_without_its_syntax() -> None:
    """For patterns that compile, no group, class or anchor syntax is left behind."""
    rng = random.Random(7)
    pieces = [
        "a", "/", "\\.", "[a-z]", "\\d", "(?P<n%d>[^/]+)", "(?:x|y)", "(z)", "?", "+", "*",
        "(?:/b)", "(?=q)", "{2}", "$",
    ]  # fmt: skip
    checked = 0
    for count in range(3000):
        route = "^" + "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 9)))
        route = route.replace("%d", str(count))
        try:
            re.compile(route)
        except re.error:
            continue
        checked += 1
        label = readable_route_label(route)
        leftovers = re.sub(r"<(?:var|n\d+)>", "", label)
        assert not set(leftovers) & set("^$()[]{}\\|?*+"), (route, label)
    assert checked > 1000


def test_huge_patterns_are_read_in_linear_time() -> None:
    n = 2500
    huge = {
        "^" + "(?:" * n + "a" + ")" * n + "$": "/a",  # deeper than the recursion limit
        "^" + "(" * 2 * n + "a" + ")" * 2 * n + "$": "/<var>",
        "^" + "".join(f"(?P<g{i}>[a-z]+)/" for i in range(600)) + "$": "/"
        + "".join(f"<g{i}>/" for i in range(600)),
        "^(?:" + "|".join(f"a{i}" for i in range(n)) + ")/$": "/<var>/",
        "^" + "[a-z]" * 2000 + "$": "/<var>",
        "^" + "(" * 10000: "/" + "(" * 10000,  # unclosed: raw
    }
    for route, label in huge.items():
        assert len(route) >= 10_000
        started = time.perf_counter()
        assert readable_route_label.__wrapped__(route) == label
        assert time.perf_counter() - started < 1.0  # about 5 ms; generous for a busy CI


def test_the_cache_stays_bounded() -> None:
    readable_route_label.cache_clear()
    for i in range(100_000):
        readable_route_label(f"^r{i}/(?P<pk>[0-9]+)/$")
    info = readable_route_label.cache_info()
    assert info.currsize == ROUTE_CACHE_SIZE == info.maxsize
    assert info.misses == 100_000
    assert readable_route_label("^r99999/(?P<pk>[0-9]+)/$") == "/r99999/<pk>/"
    assert readable_route_label.cache_info().hits == 1
