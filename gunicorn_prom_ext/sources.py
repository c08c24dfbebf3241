"""Build ``Settings`` from its sources, remembering where every value came from.

Precedence, low to high: defaults < YAML file < environment < framework settings <
command line. Every problem of one load is collected and raised as one ConfigError.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .settings import (
    SETTINGS,
    SPECS_BY_FIELD,
    ConfigError,
    Origin,
    Problem,
    Settings,
    SettingSpec,
)
from .validation import GUARDED_FIELDS, Blank, check_settings
from .values import InvalidValue, describe, parse_value, shown_key
from .yaml_file import ContentRefused, FileRefused, read_document

CONFIG_FILE_ENV = "GUNICORN_PROM_EXT_CONFIG"

# field name -> (typed value, where it came from); a _Blank value for a guarded setting
# given empty, which never replaces a value but is remembered (see validation.py).
_Layer = dict[str, tuple[object, Origin]]


@dataclass(frozen=True)
class _Blank:
    got: str  # "an empty string", "null"


class _Invalid:
    """A value that did not parse (its problem is reported): the lower layers' value stays,
    and checks across settings do not complain about it a second time."""


_INVALID = _Invalid()


def _blank(raw: object) -> _Blank | None:
    if raw is None:
        return _Blank("null")
    if isinstance(raw, str) and not raw.strip():
        return _Blank("an empty string")
    return None


def _group_by_section() -> dict[str, dict[str, SettingSpec]]:
    sections: dict[str, dict[str, SettingSpec]] = {}
    for spec in SETTINGS:
        section, key = spec.path.split(".")
        sections.setdefault(section, {})[key] = spec
    return sections


# section -> key -> spec, in the order of SETTINGS
_SECTIONS = _group_by_section()


@dataclass(frozen=True)
class ResolvedSettings:
    settings: Settings
    # field name -> "default", "file /abs/x.yml", "environment PROMETHEUS_METRICS_PORT",
    # "<framework source> METRICS_PORT" or "command line"
    sources: Mapping[str, str]


def load_yaml_config(path: str | os.PathLike[str]) -> Settings:
    """Defaults overlaid with that one file, validated; no environment involved."""
    problems: list[Problem] = []
    layer = _read_yaml(os.fspath(path), None, problems)
    return _resolve([layer], problems).settings


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    framework: Mapping[str, object] | None = None,
    command_line: Mapping[str, object] | None = None,
    *,
    framework_source: str = "framework settings",
    gunicorn_addresses: Sequence[object] | None = None,
) -> ResolvedSettings:
    """Merge every source; raise ConfigError listing every problem found.

    ``framework`` and ``command_line`` are keyed by field name, case-insensitively; a value
    of None or "" counts as not given (as an empty environment variable does), except that
    an empty auth or TLS setting is refused (validation.py says when).
    ``gunicorn_addresses``: gunicorn's ``cfg.address``, when known: the metrics port must
    not be one of them.
    """
    environ = os.environ if environ is None else environ
    problems: list[Problem] = []
    layers: list[_Layer] = []
    if config_file:
        layers.append(_read_yaml(os.fspath(config_file), None, problems))
    elif environ.get(CONFIG_FILE_ENV):
        named_by = (CONFIG_FILE_ENV, "environment")
        layers.append(_read_yaml(environ[CONFIG_FILE_ENV], named_by, problems))
    layers.append(_read_environ(environ, problems))
    if framework:
        layers.append(_read_mapping(framework, framework_source, True, problems))
    if command_line:
        layers.append(_read_mapping(command_line, "command line", False, problems))
    return _resolve(layers, problems, gunicorn_addresses)


def _resolve(
    layers: Iterable[_Layer],
    problems: list[Problem],
    gunicorn_addresses: Sequence[object] | None = None,
) -> ResolvedSettings:
    values: dict[str, Any] = {spec.field: spec.default for spec in SETTINGS}
    origins = {spec.field: Origin(spec.key, "default", "default") for spec in SETTINGS}
    blanks: dict[str, Blank] = {}
    invalid: set[str] = set()
    for layer in layers:
        for field, (value, origin) in layer.items():
            if isinstance(value, _Blank):
                blanks[field] = Blank(origin, value.got)
            elif isinstance(value, _Invalid):
                invalid.add(field)
            else:
                values[field] = value
                origins[field] = origin
                blanks.pop(field, None)
    settings = Settings(**values)
    problems.extend(check_settings(settings, origins, blanks, gunicorn_addresses, invalid))
    if problems:
        raise ConfigError(problems)
    sources = MappingProxyType({field: origin.label for field, origin in origins.items()})
    return ResolvedSettings(settings, sources)


def _suggest(word: str, known: Iterable[str]) -> str:
    if len(word) > 100:  # difflib's cost grows with the length; no key is that long
        return ""
    match = difflib.get_close_matches(word, list(known), n=1)
    return f"did you mean {match[0]}?" if match else ""


def _read_yaml(path: str, named_by: tuple[str, str] | None, problems: list[Problem]) -> _Layer:
    """``named_by``: (key, source) of the variable that named the file, None if given directly."""
    abspath = os.path.abspath(path)
    source = f"file {abspath}"
    if named_by is None:
        (key, named_source), suffix = (abspath, "config file"), ""
    else:
        (key, named_source), suffix = named_by, f": {abspath}"
    try:
        document = read_document(abspath)
    except FileRefused as exc:
        problems.append(Problem(key, named_source, exc.expected, f"{exc.got}{suffix}"))
        return {}
    except ContentRefused as exc:
        problems.append(Problem(exc.where, source, exc.expected, exc.got))
        return {}

    top = "a mapping with the single key exporter"
    if not isinstance(document, dict) or not document:
        got = "an empty document" if document in (None, {}) else describe(document)
        problems.append(Problem("(top level)", source, top, got))
        return {}
    for key in document:
        if key != "exporter":
            hint = _suggest(str(key), ["exporter"])
            problems.append(Problem(shown_key(key), source, top, "an unknown key", hint))
    sections = document.get("exporter")
    if sections is None:  # `exporter:` with every section commented out
        sections = {}
    if not isinstance(sections, dict):
        problems.append(Problem("exporter", source, "a mapping", describe(sections)))
        return {}

    layer: _Layer = {}
    for section, entries in sections.items():
        known = _SECTIONS.get(str(section))
        where = f"exporter.{shown_key(section)}"
        if known is None:
            expected = f"a section among {', '.join(_SECTIONS)}"
            hint = _suggest(str(section), _SECTIONS)
            problems.append(Problem(where, source, expected, "an unknown section", hint))
            continue
        if entries is None:  # a section whose keys are all commented out
            continue
        if not isinstance(entries, dict):
            problems.append(Problem(where, source, "a mapping", describe(entries)))
            continue
        for key, raw in entries.items():
            spec = known.get(str(key))
            if spec is None:
                expected = f"a key of {where} among {', '.join(known)}"
                hint = _suggest(str(key), known)
                problem = Problem(f"{where}.{shown_key(key)}", source, expected, "an unknown key",
                                  hint)  # fmt: skip
                problems.append(problem)
                continue
            origin = Origin(spec.key, source, source)
            blank = _blank(raw) if spec.field in GUARDED_FIELDS else None
            if blank is not None:
                layer[spec.field] = (blank, origin)
            else:
                _parse_into(layer, spec, raw, origin, False, problems)
    return layer


def _read_environ(environ: Mapping[str, str], problems: list[Problem]) -> _Layer:
    layer: _Layer = {}
    for spec in SETTINGS:
        raw = environ.get(spec.env)
        if raw is None:
            continue
        origin = Origin(spec.env, "environment", f"environment {spec.env}")
        if raw.strip():
            _parse_into(layer, spec, raw, origin, True, problems)
        elif spec.field in GUARDED_FIELDS:
            # Counts as unset (`FOO= cmd` is how scripts unset things), but a problem about
            # its missing partner names it.
            layer[spec.field] = (_Blank("an empty string"), origin)
    return layer


def _read_mapping(
    values: Mapping[str, object], source: str, name_key: bool, problems: list[Problem]
) -> _Layer:
    layer: _Layer = {}
    given: dict[str, str] = {}
    for given_key, raw in values.items():
        key = str(given_key)
        spec = SPECS_BY_FIELD.get(key.lower())
        if spec is None:
            # Suggest in the caller's spelling: Django settings are upper case.
            known = [f.upper() for f in SPECS_BY_FIELD] if key.isupper() else list(SPECS_BY_FIELD)
            hint = _suggest(key, known)
            expected = "a setting name (see gunicorn-prom-ext check-config)"
            problems.append(Problem(shown_key(key), source, expected, "an unknown key", hint))
            continue
        label = f"{source} {key}" if name_key else source
        if raw is None:
            continue  # not set here (Flask's app.config holds None for every key)
        if isinstance(raw, str) and not raw.strip():
            if spec.field in GUARDED_FIELDS and spec.field not in layer:
                layer[spec.field] = (_Blank("an empty string"), Origin(key, source, label))
            continue
        if spec.field in given:
            expected = "each setting once"
            problems.append(Problem(key, source, expected, f"also given as {given[spec.field]}"))
            continue
        given[spec.field] = key
        _parse_into(layer, spec, raw, Origin(key, source, label), True, problems)
    return layer


def _parse_into(
    layer: _Layer,
    spec: SettingSpec,
    raw: object,
    origin: Origin,
    allow_text: bool,
    problems: list[Problem],
) -> None:
    try:
        layer[spec.field] = (parse_value(spec, raw, allow_text=allow_text), origin)
    except InvalidValue as exc:
        layer[spec.field] = (_INVALID, origin)
        problems.append(Problem(origin.key, origin.source, exc.expected, exc.got))
