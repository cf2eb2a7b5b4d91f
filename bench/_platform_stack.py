"""A whole third-party platform stack for the platform benchmarks, every part private.

`PlatformStack` starts, in this order: a private `redis-server` on a free port (never the
shared one), a private database on the local PostgreSQL or MariaDB (optionally behind a
`TcpProxy` that can cut it), a real `python -m producer.platform.receiver`, the sandbox
(`SandboxServer`, in this process) playing the open platform with one platform whose
callback URL is the receiver, and `producers` real `python -m producer` processes (the
first to start leads; short lease, poll and sync intervals). RabbitMQ is the shared one,
with an exchange of its own. `close()` (or leaving the `with`) kills every process it
started, drops the database, deletes the exchange and its own directory of logs (kept
when `keep_files` is set: a failed run's evidence).

    with PlatformStack(StackOptions(db="postgresql", producers=2)) as stack:
        stack.wait_component_token()
        push = stack.authorize("wxcustomer00000001")   # push.pushed: answered `success`
        stack.leader_id()                              # the lease holder's producer id
        stack.kill_producer(stack.leader_id())         # SIGKILL

Authorizations are pushed from this process (the sandbox's own `authorize` and pusher, as
its `/sandbox/platform/authorize` control does), so a push that was not answered `success`
can be delivered again unchanged, as WeChat retries it (`redeliver`).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import secrets
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pika
import requests
import sqlalchemy as sa

from consumer_lib import ClientSettings
from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.authorizers import authorizer_app_id
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.kinds import TokenKind
from consumer_lib.wire.signing import generate_keypair
from consumer_lib.wire.update import TokenUpdate
from ops.sandbox import SandboxConfig, SandboxPlatform, SandboxServer
from producer.platform.db import schema
from producer.platform.db.registry import MAX_PAGE, PlatformRegistry
from producer.platform.db.startup import open_registry
from tests.conftest import AMQP_URL
from tests.integration.platform_db import private_database
from tests.integration.procs import Child, Producer
from tests.integration.servers import RedisServer, free_port
from tests.integration.tcp_proxy import TcpProxy
from tests.waiting import wait_for

COMPONENT = "wxbenchplatform001"
SECRET = "bench-component-secret"
TOKEN = "benchtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PLAIN_APP = "wxbenchplainapp001"
PLAIN_SECRET = "bench-plain-secret"


@dataclass(frozen=True)
class StackOptions:
    db: str = "postgresql"  # or "mariadb"
    producers: int = 2
    #: The sandbox's token lifetime (component and authorizer tokens alike), seconds.
    expires_in_s: int = 7200
    #: Put the database behind a `TcpProxy` the caller can `cut()` and `restore()`.
    db_proxy: bool = False
    lease_ttl_s: float = 4.0
    #: WXTOKEN_REFRESH_MARGIN_RATIO (None: the producer's default, 0.2).
    refresh_margin_ratio: float | None = None
    poll_interval_s: float = 1.0
    sync_interval_s: float = 2.0
    log_level: str = "INFO"


@dataclass(frozen=True)
class Push:
    """One authorization event as pushed (its fields, to deliver again) and its answer."""

    authorizer_appid: str
    fields: Mapping[str, object]
    pushed: bool


@dataclass(frozen=True)
class StoredAuthorization:
    """What the registry's callback log holds for one authorizer's authorization pushes."""

    rows: int
    unprocessed: int
    #: When the first of them was marked processed (our wall clock), None: none yet.
    first_processed_at_s: float | None


class PlatformStack:
    """See the module docstring. Not thread-safe to start or close; `authorize` and the
    readers may be called from several threads."""

    def __init__(self, options: StackOptions, *, keep_dir: Path | None = None) -> None:
        self.options = options
        if keep_dir is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = keep_dir or Path(tempfile.mkdtemp(prefix="wxtoken-bench-platform-"))
        self.tag = uuid.uuid4().hex[:10]
        self.prefix, self.exchange = f"wxbench-{self.tag}", f"wxbench.{self.tag}"
        self._exit = contextlib.ExitStack()
        self.producers: dict[str, Producer] = {}
        self.metrics_ports: dict[str, int] = {}
        self.proxy: TcpProxy | None = None
        self.env: dict[str, str] = {}
        #: Keep the directory of logs and keys after `close()` (a failed run's evidence).
        self.keep_files = keep_dir is not None

    # ------------------------------------------------------------------ start and stop
    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill every process started here, drop the database, delete the exchange."""
        for producer in self.producers.values():
            producer.close()
        self._exit.close()
        if not self.keep_files:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _start(self) -> None:
        options = self.options
        self.redis_server = RedisServer(self.tmp).start()
        self._exit.callback(self.redis_server.kill)
        self._exit.callback(self._delete_exchange)
        self.redis = self.redis_server.client()
        self._exit.callback(self.redis.close)
        private_key, public_key = generate_keypair(self.tmp / "bench.key")
        url = self._exit.enter_context(private_database(options.db))
        self.direct_db_url = url.render_as_string(hide_password=False)
        db_url = self.direct_db_url
        if options.db_proxy:
            assert url.host is not None
            assert url.port is not None
            self.proxy = TcpProxy(url.host, url.port)
            self._exit.callback(self.proxy.close)
            db_url = url.set(host="127.0.0.1", port=self.proxy.port).render_as_string(
                hide_password=False
            )
        key_file = self.tmp / "platform.keys"
        key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        platforms_file = self.tmp / "platforms.toml"
        platforms_file.write_text(
            f'[[platforms]]\ncomponent_appid = "{COMPONENT}"\nsecret_env = "PLATFORM_SECRET"\n'
            'token_env = "PLATFORM_TOKEN"\nencoding_aes_key_env = "PLATFORM_AES_KEY"\n'
        )
        apps_file = self.tmp / "apps.toml"
        apps_file.write_text(f'[[apps]]\napp_id = "{PLAIN_APP}"\nsecret_env = "PLAIN_SECRET"\n')
        receiver_port = free_port()
        self.env = {
            "WXTOKEN_REDIS_URL": self.redis_server.url,
            "WXTOKEN_AMQP_URL": AMQP_URL,
            "WXTOKEN_EXCHANGE": self.exchange,
            "WXTOKEN_KEY_PREFIX": self.prefix,
            "WXTOKEN_SIGNING_KEY_FILE": str(private_key),
            "WXTOKEN_VERIFY_KEYS": str(public_key),
            "WXTOKEN_PLATFORMS_FILE": str(platforms_file),
            "WXTOKEN_PLATFORM_DB_URL": db_url,
            "WXTOKEN_PLATFORM_KEY_FILE": str(key_file),
            "WXTOKEN_RECEIVER_PORT": str(receiver_port),
            "WXTOKEN_APPS_FILE": str(apps_file),
            "WXTOKEN_PLATFORM_POLL_INTERVAL_S": str(options.poll_interval_s),
            "WXTOKEN_PLATFORM_SYNC_INTERVAL_S": str(options.sync_interval_s),
            "WXTOKEN_LEASE_TTL_S": str(options.lease_ttl_s),
            "WXTOKEN_LOG_LEVEL": options.log_level,
            "PLATFORM_SECRET": SECRET,
            "PLATFORM_TOKEN": TOKEN,
            "PLATFORM_AES_KEY": AES_KEY,
            "PLAIN_SECRET": PLAIN_SECRET,
        }
        if options.refresh_margin_ratio is not None:
            self.env["WXTOKEN_REFRESH_MARGIN_RATIO"] = str(options.refresh_margin_ratio)
        self.receiver = Child(
            [sys.executable, "-m", "producer.platform.receiver"],
            {**os.environ, **self.env},
            self.tmp / "receiver.log",
        )
        self._exit.callback(self.receiver.close)
        self.registry: PlatformRegistry = open_registry(self.direct_db_url, key_file)
        self._exit.callback(self.registry.close)
        wait_for(
            lambda: _answers(f"http://127.0.0.1:{receiver_port}/readyz"),
            timeout_s=30,
            interval_s=0.1,
            message=f"the receiver listening (log: {self.receiver.log_path})",
        )
        callback = f"http://127.0.0.1:{receiver_port}/wechat/platform/{COMPONENT}/events"
        platform = SandboxPlatform(COMPONENT, SECRET, TOKEN, AES_KEY, callback_url=callback)
        self.sandbox = SandboxServer(
            SandboxConfig(
                apps={PLAIN_APP: PLAIN_SECRET},
                platforms=[platform],
                push_interval_s=600.0,
                expires_in_s=options.expires_in_s,
            )
        ).start()
        self._exit.callback(self.sandbox.stop)
        self.env["WXTOKEN_WECHAT_BASE_URL"] = self.sandbox.base_url
        for index in range(options.producers):
            self.start_producer(f"bench-producer-{index}")
            if index == 0:  # the first leads: the others start as standbys
                wait_for(self.leader_id, timeout_s=30, interval_s=0.1, message="a leader")
        for producer_id, port in self.metrics_ports.items():
            wait_for(
                functools.partial(_answers, f"http://127.0.0.1:{port}/healthz"),
                timeout_s=30,
                interval_s=0.1,
                message=f"{producer_id} alive",
            )

    def start_producer(self, producer_id: str) -> Producer:
        self.metrics_ports[producer_id] = free_port()
        env = {
            **os.environ,
            **self.env,
            "WXTOKEN_PRODUCER_ID": producer_id,
            "WXTOKEN_METRICS_PORT": str(self.metrics_ports[producer_id]),
        }
        producer = Producer(env, self.tmp / f"{producer_id}.log")
        self.producers[producer_id] = producer
        return producer

    def _delete_exchange(self) -> None:
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
            connection.channel().exchange_delete(self.exchange)
            connection.close()

    # ------------------------------------------------------------------ the producers
    def leader_id(self) -> str | None:
        """The producer id holding the lease now (`{epoch}|{owner}` in Redis), else None."""
        raw = self.redis.get(KeyLayout(self.prefix).leader)
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        owner = text.partition("|")[2]  # "{producer id}#{per-run suffix}"
        return owner.partition("#")[0] or None

    def kill_producer(self, producer_id: str) -> None:
        """SIGKILL: no goodbye, the lease left to expire."""
        self.producers[producer_id].kill()

    # ------------------------------------------------------------------ the open platform
    def authorize(self, authorizer_appid: str) -> Push:
        """A customer authorizes (or re-authorizes) the platform; the event is pushed to the
        receiver (`pushed`: it answered `success`)."""
        fields = self.sandbox.state.authorize(COMPONENT, authorizer_appid)
        return Push(authorizer_appid, fields, self.redeliver(fields))

    def redeliver(self, fields: Mapping[str, object]) -> bool:
        """Push an event again, as WeChat retries one not answered `success`."""
        return bool(self.sandbox.pusher.push_event(COMPONENT, fields))

    def is_valid_upstream(self, token: str) -> bool:
        """The sandbox would accept this token in an API call now."""
        return self.sandbox.state.is_valid(token)

    # ------------------------------------------------------------------ what is where
    def client_settings(self) -> ClientSettings:
        return ClientSettings(
            verify_keys=self.env["WXTOKEN_VERIFY_KEYS"],
            redis_url=self.env["WXTOKEN_REDIS_URL"],
            amqp_url=self.env["WXTOKEN_AMQP_URL"],
            exchange=self.exchange,
            key_prefix=self.prefix,
        )

    def snapshot(self, app_id: str) -> TokenUpdate | None:
        """The credential's token in (the private) Redis."""
        return SnapshotReader(self.redis, KeyLayout(self.prefix)).read(
            app_id, TokenKind.ACCESS_TOKEN
        )

    def authorizer_snapshot(self, authorizer_appid: str) -> TokenUpdate | None:
        return self.snapshot(authorizer_app_id(COMPONENT, authorizer_appid))

    def wait_component_token(self, timeout_s: float = 60.0) -> None:
        wait_for(
            lambda: self.snapshot(COMPONENT) is not None,
            timeout_s=timeout_s,
            interval_s=0.1,
            message="the component token in Redis",
        )

    def authorized_in_registry(self) -> set[str]:
        """Authorizers `authorized` with a refresh token in the registry (read directly)."""
        found: set[str] = set()
        after: str | None = None
        while True:
            page = self.registry.authorizers(COMPONENT, "authorized", after=after, limit=MAX_PAGE)
            found.update(row.authorizer_appid for row in page if row.has_refresh_token)
            if len(page) < MAX_PAGE:
                return found
            after = page[-1].authorizer_appid

    def stored_authorizations(self) -> dict[str, StoredAuthorization]:
        """Each authorizer's authorization pushes in the callback log (read directly)."""
        table = schema.callbacks
        query = (
            sa.select(
                table.c.authorizer_appid,
                sa.func.count(),
                sa.func.sum(sa.case((table.c.processed_at_s.is_(None), 1), else_=0)),
                sa.func.min(table.c.processed_at_s),
            )
            .where(table.c.component_appid == COMPONENT)
            .where(table.c.info_type.in_(("authorized", "updateauthorized")))
            .group_by(table.c.authorizer_appid)
        )
        engine = sa.create_engine(self.direct_db_url, poolclass=sa.NullPool)
        try:
            with engine.connect() as connection:
                return {
                    str(appid): StoredAuthorization(
                        int(rows), int(unprocessed or 0), None if first is None else float(first)
                    )
                    for appid, rows, unprocessed, first in connection.execute(query)
                }
        finally:
            engine.dispose()

    def logs_tail(self, chars: int = 4000) -> str:
        parts = [f"--- {self.receiver.log_path} ---\n{self.receiver.stderr_text()[-chars:]}"]
        parts += [
            f"--- {p.log_path} ---\n{p.stderr_text()[-chars:]}" for p in self.producers.values()
        ]
        return "\n".join(parts)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False
