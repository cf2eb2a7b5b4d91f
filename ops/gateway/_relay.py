"""A relay: a gateway that takes its tokens from another gateway's stream, not Redis and
the broker ("production refreshes; every other environment relays", docs/environments.md).

With `WXTOKEN_GATEWAY_UPSTREAM_URL` and `..._UPSTREAM_API_KEY` (a key of the upstream
gateway with `read`, and `report` if reports should go through), the gateway's `TokenClient`
is fed over HTTP (`consumer_lib._client.http_transport`): no Redis or broker setting is read or
needed. Updates are still the producer's signed bytes, checked with `WXTOKEN_VERIFY_KEYS`
and passed on unchanged by this gateway's own stream. Overrides are refused (no store to
write to); reports are forwarded upstream, which refuses them unless its key allows
`report`. Upstream unreachable: what is held is served until it expires, never past;
`/readyz` and `wxtoken_gateway_upstream_connected` say so; the stream resumes with
`Last-Event-ID` on reconnect.
"""

from __future__ import annotations

from pydantic import ValidationError

from consumer_lib import ConfigError, TokenClient
from consumer_lib.settings import GatewayClientSettings, describe_validation_error
from consumer_lib.settings.schema import ClientSettings

from ._apikeys import KeyRing
from ._app import Gateway
from ._settings import GatewaySettings
from ._stream import StreamLimits
from ._tokens import TokenView


def upstream_settings(settings: GatewaySettings) -> GatewayClientSettings:
    """The relay's client settings: the subscriber's own, pointed at the upstream."""
    assert settings.gateway_upstream_url is not None
    common = settings.model_dump(include=set(ClientSettings.model_fields))
    try:
        return GatewayClientSettings(
            **common,
            gateway_url=settings.gateway_upstream_url,
            gateway_api_key=settings.gateway_upstream_api_key,
            gateway_ca_file=settings.gateway_upstream_ca_file,
            gateway_read_timeout_s=settings.gateway_upstream_read_timeout_s,
        )
    except ValidationError as exc:
        raise ConfigError(f"relay: {describe_validation_error(exc)}") from None


def make_relay(settings: GatewaySettings, keys: KeyRing, limits: StreamLimits) -> Gateway:
    client = TokenClient.over_http(upstream_settings(settings), name="wxtoken-gateway-relay")
    view = TokenView(client, list)  # known = what was ever held: there is no Redis to ask
    return Gateway(
        client=client,
        view=view,
        keys=keys,
        overrider=None,
        operator=settings.gateway_operator,
        default_rate_per_s=settings.gateway_rate_per_s,
        max_body_bytes=settings.gateway_max_body_bytes,
        legacy_anonymous=settings.gateway_legacy_anonymous,
        stream_limits=limits,
        upstream=settings.gateway_upstream_url,
    )
