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

Standard library only. Any problem prints one line on stderr and exits 1; the passwords
are never printed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "users.template.acl"
OUTPUT = HERE / "users.acl"
MIN_PASSWORD_CHARS = 16
PLACEHOLDER = "{password}"
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
_USER_PREFIX = "wxtoken-"


class RenderError(Exception):
    """A problem with the template, a password or the output: one line, no secret in it."""


def password_variable(user: str) -> str:
    """wxtoken-producer -> WXTOKEN_REDIS_PRODUCER_PASSWORD."""
    role = user.removeprefix(_USER_PREFIX)
    return f"WXTOKEN_REDIS_{re.sub(r'[^A-Za-z0-9]', '_', role).upper()}_PASSWORD"


def hash_password(password: str) -> str:
    """Redis's hashed password form: `#` and the hex SHA-256 of the password."""
    return "#" + hashlib.sha256(password.encode("utf-8")).hexdigest()


def read_password(user: str, environ: Mapping[str, str]) -> str | None:
    """`user`'s password from its variable or its `*_FILE` variable; None when neither is set."""
    variable = password_variable(user)
    file_variable = f"{variable}_FILE"
    value = environ.get(variable) or None
    path = environ.get(file_variable) or None
    if value is not None and path is not None:
        raise RenderError(f"set {variable} or {file_variable}, not both")
    source = variable
    if path is not None:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise RenderError(f"{file_variable}: cannot read {path}") from None
        source = f"{file_variable} ({path})"
    if value is None:
        return None
    if len(value) < MIN_PASSWORD_CHARS:
        raise RenderError(f"{source}: shorter than {MIN_PASSWORD_CHARS} characters")
    if not _URL_SAFE.fullmatch(value):
        raise RenderError(f"{source}: only A-Z a-z 0-9 . _ ~ - may be used")
    return value


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


def collect_passwords(users: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """Every user's password; `RenderError` naming all missing variables at once."""
    passwords: dict[str, str] = {}
    missing: list[str] = []
    for user in users:
        password = read_password(user, environ)
        if password is None:
            missing.append(password_variable(user))
        else:
            passwords[user] = password
    if missing:
        raise RenderError(
            f"no password for {len(missing)} Redis user(s): set {', '.join(missing)} "
            "(or the same names with _FILE, naming a file)"
        )
    return passwords


def write_private(path: Path, text: str, mode: int) -> None:
    """Write `text` to `path` atomically, the file created with `mode` from the start."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Render the ACL file; 0 on success, 1 (one line on stderr) on any problem."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--template", type=Path, default=TEMPLATE, help="default: %(default)s")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: %(default)s")
    parser.add_argument(
        "--mode",
        type=lambda text: int(text, 8),
        default=0o600,
        help="octal mode of the output (default 600; the Redis container reads it as "
        "uid 999, so chown it to 999 or use 644 on a single-user machine)",
    )
    args = parser.parse_args(argv)
    try:
        try:
            text = args.template.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise RenderError(f"cannot read the template {args.template}") from None
        users = template_users(text)
        passwords = collect_passwords(users, os.environ if environ is None else environ)
        write_private(args.output, render(text, passwords), args.mode)
    except RenderError as exc:
        print(f"render_acl: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"render_acl: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({len(passwords)} users, mode {args.mode:o})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
