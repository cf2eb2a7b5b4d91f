"""Dependencies by role: a service that uses only `consumer_lib` needs neither `requests` nor
`click`, and `consumer_lib` stands alone, never reaching into `producer/` or `ops/`. The
optional parts (the drop-ins, metrics, the gateway) import only what their own extra installs."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points, packages_distributions
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
#: What each part of the source may import beyond the standard library and the project
#: itself: the base dependencies plus these extras. A part is a package or a path under one;
#: a file belongs to the longest part its path starts with.
EXTRAS_OF: dict[str, tuple[str, ...]] = {
    "consumer_lib": (),
    "consumer_lib/metrics.py": ("metrics",),
    "consumer_lib/dropins/wechatpy_client.py": ("wechatpy",),
    "consumer_lib/dropins/requests_auth.py": ("requests",),
    "consumer_lib/dropins/httpx_auth.py": ("httpx",),
    "producer": ("producer",),
    "producer/observability/metrics.py": ("metrics",),
    "producer/observability/wiring.py": ("metrics",),  # imports prometheus-client only when asked
    "producer/platform": ("platform",),  # the registry: SQLAlchemy, Alembic, the drivers
    "producer/platform/metrics.py": ("platform", "metrics"),
    "ops": ("producer", "ops"),
    # the demo's platform: its own database (imported only when PostgreSQL is there)
    "ops/_demo_platform.py": ("producer", "ops", "platform"),
    "ops/gateway": ("gateway",),
    # the platform receiver: the gateway's web stack (Starlette, uvicorn, prometheus-client)
    "producer/platform/receiver": ("gateway",),
    "ops/broker.py": (),  # the gateway's overrides publish through it: no click, no requests
}
#: consumer_lib's modules that need an extra; the rest must import with the base alone.
OPTIONAL_MODULES = ("consumer_lib.metrics", "consumer_lib.dropins.")
#: Third-party packages the optional extras bring; plain consumer_lib loads none of them.
OPTIONAL_TOP_LEVEL = {"prometheus_client", "wechatpy", "httpx", "starlette", "uvicorn"} | {
    "sqlalchemy",
    "alembic",
    "psycopg",
    "pymysql",
}
#: What the `platform` extra brings: only a producer with platforms configured loads them.
PLATFORM_TOP_LEVEL = {"sqlalchemy", "alembic", "psycopg", "pymysql"}

#: Imports every module of a package (but those starting with a skipped prefix, given
#: comma-separated), then more modules, in a fresh interpreter; prints the top-level names
#: of what got loaded.
IMPORT_ALL = """
import json, pkgutil, importlib, sys
package, also = sys.argv[1], sys.argv[3:]
skip = tuple(prefix for prefix in sys.argv[2].split(",") if prefix)
root = importlib.import_module(package)
for info in pkgutil.walk_packages(root.__path__, package + "."):
    if not skip or not info.name.startswith(skip):
        importlib.import_module(info.name)
for name in also:
    importlib.import_module(name)
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


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
        names.add(_normal(match.group(0)))
    return names


def _normal(name: str) -> str:
    """A distribution name in its normal form (PEP 503): prometheus_client -> prometheus-client."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _part_of(path: Path) -> str:
    """The longest `EXTRAS_OF` part that `path` (a source file) falls under."""
    relative = path.relative_to(ROOT).as_posix()
    parts = [p for p in EXTRAS_OF if relative == p or relative.startswith(p + "/")]
    return max(parts, key=len)


def _files_of(part: str) -> list[Path]:
    """The source files of one `EXTRAS_OF` part, without those of its longer parts."""
    where = ROOT / part
    files = [where] if where.is_file() else sorted(where.rglob("*.py"))
    return [f for f in files if _part_of(f) == part]


def _loaded_by_importing(package: str, skip: str = "", *also: str) -> set[str]:
    """Top-level names loaded by importing `package`'s modules but those starting with one
    of the comma-separated prefixes `skip`, then the modules `also`."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, package, skip, *also],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert package.partition(".")[0] in loaded
    return loaded


def _third_party_imports(package: str, files: list[Path] | None = None) -> set[str]:
    """Top-level names of the modules `package` (or just `files`) imports that are neither
    stdlib nor ours."""
    found: set[str] = set()
    for path in files if files is not None else (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.partition(".")[0])
    return found - set(sys.stdlib_module_names) - {"__future__"}


def test_importing_consumer_lib_loads_neither_requests_nor_click_nor_our_other_packages() -> None:
    """Every consumer_lib module but the optional ones imported in a fresh interpreter: no
    requests, click, producer, ops nor any optional extra's package among the loaded ones."""
    loaded = _loaded_by_importing("consumer_lib", ",".join(OPTIONAL_MODULES))
    unwanted = {"requests", "click", "producer", "ops"} | OPTIONAL_TOP_LEVEL
    assert loaded.isdisjoint(unwanted), sorted(loaded & unwanted)


def test_importing_every_consumer_lib_module_still_loads_none_of_our_other_packages() -> None:
    """With the drop-ins and metrics imported too (their SDKs installed), consumer_lib still
    reaches into neither producer nor ops (click may come: httpx loads it when installed)."""
    loaded = _loaded_by_importing("consumer_lib")
    assert {"prometheus_client", "wechatpy", "httpx"} <= loaded, "the optional parts were loaded"
    assert loaded.isdisjoint({"producer", "ops"}), sorted(loaded & {"producer", "ops"})


def test_the_gateway_loads_neither_click_nor_requests() -> None:
    """Every module of the gateway, and the broker module its overrides publish through,
    imported in a fresh interpreter: `wxtoken[gateway]` is enough to run it, so click and
    requests must not be loaded."""
    loaded = _loaded_by_importing("ops.gateway", "", "ops.broker")
    assert {"starlette", "uvicorn", "prometheus_client"} & loaded
    assert loaded.isdisjoint({"click", "requests"}), sorted(loaded & {"click", "requests"})


def test_the_plain_producer_loads_no_database_library() -> None:
    """Every producer module but the platform registry's, and the entry point, imported in a
    fresh interpreter: without WXTOKEN_PLATFORM_DB_URL nothing of the `platform` extra
    (SQLAlchemy, Alembic, the drivers) is loaded."""
    # Named from the files (walking the packages would import producer.platform's): all but
    # the platform's, which only the entry point's `open_platform_registry` imports, and the
    # platform's contract (events, errors), which needs nothing.
    contract = {"producer/platform/__init__.py", "producer/platform/errors.py"}
    contract.add("producer/platform/events.py")
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in sorted((ROOT / "producer").rglob("*.py"))
        if not path.relative_to(ROOT).as_posix().startswith("producer/platform/")
        or path.relative_to(ROOT).as_posix() in contract
    ]
    assert "producer.__main__" in modules
    assert "producer.platform.errors" in modules
    script = (
        "import importlib, json, sys\nfor name in sys.argv[1:]: importlib.import_module(name)\n"
    )
    script += "print(json.dumps(sorted({n.partition('.')[0] for n in sys.modules})))"
    result = subprocess.run(
        [sys.executable, "-c", script, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert {"producer", "redis", "requests"} <= loaded
    assert loaded.isdisjoint(PLATFORM_TOP_LEVEL), sorted(loaded & PLATFORM_TOP_LEVEL)


def test_the_platform_registry_loads_its_extra() -> None:
    """The registry's modules import SQLAlchemy and Alembic (the `platform` extra)."""
    loaded = _loaded_by_importing("producer.platform", "producer.platform.db.migrations.")
    assert {"sqlalchemy", "alembic"} <= loaded


def test_consumer_lib_source_imports_nothing_from_producer_or_ops() -> None:
    """No module of consumer_lib names producer or ops in an import, even a lazy one."""
    assert _third_party_imports("consumer_lib") & {"producer", "ops"} == set()


def test_base_dependencies_are_what_consumer_lib_needs() -> None:
    """The base install is pika, redis, pydantic, pydantic-settings, cryptography (keys)
    and PyNaCl (signature checks)."""
    base = _names(_project()["dependencies"])  # type: ignore[arg-type]
    assert base == {"pika", "redis", "pydantic", "pydantic-settings", "cryptography", "pynacl"}
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert "requests" in _names(extras["producer"])
    assert "click" in _names(extras["ops"])
    assert "wxtoken[producer]" in {line.replace(" ", "") for line in extras["ops"]}


def test_optional_extras_are_there_and_dev_installs_them_all() -> None:
    """The gateway, metrics and drop-in extras bring their packages, and the `dev` dependency
    group (what `make test` installs; not an extra users see) has them all."""
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert {"starlette", "uvicorn", "prometheus-client"} <= _names(extras["gateway"])
    assert _names(extras["gateway"]).isdisjoint({"click", "requests", "wxtoken"})
    assert _names(extras["metrics"]) == {"prometheus-client"}
    assert _names(extras["wechatpy"]) == {"wechatpy"}
    assert _names(extras["requests"]) == {"requests"}
    assert _names(extras["httpx"]) == {"httpx"}
    assert "dev" not in extras
    in_dev: set[str] = set()
    for line in _pyproject()["dependency-groups"]["dev"]:
        match = re.fullmatch(r"wxtoken\[([a-z,]+)\]", line.replace(" ", ""))
        if match:
            in_dev |= set(match[1].split(","))
    assert in_dev == set(extras)


@pytest.mark.parametrize("part", sorted(EXTRAS_OF))
def test_each_part_imports_only_what_its_extras_install(part: str) -> None:
    """What a package (or an optional module of one) imports from outside is installed by
    the base plus its extras."""
    project = _project()
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    allowed = _names(project["dependencies"])  # type: ignore[arg-type]
    for extra in EXTRAS_OF[part]:
        allowed |= {n for n in _names(extras[extra]) if n != "wxtoken"}
    ours = {"consumer_lib", "producer", "ops"}
    distributions = packages_distributions()
    files = _files_of(part)
    assert files, f"no source file under {part}"
    for module in sorted(_third_party_imports(part, files) - ours):
        names = {_normal(name) for name in distributions.get(module, [module])}
        assert names & allowed, f"{part} imports {module}, installed by none of {allowed}"


def test_console_scripts_load_with_the_dev_install() -> None:
    """The four console scripts are installed and their entry points import."""
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
    assert scripts["wxtoken-producer"].value == "producer.__main__:main"
    assert scripts["wxtoken"].value == "ops.cli:main"
    assert scripts["wxtoken-gateway"].value == "ops.gateway.__main__:main"
    receiver = "producer.platform.receiver.__main__:main"
    assert scripts["wxtoken-platform-receiver"].value == receiver
    for name in ("wxtoken-producer", "wxtoken", "wxtoken-gateway", "wxtoken-platform-receiver"):
        assert callable(scripts[name].load())


def test_the_gateway_never_imports_the_click_cli() -> None:
    """No module of ops/gateway imports ops.cli (click), even lazily: its overrides publish
    through ops.broker."""
    imported: set[str] = set()
    for path in (ROOT / "ops" / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert "ops.broker" in imported
    assert not {name for name in imported if name == "ops.cli" or name.startswith("ops.cli.")}
