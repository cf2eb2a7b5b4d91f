"""A refresh while Redis is away costs no Redis timeouts before the token is published, and
a forged snapshot cannot block the producer's writes."""

from __future__ import annotations

import fakeredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumer_lib import TokenUpdate
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import UpdateCodec
from producer.store.tokens import TokenStore
from tests.conftest import FakeClock
from tests.unit._helpers import make_update
from tests.unit.producer.builders import build_refresher
from tests.unit.producer.refresh.test_refresher import APP, APP_ID, FakeFetcher


class CountingRedis(fakeredis.FakeRedis):
    """fakeredis that counts the commands sent while the server is down."""

    calls_while_down = 0

    def execute_command(self, *args: object, **options: object) -> object:
        if not self.connection_pool.connection_kwargs["server"].connected:
            CountingRedis.calls_while_down += 1
        return super().execute_command(*args, **options)


def test_refresh_during_a_redis_outage_publishes_without_touching_redis(
    clock: FakeClock,
) -> None:
    """Once Redis is known to be away, a due refresh fetches and publishes with no Redis
    call in between (each would wait out a timeout); the write follows when Redis is back."""
    server = fakeredis.FakeServer()
    client = CountingRedis(server=server)
    published: list[TokenUpdate] = []
    fetcher = FakeFetcher(clock)
    refresher = build_refresher(
        APP,
        fetcher=fetcher,
        store=TokenStore(client),
        clock=clock,
        publish=published.append,
    )
    refresher.step()
    server.connected = False
    clock.advance(100)
    refresher.step()  # finds Redis away
    CountingRedis.calls_while_down = 0
    clock.advance(7200 - 100)  # well past the refresh point, less than a probe interval later
    clock.advance(-1.9)
    before = len(published)
    refresher.step()
    assert fetcher.calls == 2
    assert len(published) == before + 1
    assert CountingRedis.calls_while_down == 0
    server.connected = True
    clock.advance(2.0)
    refresher.step()
    assert TokenStore(fakeredis.FakeRedis(server=server)).read(APP_ID) == published[-1]


def test_forged_snapshot_with_a_huge_version_is_deleted_and_replaced(clock: FakeClock) -> None:
    """Someone with write access to Redis stores an unsigned update with an enormous
    version: the leading producer deletes it and writes its own signed token."""
    key = Ed25519PrivateKey.generate()
    codec = UpdateCodec(signer=key)
    client = fakeredis.FakeRedis()
    forged = make_update(version=2**52, value="TOKEN-from-the-attacker-0001")
    client.set(KeyLayout().token(APP_ID), forged.encode())
    published: list[TokenUpdate] = []
    refresher = build_refresher(
        APP,
        fetcher=FakeFetcher(clock),
        store=TokenStore(client, codec=codec),
        publish=published.append,
        clock=clock,
    )
    refresher.step()
    stored = TokenStore(client, codec=codec).read(APP_ID)
    assert stored is not None
    assert stored == published[-1]
    assert stored.value != forged.value
