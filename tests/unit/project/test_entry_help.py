"""`wxtoken-producer --help` and `wxtoken-gateway --help`: what they do and every variable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from consumer_lib.settings.usage import variables
from ops.gateway.__main__ import main as gateway_main
from ops.gateway._settings import GatewaySettings
from producer.__main__ import main as producer_main
from producer.settings import ProducerSettings

REPO_ROOT = Path(__file__).resolve().parents[3]
PROGRAMS = [
    ("producer", producer_main, ProducerSettings, "wxtoken-producer"),
    ("ops.gateway", gateway_main, GatewaySettings, "wxtoken-gateway"),
]


@pytest.mark.parametrize(("module", "main", "settings", "program"), PROGRAMS)
def test_help_lists_every_variable_and_needs_no_configuration(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    module: str,
    main: Callable[[list[str] | None], int],
    settings: type[BaseSettings],
    program: str,
) -> None:
    """`--help` exits 0 without any setting and names every field of the settings class
    as its `WXTOKEN_*` variable, with the required one marked."""
    monkeypatch.chdir(tmp_path)  # no .env
    for name in list(os.environ):
        if name.startswith("WXTOKEN_"):
            monkeypatch.delenv(name)
    assert main(["--help"]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out.startswith(f"usage: {program}")
    assert "configuration error" not in out.out
    for name in settings.model_fields:
        assert f"WXTOKEN_{name.upper()} " in out.out
    required = dict(variables(settings))
    assert "required" in required.values()
    assert main(["--bogus"]) == 2


@pytest.mark.parametrize(("module", "main", "settings", "program"), PROGRAMS)
def test_help_of_the_real_command_line(
    module: str, main: object, settings: type[BaseSettings], program: str, tmp_path: Path
) -> None:
    """`python -m {module} --help` reads its own command line (the console script does the
    same): exit 0, the usage on stdout, nothing on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXTOKEN_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {program}")
    assert "WXTOKEN_REDIS_URL" in done.stdout
