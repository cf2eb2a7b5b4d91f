"""deploy/prometheus/alerts.yml: valid rules, unit-tested with promtool, over metrics that
the collectors really export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
ALERTS = {
    "WxTokenExpiringWithoutSuccessor",
    "WxTokenNoLeader",
    "WxTokenRefreshFailing",
    "WxTokenBudgetNearlySpent",
    "WxTokenForeignRefresherSuspected",
    "WxTokenIpNotWhitelisted",
    "WxTokenPlatformTicketStale",
    "WxTokenPlatformTicketExpired",
    "WxTokenPlatformTicketRefused",
    "WxTokenPlatformNeedsReauthorization",
    "WxTokenPlatformPushesWaiting",
    "WxTokenPlatformRegistryDown",
}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (make tools: apt-get install prometheus)"
        if IN_CI:
            pytest.fail(f"{message}, and CI=true requires it")
        pytest.skip(message)
    return found


def _rules() -> list[dict[str, object]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    """`promtool check rules` accepts the file."""
    result = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    """Each alert fires on its situation and not on a healthy one (alerts.test.yml)."""
    result = subprocess.run(
        [_promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_there_and_tested() -> None:
    """The alerts exist, each with a severity, and each is exercised by a rule test."""
    rules = _rules()
    assert {r["alert"] for r in rules} == ALERTS
    assert all(r["labels"]["severity"] in ("warning", "critical") for r in rules)  # type: ignore[index]
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text(encoding="utf-8")))
    assert tested == ALERTS


def test_alerts_use_only_exported_metrics() -> None:
    """Every metric an alert names is one our collectors export (they cannot drift apart)."""
    exported = set()
    for source in (
        ROOT / "producer" / "observability" / "metrics.py",
        ROOT / "producer" / "platform" / "metrics.py",
        ROOT / "consumer_lib" / "metrics.py",
    ):
        text = source.read_text(encoding="utf-8")
        exported |= set(re.findall(r'"(wxtoken_[a-z_]+)"', text))
    counters = {f"{name}_total" for name in exported}
    named = set()
    for rule in _rules():
        expr = str(rule["expr"])
        named |= set(re.findall(r"\b(wxtoken_[a-z_]+)\b", expr))
        for pattern in re.findall(r'__name__=~"([^"]+)"', expr):
            matching = {m for m in exported if re.fullmatch(pattern, m)}
            assert len(matching) >= 2, pattern
    named = {n for n in named if not n.endswith("_")}
    assert named <= exported | counters, named - exported - counters
