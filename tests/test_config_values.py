"""One value at a time: numbers in ASCII digits, text in UTF-8, and wrong values shown in a
bounded way whatever their size (in-process; the servers' side is test_startup_errors.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gunicorn_prom_ext.settings import MAX_LISTED_PROBLEMS, ConfigError
from gunicorn_prom_ext.sources import load_settings, load_yaml_config
from gunicorn_prom_ext.values import describe


def problems(**kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)  # type: ignore[arg-type]
    return [str(problem) for problem in info.value.problems]


def yaml_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text, encoding="utf-8")
    return path


# --- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("PROMETHEUS_METRICS_PORT", " 9100\t", 9100),
        ("PROMETHEUS_METRICS_PORT", "+9100", 9100),
        ("PROMETHEUS_METRICS_PORT", "09100", 9100),
        ("REDIS_PUSH_INTERVAL", "2.5", 2.5),
        ("REDIS_PUSH_INTERVAL", ".5", 0.5),
        ("REDIS_PUSH_INTERVAL", "1e1", 10.0),
        ("PROMETHEUS_DURATION_BUCKETS", " 0.1 , 1.5E1", (0.1, 15.0)),
    ],
)
def test_ascii_numbers_are_read(name: str, raw: str, value: object) -> None:
    from gunicorn_prom_ext.settings import SETTINGS

    field = next(spec.field for spec in SETTINGS if spec.env == name)
    environ = {name: raw, "REDIS_RETENTION": "3000"}
    assert getattr(load_settings(environ=environ).settings, field) == value


@pytest.mark.parametrize(
    "raw",
    [
        "9_091",
        "\u0669\u0660\u0669\u0661",  # Arabic-Indic
        "\uff19\uff10\uff19\uff11",  # fullwidth
        "\U0001d7eb\U0001d7e2\U0001d7eb\U0001d7e3",  # mathematical monospace
        "9091\u2003",  # an em space after it
        "0x2383",
        "9091.0",
        "1" * 5000,
    ],
)
def test_other_ways_of_writing_a_number_are_refused(raw: str) -> None:
    (problem,) = problems(environ={"PROMETHEUS_METRICS_PORT": raw})
    assert problem.startswith("PROMETHEUS_METRICS_PORT (environment): expected an integer from 1")
    assert len(problem) < 200


@pytest.mark.parametrize("raw", ["1_0", "\u0661\u0660", "inf", "nan", "1e", "0x10", "10s"])
def test_seconds_in_ascii_decimal_only(raw: str) -> None:
    assert problems(environ={"REDIS_PUSH_INTERVAL": raw}) == [
        f"REDIS_PUSH_INTERVAL (environment): expected a number of seconds > 0, got a string {raw!r}"
    ]


def test_framework_numbers_beyond_a_float_are_refused_not_raised() -> None:
    found = problems(environ={}, framework={"METRICS_PORT": 10**5000,
                                            "DURATION_BUCKETS": [1, 10**400],
                                            "REDIS_PUSH_INTERVAL": 10**400}, framework_source="F")
    assert found == [
        "METRICS_PORT (F): expected an integer from 1 to 65535, got an integer of about 5001 "
        "digits",
        "DURATION_BUCKETS (F): expected comma-separated numbers, non-empty, finite, > 0 and "
        "strictly increasing, got a number too large (an integer of about 401 digits)",
        "REDIS_PUSH_INTERVAL (F): expected a number of seconds > 0, got a number too large (an "
        "integer of about 401 digits)",
    ]


def test_yaml_numbers_still_read_as_yaml_writes_them(tmp_path: Path) -> None:
    path = yaml_file(tmp_path, "exporter:\n  prometheus:\n    metrics_port: 9100\n"
                     "    duration_buckets: [.5, 1.0e+1, 20]\n  redis:\n    push_interval: 2.5\n"
                     "    retention: -.inf\n")  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_yaml_config(path)
    assert [str(p) for p in info.value.problems] == [
        f"exporter.redis.retention (file {path}): expected a number of seconds > 0, got a "
        "number -inf"
    ]
    path.write_text("exporter:\n  prometheus:\n    duration_buckets: [.5, 1.0e+1, 20]\n")
    assert load_yaml_config(path).duration_buckets == (0.5, 10.0, 20.0)


@pytest.mark.parametrize(
    ("text", "got"),
    [
        ("017", "a string '017'"),  # YAML 1.1 reads octal
        ("1:30", "a string '1:30'"),  # YAML 1.1 reads sexagesimal (90)
        ("0b11", "a string '0b11'"),
        ("+9_100", "a string '+9_100'"),
    ],
)
def test_yaml_1_1_number_forms_are_strings(tmp_path: Path, text: str, got: str) -> None:
    path = yaml_file(tmp_path, f"exporter:\n  redis:\n    port: {text}\n")
    with pytest.raises(ConfigError) as info:
        load_yaml_config(path)
    assert [str(p) for p in info.value.problems] == [
        f"exporter.redis.port (file {path}): expected an integer from 1 to 65535, got {got}"
    ]


def test_an_explicit_float_tag_is_held_to_ascii_too(tmp_path: Path) -> None:
    path = yaml_file(tmp_path, 'exporter:\n  redis:\n    retention: !!float "1_0.5"\n')
    with pytest.raises(ConfigError) as info:
        load_yaml_config(path)
    assert [str(p) for p in info.value.problems] == [
        f"line 3, column 16 (file {path}): expected a number in decimal ASCII digits, got '1_0.5'"
    ]


# --- text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["PROMETHEUS_AUTH_USERNAME", "REDIS_KEY_PREFIX",
                                  "REDIS_INSTANCE_ID", "REDIS_URL", "REDIS_HOST"])  # fmt: skip
def test_text_that_is_not_utf8_is_refused(name: str) -> None:
    environ = {"PROMETHEUS_AUTH_PASSWORD": "p", "PROMETHEUS_AUTH_USERNAME": "u", name: "a\udcffb"}
    (problem,) = problems(environ=environ)
    assert problem.startswith(f"{name} (environment): expected text that is valid UTF-8, got a ")


def test_utf8_text_of_any_script_is_fine() -> None:
    environ = {"PROMETHEUS_AUTH_USERNAME": "j\u00fcrgen",
               "PROMETHEUS_AUTH_PASSWORD": "\u5bc6\u7801",
               "REDIS_INSTANCE_ID": "web-\u00e9t\u00e9"}  # fmt: skip
    settings = load_settings(environ=environ).settings
    assert settings.auth_password == "\u5bc6\u7801"


# --- showing wrong values ------------------------------------------------------------------------


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")

    __repr__ = __str__


def test_describe_is_bounded_whatever_it_is_given() -> None:
    deep: list[object] = []
    inner = deep
    for _ in range(100_000):
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]
    recursive: list[object] = [1]
    recursive.append(recursive)
    values: list[object] = [
        list(range(10**6)), deep, recursive, "x" * 10**6, 10**5000,
        {str(i): i for i in range(10**5)}, Unprintable(), [Unprintable()], b"\x00" * 10**6,
        {1, 2, 3}, 1e308 * 10,
    ]  # fmt: skip
    started = time.monotonic()
    shown = [describe(value) for value in values]
    assert time.monotonic() - started < 1.0
    assert all(len(text) < 200 for text in shown), shown
    assert shown[2] == "a list [1, [1, [1, [...]]]]"
    assert shown[4] == "a number an integer of about 5001 digits"
    assert shown[6] == "a Unprintable (that cannot be shown)"
    assert shown[10] == "a number inf"
    assert describe("s3cret", secret=True) == "a string"


def test_a_file_of_unknown_keys_gives_a_readable_error(tmp_path: Path) -> None:
    keys = "".join(f'    "key{i}\\n{"x" * 500}": 1\n' for i in range(100))
    path = yaml_file(tmp_path, f"exporter:\n  prometheus:\n{keys}")
    with pytest.raises(ConfigError) as info:
        load_yaml_config(path)
    assert len(info.value.problems) == 100
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid gunicorn-prom-ext configuration (100 problems):"
    assert len(lines) == 1 + MAX_LISTED_PROBLEMS + 1
    assert lines[-1] == f"  - ... and {100 - MAX_LISTED_PROBLEMS} more"
    assert lines[1].startswith("  - exporter.prometheus.'key0\\nxxxx")  # quoted: a newline
    assert all(len(line) < 400 for line in lines)


def test_a_file_of_many_values_is_refused_before_it_is_all_read(tmp_path: Path) -> None:
    path = yaml_file(tmp_path, "exporter:\n  prometheus:\n    duration_buckets: ["
                     + ",".join(["1"] * 30_000) + "]\n")  # fmt: skip
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_yaml_config(path)
    assert time.monotonic() - started < 1.0
    # Value 10001 is the list's item 9994: two mappings, their three keys and the list
    # itself come first.
    assert [str(p) for p in info.value.problems] == [
        f"line 3, column {24 + 2 * 9993} (file {path}): expected at most 10000 values, got "
        "more than 10000"
    ]


def test_a_framework_object_that_misbehaves_is_only_described() -> None:
    class Hostile:
        def __eq__(self, other: object) -> bool:
            raise ValueError("compared")

        def __str__(self) -> str:
            raise ValueError("shown")

        __hash__ = object.__hash__

    assert problems(environ={}, framework={"SSL_CERTFILE": Hostile()}, framework_source="F") == [
        "SSL_CERTFILE (F): expected a string, got a Hostile (that cannot be shown)"
    ]


@pytest.mark.parametrize(
    ("text", "got"),
    [
        ("!!timestamp x", "a value its tag cannot be made from (AttributeError: "),
        ('"\\x00"', None),  # an escaped NUL is fine YAML: the namespace refuses it
    ],
)
def test_yaml_tags_that_fail_to_construct(tmp_path: Path, text: str, got: str | None) -> None:
    path = yaml_file(tmp_path, f"exporter:\n  prometheus:\n    namespace: {text}\n")
    with pytest.raises(ConfigError) as info:
        load_yaml_config(path)
    (problem,) = info.value.problems
    if got is None:
        assert problem.key == "exporter.prometheus.namespace"
    else:
        assert (problem.key, problem.expected) == ("document", "valid YAML")
        assert problem.got.startswith(got)
