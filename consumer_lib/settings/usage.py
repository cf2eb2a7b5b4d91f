"""`--help` of the programs configured only by `WXTOKEN_*` variables (`wxtoken-producer`,
`wxtoken-gateway`): what the program does and every variable it reads, derived from its
settings class, so the list cannot drift from what is read.

No default that could be a secret is printed: a default is code, not configuration, and the
only URL default (`WXTOKEN_AMQP_URL`) is the local development broker the README names.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic_settings import BaseSettings

from .loading import ENV_PREFIX

#: What `wants_help` recognises.
HELP_FLAGS = ("-h", "--help")


def wants_help(argv: Sequence[str]) -> bool:
    """True when the command line asks for help."""
    return any(arg in HELP_FLAGS for arg in argv)


def variables(cls: type[BaseSettings]) -> list[tuple[str, str]]:
    """(variable, its default as shown) for every field of `cls`, in declaration order;
    `required` for one without a default."""
    rows = []
    for name, field in cls.model_fields.items():
        if field.is_required():
            shown = "required"
        elif field.default_factory is not None:
            shown = "computed at start"
        elif field.default is None:
            shown = "unset"
        else:
            shown = str(field.default)
        rows.append((f"{ENV_PREFIX}{name.upper()}", shown))
    return rows


def usage(program: str, summary: str, cls: type[BaseSettings], *, notes: str = "") -> str:
    """The whole `--help` text of `program`."""
    rows = variables(cls)
    width = max(len(name) for name, _ in rows)
    lines = [
        f"usage: {program} [-h]",
        "",
        summary.strip(),
        "",
        "It takes no arguments: it reads these environment variables (a missing or invalid",
        "one stops it with one line naming it, exit 2):",
        "",
        *(f"  {name:<{width}}  {default}" for name, default in rows),
    ]
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines)
