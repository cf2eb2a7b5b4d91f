#!/usr/bin/env python3
"""Render Redis's users.acl from users.template.acl and three passwords.

The template (in git) holds the users and their rights, with `{password}` where each
user's password goes. This script replaces it with `#` and the SHA-256 of the password
(Redis's own hashed form, so the file holds no password) and writes users.acl (not in git)
for `redis-server --aclfile`.

The password of user `wxtoken-<role>` comes from the variable `WXTOKEN_REDIS_<ROLE>_PASSWORD`,
or from the file named by `WXTOKEN_REDIS_<ROLE>_PASSWORD_FILE` (surrounding whitespace is
stripped). Passwords go into Redis URLs unencoded, so they must be URL-safe: at least
16 characters of A-Z a-z 0-9 . _ ~ - (`openssl rand -hex 24` makes one).

    python3 deploy/redis/render_acl.py [--output PATH] [--mode 644]

Standard library only; what it shares with deploy/rabbitmq/render_definitions.py is in
deploy/_render.py. Any problem prints one line on stderr and exits 1; the passwords
are never printed.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))  # deploy/, for _render (this is no package)

from _render import RenderError, Service, run  # noqa: E402

TEMPLATE = HERE / "users.template.acl"
OUTPUT = HERE / "users.acl"
PLACEHOLDER = "{password}"
REDIS = Service(name="Redis", url="a Redis URL", variable_prefix="WXTOKEN_REDIS")


def password_variable(user: str) -> str:
    """wxtoken-producer -> WXTOKEN_REDIS_PRODUCER_PASSWORD."""
    return REDIS.password_variable(user)


def hash_password(password: str) -> str:
    """Redis's hashed password form: `#` and the hex SHA-256 of the password."""
    return "#" + hashlib.sha256(password.encode("utf-8")).hexdigest()


def template_users(text: str) -> list[str]:
    """The users whose line holds the placeholder; no line may hold a password already."""
    users = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] != "user" or len(words) < 2:
            raise RenderError(f"template line {number}: not a `user` line")
        if any(w.startswith((">", "#")) and w != "#" for w in words[2:]):
            raise RenderError(f"template line {number}: holds a password; use {PLACEHOLDER}")
        if PLACEHOLDER in words:
            users.append(words[1])
    if not users:
        raise RenderError("the template has no user with a password placeholder")
    return users


def render(text: str, passwords: Mapping[str, str]) -> str:
    """The template with each user's placeholder replaced by its hashed password."""
    lines = []
    for line in text.splitlines():
        words = line.split()
        if words and not words[0].startswith("#") and PLACEHOLDER in words:
            if words[1] not in passwords:
                raise RenderError(f"no password for {words[1]}")
            line = line.replace(PLACEHOLDER, hash_password(passwords[words[1]]))
        # Redis reads every line of an ACL file as a user: comments are dropped.
        if words and not words[0].startswith("#"):
            lines.append(line)
    return "\n".join(lines) + "\n"


def _render_file(template_path: Path, environ: Mapping[str, str]) -> tuple[str, int]:
    try:
        text = template_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise RenderError(f"cannot read the template {template_path}") from None
    passwords = REDIS.collect_passwords(template_users(text), environ)
    return render(text, passwords), len(passwords)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Render the ACL file; 0 on success, 1 (one line on stderr) on any problem."""
    return run(
        name="render_acl",
        description=__doc__.splitlines()[0] if __doc__ else None,
        service=REDIS,
        template=TEMPLATE,
        output=OUTPUT,
        renderer=_render_file,
        argv=argv,
        environ=environ,
    )


if __name__ == "__main__":
    sys.exit(main())
