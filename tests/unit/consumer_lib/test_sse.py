"""`consumer_lib._client.sse`: the SSE lines the gateway writes, and a few it does not."""

from __future__ import annotations

import pytest

from consumer_lib._client.sse import MAX_LINE_BYTES, SseError, SseEvent, SseParser


def feed(parser: SseParser, text: bytes) -> list[SseEvent]:
    events = []
    for line in text.split(b"\n"):
        event = parser.feed(line)
        if event is not None:
            events.append(event)
    return events


def test_events_ids_comments_and_multiline_data() -> None:
    parser = SseParser()
    text = (
        b'retry: 2000\n\n: heartbeat\n\nid: a:access_token:5\nevent: update\ndata: {"x":1}\n\n'
        b"data:two\r\ndata: lines\n\nid: bad\0id\ndata: keeps-the-last\n\n"
    )
    assert feed(parser, text) == [
        SseEvent("update", b'{"x":1}', "a:access_token:5"),
        SseEvent("message", b"two\nlines", "a:access_token:5"),
        SseEvent("message", b"keeps-the-last", "a:access_token:5"),
    ]
    assert parser.retry_ms == 2000


def test_an_absurd_line_is_refused() -> None:
    with pytest.raises(SseError):
        SseParser().feed(b"data: " + b"x" * MAX_LINE_BYTES)
