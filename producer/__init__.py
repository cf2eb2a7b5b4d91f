"""wxtoken-producer: one leader (with hot standbys) refreshes every credential from WeChat,
compare-and-sets it into Redis and publishes it signed on the fanout exchange.

The rooms, each a subpackage named after its concept:

    upstream/       WeChat's and WeCom's HTTP APIs, their errcodes, the rate gate
    refresh/        one credential's refresh: the state machine, timing, tickets, requests
    limits/         budgets and allowances
    store/          Redis: tokens by compare-and-set, versions, audit, the Functions library
    leadership/     the lease, clocks, succession, the follower, the announcement
    messaging/      the publisher, the refresh-request listener, control requests
    observability/  metrics, the status port, logging
    platform/       third-party platforms: crypto, the callback receiver, the registry

The public names below are loaded on first use, so importing one room (the platform
receiver, say) does not import the others' libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers; at run time `__getattr__` imports on first use
    from producer.app_config import AppConfig
    from producer.apps import TokenApi, load_apps
    from producer.service import ProducerService
    from producer.settings import ProducerSettings

__all__ = ["AppConfig", "ProducerService", "ProducerSettings", "TokenApi", "load_apps"]

_HOMES = {
    "AppConfig": "producer.app_config",
    "TokenApi": "producer.apps",
    "load_apps": "producer.apps",
    "ProducerService": "producer.service",
    "ProducerSettings": "producer.settings",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'producer' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
