"""TLS to Redis against a private TLS-only `redis-server` (`--port 0 --tls-port P`) with a
throwaway CA made in `tmp_path`: the store, `TokenClient` and the producer process work over
`rediss://`, and a certificate that does not verify is a `StoreError`, never plaintext.

`amqps://` is tried through a TLS terminator in this process (asyncio, the test's server
certificate) in front of the local RabbitMQ, with an isolated exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pika
import pytest
import redis
from redis.connection import SSLConnection

from consumer_lib import ClientSettings, StoreError, TokenClient, TokenKind, TokenSource
from consumer_lib.amqp import declare_exchange
from consumer_lib.amqp.params import AMQP_ERRORS, connection_parameters
from consumer_lib.settings import TlsFiles
from consumer_lib.snapshot import SnapshotReader, connect_redis
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import codec_from_settings
from consumer_lib.wire.update import TokenUpdate
from producer.messaging.publisher import Publisher
from producer.store.tokens import TokenStore
from tests.integration.servers import Pki, RedisServer, make_pki
from tests.integration.stack import make_stack
from tests.waiting import wait_for

APP = "wxtls0000000001"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A fresh CA with a server certificate for 127.0.0.1/localhost and a client one."""
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_redis(tmp_path: Path, pki: Pki) -> Iterator[RedisServer]:
    """A private Redis that speaks TLS only; client certificates are optional."""
    server = RedisServer(tmp_path, tls=pki.server_tls("optional"), name="redis-tls")
    with server.start():
        yield server


@pytest.fixture
def mutual_redis(tmp_path: Path, pki: Pki) -> Iterator[RedisServer]:
    """A private Redis that speaks TLS only and requires a client certificate of the CA."""
    server = RedisServer(tmp_path, tls=pki.server_tls("yes"), name="redis-mtls")
    with server.start():
        yield server


def an_update(version: int = 1, value: str = "TLS-TOKEN-aaaaaaaaaaaaaaaa-0001") -> TokenUpdate:
    """A valid access token update for APP, issued now and good for an hour."""
    now = time.time()
    return TokenUpdate(
        app_id=APP,
        kind=TokenKind.ACCESS_TOKEN,
        value=value,
        issued_at=now,
        expires_at=now + 3600,
        version=version,
        source=TokenSource.REFRESH,
        producer_id="test-tls",
    )


def read_with(server: RedisServer, tls: TlsFiles | None, prefix: str = "wxtest-tls") -> object:
    """One snapshot read of APP through `connect_redis(server.url, tls=tls)`."""
    client = connect_redis(server.url, timeout_s=1.0, tls=tls)
    try:
        return SnapshotReader(client, KeyLayout(prefix)).read(APP)
    finally:
        client.close()


def test_token_store_writes_and_reads_over_tls(tls_redis: RedisServer, pki: Pki) -> None:
    """A `TokenStore` on a `rediss://` client that trusts the CA writes and reads back, and
    the connection really is TLS (the server has no plaintext port)."""
    assert tls_redis.url.startswith("rediss://")
    client = connect_redis(tls_redis.url, timeout_s=2.0, tls=TlsFiles(ca_file=pki.ca_file))
    try:
        assert client.connection_pool.connection_class is SSLConnection
        store = TokenStore(client, KeyLayout("wxtest-tls"))
        update = an_update()
        assert store.write(update).written
        assert store.read(APP) == update
        assert store.next_version(APP, TokenKind.ACCESS_TOKEN, now_s=update.issued_at) > 1
    finally:
        client.close()
    plain = redis.Redis(host="127.0.0.1", port=tls_redis.port, socket_timeout=1.0)
    try:
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            plain.ping()
    finally:
        plain.close()


def test_token_client_gets_the_snapshot_over_tls(
    tls_redis: RedisServer, pki: Pki, amqp_url: str, isolation: dict[str, str]
) -> None:
    """A `TokenClient` configured with the `rediss://` URL and the CA file reads the token
    from the snapshot in the TLS Redis (nothing is published on the exchange)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        declare_exchange(connection.channel(), isolation["exchange"])
    finally:
        connection.close()
    settings = ClientSettings(
        insecure_accept_unsigned=True,  # plain updates: signing is not what is tested
        redis_url=tls_redis.url,
        redis_tls_ca_file=pki.ca_file,
        amqp_url=amqp_url,
        redis_timeout_s=1.0,
        poll_interval_s=0.5,
        exchange=isolation["exchange"],
        key_prefix=isolation["key_prefix"],
    )
    store_client = connect_redis(tls_redis.url, tls=settings.redis_tls)
    try:
        update = an_update(version=7)
        assert TokenStore(store_client, KeyLayout(isolation["key_prefix"])).write(update).written
        with TokenClient(settings) as client:
            assert client.get_token(APP, timeout=15) == update.value
            assert client.get(APP).version == 7
            # The first get_token() may read Redis itself before the background thread's
            # snapshot read runs: wait for that one too, both go over rediss.
            wait_for(lambda: client.stats.snapshot_reads >= 1, message="a snapshot read")
            assert client.last_store_error is None
    finally:
        store_client.close()


def test_producer_process_writes_its_token_into_tls_redis(
    tmp_path: Path, mutual_redis: RedisServer, pki: Pki, service_env: dict[str, str]
) -> None:
    """`python -m producer` with `WXTOKEN_REDIS_URL=rediss://...`, the CA and a client
    certificate (the server requires one) fetches from the sandbox and stores the token in
    the TLS Redis."""
    env = {
        **service_env,
        "WXTOKEN_REDIS_URL": mutual_redis.url,
        "WXTOKEN_REDIS_TLS_CA_FILE": str(pki.ca_file),
        "WXTOKEN_REDIS_TLS_CERT_FILE": str(pki.client_cert_file),
        "WXTOKEN_REDIS_TLS_KEY_FILE": str(pki.client_key_file),
    }
    stack = make_stack(tmp_path, env, app_count=1)
    try:
        (app_id,) = stack.app_ids
        producer = stack.producer()
        reader_settings = ClientSettings(
            redis_url=mutual_redis.url,
            redis_tls_ca_file=pki.ca_file,
            redis_tls_cert_file=pki.client_cert_file,
            redis_tls_key_file=pki.client_key_file,
            verify_keys=env["WXTOKEN_VERIFY_KEYS"],
            key_prefix=env["WXTOKEN_KEY_PREFIX"],
        )
        client = connect_redis(reader_settings.redis_url, tls=reader_settings.redis_tls)
        try:
            reader = SnapshotReader(
                client, KeyLayout(env["WXTOKEN_KEY_PREFIX"]), codec_from_settings(reader_settings)
            )
            try:
                stored = wait_for(
                    lambda: reader.read(app_id),
                    timeout_s=30,
                    message="the producer's token in the TLS Redis",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{producer.stderr_text()[-4000:]}") from None
        finally:
            client.close()
        assert stored is not None
        assert stored.app_id == app_id
        assert stored.source is TokenSource.REFRESH
        assert stack.issued(app_id) == 1
    finally:
        stack.close()


@pytest.mark.parametrize("trust", ["system CAs only", "an unrelated CA"])
def test_an_unverified_server_is_a_store_error(
    tls_redis: RedisServer, pki: Pki, trust: str
) -> None:
    """Without the CA that signed the server certificate, or with another CA, every read is
    a `StoreError` saying the certificate did not verify: never a plaintext retry."""
    tls = None if trust == "system CAs only" else TlsFiles(ca_file=pki.other_ca_file)
    with pytest.raises(StoreError, match="certificate verify failed"):
        read_with(tls_redis, tls)
    # The same server, trusted, answers: the failure was the certificate, nothing else.
    assert read_with(tls_redis, TlsFiles(ca_file=pki.ca_file)) is None


def test_a_host_name_the_certificate_does_not_name_is_refused(tmp_path: Path, pki: Pki) -> None:
    """The certificate names 127.0.0.1 and localhost; the same server reached as 127.0.0.2
    fails the host name check even though the CA is trusted."""
    two_addresses = ("--bind", "127.0.0.1", "127.0.0.2")
    with RedisServer(tmp_path, extra_args=two_addresses, tls=pki.server_tls()) as server:
        tls = TlsFiles(ca_file=pki.ca_file)
        client = connect_redis(f"rediss://127.0.0.2:{server.port}/0", timeout_s=1.0, tls=tls)
        try:
            with pytest.raises(StoreError, match="certificate verify failed"):
                SnapshotReader(client).read(APP)
        finally:
            client.close()
        assert read_with(server, tls) is None  # by the name in its certificate it answers


def test_a_server_that_requires_client_certificates(mutual_redis: RedisServer, pki: Pki) -> None:
    """With `--tls-auth-clients yes`, a client that trusts the CA but shows no certificate is
    refused, and one with the CA's client certificate reads and writes."""
    with pytest.raises(StoreError):
        read_with(mutual_redis, TlsFiles(ca_file=pki.ca_file))
    tls = TlsFiles(pki.ca_file, pki.client_cert_file, pki.client_key_file)
    client = connect_redis(mutual_redis.url, timeout_s=1.0, tls=tls)
    try:
        store = TokenStore(client, KeyLayout("wxtest-mtls"))
        update = an_update()
        assert store.write(update).written
        assert store.read(APP) == update
    finally:
        client.close()


# ------------------------------------------------------------------ amqps
class TlsTerminator:
    """Accepts TLS on 127.0.0.1:`port` with the test's server certificate (a client
    certificate of the CA required when `require_client_cert`) and pipes the plaintext to
    `target`; an asyncio loop in a daemon thread, stopped by `close()`."""

    def __init__(self, pki: Pki, target: tuple[str, int], *, require_client_cert: bool) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(pki.server_cert_file, pki.server_key_file)
        if require_client_cert:
            self._context.load_verify_locations(cafile=pki.ca_file)
            self._context.verify_mode = ssl.CERT_REQUIRED
        self._target = target
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port: int = started.result(timeout=10)

    async def _start(self) -> int:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, ssl=self._context, ssl_handshake_timeout=5
        )
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            if hasattr(self._server, "close_clients"):  # Python 3.13+
                self._server.close_clients()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


@pytest.fixture
def amqps_url(amqp_url: str, pki: Pki) -> Iterator[str]:
    """An `amqps://` URL (host 127.0.0.1, the local broker's credentials and vhost) of a TLS
    terminator that requires a client certificate of the test CA."""
    parts = urlsplit(amqp_url)
    terminator = TlsTerminator(
        pki, (parts.hostname or "127.0.0.1", parts.port or 5672), require_client_cert=True
    )
    try:
        auth = parts.netloc.rpartition("@")[0]
        yield f"amqps://{auth}@127.0.0.1:{terminator.port}{parts.path}"
    finally:
        terminator.close()


def test_publisher_and_token_client_over_amqps(
    amqps_url: str, tls_redis: RedisServer, pki: Pki, isolation: dict[str, str]
) -> None:
    """The producer's `Publisher` and a `TokenClient`, both on `amqps://` with the CA and a
    client certificate (and `rediss://` for the snapshot), pass a token through the broker."""
    tls = TlsFiles(pki.ca_file, pki.client_cert_file, pki.client_key_file)
    (params,) = connection_parameters(amqps_url, connection_name="wxtoken-test", tls=tls)
    connection = pika.BlockingConnection(params)
    try:
        declare_exchange(connection.channel(), isolation["exchange"])
    finally:
        connection.close()
    settings = ClientSettings(
        insecure_accept_unsigned=True,  # plain updates: signing is not what is tested
        redis_url=tls_redis.url,
        redis_tls_ca_file=pki.ca_file,
        amqp_url=amqps_url,
        amqp_tls_ca_file=pki.ca_file,
        amqp_tls_cert_file=pki.client_cert_file,
        amqp_tls_key_file=pki.client_key_file,
        exchange=isolation["exchange"],
        key_prefix=isolation["key_prefix"],
    )
    publisher = Publisher(
        settings.amqp_url, settings.exchange, sender="wxtoken-test/tls", tls=settings.amqp_tls
    ).start()
    try:
        with TokenClient(settings) as client:
            assert client.wait_connected(15), client._subscriber.last_error
            wait_for(lambda: publisher.connected, timeout_s=15, message="publisher connected")
            update = an_update(version=3, value="AMQPS-TOKEN-bbbbbbbbbbbbbbbbb-0003")
            publisher.publish(update)
            assert client.get_token(APP, timeout=15) == update.value
            assert client.stats.snapshot_reads >= 1  # the (empty) snapshot over rediss too
    finally:
        publisher.close()


@pytest.mark.parametrize(
    ("tls_of", "error"),
    [
        (
            lambda pki: TlsFiles(pki.other_ca_file, pki.client_cert_file, pki.client_key_file),
            "CERTIFICATE_VERIFY_FAILED",
        ),
        (lambda pki: TlsFiles(ca_file=pki.ca_file), None),
    ],
    ids=["an unrelated CA", "no client certificate"],
)
def test_amqps_that_does_not_verify_is_refused(
    amqps_url: str, pki: Pki, tls_of: Callable[[Pki], TlsFiles], error: str | None
) -> None:
    """A broker certificate from another CA, or no client certificate where one is
    required, fails the connection: pika never falls back to plaintext."""
    params = connection_parameters(amqps_url, connection_name="wxtoken-test", tls=tls_of(pki))
    with pytest.raises(AMQP_ERRORS, match=error):
        pika.BlockingConnection(params).close()
