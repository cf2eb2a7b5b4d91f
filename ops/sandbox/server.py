"""`SandboxServer`: the sandbox over HTTP, bound (and listening) on construction."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .config import SandboxConfig
from .http import SandboxHTTPServer
from .pusher import PlatformPusher
from .state import SandboxState

logger = logging.getLogger(__name__)


class SandboxServer:
    """A ThreadingHTTPServer over one `SandboxState`; start it once, stop it any number of times."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.state = SandboxState(config, clock)
        self._stopping = threading.Event()
        self._loop_done = threading.Event()
        self._lock = threading.Lock()
        self._started = False
        self._loop_thread_id: int | None = None
        self._httpd = SandboxHTTPServer(config, self.state, self._stopping)
        #: Pushes verify tickets to each platform's callback URL, and the controls' events.
        self.pusher = PlatformPusher(config, self.state, clock)
        self._httpd.pusher = self.pusher

    @property
    def base_url(self) -> str:
        return f"http://{self._httpd.server_name}:{self._httpd.server_port}"

    def _claim_start(self) -> None:
        with self._lock:
            if self._started or self._stopping.is_set():
                raise RuntimeError("a SandboxServer can be started only once")
            self._started = True
        agents = [agent.key for agent in self.config.agents]
        logger.info(
            "WeChat sandbox serving %s and WeCom agents %s on %s",
            sorted(self.config.apps),
            agents,
            self.base_url,
        )

    def _loop(self) -> None:
        self._loop_thread_id = threading.get_ident()
        try:
            while not self._stopping.is_set():
                self._httpd.handle_request()  # returns at least every POLL_S
        finally:
            self._httpd.server_close()
            self._loop_done.set()

    def start(self) -> SandboxServer:
        """Serve from a background thread; returns self (already listening)."""
        self._claim_start()
        threading.Thread(target=self._loop, name="wechat-sandbox", daemon=True).start()
        self.pusher.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until stop() (from any thread) or KeyboardInterrupt."""
        self._claim_start()
        self.pusher.start()
        try:
            self._loop()
        except KeyboardInterrupt:
            logger.info("WeChat sandbox interrupted")
        finally:
            self._stopping.set()
            self.pusher.stop()

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent, returns within ~0.1 s."""
        self._stopping.set()  # also ends the waits of "timeout" faults
        self.pusher.stop()
        with self._lock:
            started = self._started
        if not started:
            self._httpd.server_close()
        elif threading.get_ident() != self._loop_thread_id:
            self._loop_done.wait(timeout=2.0)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
