"""The third-party platform of `make demo`: one platform, three customers (authorizers).

Two customers authorized long ago (their refresh tokens are in the registry when the
producer starts); the third authorizes while the demo runs: the sandbox pushes the event to
the receiver, the leader redeems the code, and its token reaches the subscriber. The registry
is a database of its own on the local PostgreSQL (`WXTOKEN_DEMO_PG_URL`, an administrative
login; the machine's trust-auth `postgres` by default), created here and dropped at the end.
Without PostgreSQL or the platform extra, the demo runs without a platform and says why.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from ._demo_children import free_port, say, start_child
from .sandbox import SandboxPlatform

COMPONENT = "wxdemoplatform0001"
SECRET = "demo-component-secret"
TOKEN = "demotoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SEEDED_PREFIX = "wxdemocust"
LATE_CUSTOMER = "wxdemocust00000002"
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


class DemoPlatform:
    """The platform's database, files, receiver and customers (`start`, `close`)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.receiver_port = free_port()
        self._admin_url = os.environ.get("WXTOKEN_DEMO_PG_URL", ADMIN_URL)
        self._database = f"wxtoken_demo_{uuid.uuid4().hex[:8]}"
        self._admin: Any = None
        self._receiver: subprocess.Popen[str] | None = None
        self.env: dict[str, str] = {}

    def unavailable(self) -> str | None:
        """Why the demo runs without a platform, or None."""
        try:
            import sqlalchemy  # noqa: F401 - the platform extra
        except ImportError:
            return "the platform extra is not installed"
        host, port = "127.0.0.1", 5432
        try:
            with socket.create_connection((host, port), 2.0):
                return None
        except OSError:
            return f"PostgreSQL is not reachable on {host}:{port} (WXTOKEN_DEMO_PG_URL)"

    def sandbox_platform(self) -> SandboxPlatform:
        callback = f"http://127.0.0.1:{self.receiver_port}/wechat/platform/{COMPONENT}/events"
        return SandboxPlatform(COMPONENT, SECRET, TOKEN, AES_KEY, callback_url=callback)

    def start(self, sandbox_url: str, shared: dict[str, str]) -> None:
        """Create the database, the key and platforms files, seed two customers, start the
        receiver; `self.env` is then what the producer (and `wxtoken platform`) add."""
        import sqlalchemy as sa

        from producer.platform.db.startup import open_registry

        admin_url = sa.make_url(self._admin_url)
        self._admin = sa.create_engine(
            admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
        )
        with self._admin.connect() as connection:
            connection.execute(sa.text(f"CREATE DATABASE {self._database}"))
        db_url = admin_url.set(database=self._database).render_as_string(hide_password=False)
        key_file = self.workdir / "platform.keys"
        key_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
        key_file.chmod(0o600)
        platforms_file = self.workdir / "platforms.toml"
        platforms_file.write_text(
            f'[[platforms]]\ncomponent_appid = "{COMPONENT}"\n'
            'secret_env = "WXDEMO_PLATFORM_SECRET"\ntoken_env = "WXDEMO_PLATFORM_TOKEN"\n'
            'encoding_aes_key_env = "WXDEMO_PLATFORM_AES_KEY"\n'
        )
        self.env = {
            "WXTOKEN_PLATFORMS_FILE": str(platforms_file),
            "WXTOKEN_PLATFORM_DB_URL": db_url,
            "WXTOKEN_PLATFORM_KEY_FILE": str(key_file),
            "WXDEMO_PLATFORM_SECRET": SECRET,
            "WXDEMO_PLATFORM_TOKEN": TOKEN,
            "WXDEMO_PLATFORM_AES_KEY": AES_KEY,
        }
        seeded = requests.post(
            f"{sandbox_url}/sandbox/platform/seed",
            json={"component_appid": COMPONENT, "prefix": SEEDED_PREFIX, "count": 2},
            timeout=10,
        ).json()["authorizers"]
        registry = open_registry(db_url, key_file)
        try:
            for row in seeded:
                registry.authorize(COMPONENT, row["authorizer_appid"], row["refresh_token"])
        finally:
            registry.close()
        say(
            "platform",
            f"{COMPONENT}: customers {', '.join(r['authorizer_appid'] for r in seeded)} "
            f"authorized it long ago; registry in PostgreSQL database {self._database}",
        )
        receiver_env = {
            **os.environ,
            **shared,
            **self.env,
            "WXTOKEN_RECEIVER_PORT": str(self.receiver_port),
            "WXTOKEN_LOG_LEVEL": "WARNING",
        }
        self._receiver = start_child("producer.platform.receiver", receiver_env, "receiver")
        # The sandbox's first push went out before the receiver listened: push one now that
        # it does, so the producer finds a ticket stored when it starts.
        ready = f"http://127.0.0.1:{self.receiver_port}/readyz"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _answers(ready):
            time.sleep(0.2)
        pushed = requests.post(
            f"{sandbox_url}/sandbox/platform/push_ticket",
            json={"component_appid": COMPONENT},
            timeout=10,
        ).json()
        if not pushed.get("pushed"):
            say("platform", "the receiver did not store the verify ticket pushed to it")

    def authorize_later(self, sandbox_url: str, delay_s: float, stop: threading.Event) -> None:
        """In a thread: a third customer authorizes the platform `delay_s` from now."""

        def later() -> None:
            if stop.wait(delay_s):
                return
            say("platform", f"customer {LATE_CUSTOMER} authorizes {COMPONENT} now")
            try:
                answer = requests.post(
                    f"{sandbox_url}/sandbox/platform/authorize",
                    json={"component_appid": COMPONENT, "authorizer_appid": LATE_CUSTOMER},
                    timeout=10,
                ).json()
            except requests.RequestException as exc:
                say("platform", f"the sandbox's authorize control failed: {exc}")
                return
            pushed = "stored by the receiver" if answer.get("pushed") else "NOT stored"
            say("platform", f"WeChat pushed {answer.get('info_type')}: {pushed}")

        threading.Thread(target=later, daemon=True, name="demo-authorize").start()

    @property
    def receiver(self) -> subprocess.Popen[str] | None:
        return self._receiver

    def close(self) -> None:
        if self._receiver is not None and self._receiver.poll() is None:
            self._receiver.terminate()
            try:
                self._receiver.wait(10)
            except subprocess.TimeoutExpired:
                self._receiver.kill()
        if self._admin is not None:
            import sqlalchemy as sa

            deadline = time.monotonic() + 10
            while True:
                try:
                    with self._admin.connect() as connection:
                        connection.execute(
                            sa.text(f"DROP DATABASE IF EXISTS {self._database} WITH (FORCE)")
                        )
                    break
                except sa.exc.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            self._admin.dispose()
