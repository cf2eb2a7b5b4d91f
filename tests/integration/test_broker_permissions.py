"""The shipped broker users, for real: what each credential may and may not do.

deploy/rabbitmq/definitions.template.json is rendered by deploy/rabbitmq/render_definitions.py
with random passwords, retargeted to a private vhost `wxtest-<tag>` and users
`wxtest-<tag>-<role>` (RabbitMQ users are global, so the shipped names are never touched),
and imported with `rabbitmqctl import_definitions`. So the regexes, the exchanges and the
password hashes tested are exactly those that ship. The vhost and users are deleted
afterwards, whatever happens.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, urlsplit

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from consumer_lib import ClientSettings, TokenClient
from consumer_lib.amqp import (
    declare_exchange,
    declare_requests_exchange,
    publish_request,
    publish_update,
)
from consumer_lib.amqp.params import close_quietly, connection_parameters
from consumer_lib.wire.refresh_request import (
    REQUEST_MESSAGE_TYPE,
    RefreshRequest,
    requests_exchange,
)
from consumer_lib.wire.update import TokenUpdate
from producer.messaging.request_listener import RequestListener
from tests.conftest import AMQP_URL, IN_CI, require_service
from tests.unit._helpers import make_update
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
RENDER_SCRIPT = ROOT / "deploy" / "rabbitmq" / "render_definitions.py"
SHIPPED_VHOST = "wxtoken"
SHIPPED_USER_PREFIX = "wxtoken-"
ROLES = ("producer", "ops", "consumer", "gateway")
APP = "wxperm0000000001"
#: max-queues of the test's vhost (see `retarget`).
TEST_MAX_QUEUES = 12
#: max-connections of the test's vhost, and the consumer user's own limits (see `retarget`):
#: the shipped ratios, small enough to reach.
TEST_MAX_CONNECTIONS = 10
TEST_CONSUMER_LIMITS = {"max-connections": 4, "max-channels": 8}


def load_render_module() -> ModuleType:
    """deploy/rabbitmq/render_definitions.py, imported from its path (it is no package)."""
    spec = importlib.util.spec_from_file_location("render_definitions", RENDER_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


RENDER = load_render_module()
TEMPLATE: dict[str, Any] = RENDER.load_template(RENDER.TEMPLATE)
TOKENS = next(e["name"] for e in TEMPLATE["exchanges"] if not e["name"].endswith(".requests"))
REQUESTS = requests_exchange(TOKENS)


@dataclass(frozen=True)
class Broker:
    """The private vhost and the three users (role -> name, name -> password)."""

    vhost: str
    users: dict[str, str]
    passwords: dict[str, str]

    def url(self, role: str, *, password: str | None = None) -> str:
        """An AMQP URL logging in as `role`'s user to the private vhost."""
        local = urlsplit(AMQP_URL)
        user = self.users[role]
        secret = self.passwords[user] if password is None else password
        where = f"{local.hostname or '127.0.0.1'}:{local.port or 5672}"
        return f"amqp://{quote(user, safe='')}:{secret}@{where}/{quote(self.vhost, safe='')}"


def retarget(template: dict[str, Any], vhost: str, users: dict[str, str]) -> dict[str, Any]:
    """The template with the shipped vhost and user names swapped for the test's own."""
    names = {f"{SHIPPED_USER_PREFIX}{role}": name for role, name in users.items()}
    copy: dict[str, Any] = json.loads(json.dumps(template))
    assert {v["name"] for v in copy["vhosts"]} == {SHIPPED_VHOST}
    assert {u["name"] for u in copy["users"]} == set(names)
    copy["vhosts"] = [{**v, "name": vhost} for v in copy["vhosts"]]
    copy["users"] = [{**u, "name": names[u["name"]]} for u in copy["users"]]
    copy["permissions"] = [
        {**p, "user": names[p["user"]], "vhost": vhost} for p in copy["permissions"]
    ]
    copy["exchanges"] = [{**e, "vhost": vhost} for e in copy["exchanges"]]
    copy["parameters"] = [{**p, "vhost": vhost} for p in copy.get("parameters", [])]
    for parameter in copy["parameters"]:
        if parameter["component"] == "vhost-limits":
            # The mechanism, with a limit a test can reach quickly; the shipped one is 1000.
            parameter["value"] = {
                **parameter["value"],
                "max-queues": TEST_MAX_QUEUES,
                "max-connections": TEST_MAX_CONNECTIONS,
            }
    for user in copy["users"]:
        if user.get("limits"):  # the mechanism again, at limits a test reaches
            assert user["name"] == names[f"{SHIPPED_USER_PREFIX}consumer"], user["name"]
            user["limits"] = dict(TEST_CONSUMER_LIMITS)
    return copy


def rabbitmqctl(ctl: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ctl, "-q", *args], capture_output=True, text=True, timeout=120, check=False
    )


def import_definitions(ctl: str, definitions: dict[str, Any]) -> None:
    """`rabbitmqctl import_definitions FILE`, with a file the rabbitmq user can read.

    rabbitmqctl may run as the rabbitmq user (so pytest's private tmp_path will not do)
    and RabbitMQ 3.10 refuses `-` for stdin. The file lives only during the call; it
    holds the hashes of this test's random passwords.
    """
    directory = Path(tempfile.mkdtemp(prefix="wxtest-definitions-"))
    try:
        directory.chmod(0o755)
        path = directory / "definitions.json"
        path.write_text(json.dumps(definitions), encoding="utf-8")
        path.chmod(0o644)
        imported = rabbitmqctl(ctl, "import_definitions", str(path))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if imported.returncode != 0:
        pytest.fail(f"rabbitmqctl import_definitions failed: {imported.stderr.strip()}")


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    """Import the rendered definitions into a fresh vhost; delete vhost and users after."""
    require_service("RabbitMQ", AMQP_URL)
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        message = "rabbitmqctl is not on PATH (needed to create the test's users)"
        if IN_CI:
            pytest.fail(f"{message}, and CI=true requires it")
        pytest.skip(message)
    tag = uuid.uuid4().hex[:10]
    vhost = f"wxtest-{tag}"
    users = {role: f"wxtest-{tag}-{role}" for role in ROLES}
    passwords = {name: secrets.token_urlsafe(24) for name in users.values()}
    definitions = RENDER.render(retarget(TEMPLATE, vhost, users), passwords)
    try:
        import_definitions(ctl, definitions)
        yield Broker(vhost=vhost, users=users, passwords=passwords)
    finally:
        leftovers = [
            (args, result.stderr.strip())
            for args in (["delete_vhost", vhost], *(["delete_user", u] for u in users.values()))
            if (result := rabbitmqctl(ctl, *args)).returncode != 0
            and "not exist" not in result.stderr + result.stdout
        ]
        assert not leftovers, f"cleanup failed: {leftovers}"


@pytest.fixture(autouse=True)
def exchanges(broker: Broker) -> None:
    """Both exchanges exist before each test, even if an earlier test wrongly deleted one."""
    with connected(broker.url("producer")) as producer:
        channel = producer.channel()
        declare_exchange(channel, TOKENS)
        declare_requests_exchange(channel, TOKENS)


@contextmanager
def connected(url: str, name: str = "wxtest-permissions") -> Iterator[pika.BlockingConnection]:
    """A blocking connection for `url` (one URL or several), closed afterwards."""
    connection = pika.BlockingConnection(connection_parameters(url, connection_name=name))
    try:
        yield connection
    finally:
        close_quietly(connection)


def confirming(connection: pika.BlockingConnection) -> BlockingChannel:
    """A channel with publisher confirms: a refused publish raises at the publish call."""
    channel = connection.channel()
    channel.confirm_delivery()
    return channel


def tap(connection: pika.BlockingConnection, exchange: str) -> tuple[BlockingChannel, str]:
    """A server-named exclusive queue bound to `exchange` (what `wxtoken watch` does)."""
    channel = connection.channel()
    queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
    channel.queue_bind(queue=queue, exchange=exchange)
    return channel, queue


def next_message(
    channel: BlockingChannel, queue: str, timeout_s: float = 10.0
) -> tuple[pika.BasicProperties, bytes]:
    """The next message in `queue`, waiting up to `timeout_s`."""

    def get() -> tuple[pika.BasicProperties, bytes] | None:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        return None if method is None else (properties, body)

    return wait_for(get, timeout_s=timeout_s, message=f"a message in {queue}")


def refusal(
    action: Callable[[BlockingChannel], object], connection: pika.BlockingConnection
) -> str:
    """`"<code> <text>"` of the broker closing a fresh confirming channel on `action`."""
    channel = confirming(connection)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        action(channel)
    return f"{closed.value.reply_code} {closed.value.reply_text}"


def an_update(version: int = 1) -> TokenUpdate:
    return make_update(app_id=APP, version=version, issued_at=time.time(), lifetime_s=600)


def client_settings(url: str, redis_url: str, key_prefix: str) -> ClientSettings:
    return ClientSettings(
        insecure_accept_unsigned=True,  # plain updates: signing is not what is tested here
        redis_url=redis_url,
        amqp_url=url,
        exchange=TOKENS,
        key_prefix=key_prefix,
        reconnect_max_s=0.5,
    )


# ---- what each credential may do ---------------------------------------------------------


def test_producer_publishes_with_its_user_id_to_a_consumer_client(
    broker: Broker, redis_url: str, isolation: dict[str, str]
) -> None:
    """The producer declares the exchanges, publishes with `user_id`; a consumer client gets it."""
    with connected(broker.url("producer")) as producer, connected(broker.url("consumer")) as mine:
        channel = confirming(producer)
        declare_exchange(channel, TOKENS)  # configure on the exchanges (not only passive)
        declare_requests_exchange(channel, TOKENS)
        watch_channel, queue = tap(mine, TOKENS)  # consumer: own queue, bound, readable
        settings = client_settings(broker.url("consumer"), redis_url, isolation["key_prefix"])
        with TokenClient(settings) as client:
            assert client.wait_connected(10), f"client never subscribed: {client.last_error}"
            update = an_update()
            publish_update(channel, TOKENS, update, now_s=time.time(), sender="wxtest-producer")
            assert client.get_token(APP, timeout=10) == update.value
        properties, body = next_message(watch_channel, queue)
    assert properties.user_id == broker.users["producer"]
    assert json.loads(body)["version"] == update.version


def test_user_id_is_the_user_of_the_url_actually_connected(broker: Broker) -> None:
    """With several broker URLs, `user_id` is the user of the one that answered, not the first's."""
    urls = (
        f"amqp://someone-else:not-used@127.0.0.1:1/{quote(broker.vhost)},{broker.url('producer')}"
    )
    with connected(urls) as producer, connected(broker.url("consumer")) as mine:
        watch_channel, queue = tap(mine, TOKENS)
        publish_update(confirming(producer), TOKENS, an_update(), now_s=time.time(), sender="t")
        properties, _ = next_message(watch_channel, queue)
    assert properties.user_id == broker.users["producer"]


def test_ops_can_override_watch_and_request_a_refresh(broker: Broker) -> None:
    """Ops declares and writes both exchanges (set, refresh) and watches the tokens exchange."""
    with connected(broker.url("ops")) as ops, connected(broker.url("producer")) as producer:
        watch_channel, queue = tap(ops, TOKENS)  # `wxtoken watch`
        requests_channel, requests_queue = tap(producer, REQUESTS)
        channel = confirming(ops)
        declare_exchange(channel, TOKENS)  # `wxtoken set`
        publish_update(channel, TOKENS, an_update(), now_s=time.time(), sender="wxtest-ops")
        declare_requests_exchange(channel, TOKENS)  # `wxtoken refresh`
        request = RefreshRequest.for_token(APP, "T" * 20, requester="ops:t", now_s=time.time())
        publish_request(channel, TOKENS, request, sender="wxtest-ops", now_s=time.time())
        update_properties, _ = next_message(watch_channel, queue)
        request_properties, body = next_message(requests_channel, requests_queue)
    assert update_properties.user_id == broker.users["ops"]
    assert request_properties.user_id == broker.users["ops"]
    assert RefreshRequest.decode(body) == request


def test_consumer_sends_refresh_requests_the_producer_receives(
    broker: Broker, redis_url: str, isolation: dict[str, str]
) -> None:
    """The consumer credential writes the requests exchange; the producer's listener gets it."""
    received: list[RefreshRequest] = []
    listener = RequestListener(
        broker.url("producer"),
        TOKENS,
        on_request=received.append,
        connection_name="wxtest-permissions/listener",
        reconnect_max_s=0.5,
    ).start()
    try:
        assert listener.wait_connected(10), f"listener never connected: {listener.last_error}"
        settings = client_settings(broker.url("consumer"), redis_url, isolation["key_prefix"])
        with TokenClient(settings) as client, connected(broker.url("consumer")) as mine:
            assert client.wait_connected(10), f"client never subscribed: {client.last_error}"
            first = RefreshRequest.for_token(APP, "A" * 20, requester="client:t", now_s=time.time())
            assert client._subscriber.send(REQUESTS, first.encode(), REQUEST_MESSAGE_TYPE)
            wait_for(lambda: first in received, message="the client's request at the listener")

            second = RefreshRequest.for_token(
                APP, "B" * 20, requester="client:t", now_s=time.time()
            )
            with connected(broker.url("producer")) as producer:
                requests_channel, queue = tap(producer, REQUESTS)
                publish_request(confirming(mine), TOKENS, second, sender="t", now_s=time.time())
                properties, body = next_message(requests_channel, queue)
            wait_for(lambda: second in received, message="the direct request at the listener")
    finally:
        listener.close()
    assert RefreshRequest.decode(body) == second
    assert properties.user_id == broker.users["consumer"]


def test_passive_declares_need_no_permission(broker: Broker) -> None:
    """The consumer, with no configure right on them, passively declares both exchanges."""
    with connected(broker.url("consumer")) as mine:
        channel = mine.channel()
        channel.exchange_declare(exchange=TOKENS, passive=True)
        channel.exchange_declare(exchange=REQUESTS, passive=True)
        assert channel.is_open


# ---- what each credential may not do -----------------------------------------------------


def _publish_as(exchange: str, user_id: str | None = None) -> Callable[[BlockingChannel], object]:
    def action(channel: BlockingChannel) -> object:
        properties = pika.BasicProperties(user_id=user_id, content_type="application/json")
        channel.basic_publish(exchange=exchange, routing_key="", body=b"{}", properties=properties)
        return None

    return action


def _bind_own_queue(exchange: str) -> Callable[[BlockingChannel], object]:
    def action(channel: BlockingChannel) -> object:
        queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
        return channel.queue_bind(queue=queue, exchange=exchange)

    return action


REFUSED: dict[str, tuple[str, Callable[[BlockingChannel], object]]] = {
    "consumer publishes on the tokens exchange": ("consumer", _publish_as(TOKENS)),
    "consumer publishes on the default exchange": ("consumer", _publish_as("")),
    "consumer declares the tokens exchange": (
        "consumer",
        lambda ch: ch.exchange_declare(exchange=TOKENS, exchange_type="fanout", durable=True),
    ),
    "consumer deletes the tokens exchange": (
        "consumer",
        lambda ch: ch.exchange_delete(exchange=TOKENS),
    ),
    "consumer deletes the requests exchange": (
        "consumer",
        lambda ch: ch.exchange_delete(exchange=REQUESTS),
    ),
    "consumer declares a named queue": (
        "consumer",
        lambda ch: ch.queue_declare(queue="wxtoken.snoop", auto_delete=True),
    ),
    "consumer reads the requests exchange": ("consumer", _bind_own_queue(REQUESTS)),
    "producer publishes on the requests exchange": ("producer", _publish_as(REQUESTS)),
    "producer reads the tokens exchange": ("producer", _bind_own_queue(TOKENS)),
    "ops reads the requests exchange": ("ops", _bind_own_queue(REQUESTS)),
    "ops declares another exchange": (
        "ops",
        lambda ch: ch.exchange_declare(exchange="wxtoken.other", exchange_type="fanout"),
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_with_access_refused(broker: Broker, case: str) -> None:
    """An operation outside a credential's permissions closes the channel: 403 ACCESS_REFUSED."""
    role, action = REFUSED[case]
    with connected(broker.url(role)) as connection:
        assert refusal(action, connection).startswith("403 ACCESS_REFUSED")


def test_refused_consumer_publish_never_reaches_subscribers(broker: Broker) -> None:
    """A consumer's refused publish on the tokens exchange is not routed to anyone."""
    with connected(broker.url("ops")) as ops, connected(broker.url("consumer")) as mine:
        watch_channel, queue = tap(ops, TOKENS)
        forged = an_update(version=2)
        assert refusal(
            lambda ch: publish_update(ch, TOKENS, forged, now_s=time.time(), sender="evil"), mine
        ).startswith("403 ACCESS_REFUSED")
        with connected(broker.url("producer")) as producer:
            marker = an_update(version=3)
            publish_update(confirming(producer), TOKENS, marker, now_s=time.time(), sender="p")
        properties, body = next_message(watch_channel, queue)
    assert json.loads(body)["version"] == marker.version, "the refused message got through"
    assert properties.user_id == broker.users["producer"]


@pytest.mark.parametrize(
    ("role", "claimed", "exchange"),
    [("consumer", "producer", REQUESTS), ("producer", "ops", TOKENS), ("ops", "producer", TOKENS)],
)
def test_forged_user_id_is_refused(broker: Broker, role: str, claimed: str, exchange: str) -> None:
    """Claiming another user's `user_id` where the sender may write: 406 PRECONDITION_FAILED."""
    with connected(broker.url(role)) as connection:
        outcome = refusal(_publish_as(exchange, user_id=broker.users[claimed]), connection)
    assert outcome.startswith("406 PRECONDITION_FAILED"), outcome


def test_a_wrong_password_is_refused(broker: Broker) -> None:
    """The rendered hash accepts the user's password only."""
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(
            connection_parameters(
                broker.url("consumer", password="not-" + secrets.token_hex(8)),
                connection_name="wxtest-permissions",
            )
        )


# ---- what a consumer may declare (issue 8, item 3) -------------------------------------------


def _shipped_parameter(component: str) -> dict[str, Any]:
    return next(p for p in TEMPLATE.get("parameters", []) if p["component"] == component)


def test_shipped_definitions_limit_queues_and_server_named_queue_sizes() -> None:
    """The vhost caps queues and connections; an operator policy caps every amq.gen- queue."""
    limits = _shipped_parameter("vhost-limits")
    assert limits["vhost"] == SHIPPED_VHOST
    assert 0 < limits["value"]["max-queues"] <= 10_000
    assert 0 < limits["value"]["max-connections"] <= 10_000
    policy = _shipped_parameter("operator_policy")["value"]
    assert policy["pattern"] == "^amq\\.gen-"
    assert policy["apply-to"] == "queues"
    assert {"max-length", "max-length-bytes", "message-ttl"} <= set(policy["definition"])


def test_shipped_consumer_limits_are_well_below_the_vhosts() -> None:
    """wxtoken-consumer (every service) has its own connection and channel limits, well
    below the vhost's connections, so the producer and ops always find room; the render
    script refuses a user limit at or above the vhost's."""
    vhost = _shipped_parameter("vhost-limits")["value"]
    users = {u["name"]: u for u in TEMPLATE["users"]}
    limits = users["wxtoken-consumer"]["limits"]
    assert 0 < limits["max-connections"] <= vhost["max-connections"] // 2
    assert 0 < limits["max-channels"] <= 2 * limits["max-connections"]  # a TokenClient uses 2
    assert not users["wxtoken-producer"].get("limits")
    greedy = json.loads(json.dumps(TEMPLATE))
    greedy["users"][2]["limits"]["max-connections"] = vhost["max-connections"]
    with pytest.raises(RENDER.RenderError, match="not below the vhost"):
        RENDER.check_user_limits(greedy)


def test_one_consumer_login_cannot_take_the_vhosts_connections(broker: Broker) -> None:
    """The consumer user opens connections and channels up to its own limits and is refused
    beyond them; the vhost still has room, so the producer connects and its request
    listener declares and binds its queue. (Without the user limits the consumer took all
    the vhost's connections, and the producer was refused.)"""
    consumer_max = TEST_CONSUMER_LIMITS["max-connections"]
    with ExitStack() as held:
        opened: list[pika.BlockingConnection] = []
        refused: Exception | None = None
        for number in range(TEST_MAX_CONNECTIONS + 1):
            try:
                opened.append(held.enter_context(connected(broker.url("consumer"), f"c{number}")))
            except pika.exceptions.AMQPConnectionError as exc:
                refused = exc
                break
        assert len(opened) == consumer_max, "the consumer stops at its own limit"
        assert refused is not None
        print(f"\nconsumer: {len(opened)} connections, then refused: {refused!r}")
        channels = [opened[0].channel() for _ in range(TEST_CONSUMER_LIMITS["max-channels"])]
        assert len(channels) == TEST_CONSUMER_LIMITS["max-channels"]
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
            opened[1].channel()  # the user's channel limit counts across its connections
        producer = held.enter_context(connected(broker.url("producer"), "wxtest-producer"))
        listener = producer.channel()
        queue = listener.queue_declare(queue="", exclusive=True).method.queue
        listener.queue_bind(queue=queue, exchange=REQUESTS)
        assert queue.startswith("amq.gen-")


def test_a_consumer_cannot_declare_queues_without_bound(broker: Broker) -> None:
    """Past the vhost's max-queues, a consumer's next queue is refused."""
    with connected(broker.url("consumer")) as mine:
        channel = mine.channel()
        declared = 0

        def declare_many() -> None:
            nonlocal declared
            for _ in range(TEST_MAX_QUEUES + 5):
                channel.queue_declare(queue="", exclusive=True)
                declared += 1

        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            declare_many()
    print(f"\nconsumer declared {declared} queues, then: {refused.value.reply_text}")
    assert declared <= TEST_MAX_QUEUES
    assert refused.value.reply_code in (406, 403, 541)
    assert "queue" in refused.value.reply_text.lower()


def test_a_reject_publish_queue_still_nacks_the_producer(broker: Broker) -> None:
    """What still happens: a consumer's own `x-max-length=1, x-overflow=reject-publish`
    queue makes RabbitMQ nack the producer's publishes (no policy can override that queue
    argument), while the other subscribers still get every update. The operator policy is
    in place all the same (it bounds sizes, not overflow)."""
    ctl = shutil.which("rabbitmqctl")
    assert ctl is not None
    with connected(broker.url("producer")) as producer, connected(broker.url("consumer")) as mine:
        channel = confirming(producer)
        honest_channel, honest = tap(mine, TOKENS)
        attacker = mine.channel()
        trap = attacker.queue_declare(
            queue="",
            exclusive=True,
            arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
        ).method.queue
        attacker.queue_bind(queue=trap, exchange=TOKENS)
        nacked = 0
        for version in (1, 2, 3):
            try:
                publish_update(
                    channel, TOKENS, an_update(version), now_s=time.time(), sender="wxtest"
                )
            except pika.exceptions.NackError:
                nacked += 1
        delivered = [json.loads(next_message(honest_channel, honest)[1])["version"] for _ in "123"]
    listed = rabbitmqctl(ctl, "list_operator_policies", "-p", broker.vhost)
    policy = _shipped_parameter("operator_policy")["name"]
    print(f"\nreject-publish trap: {nacked} of 3 publishes nacked; honest queue got {delivered}")
    assert nacked >= 1, "no longer nacked: update this test and the README"
    assert delivered == [1, 2, 3]
    assert trap.startswith("amq.gen-")
    assert policy in listed.stdout, "the shipped operator policy was imported"
