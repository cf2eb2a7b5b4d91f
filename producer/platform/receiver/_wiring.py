"""Builds a `Receiver` from settings: the platforms' crypto, the replay memory, the Redis
notifier, and the registry."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable

from consumer_lib.errors import ConfigError
from consumer_lib.snapshot import connect_redis
from producer.platform.config import load_platforms
from producer.platform.crypto import MessageCrypto
from producer.platform.receiver._receiver import CallbackStore, Receiver, RedisNotifier
from producer.platform.receiver._replay import ReplayGuard
from producer.platform.receiver._settings import ReceiverSettings

RegistryFactory = Callable[[ReceiverSettings], CallbackStore]


def open_registry(settings: ReceiverSettings) -> CallbackStore:
    """The platform registry (`producer.platform.db.startup`, the `platform` extra), opened as
    the producer opens it; without a database there is no receiver (it never answers
    `success` for a push it could not store)."""
    if settings.platform_db_url is None:
        raise ConfigError(
            "WXTOKEN_PLATFORM_DB_URL is not set: the receiver stores every push in the "
            "platform database before answering success"
        )
    try:
        startup = importlib.import_module("producer.platform.db.startup")
    except ImportError as exc:
        raise ConfigError(
            f"the platform registry cannot be loaded ({exc}); install wxtoken[platform]"
        ) from None
    store: CallbackStore = startup.open_registry(
        settings.platform_db_url.get_secret_value(), settings.platform_key_file
    )
    return store


def make_receiver(
    settings: ReceiverSettings, registry_factory: RegistryFactory = open_registry
) -> tuple[Receiver, RedisNotifier]:
    """Everything wired; raises `ConfigError` for a bad platforms file or registry."""
    platforms = load_platforms(settings.platforms_file, with_secret=False)
    crypto = {
        p.component_appid: MessageCrypto(
            token=p.token.get_secret_value(),
            encoding_aes_key=p.encoding_aes_key.get_secret_value(),
            appid=p.component_appid,
        )
        for p in platforms
    }
    redis_client = connect_redis(
        settings.redis_url, timeout_s=settings.redis_timeout_s, tls=settings.redis_tls
    )
    notifier = RedisNotifier(redis_client, settings.key_prefix)
    replay = ReplayGuard(
        window_s=settings.receiver_window_s,
        max_remembered=settings.receiver_max_remembered,
        clock=time.time,
    )
    receiver = Receiver(crypto, registry_factory(settings), notifier, replay=replay)
    return receiver, notifier
