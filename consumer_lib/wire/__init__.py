"""The wire contract shared by the producer, the ops CLI and every subscriber.

    kinds            TokenKind (every credential kind), Platform, ticket names
    update           TokenUpdate (one token, as published and as stored), TokenKind,
                     TokenSource, AppId, mask(), the MAX_* limits, decode_json_model()
    signing          UpdateCodec: Ed25519-signed envelopes around an update; key files
    refresh_request  RefreshRequest: "refresh this app's token", sent to the producers
    control          ControlRequest (signed, e.g. clear_quota) and the leader's ControlAnswer
    keys             KeyLayout: the name of every Redis key under one prefix

Anything that writes or reads these bytes goes through these modules, so the producer,
the CLI and subscribers cannot drift apart.
"""

from .control import CONTROL_MESSAGE_TYPE, ControlAnswer, ControlRequest
from .keys import KeyLayout
from .kinds import TICKET_NAMES, Platform, tickets_of
from .refresh_request import (
    MAX_REQUEST_BYTES,
    REQUEST_MESSAGE_TYPE,
    REQUEST_TTL_MS,
    RefreshRequest,
    fingerprint,
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
    "CONTROL_MESSAGE_TYPE",
    "MAX_ENCODED_BYTES",
    "MAX_LIFETIME_S",
    "MAX_REQUEST_BYTES",
    "MAX_TOKEN_CHARS",
    "PLAIN",
    "REQUEST_MESSAGE_TYPE",
    "REQUEST_TTL_MS",
    "TICKET_NAMES",
    "AppId",
    "ControlAnswer",
    "ControlRequest",
    "KeyLayout",
    "Platform",
    "RefreshRequest",
    "TokenKind",
    "TokenSource",
    "TokenUpdate",
    "UpdateCodec",
    "codec_from_settings",
    "decode_json_model",
    "fingerprint",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_keys",
    "mask",
    "requests_exchange",
    "tickets_of",
]
