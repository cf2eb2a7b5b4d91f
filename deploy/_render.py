"""What deploy/'s renderers (rabbitmq/render_definitions.py, redis/render_acl.py) share.

Each renders a service's users file from a template in git and one password per user:
the password of user `wxtoken-<role>` comes from `<PREFIX>_<ROLE>_PASSWORD`, or from the
file named by `<PREFIX>_<ROLE>_PASSWORD_FILE` (surrounding whitespace stripped), and must be
URL-safe (it goes into the service's URL unencoded): at least 16 characters of
A-Z a-z 0-9 . _ ~ -. The output is written atomically with its mode set from the start.

Standard library only (the scripts run before any venv exists). Problems are `RenderError`,
one line with no secret in it; `run` prints it on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MIN_PASSWORD_CHARS = 16
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
_USER_PREFIX = "wxtoken-"


class RenderError(Exception):
    """A problem with the template, a password or the output: one line, no secret in it."""


@dataclass(frozen=True)
class Service:
    """The service whose users are rendered: its name, URL scheme and variable prefix."""

    name: str  # "RabbitMQ", "Redis": in messages
    url: str  # "an AMQP URL", "a Redis URL": where the password goes, in messages
    variable_prefix: str  # "WXTOKEN_MQ", "WXTOKEN_REDIS"

    def password_variable(self, user: str) -> str:
        """`user`'s variable: wxtoken-producer -> <PREFIX>_PRODUCER_PASSWORD."""
        role = user.removeprefix(_USER_PREFIX)
        return f"{self.variable_prefix}_{re.sub(r'[^A-Za-z0-9]', '_', role).upper()}_PASSWORD"

    def read_password(self, user: str, environ: Mapping[str, str]) -> str | None:
        """`user`'s password from its variable or its `*_FILE` one; None when neither is set."""
        variable = self.password_variable(user)
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
            return self._check_password(text.strip(), f"{file_variable} ({path})")
        if value is not None:
            return self._check_password(value, variable)
        return None

    def _check_password(self, password: str, source: str) -> str:
        if len(password) < MIN_PASSWORD_CHARS:
            raise RenderError(f"{source}: shorter than {MIN_PASSWORD_CHARS} characters")
        if not _URL_SAFE.fullmatch(password):
            raise RenderError(
                f"{source}: only A-Z a-z 0-9 . _ ~ - may be used (it goes into {self.url} "
                "as it is); `openssl rand -hex 24` makes a good one"
            )
        return password

    def collect_passwords(self, users: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
        """Every user's password; `RenderError` naming all missing variables at once."""
        passwords: dict[str, str] = {}
        missing: list[str] = []
        for user in users:
            password = self.read_password(user, environ)
            if password is None:
                missing.append(self.password_variable(user))
            else:
                passwords[user] = password
        if missing:
            raise RenderError(
                f"no password for {len(missing)} {self.name} user(s): set {', '.join(missing)} "
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


#: Renders (template path, environment) into (output text, number of users); `RenderError`.
Renderer = Callable[[Path, Mapping[str, str]], tuple[str, int]]


def run(
    *,
    name: str,
    description: str | None,
    service: Service,
    template: Path,
    output: Path,
    renderer: Renderer,
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None,
) -> int:
    """A renderer's command line: parse `--template/--output/--mode`, render, write.

    0 on success, 1 (one line on stderr, prefixed with `name`) on any problem."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--template", type=Path, default=template, help="default: %(default)s")
    parser.add_argument("--output", type=Path, default=output, help="default: %(default)s")
    parser.add_argument(
        "--mode",
        type=_mode,
        default=0o600,
        help=f"octal mode of the output (default 600; the {service.name} container reads it "
        "as uid 999, so chown it to 999 or use 644 on a single-user machine)",
    )
    args = parser.parse_args(argv)
    try:
        text, users = renderer(args.template, os.environ if environ is None else environ)
        write_private(args.output, text, args.mode)
    except RenderError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{name}: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({users} users, mode {args.mode:o})", file=sys.stderr)
    return 0
