"""The AMQP `user_id` on everything published, and the broker definitions' renderer.

RabbitMQ refuses a message whose `user_id` is not the user the connection logged in as,
so the property, once set, tells a receiver who published. The definitions template and
its renderer (deploy/rabbitmq/) are checked offline here; tests/integration/
test_broker_permissions.py applies them to a real broker.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pika
import pytest

from consumer_lib.amqp import amqp_user_id, publish_request, publish_update
from consumer_lib.wire.refresh_request import RefreshRequest
from tests.unit._helpers import make_update

ROOT = Path(__file__).resolve().parents[4]
RENDER_SCRIPT = ROOT / "deploy" / "rabbitmq" / "render_definitions.py"
T0 = 1_800_000_000.0
ROLES = ("producer", "ops", "consumer", "gateway")
PASSWORDS = {
    "WXTOKEN_MQ_PRODUCER_PASSWORD": "producer-pw-0123456789abcdef",
    "WXTOKEN_MQ_OPS_PASSWORD": "ops-pw-0123456789abcdefghij",
    "WXTOKEN_MQ_CONSUMER_PASSWORD": "consumer-pw-0123456789abcdef",
    "WXTOKEN_MQ_GATEWAY_PASSWORD": "gateway-pw-0123456789abcdefg",
}


def load_render_module() -> ModuleType:
    """deploy/rabbitmq/render_definitions.py, imported from its path (it is no package)."""
    spec = importlib.util.spec_from_file_location("render_definitions", RENDER_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


render_definitions = load_render_module()


class RecordingChannel:
    """A channel that records `basic_publish` keyword arguments; `url` is what it logged in with."""

    def __init__(self, url: str | None = None) -> None:
        self.published: list[dict[str, Any]] = []
        if url is not None:
            self.connection = SimpleNamespace(_impl=SimpleNamespace(params=pika.URLParameters(url)))

    def basic_publish(self, **kwargs: Any) -> None:
        self.published.append(kwargs)


def run_script(
    tmp_path: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    output = tmp_path / "definitions.json"
    result = subprocess.run(
        [sys.executable, str(RENDER_SCRIPT), "--output", str(output), *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, output


# ---- user_id on what is published --------------------------------------------------------


def test_publish_update_sets_user_id_to_the_connection_user() -> None:
    """`publish_update` puts the URL-decoded user of the channel's connection in `user_id`."""
    channel = RecordingChannel("amqp://wxtoken-producer:secret@mq:5672/wxtoken")
    publish_update(channel, "wxtoken.tokens", make_update(), now_s=T0, sender="host-1")
    (call,) = channel.published
    assert call["properties"].user_id == "wxtoken-producer"
    assert call["properties"].app_id == "host-1"

    encoded = RecordingChannel("amqp://svc%40team%2Fa:p%40ss@mq/%2F")
    publish_update(encoded, "wxtoken.tokens", make_update(), now_s=T0, sender="host-1")
    assert encoded.published[0]["properties"].user_id == "svc@team/a"


def test_publish_update_leaves_user_id_out_when_the_user_is_unknown() -> None:
    """Without a known login user (a fake channel, EXTERNAL login), `user_id` is left unset."""
    channel = RecordingChannel()
    publish_update(channel, "wxtoken.tokens", make_update(), now_s=T0, sender="host-1")
    assert channel.published[0]["properties"].user_id is None

    external = RecordingChannel("amqp://mq/%2F")
    external.connection._impl.params.credentials = pika.credentials.ExternalCredentials()
    assert amqp_user_id(external) is None


def test_default_credentials_give_their_user() -> None:
    """A URL without credentials logs in as pika's default user, and that is the `user_id`."""
    channel = RecordingChannel("amqp://mq:5672/%2F")
    assert amqp_user_id(channel) == "guest"


def test_publish_request_sets_user_id() -> None:
    """Refresh requests carry the connection's user as `user_id` too."""
    channel = RecordingChannel("amqp://wxtoken-consumer:pw@mq:5672/wxtoken")
    request = RefreshRequest.for_token("wx1234567890abcdef", "T" * 20, requester="c", now_s=T0)
    publish_request(channel, "wxtoken.tokens", request, sender="svc", now_s=T0)
    assert channel.published[0]["properties"].user_id == "wxtoken-consumer"


# ---- the shipped template ----------------------------------------------------------------


def _permissions() -> dict[str, dict[str, str]]:
    template = render_definitions.load_template(render_definitions.TEMPLATE)
    return {p["user"].removeprefix("wxtoken-"): p for p in template["permissions"]}


#: (role, kind, resource name) -> allowed? The names are what the code uses; amq.gen-* is
#: a server-named queue, wxtoken.snoop a queue someone names.
EXPECTED = {
    ("producer", "configure", "wxtoken.tokens"): True,
    ("producer", "configure", "wxtoken.tokens.requests"): True,
    ("producer", "configure", "amq.gen-AbC_12"): True,
    ("producer", "configure", "wxtoken.snoop"): False,
    ("producer", "write", "wxtoken.tokens"): True,
    ("producer", "write", "wxtoken.tokens.requests"): False,
    ("producer", "read", "wxtoken.tokens.requests"): True,
    ("producer", "read", "wxtoken.tokens"): False,
    ("ops", "configure", "wxtoken.tokens"): True,
    ("ops", "configure", "wxtoken.tokens.requests"): True,
    ("ops", "configure", "wxtoken.other"): False,
    ("ops", "write", "wxtoken.tokens"): True,
    ("ops", "write", "wxtoken.tokens.requests"): True,
    ("ops", "read", "wxtoken.tokens"): True,
    ("ops", "read", "wxtoken.tokens.requests"): False,
    ("consumer", "configure", "amq.gen-AbC_12"): True,
    ("consumer", "configure", "wxtoken.tokens"): False,
    ("consumer", "configure", "wxtoken.tokens.requests"): False,
    ("consumer", "configure", "wxtoken.snoop"): False,
    ("consumer", "write", "wxtoken.tokens"): False,
    ("consumer", "write", "wxtoken.tokensXrequests"): False,
    ("consumer", "write", "amq.default"): False,
    ("consumer", "write", ""): False,
    ("consumer", "write", "wxtoken.tokens.requests"): True,
    ("consumer", "write", "amq.gen-AbC_12"): True,
    ("consumer", "read", "wxtoken.tokens"): True,
    ("consumer", "read", "wxtoken.tokens.requests"): False,
    ("consumer", "read", "amq.gen-AbC_12"): True,
    ("consumer", "read", "xamq.gen-AbC_12"): False,
}
# The gateway has a consumer's rights, under a login of its own (its own allowance).
EXPECTED |= {
    ("gateway", kind, name): ok
    for (role, kind, name), ok in list(EXPECTED.items())
    if role == "consumer"
}


def test_template_permissions_allow_exactly_what_each_role_needs() -> None:
    """Each regex matches the resources its role uses and nothing the table says it may not."""
    permissions = _permissions()
    assert set(permissions) == set(ROLES)
    for (role, kind, name), allowed in EXPECTED.items():
        # RabbitMQ matches unanchored (re:run), like re.search.
        matched = re.search(permissions[role][kind], name) is not None
        assert matched is allowed, f"{role} {kind} {name!r}: {permissions[role][kind]}"


def test_template_has_one_vhost_no_passwords_and_no_tags() -> None:
    """The template names vhost wxtoken, holds no password, and gives no user any tag."""
    template = render_definitions.load_template(render_definitions.TEMPLATE)
    assert [v["name"] for v in template["vhosts"]] == ["wxtoken"]
    assert {u["name"] for u in template["users"]} == {f"wxtoken-{r}" for r in ROLES}
    for user in template["users"]:
        assert not {"password", "password_hash"} & set(user)
        assert user["tags"] in ([], ""), "no management, administrator or impersonator tag"
    assert {p["vhost"] for p in template["permissions"]} == {"wxtoken"}
    exchanges = {e["name"]: e for e in template["exchanges"]}
    assert set(exchanges) == {"wxtoken.tokens", "wxtoken.tokens.requests"}
    for exchange in exchanges.values():  # what declare_exchange() declares, or 406 on boot
        assert exchange["type"] == "fanout"
        assert exchange["durable"] is True
        assert exchange["auto_delete"] is False
        assert exchange["internal"] is False
        assert exchange["arguments"] == {}


# ---- the renderer --------------------------------------------------------------------------


def test_hash_is_rabbitmq_salted_sha256() -> None:
    """`hash_password` is base64(salt + SHA-256(salt + UTF-8 password)) with a 4-byte salt."""
    salt = bytes.fromhex("908dc60a")
    expected = base64.b64encode(salt + hashlib.sha256(salt + "tést".encode()).digest()).decode()
    assert render_definitions.hash_password("tést", salt=salt) == expected
    with pytest.raises(ValueError, match="4 bytes"):
        render_definitions.hash_password("x", salt=b"abc")

    first = render_definitions.hash_password("same password")
    second = render_definitions.hash_password("same password")
    assert first != second, "a fresh random salt every time"
    assert render_definitions.password_matches("same password", first)
    assert not render_definitions.password_matches("other password", first)
    assert not render_definitions.password_matches("same password", "not base64!")


def test_script_writes_verifiable_hashes_and_no_password(tmp_path: Path) -> None:
    """The script writes every user's hash, verifiable with its salt, mode 600, no password."""
    result, output = run_script(tmp_path, PASSWORDS)
    assert result.returncode == 0, result.stderr
    text = output.read_text(encoding="utf-8")
    for password in PASSWORDS.values():
        assert password not in text
        assert password not in result.stdout + result.stderr
    assert output.stat().st_mode & 0o777 == 0o600

    definitions = json.loads(text)
    template = render_definitions.load_template(render_definitions.TEMPLATE)
    for user in definitions["users"]:
        password = PASSWORDS[render_definitions.password_variable(user["name"])]
        assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        raw = base64.b64decode(user["password_hash"])
        salt, digest = raw[:4], raw[4:]
        assert digest == hashlib.sha256(salt + password.encode()).digest()
        del user["password_hash"], user["hashing_algorithm"]
    assert definitions == template, "everything but the hashes is the template's"


def test_script_reads_password_files_and_honours_mode(tmp_path: Path) -> None:
    """`*_PASSWORD_FILE` names a file (surrounding whitespace stripped); `--mode` sets the mode."""
    secret_file = tmp_path / "ops.password"
    secret_file.write_text("  file-pw-0123456789abcdef\n", encoding="utf-8")
    env = {**PASSWORDS, "WXTOKEN_MQ_OPS_PASSWORD_FILE": str(secret_file)}
    del env["WXTOKEN_MQ_OPS_PASSWORD"]
    result, output = run_script(tmp_path, env, "--mode", "644")
    assert result.returncode == 0, result.stderr
    assert output.stat().st_mode & 0o777 == 0o644
    (ops,) = [u for u in json.loads(output.read_text())["users"] if u["name"] == "wxtoken-ops"]
    assert render_definitions.password_matches("file-pw-0123456789abcdef", ops["password_hash"])


def test_missing_password_is_one_clear_line_and_writes_nothing(tmp_path: Path) -> None:
    """A missing password exits non-zero with one line naming the variable; no file appears."""
    env = {k: v for k, v in PASSWORDS.items() if k != "WXTOKEN_MQ_CONSUMER_PASSWORD"}
    result, output = run_script(tmp_path, env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "WXTOKEN_MQ_CONSUMER_PASSWORD" in lines[0]
    assert "Traceback" not in result.stderr
    assert not output.exists()
    assert list(tmp_path.iterdir()) == [], "no temporary file left behind"


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("WXTOKEN_MQ_OPS_PASSWORD", "short-0123", "shorter than 16"),
        ("WXTOKEN_MQ_OPS_PASSWORD", "has/slash@and:colon-0123", "only A-Z a-z 0-9"),
        ("WXTOKEN_MQ_OPS_PASSWORD_FILE", "/no/such/file", "cannot read /no/such/file"),
    ],
)
def test_bad_passwords_are_refused_without_echo(
    tmp_path: Path, variable: str, value: str, problem: str
) -> None:
    """Short, URL-unsafe or unreadable passwords are refused in one line that never echoes them."""
    env = {**PASSWORDS, variable: value}
    if variable.endswith("_FILE"):
        del env["WXTOKEN_MQ_OPS_PASSWORD"]
    result, output = run_script(tmp_path, env)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert problem in line
    if not variable.endswith("_FILE"):
        assert value not in line
    assert not output.exists()


def test_variable_and_file_together_are_refused(tmp_path: Path) -> None:
    """Setting both a password and a password file for one user is ambiguous: refused."""
    env = {**PASSWORDS, "WXTOKEN_MQ_OPS_PASSWORD_FILE": str(tmp_path / "x")}
    result, _ = run_script(tmp_path, env)
    assert result.returncode == 1
    assert "not both" in result.stderr


def test_template_with_a_password_is_refused(tmp_path: Path) -> None:
    """A template that carries a password is refused rather than rendered."""
    template = render_definitions.load_template(render_definitions.TEMPLATE)
    template["users"][0]["password"] = "plain-text-password-123"
    bad = tmp_path / "template.json"
    bad.write_text(json.dumps(template), encoding="utf-8")
    result, output = run_script(tmp_path, PASSWORDS, "--template", str(bad))
    assert result.returncode == 1
    assert "holds a password" in result.stderr
    assert "plain-text-password-123" not in result.stderr
    assert not output.exists()


def test_password_variable_names() -> None:
    """User wxtoken-<role> reads WXTOKEN_MQ_<ROLE>_PASSWORD."""
    assert [render_definitions.password_variable(f"wxtoken-{r}") for r in ROLES] == list(PASSWORDS)
