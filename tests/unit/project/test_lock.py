"""The venv the tests run in holds exactly uv.lock's versions: a floating install (a plain
`pip install -e .`, a package added by hand) cannot pass unnoticed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.conftest import uv_binary

ROOT = Path(__file__).resolve().parents[3]
REQUIREMENT = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;]+)\s*(?:;\s*(.+))?$")


def _locked_for_this_interpreter() -> dict[str, str]:
    """name -> version of every locked package whose markers hold here (all extras, dev)."""
    exported = subprocess.run(
        [uv_binary(), "export", "--frozen", "--all-extras", "--no-hashes", "--no-emit-project"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    locked: dict[str, str] = {}
    for line in exported.splitlines():
        match = REQUIREMENT.match(line.strip())
        if match and (match[3] is None or Marker(match[3]).evaluate()):
            locked[canonicalize_name(match[1])] = match[2]
    return locked


@pytest.mark.skipif(
    os.environ.get("WXTOKEN_UNLOCKED") == "1",
    reason="make test-lowest / test-latest run against other versions on purpose",
)
def test_the_installed_distributions_are_exactly_the_lock() -> None:
    """Every distribution in this venv is locked at its version, and every locked one is here."""
    assert sys.prefix != sys.base_prefix, "the tests run in a venv (make test creates .venv)"
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert installed.pop("wxtoken") == project["version"]
    locked = _locked_for_this_interpreter()
    differ = {
        name: (installed.get(name), locked.get(name))
        for name in installed.keys() | locked.keys()
        if installed.get(name) != locked.get(name)
    }
    assert not differ, f"installed != uv.lock (name: (installed, locked)): {differ}"
