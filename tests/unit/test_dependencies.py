"""Dependencies by role: a service that uses only `consumer_lib` needs neither `requests` nor
`click`, and `consumer_lib` stands alone, never reaching into `producer/` or `ops/`."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points, packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("consumer_lib", "producer", "ops")
#: What each package may import beyond the standard library and the project itself.
EXTRAS_OF = {"consumer_lib": (), "producer": ("producer",), "ops": ("producer", "ops")}

#: Imports every consumer_lib module in a fresh interpreter; prints what got loaded.
IMPORT_ALL = """
import json, pkgutil, importlib, sys
import consumer_lib
for info in pkgutil.walk_packages(consumer_lib.__path__, "consumer_lib."):
    importlib.import_module(info.name)
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def _project() -> dict[str, object]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(project, dict)
    return project


def _names(requirements: list[str]) -> set[str]:
    """The distribution names of requirement lines ("redis>=5,<9" -> "redis")."""
    names = set()
    for line in requirements:
        match = re.match(r"[A-Za-z0-9._-]+", line)
        assert match, line
        names.add(match.group(0).lower())
    return names


def _third_party_imports(package: str) -> set[str]:
    """Top-level names of the modules `package` imports that are neither stdlib nor ours."""
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.partition(".")[0])
    return found - set(sys.stdlib_module_names) - {"__future__"}


def test_importing_consumer_lib_loads_neither_requests_nor_click_nor_our_other_packages() -> None:
    """Every consumer_lib module imported in a fresh interpreter: no requests, click,
    producer or ops among the loaded modules."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "consumer_lib" in loaded
    assert loaded.isdisjoint({"requests", "click", "producer", "ops"}), sorted(loaded)


def test_consumer_lib_source_imports_nothing_from_producer_or_ops() -> None:
    """No module of consumer_lib names producer or ops in an import, even a lazy one."""
    assert _third_party_imports("consumer_lib") & {"producer", "ops"} == set()


def test_base_dependencies_are_what_consumer_lib_needs() -> None:
    """The base install is pika, redis, pydantic, pydantic-settings and cryptography."""
    base = _names(_project()["dependencies"])  # type: ignore[arg-type]
    assert base == {"pika", "redis", "pydantic", "pydantic-settings", "cryptography"}
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert "requests" in _names(extras["producer"])
    assert "click" in _names(extras["ops"])
    assert "wxtoken[producer]" in {line.replace(" ", "") for line in extras["ops"]}
    assert "wxtoken[producer,ops]" in {line.replace(" ", "") for line in extras["dev"]}


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_what_its_extras_install(package: str) -> None:
    """What a package imports from outside is installed by the base plus its extras."""
    project = _project()
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    allowed = _names(project["dependencies"])  # type: ignore[arg-type]
    for extra in EXTRAS_OF[package]:
        allowed |= {n for n in _names(extras[extra]) if n != "wxtoken"}
    ours = {"consumer_lib", "producer", "ops"}
    distributions = packages_distributions()
    for module in sorted(_third_party_imports(package) - ours):
        names = {name.lower() for name in distributions.get(module, [module])}
        assert names & allowed, f"{package} imports {module}, installed by none of {allowed}"


def test_console_scripts_load_with_the_dev_install() -> None:
    """Both console scripts are installed and their entry points import."""
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
    assert scripts["wxtoken-producer"].value == "producer.__main__:main"
    assert scripts["wxtoken"].value == "ops.cli:main"
    for name in ("wxtoken-producer", "wxtoken"):
        assert callable(scripts[name].load())
