"""A TCP proxy on 127.0.0.1 that a test can cut and restore, to break a connection to a
real server without stopping it."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`; `cut()` drops every connection and refuses
    new ones until `restore()`; `lose_replies(n)` drops the next `n` answers of the server
    (closing their connections) after the server has acted on the request."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._replies_to_lose = 0
        self._paused = threading.Event()
        self.replies_lost = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Close every proxied connection; new ones are closed as soon as accepted."""
        self._open.clear()
        self._paused.clear()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def restore(self) -> None:
        self._paused.clear()
        self._open.set()

    def pause(self) -> None:
        """Stop forwarding, connections kept open: bytes wait in the sockets' buffers (and
        are lost by a `cut()`), as on a stalled link. `restore()` or `cut()` ends it."""
        self._paused.set()

    def lose_replies(self, count: int = 1) -> None:
        """Drop the next `count` chunks the server sends, closing those connections: the
        client sees its connection break after the server executed its command."""
        with self._lock:
            self._replies_to_lose = count

    def _lose_this_reply(self) -> bool:
        with self._lock:
            if self._replies_to_lose <= 0:
                return False
            self._replies_to_lose -= 1
            self.replies_lost += 1
            return True

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(2)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                sock.setblocking(True)
                selector.register(sock, selectors.EVENT_READ)
            try:
                while not self._stop.is_set() and min(s.fileno() for s in peers) >= 0:
                    if self._paused.is_set():
                        self._stop.wait(0.05)
                        continue
                    for key, _ in selector.select(timeout=0.2):
                        if self._paused.is_set():
                            break
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                        if not data:
                            return
                        if key.fileobj is upstream and self._lose_this_reply():
                            return
                        peers[key.fileobj].sendall(data)  # type: ignore[index]
            except (OSError, ValueError):  # closed under us by cut()
                return
            finally:
                with self._lock:
                    for sock in peers:
                        self._sockets.discard(sock)
                        sock.close()


@contextlib.contextmanager
def proxy_to(host: str, port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(host, port)
    try:
        yield proxy
    finally:
        proxy.close()
