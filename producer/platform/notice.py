"""The receiver's hint to the leader: "a push was stored", on a Redis channel.

`PUBLISH {key_prefix}:platform:events {"component_appid": ..., "push_id": ...}` right after
the push is stored. Pub/sub is fire-and-forget, so this is only a hint that saves the leader
a poll interval: the database row is what counts (the leader also polls unprocessed rows).
No secret and no event field beyond these two goes on the channel.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from consumer_lib.errors import InvalidUpdate
from consumer_lib.wire.keys import KeyLayout

_PUSH_ID = re.compile(r"^[0-9a-f]{40}$")
_APPID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def events_channel(key_prefix: str) -> str:
    """The channel the receiver publishes on and the leader subscribes to."""
    return KeyLayout(key_prefix).platform_events


@dataclass(frozen=True, slots=True)
class StoredNotice:
    component_appid: str
    push_id: str

    def encode(self) -> bytes:
        return json.dumps(
            {"component_appid": self.component_appid, "push_id": self.push_id},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> StoredNotice:
        """The notice in `raw`; `InvalidUpdate` for anything else."""
        try:
            data = json.loads(raw)
        except ValueError:
            raise InvalidUpdate("platform notice: not JSON") from None
        if not isinstance(data, dict) or set(data) != {"component_appid", "push_id"}:
            raise InvalidUpdate("platform notice: not {component_appid, push_id}")
        appid, push_id = data["component_appid"], data["push_id"]
        if not isinstance(appid, str) or not _APPID.fullmatch(appid):
            raise InvalidUpdate("platform notice: bad component_appid")
        if not isinstance(push_id, str) or not _PUSH_ID.fullmatch(push_id):
            raise InvalidUpdate("platform notice: bad push_id")
        return cls(appid, push_id)
