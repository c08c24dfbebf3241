"""One value: what a source gave for one setting, parsed, or why it cannot be.

Text (the environment, framework settings, the command line) and YAML's already typed
values both come through ``parse_value``. Numbers written as text must use ASCII digits
only: Python's ``int()`` and ``float()`` also take ``9_0_9_1`` and ``٩٠٩١``, which no one
means as a port. Text settings must be valid UTF-8 (an environment variable with bytes that
are not arrives with surrogate escapes, and ``.encode()`` would fail later, in the
endpoint); file paths may hold any bytes but NUL.

``describe`` shows a wrong value in an error message, bounded whatever its size or depth,
and never a secret's content.
"""

from __future__ import annotations

import itertools
import math
import re
import reprlib
from collections.abc import Mapping

from .settings import SettingSpec, format_number

MAX_SHOWN = 60  # characters of a wrong value (or an unknown key) an error message shows

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_NAMESPACE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
# [0-9] is ASCII only (\d would take every script's digits).
INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_ASCII_SPACE = " \t\n\r\f\v"
# Longer than any value in range: not converted (int() of thousands of digits is slow).
_MAX_DIGITS = 30


class InvalidValue(ValueError):
    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"expected {expected}, got {got}")
        self.expected = expected
        self.got = got


# --- showing values -----------------------------------------------------------------------


class _BoundedRepr(reprlib.Repr):
    """reprlib with tight limits: a list of a million items or nested a thousand deep is
    shown in a line."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = self.maxother = MAX_SHOWN
        self.maxlist = self.maxtuple = self.maxdict = 8
        self.maxset = self.maxfrozenset = self.maxdeque = self.maxarray = 8
        self.maxlong = 40

    def repr_int(self, x: int, level: int) -> str:
        return shown_integer(x)


_REPR = _BoundedRepr()


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown_integer(value: int) -> str:
    """``str(value)``, except for integers too long to be worth (or allowed) printing."""
    if value.bit_length() <= 100:  # 30 digits
        return str(value)
    digits = int(value.bit_length() * math.log10(2)) + 1
    return f"an integer of about {digits} digits"


def shown_key(key: object) -> str:
    """A key as written, for a problem: bounded, and quoted if it is not printable."""
    try:
        text = key if isinstance(key, str) else str(key)
    except Exception:
        text = f"<a key of type {type(key).__name__}>"
    return shorten(text if text.isprintable() else ascii(text))


def describe(value: object, *, secret: bool = False) -> str:
    """How a wrong value is shown in a problem; a secret's content is never echoed."""
    if value is None:
        return "null"
    kind = (
        "a boolean" if isinstance(value, bool)
        else "a string" if isinstance(value, str)
        else "a number" if isinstance(value, int | float)
        else "a list" if isinstance(value, list | tuple)
        else "a mapping" if isinstance(value, Mapping)
        else f"a {type(value).__name__}"
    )  # fmt: skip
    if secret:
        return kind
    if isinstance(value, bool):
        return f"{kind} {str(value).lower()}"
    if isinstance(value, int):
        return f"{kind} {shown_integer(value)}"
    if isinstance(value, str | float | list | tuple | Mapping | set | frozenset):
        return f"{kind} {_REPR.repr(value)}"
    try:  # dates from YAML, a framework's own objects: as str() shows them
        text = str(value)
    except Exception:
        text = "(that cannot be shown)"
    return f"{kind} {shorten(text)}"


# --- parsing one value ----------------------------------------------------------------------


def expected_text(spec: SettingSpec, *, allow_text: bool) -> str:
    if spec.kind == "bool":
        return "a boolean (true/false/1/0/yes/no/on/off)" if allow_text else "true or false"
    if spec.kind == "int":
        if spec.maximum is not None:
            return f"an integer from {spec.minimum} to {spec.maximum}"
        return f"an integer >= {spec.minimum}"
    if spec.kind == "seconds":
        return "a number of seconds > 0"
    if spec.kind == "buckets":
        form = "comma-separated numbers" if allow_text else "a list of numbers"
        return f"{form}, non-empty, finite, > 0 and strictly increasing"
    if spec.kind == "namespace":
        return "a name matching [a-zA-Z_][a-zA-Z0-9_]* or empty"
    if spec.kind == "header":
        return "an HTTP header name (letters, digits and -), or off (or empty) for none"
    return "a string"


def parse_value(spec: SettingSpec, raw: object, *, allow_text: bool) -> object:
    """The typed value of ``raw`` for ``spec``, or InvalidValue.

    ``allow_text`` is False for YAML, whose values are already typed (a quoted "9091" is a
    mistake there), and True for the environment, framework settings and the command line.
    """
    expected = expected_text(spec, allow_text=allow_text)
    empty = isinstance(raw, str) and raw == ""  # not `raw == ""`: any object's __eq__ runs
    if raw is None or empty:
        if spec.default is None:
            return None
        if empty and spec.kind in ("str", "namespace", "header"):
            return ""
        raise InvalidValue(expected, describe(raw))
    got = describe(raw, secret=spec.secret)
    if spec.kind == "bool":
        return _parse_bool(raw, expected, got, allow_text)
    if spec.kind == "int":
        return _parse_int(spec, raw, expected, got, allow_text)
    if spec.kind == "seconds":
        return _parse_seconds(raw, expected, got, allow_text)
    if spec.kind == "buckets":
        return _parse_buckets(raw, expected, got, allow_text)
    if not isinstance(raw, str):
        raise InvalidValue(expected, got)
    if spec.kind == "path":
        if "\0" in raw:
            raise InvalidValue("a path without NUL characters", got)
        return raw
    if not is_utf8(raw):
        raise InvalidValue("text that is valid UTF-8", f"{got} with bytes that are not UTF-8")
    if spec.kind == "namespace" and not _NAMESPACE.fullmatch(raw):
        raise InvalidValue(expected, got)
    if spec.kind == "header":
        raw = raw.strip()
        if raw.lower() == "off":  # an empty environment variable means "unset" instead
            return ""
        if raw and not _HEADER.fullmatch(raw):
            raise InvalidValue(expected, got)
    return raw


def is_utf8(text: str) -> bool:
    """False for a str holding surrogate escapes (undecodable bytes of the environment)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_bool(raw: object, expected: str, got: str, allow_text: bool) -> bool:
    if isinstance(raw, bool):
        return raw
    if allow_text and isinstance(raw, str):
        word = raw.strip(_ASCII_SPACE).lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
    raise InvalidValue(expected, got)


def _parse_int(spec: SettingSpec, raw: object, expected: str, got: str, allow_text: bool) -> int:
    # bool is an int subclass, but `metrics_port: true` is a mistake, not port 1.
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif allow_text and isinstance(raw, str):
        text = raw.strip(_ASCII_SPACE)
        if not INTEGER_TEXT.fullmatch(text):
            raise InvalidValue(expected, got)
        if len(text.lstrip("+-")) > _MAX_DIGITS:
            raise InvalidValue(expected, shorten(text))
        value = int(text)
    else:
        raise InvalidValue(expected, got)
    too_low = spec.minimum is not None and value < spec.minimum
    too_high = spec.maximum is not None and value > spec.maximum
    if too_low or too_high:
        raise InvalidValue(expected, shown_integer(value))
    return value


def _parse_seconds(raw: object, expected: str, got: str, allow_text: bool) -> float:
    if is_number(raw):
        value = _as_float(raw, expected)
    elif allow_text and isinstance(raw, str):
        text = raw.strip(_ASCII_SPACE)
        if not DECIMAL_TEXT.fullmatch(text):
            raise InvalidValue(expected, got)
        value = float(text)  # 1e999 is inf, refused below
    else:
        raise InvalidValue(expected, got)
    if not (math.isfinite(value) and value > 0):
        raise InvalidValue(expected, format_number(value) if math.isfinite(value) else got)
    return value


def _parse_buckets(raw: object, expected: str, got: str, allow_text: bool) -> tuple[float, ...]:
    if allow_text and isinstance(raw, str):
        parts = [part.strip(_ASCII_SPACE) for part in raw.split(",")]
        if not all(DECIMAL_TEXT.fullmatch(part) for part in parts):
            raise InvalidValue(expected, got)
        values = [float(part) for part in parts]
    elif isinstance(raw, list | tuple) and all(is_number(v) for v in raw):
        values = [_as_float(v, expected) for v in raw]
    else:
        raise InvalidValue(expected, got)
    shown = ", ".join(format_number(v) for v in itertools.islice(values, 20))
    shown = shorten(shown + (", ..." if len(values) > 20 else ""), 120)
    if not values:
        raise InvalidValue(expected, "an empty list")
    if not all(math.isfinite(v) for v in values):
        raise InvalidValue(expected, f"[{shown}] (+Inf is added automatically)")
    if values[0] <= 0:
        raise InvalidValue(expected, f"[{shown}] (not > 0)")
    if any(a >= b for a, b in itertools.pairwise(values)):
        raise InvalidValue(expected, f"[{shown}] (not strictly increasing)")
    return tuple(values)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_float(value: object, expected: str) -> float:
    assert isinstance(value, int | float)
    try:
        return float(value)
    except OverflowError:  # an int beyond 1.8e308
        raise InvalidValue(expected, f"a number too large ({shown_integer(int(value))})") from None
