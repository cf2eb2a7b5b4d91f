"""Through how many project modules does one token pass, from WeChat's answer to
`TokenClient.get_token()`?

Everything runs in this process, so a profiler sees every Python call: the sandbox WeChat
on 127.0.0.1, a `ProducerService` with one app (the local Redis and RabbitMQ, under a key
prefix and an exchange of its own), and a `TokenClient` subscribed to it. Once the first
token has reached the client, the sandbox's short lifetime makes the producer refresh the
app on its schedule: that one new token is followed. `sys.setprofile` and
`threading.setprofile` record, per thread, the modules of `producer`, `consumer_lib` and
`ops` whose Python functions are entered or returned to; the token's path is cut from
those records in four segments:

    worker       from the upstream client's `judge()` of WeChat's HTTP answer (the body is
                 in hand; the start is the parse, not the socket read) to the return of
                 `Publisher.publish()` (the hand-off to the publisher thread)
    publisher    from that hand-off to pika's `basic_publish`
    subscriber   from that publish to the return of the client cache's `offer()`
    get_token    the `client.get_token(app)` call in the main thread that returns the new
                 token (its whole call)

It prints the distinct modules of the path in order of first appearance, each with the
function first seen in it (`<-` when the module was first reached by a return into it),
their count, and apart from it the modules other threads ran meanwhile (lease, follower,
scheduler, the worker's own bookkeeping after the hand-off, the sandbox). Module-level
code run by an import (`<module>`) is not counted.

    .venv/bin/python bench/token_path.py [--expires-in 20] [--timeout 60]
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pika
import redis

from consumer_lib import ClientSettings, TokenClient
from consumer_lib.amqp import declare_exchange
from consumer_lib.wire.signing import generate_keypair
from ops.sandbox import SandboxConfig, SandboxServer
from producer.apps import load_apps
from producer.settings import ProducerSettings

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
PACKAGES = ("producer", "consumer_lib", "ops")
APP_ID = "wxpath0000000001"


def producer_service_class() -> Any:
    """`ProducerService`: `producer.service` since the refresher refactor (issue 20),
    `producer._service` before it."""
    for name in ("producer.service", "producer._service"):
        try:
            return importlib.import_module(name).ProducerService
        except ModuleNotFoundError:
            continue
    raise SystemExit("no ProducerService in producer.service or producer._service")


def project_module(frame: FrameType | None) -> str | None:
    if frame is None:
        return None
    name = frame.f_globals.get("__name__")
    if isinstance(name, str) and name.split(".", 1)[0] in PACKAGES:
        return name
    return None


def is_answer_judged(frame: FrameType, module: str) -> bool:
    """The upstream client's `judge()` of an HTTP answer, called from its `_get`/`_post`
    (the refresh's own `request_policy.judge` is another function)."""
    caller = frame.f_back
    return (
        frame.f_code.co_name == "judge"
        and module.startswith("producer")
        and caller is not None
        and caller.f_code.co_name in ("_get", "_post")
    )


@dataclass
class Event:
    seq: int
    thread: str
    module: str
    function: str
    returned_to: bool


@dataclass
class Recorder:
    """Project-module events of every thread, once armed; and the markers cutting the path."""

    publisher: object
    armed: bool = False
    events: list[Event] = field(default_factory=list)
    start_seq: int | None = None  # the worker's judge() of WeChat's answer
    worker: str | None = None
    handoff_seq: int | None = None  # the return of Publisher.publish() on the worker
    publish_seq: int | None = None  # pika's basic_publish on the publisher thread
    publisher_thread: str | None = None
    offer_depth: dict[str, int] = field(default_factory=dict)
    cached_seq: int | None = None  # the return of the cache's offer() on the subscriber
    subscriber_thread: str | None = None
    get_token_span: tuple[int, int] | None = None
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def profile(self, frame: FrameType, event: str, arg: object) -> None:
        if not self.armed or event not in ("call", "return"):
            return
        code = frame.f_code
        thread = threading.current_thread().name
        if event == "call":
            module = project_module(frame)
            if module is None:
                if (
                    code.co_name == "basic_publish"
                    and self.handoff_seq is not None
                    and self.publish_seq is None
                    and frame.f_globals.get("__name__", "").startswith("pika")
                ):
                    self.publish_seq = next(self._seq)
                    self.publisher_thread = thread
                return
            seq = next(self._seq)
            if self.start_seq is None:
                if not is_answer_judged(frame, module):
                    return
                self.start_seq, self.worker = seq, thread
            if code.co_name == "<module>":
                return
            self.events.append(Event(seq, thread, module, code.co_name, False))
            if code.co_name == "offer" and module == "consumer_lib._client.cache":
                self.offer_depth[thread] = self.offer_depth.get(thread, 0) + 1
            return
        if self.start_seq is None:
            return
        if (
            code.co_name == "publish"
            and self.handoff_seq is None
            and thread == self.worker
            and frame.f_locals.get("self") is self.publisher
        ):
            self.handoff_seq = next(self._seq)
        if code.co_name == "offer" and project_module(frame) == "consumer_lib._client.cache":
            self.offer_depth[thread] = depth = self.offer_depth.get(thread, 1) - 1
            if depth == 0 and self.publish_seq is not None and self.cached_seq is None:
                self.cached_seq, self.subscriber_thread = next(self._seq), thread
        back = frame.f_back
        module = project_module(back)
        if module is None or back is None or back.f_code.co_name == "<module>":
            return
        self.events.append(Event(next(self._seq), thread, module, back.f_code.co_name, True))

    def get_token(self, client: TokenClient, app_id: str) -> str:
        begin = next(self._seq)
        value = client.get_token(app_id)
        self.get_token_span = (begin, next(self._seq))
        return value

    def segments(self) -> dict[str, list[Event]]:
        """The four segments of the token's path, each in order."""
        assert self.start_seq is not None
        assert self.handoff_seq is not None
        assert self.publish_seq is not None
        assert self.cached_seq is not None
        assert self.get_token_span is not None
        main = threading.main_thread().name
        begin, end = self.get_token_span
        bounds = {
            "worker": (self.worker, self.start_seq, self.handoff_seq),
            "publisher": (self.publisher_thread, self.handoff_seq, self.publish_seq),
            "subscriber": (self.subscriber_thread, self.publish_seq, self.cached_seq),
            "get_token": (main, begin, end),
        }
        return {
            name: [e for e in self.events if e.thread == thread and low <= e.seq <= high]
            for name, (thread, low, high) in bounds.items()
        }

    def off_path(self, on_path: list[Event]) -> dict[str, list[str]]:
        """Per thread, the modules run in the window that are not on the token's path."""
        assert self.get_token_span is not None
        taken = {e.seq for e in on_path}
        last = self.get_token_span[1]
        main = threading.main_thread().name  # its earlier get_token() polls: the same path
        found: dict[str, list[str]] = {}
        for e in self.events:
            if e.seq in taken or e.seq > last or e.thread == main:
                continue
            modules = found.setdefault(e.thread, [])
            if e.module not in modules:
                modules.append(e.module)
        return found


def issued_count(sandbox: SandboxServer) -> int:
    """New tokens the sandbox has handed out for the app."""
    issued = sandbox.state.stats()["issued"]
    assert isinstance(issued, dict)
    return int(issued.get(APP_ID, 0))


def distinct(events: list[Event]) -> list[Event]:
    seen: dict[str, Event] = {}
    for event in events:
        seen.setdefault(event.module, event)
    return list(seen.values())


def show(event: Event) -> str:
    arrow = "<- " if event.returned_to else ""
    return f"{event.module:<44} {arrow}{event.function}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--expires-in", type=int, default=20, help="sandbox token lifetime, s (refresh at 80 %%)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this, s")
    args = parser.parse_args()

    prefix = f"wxpath-{uuid.uuid4().hex[:8]}"
    exchange = f"wxbench.{prefix}"
    workdir = Path(tempfile.mkdtemp(prefix="wxtoken-token-path-"))
    private_key, public_key = generate_keypair(workdir / "bench.key")
    apps_file = workdir / "apps.toml"
    apps_file.write_text(f'[[apps]]\napp_id = "{APP_ID}"\nsecret_env = "PATH_SECRET"\n')

    # Installed before any thread starts: threading.setprofile covers threads started later.
    recorder = Recorder(publisher=None)
    sys.setprofile(recorder.profile)
    threading.setprofile(recorder.profile)

    sandbox = SandboxServer(
        SandboxConfig(apps={APP_ID: "path-secret"}, expires_in_s=args.expires_in, overlap_s=5)
    ).start()
    broker = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    declare_exchange(broker.channel(), exchange)
    client = TokenClient(
        ClientSettings(
            redis_url=REDIS_URL,
            amqp_url=AMQP_URL,
            key_prefix=prefix,
            exchange=exchange,
            verify_keys=str(public_key),
        )
    ).start()
    settings = ProducerSettings(
        redis_url=REDIS_URL,
        amqp_url=AMQP_URL,
        key_prefix=prefix,
        exchange=exchange,
        signing_key_file=private_key,
        apps_file=apps_file,
        wechat_base_url=sandbox.base_url,
        upstream_concurrency=1,
        lease_ttl_s=max(1.0, round(0.2 * args.expires_in / 2, 1)),
        republish_interval_s=3600.0,
        follow_interval_s=60.0,
    )
    apps = load_apps(
        apps_file, wechat_base_url=sandbox.base_url, environ={"PATH_SECRET": "path-secret"}
    )
    service = None
    try:
        assert client.wait_connected(10), "the client did not subscribe to the exchange"
        service = producer_service_class()(settings, apps).start()
        recorder.publisher = service.publisher
        first = client.get_token(APP_ID, timeout=args.timeout)
        issued_before = issued_count(sandbox)
        recorder.armed = True  # the next judge() on the producer is the refresh's
        deadline = time.monotonic() + args.timeout
        stop = threading.Event()
        while recorder.get_token(client, APP_ID) == first:
            if time.monotonic() > deadline:
                print(f"no new token within {args.timeout:.0f} s", file=sys.stderr)
                return 1
            stop.wait(0.005)
        recorder.armed = False
        issued = issued_count(sandbox) - issued_before
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        client.close()
        if service is not None:
            service.close()
        sandbox.stop()
        broker.channel().exchange_delete(exchange)
        broker.close()
        store = redis.Redis.from_url(REDIS_URL)
        for key in store.scan_iter(f"{prefix}*"):
            store.delete(key)
        store.close()
        shutil.rmtree(workdir, ignore_errors=True)

    segments = recorder.segments()
    on_path = [event for events in segments.values() for event in events]
    path = distinct(on_path)
    print(f"new tokens issued by the sandbox while recording: {issued}")
    for name, events in segments.items():
        firsts = distinct(events)
        thread = events[0].thread if events else "-"
        print(f"\n{name} ({thread}): {len(firsts)} modules")
        for event in firsts:
            print(f"    {show(event)}")
    print("\nthe token's path, distinct modules in order:")
    for number, event in enumerate(path, 1):
        print(f"{number:3}. {show(event)}")
    print(f"modules on the path: {len(path)}")
    print("\noff the path (other threads, and the worker after the hand-off), same window:")
    for thread, names in recorder.off_path(on_path).items():
        print(f"    {thread}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
