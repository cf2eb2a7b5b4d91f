#!/usr/bin/env python3
"""Render RabbitMQ's definitions.json from definitions.template.json and three passwords.

The template (in git) holds the vhost, the users without passwords, their permissions and
the exchanges. This script adds each user's `password_hash`, computed the way RabbitMQ's
`rabbit_password_hashing_sha256` does (base64 of a random 4-byte salt followed by
SHA-256(salt + UTF-8 password)), and writes the result (not in git) for `load_definitions`.

The password of user `wxtoken-<role>` comes from the variable `WXTOKEN_MQ_<ROLE>_PASSWORD`,
or from the file named by `WXTOKEN_MQ_<ROLE>_PASSWORD_FILE` (surrounding whitespace is
stripped). Passwords go into AMQP URLs unencoded, so they must be URL-safe: at least
16 characters of A-Z a-z 0-9 . _ ~ - (`openssl rand -hex 24` makes one).

    python3 deploy/rabbitmq/render_definitions.py [--output PATH] [--mode 644]

Standard library only. Any problem prints one line on stderr and exits 1; the passwords
are never printed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "definitions.template.json"
OUTPUT = HERE / "definitions.json"
HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
SALT_BYTES = 4
MIN_PASSWORD_CHARS = 16
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
_USER_PREFIX = "wxtoken-"


class RenderError(Exception):
    """A problem with the template, a password or the output: one line, no secret in it."""


def password_variable(user: str) -> str:
    """The variable holding `user`'s password: wxtoken-producer -> WXTOKEN_MQ_PRODUCER_PASSWORD."""
    role = user.removeprefix(_USER_PREFIX)
    return f"WXTOKEN_MQ_{re.sub(r'[^A-Za-z0-9]', '_', role).upper()}_PASSWORD"


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


def _check_password(password: str, source: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise RenderError(f"{source}: shorter than {MIN_PASSWORD_CHARS} characters")
    if not _URL_SAFE.fullmatch(password):
        raise RenderError(
            f"{source}: only A-Z a-z 0-9 . _ ~ - may be used (it goes into an AMQP URL "
            "as it is); `openssl rand -hex 24` makes a good one"
        )
    return password


def read_password(user: str, environ: Mapping[str, str]) -> str | None:
    """`user`'s password from its variable or its `*_FILE` variable; None when neither is set."""
    variable = password_variable(user)
    file_variable = f"{variable}_FILE"
    value = environ.get(variable) or None
    path = environ.get(file_variable) or None
    if value is not None and path is not None:
        raise RenderError(f"set {variable} or {file_variable}, not both")
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise RenderError(f"{file_variable}: cannot read {path}: {reason}") from None
        return _check_password(text.strip(), f"{file_variable} ({path})")
    if value is not None:
        return _check_password(value, variable)
    return None


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
            f"no password for {len(missing)} RabbitMQ user(s): set {', '.join(missing)} "
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


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal file mode: {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"not a file mode: {text!r}")
    return mode


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Render the definitions; 0 on success, 1 (one line on stderr) on any problem."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--template", type=Path, default=TEMPLATE, help="default: %(default)s")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: %(default)s")
    parser.add_argument(
        "--mode",
        type=_mode,
        default=0o600,
        help="octal mode of the output (default 600; the RabbitMQ container reads it as "
        "uid 999, so chown it to 999 or use 644 on a single-user machine)",
    )
    args = parser.parse_args(argv)
    try:
        template = load_template(args.template)
        passwords = collect_passwords(
            template_users(template), os.environ if environ is None else environ
        )
        definitions = render(template, passwords)
        write_private(args.output, json.dumps(definitions, indent=2) + "\n", args.mode)
    except RenderError as exc:
        print(f"render_definitions: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"render_definitions: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({len(passwords)} users, mode {args.mode:o})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
