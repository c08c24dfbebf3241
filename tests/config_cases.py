"""Every bad configuration the suite knows, as environments for a real server.

Each case gives the variables to add to a server's environment (the harness's own:
PROMETHEUS_BIND_ADDRESS=127.0.0.1, a free PROMETHEUS_METRICS_PORT, gunicorn bound to
127.0.0.1:<app port>) and the problems the configuration must be refused with, in order.
A problem matches when it starts with the expected text (so a resolver's own words may
follow). The same table drives the in-process checks (test_validation.py) and the
agreement of ``gunicorn-prom-ext check-config`` with a real gunicorn start
(test_startup_errors.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization

from gunicorn_prom_ext.sources import CONFIG_FILE_ENV


@dataclass(frozen=True)
class Case:
    env: dict[str, str]
    problems: list[str]
    hostile_file: bool = field(default=False)  # gets a tighter wall-clock bound


CaseBuilder = Callable[[Path, int], Case]
ENABLED = "exporter.ssl.enabled (PROMETHEUS_SSL_ENABLED)"
NOT_IGNORED = (
    f"expected {ENABLED} true as well: a TLS setting is never ignored, got TLS not enabled"
)
PORT = "expected an integer from 1 to 65535"
DB = "expected an integer from 0 to 2147483647"
URL = "REDIS_URL (environment): expected"


@dataclass(frozen=True)
class Tls:
    cert: str
    key: str
    ca: str
    other_key: str
    encrypted_key: str
    junk: str


def tls_files(tmp: Path) -> Tls:
    """A CA, a certificate and its key, another certificate's key, the key encrypted, and a
    file that is no PEM at all."""
    tmp.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    issued, other = ca.issue_cert("localhost", "127.0.0.1"), ca.issue_cert("elsewhere")
    files = Tls(*(str(tmp / name) for name in
                  ("cert.pem", "key.pem", "ca.pem", "other-key.pem", "enc-key.pem", "junk.pem")))
    issued.cert_chain_pems[0].write_to_path(files.cert)
    issued.private_key_pem.write_to_path(files.key)
    ca.cert_pem.write_to_path(files.ca)
    other.private_key_pem.write_to_path(files.other_key)
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), None)
    Path(files.encrypted_key).write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ))  # fmt: skip
    Path(files.junk).write_text("-----BEGIN NOTHING-----\nhello\n")
    return files


def _tls_on(tls: Tls, **extra: str) -> dict[str, str]:
    return {"PROMETHEUS_SSL_ENABLED": "true", "PROMETHEUS_SSL_CERTFILE": tls.cert,
            "PROMETHEUS_SSL_KEYFILE": tls.key, **extra}  # fmt: skip


def _env(env: dict[str, str], *problems: str) -> CaseBuilder:
    return lambda tmp, app_port: Case(env, list(problems))


def _yaml(text: str, *problems: str, hostile: bool = False) -> CaseBuilder:
    """A YAML file named by GUNICORN_PROM_EXT_CONFIG; ``{file}`` in a problem is its path."""

    def build(tmp: Path, app_port: int) -> Case:
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / "config.yml"
        path.write_text(text)
        shown = [p.replace("{file}", str(path)) for p in problems]
        return Case({CONFIG_FILE_ENV: str(path)}, shown, hostile)

    return build


def _file(make: Callable[[Path], object], got: str, expected: str = "a readable YAML file "
          "(a regular file)") -> CaseBuilder:  # fmt: skip
    """Whatever ``make`` puts at the path GUNICORN_PROM_EXT_CONFIG names."""

    def build(tmp: Path, app_port: int) -> Case:
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / "config.yml"
        make(path)
        problem = f"{CONFIG_FILE_ENV} (environment): expected {expected}, got {got}: {path}"
        return Case({CONFIG_FILE_ENV: str(path)}, [problem], hostile_file=True)

    return build


def _tls(make: Callable[[Tls], tuple[dict[str, str], list[str]]]) -> CaseBuilder:
    def build(tmp: Path, app_port: int) -> Case:
        env, problems = make(tls_files(tmp / "tls"))
        return Case(env, problems)

    return build


def _port_taken(tmp: Path, app_port: int) -> Case:
    return Case(
        {"PROMETHEUS_METRICS_PORT": str(app_port)},
        [f"PROMETHEUS_METRICS_PORT (environment): expected a port other than gunicorn's own "
         f"(it binds 127.0.0.1:{app_port}), got {app_port}"],
    )  # fmt: skip


def _billion_laughs() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\nexporter:\n  prometheus:\n    duration_buckets: *a8\n"


def _merge_bomb() -> str:
    lines = ["m0: &m0 {a: 1, b: 2}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}" for i in range(1, 40)]
    return "\n".join(lines) + "\nexporter: *m39\n"


def _sparse(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with open(path, "wb") as handle:
            handle.truncate(size)

    return make


BLANK = "expected a non-empty {what}, or no key at all (empty must not mean no auth)"

CASES: dict[str, CaseBuilder] = {
    # --- auth and TLS: set means used ----------------------------------------------------
    "tls-cert-while-tls-off": _tls(lambda t: (
        {"PROMETHEUS_SSL_CERTFILE": t.cert},
        [f"PROMETHEUS_SSL_CERTFILE (environment): {NOT_IGNORED}"],
    )),
    "tls-files-with-tls-turned-off": _tls(lambda t: (
        _tls_on(t, PROMETHEUS_SSL_ENABLED="false"),
        [f"PROMETHEUS_SSL_CERTFILE (environment): {NOT_IGNORED}",
         f"PROMETHEUS_SSL_KEYFILE (environment): {NOT_IGNORED}"],
    )),
    "client-ca-without-tls": _tls(lambda t: (
        {"PROMETHEUS_SSL_CLIENT_CAFILE": t.ca},
        [f"PROMETHEUS_SSL_CLIENT_CAFILE (environment): {NOT_IGNORED}"],
    )),
    "client-certs-required-without-tls": _env(
        {"PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED": "yes"},
        f"PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED (environment): {NOT_IGNORED}",
    ),
    "certificate-not-pem": _tls(lambda t: (
        _tls_on(t, PROMETHEUS_SSL_CERTFILE=t.junk),
        ["PROMETHEUS_SSL_CERTFILE (environment): expected a PEM certificate, got a file with "
         "no PEM certificate in it"],
    )),
    "key-not-pem": _tls(lambda t: (
        _tls_on(t, PROMETHEUS_SSL_KEYFILE=t.junk),
        ["PROMETHEUS_SSL_KEYFILE (environment): expected a PEM private key, got a file with "
         "no PEM private key in it"],
    )),
    "key-of-another-certificate": _tls(lambda t: (
        _tls_on(t, PROMETHEUS_SSL_KEYFILE=t.other_key),
        ["PROMETHEUS_SSL_KEYFILE (environment): expected the private key of the certificate "
         "in exporter.ssl.certfile (PROMETHEUS_SSL_CERTFILE), got the key of another "
         "certificate"],
    )),
    "key-encrypted": _tls(lambda t: (
        _tls_on(t, PROMETHEUS_SSL_KEYFILE=t.encrypted_key),
        ["PROMETHEUS_SSL_KEYFILE (environment): expected an unencrypted PEM private key (there "
         "is no passphrase setting), got an encrypted key"],
    )),
    "client-ca-not-pem": _tls(lambda t: (
        _tls_on(t, PROMETHEUS_SSL_CLIENT_CAFILE=t.junk),
        ["PROMETHEUS_SSL_CLIENT_CAFILE (environment): expected PEM CA certificates, got a file "
         "with no PEM certificate in it"],
    )),
    "certificate-is-dev-zero": _tls(lambda t: (
        _tls_on(t, PROMETHEUS_SSL_CERTFILE="/dev/zero"),
        ["PROMETHEUS_SSL_CERTFILE (environment): expected a readable file, got a special file "
         "(not a regular file) /dev/zero"],
    )),
    "empty-certificate-variable-while-tls-on": _tls(lambda t: (
        _tls_on(t, PROMETHEUS_SSL_CERTFILE=""),
        ["PROMETHEUS_SSL_CERTFILE (environment): expected a certificate file: TLS is enabled, "
         "got an empty string"],
    )),
    "empty-password-variable-with-a-user": _env(
        {"PROMETHEUS_AUTH_USERNAME": "scraper", "PROMETHEUS_AUTH_PASSWORD": ""},
        "PROMETHEUS_AUTH_PASSWORD (environment): expected a non-empty password: "
        "exporter.auth.username (PROMETHEUS_AUTH_USERNAME) is set, got an empty string",
    ),
    "yaml-empty-token": _yaml(
        'exporter:\n  auth:\n    bearer_token: ""\n',
        "exporter.auth.bearer_token (file {file}): " + BLANK.format(what="bearer token")
        + ", got an empty string",
    ),
    "yaml-null-password-with-a-user": _yaml(
        "exporter:\n  auth:\n    username: scraper\n    password:\n",
        "exporter.auth.password (file {file}): " + BLANK.format(what="password") + ", got null",
    ),
    "password-not-utf8": _env(
        {"PROMETHEUS_AUTH_USERNAME": "scraper", "PROMETHEUS_AUTH_PASSWORD": "s3\udcffcret"},
        "PROMETHEUS_AUTH_PASSWORD (environment): expected text that is valid UTF-8, got a "
        "string with bytes that are not UTF-8",
    ),
    "token-not-utf8": _env(
        {"PROMETHEUS_AUTH_TOKEN": "\udce9t\udce9"},  # "été" in Latin-1
        "PROMETHEUS_AUTH_TOKEN (environment): expected text that is valid UTF-8, got a string "
        "with bytes that are not UTF-8",
    ),
    # --- where the endpoint listens ------------------------------------------------------
    "bind-address-does-not-resolve": _env(
        {"PROMETHEUS_BIND_ADDRESS": "no-such-host.invalid"},
        "PROMETHEUS_BIND_ADDRESS (environment): expected an address the metrics endpoint can "
        "listen on, got a string 'no-such-host.invalid', which does not resolve",
    ),
    "bind-address-not-local": _env(
        {"PROMETHEUS_BIND_ADDRESS": "192.0.2.1"},  # TEST-NET-1, never assigned
        "PROMETHEUS_BIND_ADDRESS (environment): expected an address the metrics endpoint can "
        "listen on, got a string '192.0.2.1', which is not an address of this host",
    ),
    "metrics-port-is-gunicorns": _port_taken,
    # --- Redis URLs and databases ----------------------------------------------------------
    "redis-url-unclosed-ipv6": _env(
        {"REDIS_URL": "redis://[::1"}, f"{URL} a URL that parses, got an unclosed or invalid "
        "[IPv6] host",
    ),
    "redis-url-port-not-a-number": _env(
        {"REDIS_URL": "redis://cache:notaport/0"},
        f"{URL} a URL whose port is a number from 0 to 65535, got a port that is not",
    ),
    "redis-url-db-not-a-number": _env(
        {"REDIS_URL": "redis://:pw@cache:6379/zero"},
        f"{URL} a database number from 0 to 2147483647 (in the path or ?db=), got one that is not",
    ),
    "redis-url-db-too-big": _env(
        {"REDIS_URL": "redis://cache:6379/2147483648"},
        f"{URL} a database number from 0 to 2147483647 (in the path or ?db=), got one that is not",
    ),
    "redis-url-db-query-not-a-number": _env(
        {"REDIS_URL": "redis://cache:6379?db=1_0"},
        f"{URL} a database number from 0 to 2147483647 (in the path or ?db=), got one that is not",
    ),
    "redis-db-too-big": _env({"REDIS_DB": "2147483648"}, f"REDIS_DB (environment): {DB}, got "
                             "2147483648"),
    # --- numbers in ASCII digits ---------------------------------------------------------
    "port-with-underscores": _env({"PROMETHEUS_METRICS_PORT": "9_0_9_1"},
                                  f"PROMETHEUS_METRICS_PORT (environment): {PORT}, got a "
                                  "string '9_0_9_1'"),
    "port-in-arabic-indic-digits": _env({"PROMETHEUS_METRICS_PORT": "\u0669\u0660\u0669\u0661"},
                                        f"PROMETHEUS_METRICS_PORT (environment): {PORT}, got a "
                                        "string '\u0669\u0660\u0669\u0661'"),
    "seconds-with-underscores": _env(
        {"REDIS_PUSH_INTERVAL": "1_0"},
        "REDIS_PUSH_INTERVAL (environment): expected a number of seconds > 0, got a string '1_0'",
    ),
    "bucket-in-other-digits": _env(
        {"PROMETHEUS_DURATION_BUCKETS": "0.1,\u0660.5"},
        "PROMETHEUS_DURATION_BUCKETS (environment): expected comma-separated numbers, "
        "non-empty, finite, > 0 and strictly increasing, got a string '0.1,\u0660.5'",
    ),
    "yaml-port-with-underscores": _yaml(
        "exporter:\n  prometheus:\n    metrics_port: 9_0_9_1\n",
        "exporter.prometheus.metrics_port (file {file}): " + PORT + ", got a string '9_0_9_1'",
    ),
    "yaml-port-in-hex": _yaml(
        "exporter:\n  prometheus:\n    metrics_port: 0x2383\n",
        "exporter.prometheus.metrics_port (file {file}): " + PORT + ", got a string '0x2383'",
    ),
    "yaml-int-tag-with-other-digits": _yaml(
        'exporter:\n  prometheus:\n    metrics_port: !!int "\u0669\u0660\u0669\u0661"\n',
        "line 3, column 19 (file {file}): expected an integer in decimal ASCII digits, "
        "got '\u0669\u0660\u0669\u0661'",
    ),
    # --- hostile configuration files -----------------------------------------------------
    "billion-laughs": _yaml(
        _billion_laughs(),
        "line 5, column 5 (file {file}): expected at most 10000 values once aliases are "
        "expanded, got 66430 (an alias bomb?)", hostile=True,
    ),
    "merge-keys-doubling-39-times": _yaml(
        _merge_bomb(),
        "line 11, column 16 (file {file}): expected at most 10000 values once aliases are "
        "expanded, got 10231 (an alias bomb?)", hostile=True,
    ),
    "nested-30000-deep": _yaml(
        "exporter: " + "[" * 30_000 + "]" * 30_000 + "\n",
        "line 1, column 30 (file {file}): expected at most 20 levels of nesting, got deeper "
        "nesting", hostile=True,
    ),
    "recursive-alias": _yaml(
        "a: &a [1, *a]\nexporter:\n  prometheus:\n    duration_buckets: *a\n",
        "line 1, column 4 (file {file}): expected aliases that do not contain themselves, got "
        "a recursive alias", hostile=True,
    ),
    "integer-of-5000-digits": _yaml(
        "exporter:\n  prometheus:\n    metrics_port: " + "9" * 5000 + "\n",
        "line 3, column 19 (file {file}): expected an integer of at most 30 digits, got 5000 "
        "digits", hostile=True,
    ),
    "nul-character": _yaml(
        'exporter:\n  prometheus:\n    namespace: "a\x00b"\n',
        "line 3, column 18 (file {file}): expected valid YAML, got the character #x0000 "
        "(special characters are not allowed)", hostile=True,
    ),
    "fifo": _file(lambda path: os.mkfifo(path), "a FIFO (named pipe)"),
    "directory": _file(lambda path: path.mkdir(), "a directory"),
    "symlink-to-dev-zero": _file(lambda path: path.symlink_to("/dev/zero"), "a character device"),
    "sparse-100-mb": _file(_sparse(100 * 1024 * 1024), "104857600 bytes",
                           "a YAML file of at most 64 KiB"),
    "binary": _file(lambda path: path.write_bytes(b"exporter: \xff\xfe\x00\x01\n"),
                    "binary data", "a UTF-8 YAML file"),
}  # fmt: skip
