"""`KeyLayout`: every Redis key named in one place, with the same names as ever on the wire."""

from __future__ import annotations

import re
from pathlib import Path

from consumer_lib.wire import keys as keys_module
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.update import TokenKind

ROOT = Path(__file__).resolve().parents[4]
LAYOUT = KeyLayout("wxtoken")


def test_key_names_are_unchanged() -> None:
    """Producers of different releases share one Redis: the names must not move."""
    assert LAYOUT.token("wxapp1") == "wxtoken:token:wxapp1:access_token"
    assert LAYOUT.token("wxapp1", TokenKind.JSAPI_TICKET) == "wxtoken:token:wxapp1:jsapi_ticket"
    assert LAYOUT.version("wxapp1") == "wxtoken:version:wxapp1:access_token"
    assert LAYOUT.known == "wxtoken:known"
    assert LAYOUT.leader == "wxtoken:leader"
    assert LAYOUT.leader_epoch == "wxtoken:leader_epoch"
    assert LAYOUT.budget_count("wxapp1", "stable", "20270115") == (
        "wxtoken:budget:wxapp1:stable:20270115"
    )
    assert LAYOUT.budget_last_forced("wxapp1", "classic") == "wxtoken:budget:wxapp1:classic:last"
    assert LAYOUT.audit == "wxtoken:audit"
    assert LAYOUT.ticket_budget_corp("ww1") == "wxtoken:ticket_budget:corp:ww1"
    assert LAYOUT.ticket_budget_agent("ww1/1000002", "agent_config_ticket") == (
        "wxtoken:ticket_budget:agent:ww1/1000002:agent_config_ticket"
    )


def test_the_docstring_draws_every_key() -> None:
    """Each kind of key the layout names appears in the module's drawing."""
    doc = keys_module.__doc__ or ""
    for pattern in (
        "{prefix}:token:{app_id}:{kind}",
        "{prefix}:version:{app_id}:{kind}",
        "{prefix}:known",
        "{prefix}:leader ",
        "{prefix}:leader_epoch",
        "{prefix}:budget:{app_id}:{api}:{YYYYMMDD}",
        "{prefix}:budget:{app_id}:{api}:last",
        "{prefix}:audit",
        "{prefix}:ticket_budget:corp:{corp_id}",
        "{prefix}:ticket_budget:agent:{corp_id}/{agent_id}:{kind}",
        "{prefix}:platform:events",
    ):
        assert pattern in doc, pattern


def test_no_other_module_builds_a_key() -> None:
    """Outside keys.py no code formats a string from a key prefix."""
    builds_key = re.compile(r"""f["'][^"'\n]*\{[^}]*prefix\}:""")
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("consumer_lib", "producer", "ops")
        for path in (ROOT / package).rglob("*.py")
        if path != Path(keys_module.__file__) and builds_key.search(path.read_text())
    ]
    assert offenders == []
