"""`GatewayClientSettings`: a `TokenClient` fed by a gateway's stream instead of the broker.

`WXTOKEN_GATEWAY_URL` (`http://` or `https://`) and `WXTOKEN_GATEWAY_API_KEY` (a key with
the `read` scope; `report` too for `report_invalid()`) replace the Redis and broker URLs:
`TokenClient.from_env()` takes this path when `WXTOKEN_GATEWAY_URL` is set. Updates are
still verified with `WXTOKEN_VERIFY_KEYS`: the gateway passes the producer's signed bytes on.
"""

from __future__ import annotations

from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, model_validator

from .schema import ClientSettings
from .tls import TlsFile


def _check_gateway_url(url: str | None) -> str | None:
    if url is None or not url.strip():
        return None
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("WXTOKEN_GATEWAY_URL must be an http:// or https:// URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(
            "WXTOKEN_GATEWAY_URL takes no user, password, query or fragment "
            "(the key goes in WXTOKEN_GATEWAY_API_KEY)"
        )
    return url.strip().rstrip("/")


class GatewayClientSettings(ClientSettings):
    """`ClientSettings` plus the gateway to stream from (None: the broker, as before)."""

    gateway_url: Annotated[str | None, AfterValidator(_check_gateway_url)] = None
    gateway_api_key: SecretStr | None = None
    #: Extra CA bundle (PEM) to verify an https:// gateway with.
    gateway_ca_file: TlsFile = None
    #: With no byte (not even a heartbeat) for this long, the stream is reconnected.
    gateway_read_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 45.0

    @model_validator(mode="after")
    def _key_with_url(self) -> Self:
        if self.gateway_url is None:
            return self
        if self.gateway_api_key is None or not self.gateway_api_key.get_secret_value():
            raise ValueError("WXTOKEN_GATEWAY_URL needs WXTOKEN_GATEWAY_API_KEY")
        if self.trusted_publisher_names():
            raise ValueError(
                "WXTOKEN_TRUSTED_PUBLISHERS names broker users, which a gateway's stream "
                "does not carry: unset it with WXTOKEN_GATEWAY_URL (signatures still apply)"
            )
        return self
