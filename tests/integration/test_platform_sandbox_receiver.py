"""The sandbox's pushes, over real HTTP on loopback, at a real uvicorn receiver (in-memory
registry): tickets on a timer, authorization events from the controls, and what the
receiver stores is what the sandbox then accepts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from ops.sandbox import SandboxConfig, SandboxPlatform, SandboxServer
from tests.integration.receiver_server import MemoryRegistry, ReceiverThread
from tests.waiting import wait_for

COMPONENT = "wxcomponent0000001"
SECRET = "component-secret"
TOKEN = "pamtest"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
AUTHORIZER = "wxauthorizer000001"


@pytest.fixture
def stack() -> Iterator[tuple[SandboxServer, ReceiverThread]]:
    registry = MemoryRegistry()
    with ReceiverThread({COMPONENT: (TOKEN, KEY)}, registry) as receiver:
        platform = SandboxPlatform(
            COMPONENT, SECRET, TOKEN, KEY, callback_url=receiver.url(COMPONENT)
        )
        config = SandboxConfig(apps={}, platforms=[platform], push_interval_s=10.0)
        with SandboxServer(config) as sandbox:
            yield sandbox, receiver


def tickets(receiver: ReceiverThread) -> list[str]:
    return [
        e.verify_ticket
        for e in receiver.registry.events()
        if e.info_type == "component_verify_ticket" and e.verify_ticket
    ]


def test_ticket_pushes_are_stored_and_the_stored_ticket_works(
    stack: tuple[SandboxServer, ReceiverThread],
) -> None:
    """The first push goes out at start; the receiver stores it (answering success); the
    stored ticket buys a component token; a push asked for now supersedes it."""
    sandbox, receiver = stack
    stored = wait_for(lambda: tickets(receiver), message="the first ticket stored")
    assert stored == [sandbox.state.current_ticket(COMPONENT)]
    # The sandbox counts a push once it has the answer, just after the receiver stored it.
    wait_for(
        lambda: sandbox.state.pushes(COMPONENT, "component_verify_ticket") == (1, 0),
        message="the sandbox counting its first push answered",
    )
    body = {
        "component_appid": COMPONENT,
        "component_appsecret": SECRET,
        "component_verify_ticket": stored[-1],
    }
    url = f"{sandbox.base_url}/cgi-bin/component/api_component_token"
    assert "component_access_token" in requests.post(url, json=body, timeout=5).json()
    control = f"{sandbox.base_url}/sandbox/platform/push_ticket"
    answer = requests.post(control, json={"component_appid": COMPONENT}, timeout=5).json()
    assert answer == {"ok": True, "pushed": True}
    assert len(tickets(receiver)) == 2
    assert requests.post(url, json=body, timeout=5).json()["errcode"] == 61006
    assert receiver.receiver.rejections.counts == dict.fromkeys(
        receiver.receiver.rejections.counts, 0
    )


def test_authorization_events_reach_the_receiver(
    stack: tuple[SandboxServer, ReceiverThread],
) -> None:
    """authorize, re-authorize, revoke: each pushed, verified, stored; the stored code is the
    one the sandbox redeems."""
    sandbox, receiver = stack
    wait_for(lambda: tickets(receiver), message="the first ticket stored")
    base = f"{sandbox.base_url}/sandbox/platform"
    body = {"component_appid": COMPONENT, "authorizer_appid": AUTHORIZER}
    for expected in ("authorized", "updateauthorized"):
        answer = requests.post(f"{base}/authorize", json=body, timeout=5).json()
        assert answer == {"ok": True, "info_type": expected, "pushed": True}
    answer = requests.post(f"{base}/revoke", json=body, timeout=5).json()
    assert answer == {"ok": True, "info_type": "unauthorized", "pushed": True}
    events = [e for e in receiver.registry.events() if e.authorizer_appid == AUTHORIZER]
    assert [e.info_type for e in events] == ["authorized", "updateauthorized", "unauthorized"]
    assert all(e.authorization_code for e in events[:2])
    assert events[0].authorization_code != events[1].authorization_code
    # The code stored from the push is what api_query_auth redeems (before the revocation it
    # was valid; now the sandbox refuses it as WeChat would).
    cgi = f"{sandbox.base_url}/cgi-bin/component"
    ticket = {
        "component_appid": COMPONENT,
        "component_appsecret": SECRET,
        "component_verify_ticket": tickets(receiver)[-1],
    }
    token = requests.post(f"{cgi}/api_component_token", json=ticket, timeout=5).json()
    redeem = {"component_appid": COMPONENT, "authorization_code": events[1].authorization_code}
    url = f"{cgi}/api_query_auth?component_access_token={token['component_access_token']}"
    assert requests.post(url, json=redeem, timeout=5).json()["errcode"] == 61009
    requests.post(f"{base}/authorize", json=body, timeout=5)
    latest = [e for e in receiver.registry.events() if e.authorizer_appid == AUTHORIZER][-1]
    redeem["authorization_code"] = latest.authorization_code
    info = requests.post(url, json=redeem, timeout=5).json()["authorization_info"]
    assert info["authorizer_appid"] == AUTHORIZER


def test_a_registry_outage_is_not_success_and_the_next_push_is(
    stack: tuple[SandboxServer, ReceiverThread],
) -> None:
    """With the registry down the sandbox's push is not answered success (counted as failed
    by the sandbox); once it is back the next push is stored."""
    sandbox, receiver = stack
    wait_for(lambda: tickets(receiver), message="the first ticket stored")
    receiver.registry.down = True
    assert sandbox.pusher.push_ticket(COMPONENT) is False
    wait_for(
        lambda: sandbox.state.pushes(COMPONENT, "component_verify_ticket") == (1, 1),
        message="the sandbox counting one push answered and one failed",
    )
    receiver.registry.down = False
    assert sandbox.pusher.push_ticket(COMPONENT) is True
    assert tickets(receiver)[-1] == sandbox.state.current_ticket(COMPONENT)


def test_a_push_to_another_platforms_receiver_is_refused() -> None:
    """A sandbox platform whose token differs from the receiver's: every push refused,
    nothing stored."""
    registry = MemoryRegistry()
    with ReceiverThread({COMPONENT: ("othertoken", KEY)}, registry) as receiver:
        platform = SandboxPlatform(
            COMPONENT, SECRET, TOKEN, KEY, callback_url=receiver.url(COMPONENT)
        )
        config = SandboxConfig(apps={}, platforms=[platform], push_interval_s=10.0)
        with SandboxServer(config) as sandbox:
            wait_for(
                lambda: sandbox.state.pushes(COMPONENT, "component_verify_ticket")[1],
                message="the first push refused",
            )
        assert registry.rows == {}
        assert receiver.receiver.rejections.counts["bad_signature"] >= 1


def test_the_leader_hears_of_each_stored_push_on_redis() -> None:
    """With the real Redis notifier: each stored push is published on
    `{prefix}:platform:events` as its appid and push_id, after it is stored."""
    import uuid

    import redis

    from producer.platform.notice import StoredNotice, events_channel
    from producer.platform.receiver import RedisNotifier

    prefix = f"wxtoken-test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=5)
    pubsub = client.pubsub()
    pubsub.subscribe(events_channel(prefix))
    wait_for(lambda: pubsub.get_message(timeout=0.1), message="subscribed")
    registry = MemoryRegistry()
    notifier = RedisNotifier(client, prefix)
    with ReceiverThread({COMPONENT: (TOKEN, KEY)}, registry, notifier) as receiver:
        platform = SandboxPlatform(
            COMPONENT, SECRET, TOKEN, KEY, callback_url=receiver.url(COMPONENT)
        )
        config = SandboxConfig(apps={}, platforms=[platform], push_interval_s=10.0)
        with SandboxServer(config):
            message = wait_for(
                lambda: pubsub.get_message(timeout=0.1), message="the notice on Redis"
            )
    notice = StoredNotice.decode(message["data"])
    assert notice.component_appid == COMPONENT
    assert notice.push_id in registry.rows
    pubsub.close()
    client.close()
