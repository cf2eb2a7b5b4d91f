"""The platform receiver on a real uvicorn, on loopback, with an in-memory registry: for the
end-to-end tests against the sandbox and for `bench/receiver_flood.py`."""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from types import TracebackType

import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from producer.platform.crypto import MessageCrypto
from producer.platform.errors import RegistryUnavailable
from producer.platform.events import PlatformEvent
from producer.platform.notice import StoredNotice
from producer.platform.receiver import EVENTS_PATH, Receiver, build_app
from producer.platform.receiver._metrics import ReceiverCollector
from producer.platform.receiver._receiver import Notifier
from tests.waiting import wait_for


class MemoryRegistry:
    """`record_callback` into a dict by push_id, thread-safe; `down` stores nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: dict[str, tuple[PlatformEvent, str]] = {}
        self.down = False

    def record_callback(self, event: PlatformEvent, encrypt_b64: str) -> bool:
        with self._lock:
            if self.down:
                raise RegistryUnavailable("the in-memory registry is down")
            if event.push_id in self.rows:
                return False
            self.rows[event.push_id] = (event, encrypt_b64)
            return True

    def events(self) -> list[PlatformEvent]:
        with self._lock:
            return [event for event, _ in self.rows.values()]


class SilentNotifier:
    def __init__(self) -> None:
        self.notices: list[StoredNotice] = []

    def notify(self, notice: StoredNotice) -> None:
        self.notices.append(notice)


class ReceiverThread:
    """A receiver for `platforms` (appid -> (token, EncodingAESKey)) served by uvicorn from a
    thread on 127.0.0.1; `with` starts it (listening on return) and stops it."""

    def __init__(
        self,
        platforms: Mapping[str, tuple[str, str]],
        registry: MemoryRegistry,
        notifier: Notifier | None = None,
    ) -> None:
        crypto = {
            appid: MessageCrypto(token=token, encoding_aes_key=key, appid=appid)
            for appid, (token, key) in platforms.items()
        }
        self.registry = registry
        self.notifier = notifier or SilentNotifier()
        self.receiver = Receiver(crypto, registry, self.notifier)
        metrics = CollectorRegistry()
        metrics.register(ReceiverCollector(self.receiver))
        app = build_app(
            self.receiver, metrics=lambda: (generate_latest(metrics), CONTENT_TYPE_LATEST)
        )
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, server_header=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def url(self, appid: str) -> str:
        return f"http://127.0.0.1:{self.port}{EVENTS_PATH.format(component_appid=appid)}"

    def __enter__(self) -> ReceiverThread:
        self._thread.start()
        wait_for(
            lambda: self._server.started or not self._thread.is_alive(),
            message="the receiver listening",
        )
        if not self._server.started:
            raise RuntimeError("the receiver did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10.0)
        self._socket.close()
