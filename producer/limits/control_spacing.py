"""Spacing of one app's control actions, fleet-wide: a quota clear at most every so often.

WeChat allows 10 `clear_quota` calls a month per app; a stolen control key must not spend
them in 10 requests. The leader claims `KeyLayout.control_spacing(action, app_id)` with
SET NX PX for `min_interval_s` before it acts; while the key lives, another request for
the same action and app is refused with the time left. A call that changed nothing
upstream (a transient failure) gives the claim back. `min_interval_s` 0 spaces nothing.
"""

from __future__ import annotations

import logging

import redis

from consumer_lib.redis_errors import REDIS_ERRORS, describe_redis_error, translated
from consumer_lib.wire.keys import KeyLayout

log = logging.getLogger(__name__)


class ControlSpacing:
    """Claims and gives back the right to act on one app; Redis failures raise `StoreError`
    from `claim`, and are only logged by `release`."""

    def __init__(self, client: redis.Redis, keys: KeyLayout, *, min_interval_s: float) -> None:
        self._client = client
        self._keys = keys
        self.min_interval_s = min_interval_s

    def claim(self, action: str, app_id: str, request_id: str) -> float | None:
        """None when this request may act (it holds the claim now); else the seconds until
        the last one's claim ends."""
        if self.min_interval_s <= 0:
            return None
        key = self._keys.control_spacing(action, app_id)
        with translated("checking the spacing", self._client):
            claimed = self._client.set(
                key, request_id, nx=True, px=max(1, int(self.min_interval_s * 1000))
            )
            if claimed:
                return None
            left_ms = int(self._client.pttl(key) or 0)  # -1, -2: no expiry, just gone
        return max(1.0, left_ms / 1000)

    def release(self, action: str, app_id: str) -> None:
        """Give the claim back: the call changed nothing upstream."""
        if self.min_interval_s <= 0:
            return
        try:
            self._client.delete(self._keys.control_spacing(action, app_id))
        except REDIS_ERRORS as exc:
            log.warning(
                "%s %s: could not give its spacing back (%s)",
                action,
                app_id,
                describe_redis_error(exc),
            )
