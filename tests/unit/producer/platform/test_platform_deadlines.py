"""Socket deadlines for the platform database: one watchdog thread shuts down a socket whose
block outlived its deadline, and never one whose block finished."""

from __future__ import annotations

import socket
import threading

from producer.platform.db._deadlines import socket_deadline


def test_a_blocked_read_fails_once_its_deadline_passes() -> None:
    """A recv that would wait forever (the peer never answers) returns at the deadline."""
    ours, peer = socket.socketpair()
    with ours, peer, socket_deadline(ours.fileno(), 0.05):
        assert ours.recv(10) == b""  # shut down under the read, instead of hanging


def test_a_finished_block_is_never_shut_down() -> None:
    """Disarmed deadlines are forgotten: the socket keeps working after a later deadline
    (on another socket) has fired, and after its own would have."""
    kept, kept_peer = socket.socketpair()
    cut, cut_peer = socket.socketpair()
    with kept, kept_peer, cut, cut_peer:
        with socket_deadline(kept.fileno(), 0.01):
            pass
        with socket_deadline(cut.fileno(), 0.2):
            assert cut.recv(10) == b""
        kept_peer.sendall(b"still")
        assert kept.recv(10) == b"still"


def test_many_deadlines_share_one_thread() -> None:
    """A thousand armed and disarmed deadlines start at most one watchdog thread."""
    ours, peer = socket.socketpair()
    with ours, peer:
        for _ in range(1000):
            with socket_deadline(ours.fileno(), 30):
                pass
    watchdogs = [t for t in threading.enumerate() if t.name == "wxtoken-db-deadlines"]
    assert len(watchdogs) == 1
