"""Build ``Settings`` from its sources, remembering where every value came from.

Precedence, low to high: defaults < YAML file < environment < framework settings <
command line. Every problem of one load is collected and raised as one ConfigError.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import yaml

from .settings import (
    SETTINGS,
    SPECS_BY_FIELD,
    ConfigError,
    InvalidValue,
    Origin,
    Problem,
    Settings,
    SettingSpec,
    check_settings,
    describe,
    parse_value,
)

CONFIG_FILE_ENV = "GUNICORN_PROM_EXT_CONFIG"

# field name -> (typed value, where it came from)
_Layer = dict[str, tuple[object, Origin]]


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
) -> ResolvedSettings:
    """Merge every source; raise ConfigError listing every problem found.

    ``framework`` and ``command_line`` are keyed by field name, case-insensitively; a value
    of None or "" counts as not given (as an empty environment variable does).
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
    return _resolve(layers, problems)


def _resolve(layers: Iterable[_Layer], problems: list[Problem]) -> ResolvedSettings:
    values: dict[str, Any] = {spec.field: spec.default for spec in SETTINGS}
    origins = {spec.field: Origin(spec.key, "default", "default") for spec in SETTINGS}
    for layer in layers:
        for field, (value, origin) in layer.items():
            values[field] = value
            origins[field] = origin
    settings = Settings(**values)
    problems.extend(check_settings(settings, origins))
    if problems:
        raise ConfigError(problems)
    sources = MappingProxyType({field: origin.label for field, origin in origins.items()})
    return ResolvedSettings(settings, sources)


def _suggest(word: str, known: Iterable[str]) -> str:
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
        with open(abspath, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except OSError as exc:
        problems.append(
            Problem(key, named_source, "a readable YAML file", f"{exc.strerror}{suffix}")
        )
        return {}
    except UnicodeDecodeError:
        problems.append(Problem(key, named_source, "a UTF-8 YAML file", f"binary data{suffix}"))
        return {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"
        detail = getattr(exc, "problem", None) or str(exc)
        problems.append(Problem(where, source, "valid YAML", str(detail)))
        return {}

    top = "a mapping with the single key exporter"
    if not isinstance(document, dict) or not document:
        got = "an empty document" if document in (None, {}) else describe(document)
        problems.append(Problem("(top level)", source, top, got))
        return {}
    for key in document:
        if key != "exporter":
            hint = _suggest(str(key), ["exporter"])
            problems.append(Problem(str(key), source, top, "an unknown key", hint))
    sections = document.get("exporter")
    if sections is None:  # `exporter:` with every section commented out
        sections = {}
    if not isinstance(sections, dict):
        problems.append(Problem("exporter", source, "a mapping", describe(sections)))
        return {}

    layer: _Layer = {}
    for section, entries in sections.items():
        known = _SECTIONS.get(str(section))
        where = f"exporter.{section}"
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
                problems.append(Problem(f"{where}.{key}", source, expected, "an unknown key", hint))
                continue
            origin = Origin(spec.key, source, source)
            _parse_into(layer, spec, raw, origin, False, problems)
    return layer


def _read_environ(environ: Mapping[str, str], problems: list[Problem]) -> _Layer:
    layer: _Layer = {}
    for spec in SETTINGS:
        raw = environ.get(spec.env, "")
        # An empty variable counts as unset: `FOO= cmd` is how people unset things in scripts.
        if raw.strip():
            origin = Origin(spec.env, "environment", f"environment {spec.env}")
            _parse_into(layer, spec, raw, origin, True, problems)
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
            problems.append(Problem(key, source, expected, "an unknown key", hint))
            continue
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        if spec.field in given:
            expected = "each setting once"
            problems.append(Problem(key, source, expected, f"also given as {given[spec.field]}"))
            continue
        given[spec.field] = key
        label = f"{source} {key}" if name_key else source
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
        problems.append(Problem(origin.key, origin.source, exc.expected, exc.got))
