"""TLS to Redis and RabbitMQ: the files of the settings, checked, and the client context.

A `rediss://` (or `rediss+sentinel://`) Redis URL and `amqps://` broker URLs always
verify the server's certificate chain and host name; there is no setting to turn that off.
The CAs trusted are the system's plus the PEM bundle in `WXTOKEN_REDIS_TLS_CA_FILE` /
`WXTOKEN_AMQP_TLS_CA_FILE`; a client certificate is `..._TLS_CERT_FILE` with its
(unencrypted) `..._TLS_KEY_FILE`. The files are checked at startup: each must be a readable
file, cert and key come together, they must load, and a TLS option next to a plain
`redis://` or `amqp://` URL is an error rather than a silent plaintext connection.
TLS is never configured in the URLs themselves (`ssl_*` query parameters are rejected).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from .loading import ENV_PREFIX
from .urls import wanted_schemes


@dataclass(frozen=True)
class TlsFiles:
    """The files of one TLS client: extra trusted CAs, and an optional client certificate.

    `cert_file` and `key_file` come together. Built by `CommonSettings.redis_tls` and
    `.amqp_tls` from validated settings; server certificates are always verified.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def refuse_key_password() -> bytes:
    """The password callback for private keys: encrypted keys are not supported, and
    without a callback OpenSSL would prompt on the terminal and hang a service."""
    raise ValueError("the private key is encrypted (only unencrypted PEM keys are supported)")


def tls_context(tls: TlsFiles | None) -> ssl.SSLContext:
    """A client `SSLContext` that requires a valid server certificate for the host name.

    It trusts the system's CAs plus `tls.ca_file` (as redis-py does) and presents
    `tls.cert_file`/`tls.key_file` when given. Raises `ValueError` (naming no secret)
    when a file does not load.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    if tls is None:
        return context
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(tls.ca_file))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"cannot load the CA file: {_ssl_reason(exc)}") from None
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ValueError("a client certificate needs both the cert and the key file")
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            context.load_cert_chain(
                str(tls.cert_file), str(tls.key_file), password=refuse_key_password
            )
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"cannot load the client certificate and key: {_ssl_reason(exc)}"
            ) from None
    return context


def _ssl_reason(exc: BaseException) -> str:
    """`[SSL] PEM lib`, `No such file or directory`: OpenSSL's reason, one short line."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        text = f"{exc.library or 'SSL'}: {exc.reason}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0][:200]


def _empty_is_none(value: object) -> object:
    """An empty variable (`WXTOKEN_REDIS_TLS_CA_FILE=`) means "not set"."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _readable_file(path: Path | None) -> Path | None:
    """`path` when it names a readable regular file; `ValueError` saying what is wrong."""
    if path is None:
        return None
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"not readable by this process: {path}")
    return path


#: An optional path to a readable file (empty means unset).
TlsFile = Annotated[Path | None, BeforeValidator(_empty_is_none), AfterValidator(_readable_file)]


def tls_files(ca: Path | None, cert: Path | None, key: Path | None) -> TlsFiles | None:
    """The `TlsFiles` of one service's settings; None when none of the three is set."""
    if ca is None and cert is None and key is None:
        return None
    return TlsFiles(ca_file=ca, cert_file=cert, key_file=key)


def check_tls_files(
    service: str, tls: TlsFiles | None, *, schemes: list[str], wanted: tuple[str, ...]
) -> None:
    """Raise `ValueError` with a message that starts with the variable to fix."""
    if tls is None:
        return
    var = f"{ENV_PREFIX}{service.upper()}"
    given = next(
        f"{var}_TLS_{name.upper()}"
        for name in ("ca_file", "cert_file", "key_file")
        if getattr(tls, name) is not None
    )
    if any(scheme not in wanted for scheme in schemes):
        raise ValueError(
            f"{given} is set but {var}_URL is not {wanted_schemes(wanted)} "
            "(TLS options never fall back to a plaintext connection)"
        )
    if tls.cert_file is not None and tls.key_file is None:
        raise ValueError(f"{var}_TLS_CERT_FILE is set without {var}_TLS_KEY_FILE")
    if tls.key_file is not None and tls.cert_file is None:
        raise ValueError(f"{var}_TLS_KEY_FILE is set without {var}_TLS_CERT_FILE")
    try:
        tls_context(tls)
    except ValueError as exc:
        which = "CA_FILE" if "CA file" in str(exc) else "CERT_FILE/KEY_FILE"
        raise ValueError(f"{var}_TLS_{which}: {exc}") from None
