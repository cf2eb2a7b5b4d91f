"""Reading a Server-Sent Events stream line by line (the gateway's `GET /v1/stream`).

`SseParser.feed(line)` takes one line (its end-of-line removed or not) and returns the
event a blank line completes, or None. Comment lines (`: heartbeat`) only count as a sign
of life. Data lines are joined with LF, as the SSE specification says; `id` is remembered
across events (the value to send as `Last-Event-ID` on reconnect).
"""

from __future__ import annotations

from dataclasses import dataclass

#: A line longer than this is not from a gateway (an envelope is at most 64 KiB): refused.
MAX_LINE_BYTES = 128 * 1024


class SseError(ValueError):
    """The stream is not Server-Sent Events as the gateway writes them."""


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: bytes
    #: The last `id` seen on the stream, this event's or an earlier one's.
    last_id: str | None


class SseParser:
    __slots__ = ("_data", "_event", "last_id", "retry_ms")

    def __init__(self, last_id: str | None = None) -> None:
        self.last_id = last_id
        self.retry_ms: int | None = None
        self._data: list[bytes] = []
        self._event = "message"

    def feed(self, line: bytes) -> SseEvent | None:
        if len(line) > MAX_LINE_BYTES:
            raise SseError(f"a line of over {MAX_LINE_BYTES} bytes")
        line = line.rstrip(b"\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self.last_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], "message"
        if not data:
            return None
        return SseEvent(event=event, data=b"\n".join(data), last_id=self.last_id)
