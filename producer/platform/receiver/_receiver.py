"""`Receiver`: one push to the authorization-event URL, from bytes to a stored event.

In order: the platform (by the path's component appid), the query, the timestamp window, the
envelope, `msg_signature`, the replay memory, decryption and the appid, the event's XML; then
`record_callback` stores it, and only then is `success` answered, and the leader told. Every
refusal changes nothing and is counted by reason; a registry that stored nothing gets 503,
never `success`, so WeChat pushes again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import redis

from consumer_lib.outage import OutageLog
from consumer_lib.redis_errors import REDIS_ERRORS, describe_redis_error
from producer.platform.crypto import MessageCrypto
from producer.platform.errors import CallbackRejected, RegistryUnavailable, RejectReason
from producer.platform.events import PlatformEvent
from producer.platform.messages import parse_envelope, parse_event
from producer.platform.notice import StoredNotice, events_channel
from producer.platform.receiver._rejections import Rejections
from producer.platform.receiver._replay import ReplayGuard

log = logging.getLogger(__name__)

#: What WeChat wants to read: anything else and it pushes again.
SUCCESS = "success"

#: The HTTP status of each refusal (the body is the reason, one word).
STATUS: dict[RejectReason, int] = {
    "malformed": 400,
    "too_large": 413,
    "bad_signature": 403,
    "undecryptable": 400,
    "wrong_appid": 403,
    "stale": 403,
    "replay": 409,
    "unknown_platform": 404,
}


class CallbackStore(Protocol):
    """The registry's side of the receiver (`producer.platform.db.registry` implements it)."""

    def record_callback(self, event: PlatformEvent, encrypt_b64: str) -> bool:
        """Store the push durably: True if new, False if this push_id was stored before;
        `RegistryUnavailable` when nothing was stored."""
        ...


class Notifier(Protocol):
    def notify(self, notice: StoredNotice) -> None:
        """Tell the leader, best effort: never raises."""
        ...


class RedisNotifier:
    """`PUBLISH {key_prefix}:platform:events`; a failure is counted and logged once per outage."""

    def __init__(self, redis_client: redis.Redis, key_prefix: str) -> None:
        self._redis = redis_client
        self.channel = events_channel(key_prefix)
        self.failed = 0
        self._outage = OutageLog(
            log,
            "Redis (telling the leader about stored pushes)",
            meanwhile="the leader finds them by polling",
        )

    def notify(self, notice: StoredNotice) -> None:
        try:
            self._redis.publish(self.channel, notice.encode())
        except REDIS_ERRORS as exc:
            self.failed += 1
            self._outage.failed(describe_redis_error(exc))
        else:
            self._outage.succeeded()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    text: str


@dataclass
class Stored:
    """Counts of stored pushes (new, duplicate) and of pushes the registry could not store."""

    new: int = 0
    duplicate: int = 0
    unavailable: int = 0
    #: False after a store failed, until one succeeds (readiness).
    registry_ok: bool = True


class Receiver:
    """Thread-safe: `receive` runs on the server's worker threads."""

    def __init__(
        self,
        platforms: Mapping[str, MessageCrypto],
        store: CallbackStore,
        notifier: Notifier,
        *,
        replay: ReplayGuard | None = None,
        rejections: Rejections | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.platforms = dict(platforms)
        self._store = store
        self._notifier = notifier
        self.replay = replay or ReplayGuard(clock=clock)
        self.rejections = rejections or Rejections()
        self._clock = clock
        self.stored = Stored()
        self._stored_lock = threading.Lock()
        self._registry_outage = OutageLog(
            log,
            "the platform registry (storing pushes)",
            meanwhile="answering 503 so WeChat pushes again",
        )

    def refuse(self, reason: RejectReason, component_appid: str) -> Answer:
        self.rejections.add(reason, component_appid)
        return Answer(STATUS[reason], reason)

    def receive(self, component_appid: str, query: Mapping[str, str], body: bytes) -> Answer:
        """Verify, decrypt, store, then answer `success`; blocking (the registry's write)."""
        try:
            crypto = self.platforms.get(component_appid)
            if crypto is None:
                raise CallbackRejected("unknown_platform")
            event, encrypt, replay_key = self._verify(crypto, query, body)
        except CallbackRejected as exc:
            return self.refuse(exc.reason, component_appid)
        try:
            new = self._store.record_callback(event, encrypt)
        except RegistryUnavailable as exc:
            with self._stored_lock:
                self.stored.unavailable += 1
                self.stored.registry_ok = False
            self._registry_outage.failed(str(exc)[:200] or type(exc).__name__)
            return Answer(503, "registry unavailable")
        self._registry_outage.succeeded()
        with self._stored_lock:
            self.stored.registry_ok = True
            if new:
                self.stored.new += 1
            else:
                self.stored.duplicate += 1
        self.replay.remember(*replay_key)
        self._notifier.notify(StoredNotice(component_appid, event.push_id))
        if new:
            log.info(
                "stored %s push %s... for platform %s",
                event.raw_info_type,
                event.push_id[:8],
                component_appid,
            )
        return Answer(200, SUCCESS)

    def _verify(
        self, crypto: MessageCrypto, query: Mapping[str, str], body: bytes
    ) -> tuple[PlatformEvent, str, tuple[int, str, str]]:
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        signature = query.get("msg_signature", "")
        if not nonce or len(nonce) > 64 or not nonce.isprintable():
            raise CallbackRejected("malformed", "nonce missing or too long")
        if len(signature) != 40:
            raise CallbackRejected("malformed", "msg_signature missing or not sha1 hex")
        if query.get("encrypt_type", "aes") != "aes":
            raise CallbackRejected("malformed", "encrypt_type is not aes")
        timestamp_s = self.replay.check_time(timestamp)
        envelope = parse_envelope(body)
        crypto.verify(signature, timestamp, nonce, envelope.encrypt)
        self.replay.check_new(timestamp_s, nonce, signature)
        if envelope.appid and envelope.appid != crypto.appid:
            raise CallbackRejected("wrong_appid", "the body's AppId is another platform's")
        xml = crypto.decrypt(envelope.encrypt)
        event = parse_event(
            xml,
            component_appid=crypto.appid,
            push_id=envelope.push_id,
            received_at_s=self._clock(),
        )
        return event, envelope.encrypt, (timestamp_s, nonce, signature)
