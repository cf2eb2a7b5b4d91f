"""`GET /v1/stream` over real HTTP: a real gateway in front of a real producer, Redis,
RabbitMQ and the sandbox. Each event is the producer's signed envelope (verified here with
the producers' public key), the next token is pushed, and a resume sends only newer ones."""

from __future__ import annotations

import signal
from pathlib import Path

from consumer_lib.wire.signing import UpdateCodec, load_public_keys
from consumer_lib.wire.update import TokenUpdate
from tests.waiting import wait_for

from .gateway_stack import RunningGateway, start_gateway, wait_ready
from .sse_reader import SseReader
from .stack import Stack


def _codec(stack: Stack) -> UpdateCodec:
    return UpdateCodec(
        verify_keys=load_public_keys([Path(stack.service_env["WXTOKEN_VERIFY_KEYS"])])
    )


def _gateway(stack: Stack, tmp_path: Path) -> RunningGateway:
    stack.producer()
    for app_id in stack.app_ids:
        wait_for(lambda a=app_id: stack.snapshot(a), timeout_s=30, message=f"{app_id} stored")
    gateway = start_gateway(stack, tmp_path, WXTOKEN_GATEWAY_STREAM_HEARTBEAT_S="0.5")
    wait_ready(gateway)
    return gateway


def test_stream_pushes_signed_updates_and_resumes(stack: Stack, tmp_path: Path) -> None:
    gateway = _gateway(stack, tmp_path)
    app_id = stack.app_ids[0]
    codec = _codec(stack)
    url = f"{gateway.base_url}/v1/stream?apps={app_id}"
    reader = SseReader(url, gateway.auth("reader"))
    try:
        wait_for(lambda: reader.events, timeout_s=20, message="the held token streamed")
        first = codec.decode(reader.events[0].data)  # the producer's signature checks out
        assert first.app_id == app_id
        assert reader.events[0].last_id == f"{app_id}:access_token:{first.version}"
        # The producer refreshes (30 s sandbox tokens): the next one is pushed.
        wait_for(lambda: len(reader.events) >= 2, timeout_s=40, message="the next token pushed")
        updates: list[TokenUpdate] = [codec.decode(e.data) for e in reader.events]
        assert [u.version for u in updates] == sorted({u.version for u in updates})
        newest = updates[-1]
        assert stack.sandbox.state.is_valid(newest.value)
        assert reader.comments >= 1  # heartbeats
        cursor = reader.events[-1].last_id
    finally:
        reader.close()
    resumed = SseReader(url, gateway.auth("reader"), last_event_id=cursor)
    try:
        wait_for(lambda: resumed.comments >= 1, timeout_s=20, message="the resumed stream open")
        # Anything sent after the resume is newer than the cursor: no repeat of `newest`.
        assert all(codec.decode(e.data).version > newest.version for e in resumed.events)
    finally:
        resumed.close()
    other = SseReader(url, gateway.auth("stranger"))
    try:
        wait_for(lambda: other.status is not None, timeout_s=20, message="the refusal")
        assert other.status == 403
    finally:
        other.close()


def test_sigterm_ends_open_streams(stack: Stack, tmp_path: Path) -> None:
    """A stream never ends by itself: SIGTERM still stops the gateway (uvicorn would wait
    for it forever), and the reader sees its stream end."""
    gateway = _gateway(stack, tmp_path)
    reader = SseReader(
        f"{gateway.base_url}/v1/stream?apps={stack.app_ids[0]}", gateway.auth("reader")
    )
    try:
        wait_for(lambda: reader.events, timeout_s=20, message="the stream open")
        # uvicorn re-raises the SIGTERM it handled once it has shut down: -15 is its clean exit.
        assert gateway.proc.terminate(timeout_s=60) in (0, -signal.SIGTERM)
        wait_for(lambda: not reader._thread.is_alive(), timeout_s=20, message="the stream end")
    finally:
        reader.close()
