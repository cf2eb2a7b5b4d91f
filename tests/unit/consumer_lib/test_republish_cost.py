"""What a fleet's re-publishes cost: a subscriber checks each held update's signature once,
not at every re-publish; the producer signs each update once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from consumer_lib import ClientSettings, TokenClient
from consumer_lib.testing import StubTransport, stub_client
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import UpdateCodec, generate_keypair, load_private_key
from consumer_lib.wire.update import TokenUpdate
from producer.store.remembering_codec import RememberingCodec
from tests.conftest import FakeClock
from tests.unit._helpers import T0, make_update


class CountingCodec(UpdateCodec):
    """Counts what reaches signing."""

    encodes = 0

    def encode(self, update: TokenUpdate) -> bytes:
        CountingCodec.encodes += 1
        return super().encode(update)


@pytest.fixture
def signer(tmp_path: Path) -> tuple[UpdateCodec, Path]:
    private, public = generate_keypair(tmp_path / "k")
    return UpdateCodec(signer=load_private_key(private)), public


@pytest.fixture
def client(
    clock: FakeClock, signer: tuple[UpdateCodec, Path]
) -> Iterator[tuple[TokenClient, fakeredis.FakeRedis, StubTransport]]:
    clock.now_s = T0 + 1
    redis_client = fakeredis.FakeRedis()
    made, stub = stub_client(
        ClientSettings(verify_keys=str(signer[1])), redis_client=redis_client, clock=clock
    )
    yield made, redis_client, stub
    made.close()


def test_a_republished_message_is_not_verified_again(
    client: tuple[TokenClient, fakeredis.FakeRedis, StubTransport], signer: tuple[UpdateCodec, Path]
) -> None:
    """The second and later copies of the held update cost no signature check, and still
    count as stale; a new version is checked once; an older message, no longer held, is
    checked again and dropped."""
    tokens, _, stub = client
    v1 = signer[0].encode(make_update(version=1))
    for _ in range(50):
        stub.push_raw(v1)
    assert tokens.stats.verified == 1
    assert tokens.stats.accepted == 1
    assert tokens.stats.stale == 49
    v2 = signer[0].encode(make_update(version=2, value="TOKEN-second-0123456789"))
    stub.push_raw(v2)
    stub.push_raw(v2)
    assert tokens.stats.verified == 2
    stub.push_raw(v1)
    assert tokens.stats.verified == 3
    assert tokens.stats.stale == 51
    assert tokens.get_token("wxapp1", timeout=0) == "TOKEN-second-0123456789"


def test_changed_bytes_are_always_verified(
    client: tuple[TokenClient, fakeredis.FakeRedis, StubTransport], signer: tuple[UpdateCodec, Path]
) -> None:
    """A message that differs from the held one in any byte (a forgery claiming the held
    version) goes through the signature check and is rejected."""
    tokens, _, stub = client
    genuine = signer[0].encode(make_update(version=1))
    stub.push_raw(genuine)
    tampered = genuine.replace(b"TOKEN-aaaa", b"TOKEN-bbbb")
    stub.push_raw(tampered)
    assert tokens.stats.verified == 2
    assert tokens.stats.rejected == 1


def test_bytes_read_from_redis_count_as_held(
    client: tuple[TokenClient, fakeredis.FakeRedis, StubTransport], signer: tuple[UpdateCodec, Path]
) -> None:
    """A token first held from the snapshot is not verified again when it is re-published,
    nor when the snapshot is read again."""
    tokens, redis_client, stub = client
    raw = signer[0].encode(make_update(version=4))
    keys = KeyLayout()
    redis_client.set(keys.token("wxapp1"), raw)
    redis_client.sadd(keys.known, KeyLayout.member("wxapp1"))
    tokens.refresh_from_snapshot()
    tokens.refresh_from_snapshot()
    stub.push_raw(raw)
    assert tokens.stats.verified == 1
    assert tokens.get_token("wxapp1", timeout=0) == make_update(version=4).value


def test_the_producer_signs_each_update_once(signer: tuple[UpdateCodec, Path]) -> None:
    """Re-publishing the same update reuses its bytes (Ed25519 is deterministic, so they
    are the bytes a fresh signature would give); a new version is signed."""
    counting = CountingCodec(signer=signer[0]._signer)
    codec = RememberingCodec(counting)
    CountingCodec.encodes = 0
    update = make_update(version=1)
    first = codec.encode(update)
    assert all(codec.encode(update) == first for _ in range(20))
    assert first == counting.encode(update)
    CountingCodec.encodes = 0
    codec.encode(make_update(version=2, value="TOKEN-second-0123456789"))
    assert CountingCodec.encodes == 1
    fresh = RememberingCodec(counting)  # a standby: what it verified, it publishes as is
    decoded = fresh.decode(first)
    CountingCodec.encodes = 0
    assert fresh.encode(decoded) == first
    assert fresh.bytes_of(decoded) == first
    assert CountingCodec.encodes == 0


def test_the_overdue_check_runs_at_most_once_a_second(clock: FakeClock) -> None:
    """The consume loop ends a round after every message; the look over every held token
    for an overdue successor runs once a second however many messages arrive, and an
    overdue one still makes it read the snapshot."""
    from consumer_lib._client.subscriber import Subscriber

    asked: list[float] = []
    reads: list[float] = []
    overdue = [False]

    def wanted() -> bool:
        asked.append(clock())
        return overdue[0]

    subscriber = Subscriber(
        ClientSettings(
            insecure_accept_unsigned=True, amqp_url="amqp://guest:guest@127.0.0.1:1/%2F"
        ),
        connection_name="client:test",
        monotonic=clock,
    )
    subscriber.attach(
        on_body=lambda body, user_id, sent_s: None,
        read_snapshot=lambda: reads.append(clock()),
        snapshot_wanted=wanted,
        callbacks_idle=lambda timeout_s: True,
    )
    for _ in range(500):  # 500 messages within the same instant
        subscriber._each_round()
    assert len(asked) == 1
    clock.advance(1.0)
    overdue[0] = True
    for _ in range(500):
        subscriber._each_round()
    assert len(asked) == 2
    assert reads == [clock()]
