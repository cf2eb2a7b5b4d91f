"""pika stays inside `consumer_lib.amqp`: no other package module imports it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
#: bench/ is left out: its baselines measure raw pika on purpose.
PACKAGES = ("consumer_lib", "producer", "ops")
ALLOWED = ROOT / "consumer_lib" / "amqp"


def pika_imports(path: Path) -> list[int]:
    """Line numbers of every `import pika...` or `from pika... import` in `path`."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(name == "pika" or name.startswith("pika.") for name in names):
            lines.append(node.lineno)
    return lines


def test_only_the_amqp_package_imports_pika() -> None:
    """Every module outside consumer_lib/amqp (tests aside) speaks our BrokerError only."""
    offenders = {
        str(path.relative_to(ROOT)): found
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if ALLOWED not in path.parents and (found := pika_imports(path))
    }
    assert offenders == {}


def test_the_check_sees_an_import(tmp_path: Path) -> None:
    """The scan finds both import forms (so the test above can fail)."""
    module = tmp_path / "m.py"
    module.write_text("import os\nimport pika.exceptions\nfrom pika.spec import Basic\n")
    assert pika_imports(module) == [2, 3]
