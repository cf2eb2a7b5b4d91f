"""The gateway's settings: a subscriber's (`ClientSettings`) plus `WXTOKEN_GATEWAY_*`."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator

from consumer_lib import ClientSettings
from consumer_lib.settings.tls import TlsFile


def _default_operator() -> str:
    return f"gateway@{socket.gethostname()}"


class GatewaySettings(ClientSettings):
    """Everything `wxtoken-gateway` reads from the environment, once, at start."""

    #: The keys file (`wxtoken gateway-key add` writes it); re-read when it changes.
    gateway_keys_file: Path
    gateway_host: str = "127.0.0.1"
    #: 8777 is the origin server's port, so its users only change the host.
    gateway_port: Annotated[int, Field(ge=0, le=65535)] = 8777
    #: Requests per second per key unless the key says otherwise (bursts of twice that).
    gateway_rate_per_s: Annotated[float, Field(gt=0, le=1_000_000)] = 50.0
    #: Request bodies larger than this are refused with 413.
    gateway_max_body_bytes: Annotated[int, Field(ge=256, le=1_048_576)] = 4096
    #: Serve `GET /accesstoken` (the origin's plain route) without a key: only behind a
    #: network boundary, for clients that cannot send a header.
    gateway_legacy_anonymous: bool = False
    #: Who overrides are recorded as (`producer_id` of the update); the key's name follows.
    gateway_operator: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@-]{1,64}$")] = Field(
        default_factory=_default_operator
    )
    #: HTTPS: the server's certificate and key; with a client CA, clients must present a
    #: certificate it signed (mTLS).
    gateway_tls_cert_file: TlsFile = None
    gateway_tls_key_file: TlsFile = None
    gateway_tls_client_ca_file: TlsFile = None
    #: `/metrics` (and `/healthz`, `/readyz`) on a listener of its own, never on the API's
    #: port: the metrics name every app, kind and version. Off unless a port is set.
    gateway_metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    gateway_metrics_host: str = "127.0.0.1"
    #: `GET /v1/stream`: a comment line this often on an idle stream (proxies keep it open);
    #: at most this many streams open per API key (429 beyond); a stream whose reader has not
    #: taken a write for this long is dropped.
    gateway_stream_heartbeat_s: Annotated[float, Field(gt=0, le=3600)] = 15.0
    gateway_stream_max_per_key: Annotated[int, Field(ge=1, le=100_000)] = 20
    gateway_stream_write_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: A relay (docs/environments.md): take tokens from this gateway's stream, with this
    #: key of it, instead of Redis and the broker (whose settings are then not used).
    gateway_upstream_url: str | None = None
    gateway_upstream_api_key: SecretStr | None = None
    gateway_upstream_ca_file: TlsFile = None
    gateway_upstream_read_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 45.0
    log_level: Annotated[str, Field(pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")] = "INFO"

    @model_validator(mode="after")
    def _upstream_key_with_url(self) -> GatewaySettings:
        if self.gateway_upstream_url is None:
            return self
        parts = urlsplit(self.gateway_upstream_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("WXTOKEN_GATEWAY_UPSTREAM_URL must be an http:// or https:// URL")
        key = self.gateway_upstream_api_key
        if key is None or not key.get_secret_value():
            raise ValueError(
                "WXTOKEN_GATEWAY_UPSTREAM_URL needs WXTOKEN_GATEWAY_UPSTREAM_API_KEY (a key of "
                "the upstream gateway with the read scope)"
            )
        return self

    @model_validator(mode="after")
    def _tls_files_go_together(self) -> GatewaySettings:
        cert, key = self.gateway_tls_cert_file, self.gateway_tls_key_file
        if (cert is None) != (key is None):
            raise ValueError(
                "WXTOKEN_GATEWAY_TLS_CERT_FILE and WXTOKEN_GATEWAY_TLS_KEY_FILE go together"
            )
        if self.gateway_tls_client_ca_file is not None and cert is None:
            raise ValueError(
                "WXTOKEN_GATEWAY_TLS_CLIENT_CA_FILE needs WXTOKEN_GATEWAY_TLS_CERT_FILE (mTLS "
                "is TLS with client certificates)"
            )
        return self
