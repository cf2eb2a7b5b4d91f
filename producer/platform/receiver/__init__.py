"""`wxtoken-platform-receiver`: the authorization-event URL WeChat pushes to.

It holds each platform's token and EncodingAESKey (never its secret), verifies, decrypts,
stores each push through the registry before answering `success`, and hints the leader on
Redis. Starlette on uvicorn (the `wxtoken[gateway]` extra's web stack).

    _replay      ReplayGuard: the timestamp window and the remembered pushes
    _rejections  refusals counted by reason, logged at most once a minute each
    _receiver    Receiver: one push from bytes to a stored event; CallbackStore, RedisNotifier
    _routes      the routes and build_app
    _metrics     the Prometheus collector
    _settings    ReceiverSettings (WXTOKEN_PLATFORMS_FILE, WXTOKEN_RECEIVER_*)
    _wiring      make_receiver(settings)
    __main__     the console script
"""

from producer.platform.receiver._receiver import SUCCESS, CallbackStore, Receiver, RedisNotifier
from producer.platform.receiver._replay import ReplayGuard
from producer.platform.receiver._routes import EVENTS_PATH, build_app
from producer.platform.receiver._settings import ReceiverSettings

__all__ = [
    "EVENTS_PATH",
    "SUCCESS",
    "CallbackStore",
    "Receiver",
    "ReceiverSettings",
    "RedisNotifier",
    "ReplayGuard",
    "build_app",
]
