"""Checks against this host: a file is there and loads as PEM, an address can be listened on.

Each does what the endpoint will do when it starts, a moment early, so the failure is a
start-up error (see validation.py) instead of a server that serves nothing, or serves
without the TLS its user configured.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import stat

from .settings import SPECS_BY_FIELD, Settings

MAX_PEM_BYTES = 4 * 1024 * 1024  # far beyond any certificate bundle


def file_state(path: str) -> str | None:
    """None for a readable regular file of a sane size, else what it is."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"a file that cannot be read ({exc.strerror})"
    if stat.S_ISDIR(info.st_mode):
        return "a directory"
    if not stat.S_ISREG(info.st_mode):
        return "a special file (not a regular file)"
    if not os.access(path, os.R_OK):
        return "an unreadable file"
    if info.st_size > MAX_PEM_BYTES:
        return f"a file of {info.st_size} bytes (a PEM file is a few KiB)"
    return None


class _PassphraseAsked(Exception):
    pass


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise _PassphraseAsked


def pem_problems(settings: Settings) -> list[tuple[str, str, str]]:
    """Load the files as the endpoint will (an SSLContext), so a bad one stops the start."""
    assert settings.ssl_certfile is not None and settings.ssl_keyfile is not None
    problems: list[tuple[str, str, str]] = []
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.load_verify_locations(cafile=settings.ssl_certfile)
    except (ssl.SSLError, OSError) as exc:
        problems.append(("ssl_certfile", "a PEM certificate", _no_pem("certificate", exc)))
    else:
        try:
            probe.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile,
                                  password=_no_passphrase)  # fmt: skip
        except _PassphraseAsked:
            problems.append(("ssl_keyfile", "an unencrypted PEM private key "
                             "(there is no passphrase setting)", "an encrypted key"))  # fmt: skip
        except (ssl.SSLError, OSError) as exc:
            if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
                expected = ("the private key of the certificate in "
                            f"{SPECS_BY_FIELD['ssl_certfile'].reference}")
                problems.append(("ssl_keyfile", expected, "the key of another certificate"))
            else:
                problems.append(("ssl_keyfile", "a PEM private key", _no_pem("private key", exc)))
    if settings.ssl_client_cafile is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(
                cafile=settings.ssl_client_cafile
            )
        except (ssl.SSLError, OSError) as exc:
            problems.append(("ssl_client_cafile", "PEM CA certificates",
                             _no_pem("certificate", exc)))  # fmt: skip
    return problems


def _no_pem(what: str, exc: Exception) -> str:
    # OpenSSL's own text names a C source line, which differs between builds.
    if isinstance(exc, ssl.SSLError) or not isinstance(exc, OSError):
        return f"a file with no PEM {what} in it"
    return f"a file that cannot be read ({exc.strerror})"


def bind_trouble(address: str) -> str | None:
    """Why the endpoint could not listen on ``address`` (None if it could): the lookup it
    makes, then a bind of a throwaway socket to (address, 0)."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            address, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (OSError, UnicodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        return f"which does not resolve ({reason})"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind(sockaddr)
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            return "which is not an address of this host"
        return f"which cannot be bound here ({exc.strerror})"
    return None
