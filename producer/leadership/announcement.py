"""Which apps the leader serves: one small JSON value in Redis, for `wxtoken status`.

    {prefix}:served  {"producer_id": ..., "owner": ..., "epoch": 3, "at": 1795476981.0,
                      "apps": ["wx...", ...]}

The leader writes it when it takes the lease and after each reload of the apps file; the
ops CLI reads it. It is information, not a lease: `owner` tells whether it is from the
current lease holder. Reading validates it like every other outside input.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consumer_lib.errors import InvalidUpdate
from consumer_lib.redis_errors import translated
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.update import AppId

#: A larger value is refused when read (it would be 200,000 app ids or more).
MAX_ANNOUNCEMENT_BYTES = 8 * 1024 * 1024


class Announcement(BaseModel):
    """What the leader says it serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    producer_id: Annotated[str, Field(max_length=128)]
    owner: Annotated[str, Field(max_length=200)]
    epoch: int | None
    at: float
    apps: list[AppId]


def announce(
    client: redis.Redis,
    keys: KeyLayout,
    *,
    producer_id: str,
    owner: str,
    epoch: int | None,
    app_ids: Iterable[str],
    now_s: float,
) -> None:
    """Write the announcement; `StoreError` when Redis is away."""
    value = Announcement(
        producer_id=producer_id, owner=owner, epoch=epoch, at=now_s, apps=sorted(app_ids)
    )
    with translated("announcing served apps", client):
        client.set(keys.served, value.model_dump_json())


def read_announcement(client: redis.Redis, keys: KeyLayout) -> Announcement | None:
    """The announcement, None when there is none; `InvalidUpdate` when it is malformed,
    `StoreError` when Redis is away."""
    with translated("reading served apps", client):
        raw = client.get(keys.served)
    if raw is None:
        return None
    if len(raw) > MAX_ANNOUNCEMENT_BYTES:
        raise InvalidUpdate(f"{keys.served} holds {len(raw)} bytes, more than allowed")
    try:
        return Announcement.model_validate(json.loads(raw))
    except (ValueError, ValidationError, RecursionError):
        raise InvalidUpdate(f"{keys.served} does not hold a valid announcement") from None
