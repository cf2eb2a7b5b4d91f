#!/usr/bin/env python3
"""Render RabbitMQ's definitions.json from definitions.template.json and four passwords.

The template (in git) holds the vhost, the users without passwords (the consumer's with
per-user `limits` on connections and channels), their permissions, the exchanges and the
vhost's limits. This script checks that each user's connection limit stays below the
vhost's (so no single login can take the vhost's whole allowance), adds each user's
`password_hash`, computed the way RabbitMQ's `rabbit_password_hashing_sha256` does (base64
of a random 4-byte salt followed by SHA-256(salt + UTF-8 password)), and writes the result
(not in git) for `load_definitions`.

The password of user `wxtoken-<role>` comes from the variable `WXTOKEN_MQ_<ROLE>_PASSWORD`,
or from the file named by `WXTOKEN_MQ_<ROLE>_PASSWORD_FILE` (surrounding whitespace is
stripped). Passwords go into AMQP URLs unencoded, so they must be URL-safe: at least
16 characters of A-Z a-z 0-9 . _ ~ - (`openssl rand -hex 24` makes one).

    python3 deploy/rabbitmq/render_definitions.py [--output PATH] [--mode 644]

Standard library only; what it shares with deploy/redis/render_acl.py is in deploy/_render.py.
Any problem prints one line on stderr and exits 1; the passwords
are never printed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))  # deploy/, for _render (this is no package)

from _render import RenderError, Service, run  # noqa: E402

TEMPLATE = HERE / "definitions.template.json"
OUTPUT = HERE / "definitions.json"
HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
SALT_BYTES = 4
RABBITMQ = Service(name="RabbitMQ", url="an AMQP URL", variable_prefix="WXTOKEN_MQ")


def password_variable(user: str) -> str:
    """The variable holding `user`'s password: wxtoken-producer -> WXTOKEN_MQ_PRODUCER_PASSWORD."""
    return RABBITMQ.password_variable(user)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256` hash of `password` (a random salt by default)."""
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    if len(salt) != SALT_BYTES:
        raise ValueError(f"the salt must be {SALT_BYTES} bytes")
    digest = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def password_matches(password: str, password_hash: str) -> bool:
    """True when `password_hash` (as `hash_password` makes them) is the hash of `password`."""
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except ValueError:
        return False
    if len(raw) != SALT_BYTES + hashlib.sha256().digest_size:
        return False
    return hmac.compare_digest(hash_password(password, salt=raw[:SALT_BYTES]), password_hash)


def template_users(template: Mapping[str, Any]) -> list[str]:
    """The user names of the template, which must carry no password of any kind."""
    users = template.get("users")
    if not isinstance(users, list) or not users:
        raise RenderError("the template lists no users")
    names = []
    for user in users:
        if not isinstance(user, dict) or not isinstance(user.get("name"), str):
            raise RenderError("every user in the template needs a name")
        if {"password", "password_hash"} & set(user):
            raise RenderError(f"the template holds a password for {user['name']}: remove it")
        names.append(user["name"])
    return names


def render(template: Mapping[str, Any], passwords: Mapping[str, str]) -> dict[str, Any]:
    """The template with every user's `password_hash` and `hashing_algorithm` filled in."""
    rendered = json.loads(json.dumps(template))  # a deep copy, JSON types only
    for user in rendered["users"]:
        name = user["name"]
        if name not in passwords:
            raise RenderError(f"no password for {name}")
        user["password_hash"] = hash_password(passwords[name])
        user["hashing_algorithm"] = HASHING_ALGORITHM
    return dict(rendered)


def load_template(path: Path) -> dict[str, Any]:
    """The template as a JSON object; `RenderError` when unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RenderError(f"cannot read the template {path}: {exc}") from None
    if not isinstance(data, dict):
        raise RenderError(f"the template {path} is not a JSON object")
    return data


def check_user_limits(template: Mapping[str, Any]) -> None:
    """Each user's `limits` (RabbitMQ's per-user `max-connections` and `max-channels`) are
    positive integers, and a user's `max-connections` is below every vhost's: else one login
    could take all the vhost's connections. `RenderError` naming the user otherwise."""
    vhost_max = [
        p["value"]["max-connections"]
        for p in template.get("parameters", [])
        if p.get("component") == "vhost-limits" and "max-connections" in p.get("value", {})
    ]
    for user in template.get("users", []):
        limits = user.get("limits", {})
        for name, value in limits.items():
            if name not in ("max-connections", "max-channels"):
                raise RenderError(f"{user['name']}: unknown user limit {name!r}")
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise RenderError(f"{user['name']}: {name} must be a positive integer")
        connections = limits.get("max-connections")
        if connections is not None and any(connections >= v for v in vhost_max):
            raise RenderError(
                f"{user['name']}: max-connections {connections} is not below the vhost's"
            )


def _render_file(template_path: Path, environ: Mapping[str, str]) -> tuple[str, int]:
    template = load_template(template_path)
    check_user_limits(template)
    passwords = RABBITMQ.collect_passwords(template_users(template), environ)
    return json.dumps(render(template, passwords), indent=2) + "\n", len(passwords)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Render the definitions; 0 on success, 1 (one line on stderr) on any problem."""
    return run(
        name="render_definitions",
        description=__doc__.splitlines()[0] if __doc__ else None,
        service=RABBITMQ,
        template=TEMPLATE,
        output=OUTPUT,
        renderer=_render_file,
        argv=argv,
        environ=environ,
    )


if __name__ == "__main__":
    sys.exit(main())
