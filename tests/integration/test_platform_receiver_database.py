"""`wxtoken-platform-receiver` as a process, on PostgreSQL and on MariaDB: the sandbox's
ticket and authorization pushes are in the platform database (the ticket sealed) when the
sandbox has its `success` (the sandbox counts a push answered otherwise as failed)."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from ops.sandbox import SandboxConfig, SandboxPlatform, SandboxServer
from producer.platform.db.startup import open_registry
from tests.integration.platform_db import KINDS, private_database
from tests.integration.procs import REPO_ROOT
from tests.waiting import wait_for

COMPONENT = "wxcomponent0000002"
SECRET = "component-secret"
TOKEN = "pamtest"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
AUTHORIZER = "wxauthorizer000002"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(params=KINDS)
def database(request: pytest.FixtureRequest) -> Iterator[sa.URL]:
    with private_database(request.param) as url:
        yield url


def test_pushes_are_in_the_database_before_success(
    database: sa.URL, tmp_path: Path, redis_url: str, isolation: dict[str, str]
) -> None:
    key_file = tmp_path / "platform.keys"
    key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    platforms_file = tmp_path / "platforms.toml"
    platforms_file.write_text(
        f'[[platforms]]\ncomponent_appid = "{COMPONENT}"\nsecret_env = "PLATFORM_SECRET"\n'
        'token_env = "PLATFORM_TOKEN"\nencoding_aes_key_env = "PLATFORM_AES_KEY"\n'
    )
    db_url = database.render_as_string(hide_password=False)
    port = _free_port()
    env = {
        **os.environ,
        "WXTOKEN_PLATFORMS_FILE": str(platforms_file),
        "WXTOKEN_PLATFORM_DB_URL": db_url,
        "WXTOKEN_PLATFORM_KEY_FILE": str(key_file),
        "WXTOKEN_REDIS_URL": redis_url,
        "WXTOKEN_KEY_PREFIX": isolation["key_prefix"],
        "WXTOKEN_RECEIVER_PORT": str(port),
        "PLATFORM_TOKEN": TOKEN,
        "PLATFORM_AES_KEY": KEY,
    }
    log = (tmp_path / "receiver.log").open("w")
    receiver = subprocess.Popen(
        [sys.executable, "-m", "producer.platform.receiver"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    registry = open_registry(db_url, key_file)
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert receiver.poll() is None, (tmp_path / "receiver.log").read_text()
            try:
                return requests.get(f"{base}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, timeout_s=60, message="the receiver listening")
        platform = SandboxPlatform(
            COMPONENT,
            SECRET,
            TOKEN,
            KEY,
            callback_url=f"{base}/wechat/platform/{COMPONENT}/events",
        )
        config = SandboxConfig(apps={}, platforms=[platform], push_interval_s=600.0)
        with SandboxServer(config) as sandbox:
            held = wait_for(
                lambda: registry.verify_ticket(COMPONENT),
                timeout_s=30,
                message="the first ticket in the database",
            )
            assert held.ticket == sandbox.state.current_ticket(COMPONENT)
            wait_for(  # counted once the sandbox has the answer, just after the write
                lambda: sandbox.state.pushes(COMPONENT, "component_verify_ticket") == (1, 0),
                message="the sandbox counting its first push answered",
            )
            engine = sa.create_engine(database, poolclass=sa.NullPool)
            with engine.connect() as connection:
                raw = " ".join(
                    str(row)
                    for row in connection.execute(sa.text("SELECT * FROM platform_tickets"))
                )
            engine.dispose()
            assert held.ticket not in raw, "the ticket is sealed at rest"
            answer = requests.post(
                f"{sandbox.base_url}/sandbox/platform/authorize",
                json={"component_appid": COMPONENT, "authorizer_appid": AUTHORIZER},
                timeout=10,
            ).json()
            assert answer == {"ok": True, "info_type": "authorized", "pushed": True}
            stored = registry.unprocessed_callbacks()
            assert [c.info_type for c in stored] == ["component_verify_ticket", "authorized"]
            assert stored[1].authorizer_appid == AUTHORIZER
    finally:
        registry.close()
        receiver.terminate()
        receiver.wait(15)
        log.close()
