"""The wire contract shared by the producer, the ops CLI and every subscriber.

    update           TokenUpdate (one token, as published and as stored), TokenKind,
                     TokenSource, AppId, mask(), the MAX_* limits, decode_json_model()
    signing          UpdateCodec: Ed25519-signed envelopes around an update; key files
    refresh_request  RefreshRequest: "refresh this app's token", sent to the producers
    keys             KeyLayout: the name of every Redis key under one prefix

Anything that writes or reads these bytes goes through these modules, so the producer,
the CLI and subscribers cannot drift apart.
"""

from .keys import KeyLayout
from .refresh_request import (
    MAX_REQUEST_BYTES,
    REQUEST_MESSAGE_TYPE,
    REQUEST_TTL_MS,
    RefreshRequest,
    declare_requests_exchange,
    fingerprint,
    publish_request,
    request_properties,
    requests_exchange,
)
from .signing import (
    PLAIN,
    UpdateCodec,
    codec_from_settings,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_keys,
)
from .update import (
    MAX_ENCODED_BYTES,
    MAX_LIFETIME_S,
    MAX_TOKEN_CHARS,
    AppId,
    TokenKind,
    TokenSource,
    TokenUpdate,
    decode_json_model,
    mask,
)

__all__ = [
    "MAX_ENCODED_BYTES",
    "MAX_LIFETIME_S",
    "MAX_REQUEST_BYTES",
    "MAX_TOKEN_CHARS",
    "PLAIN",
    "REQUEST_MESSAGE_TYPE",
    "REQUEST_TTL_MS",
    "AppId",
    "KeyLayout",
    "RefreshRequest",
    "TokenKind",
    "TokenSource",
    "TokenUpdate",
    "UpdateCodec",
    "codec_from_settings",
    "declare_requests_exchange",
    "decode_json_model",
    "fingerprint",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_keys",
    "mask",
    "publish_request",
    "request_properties",
    "requests_exchange",
]
