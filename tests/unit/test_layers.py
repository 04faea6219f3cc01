"""Three layers a reader can see in the tree, checked on every module's imports.

* the core (``labelloop/``) names no service: only the composition (``labelloop/composition.py``,
  the one registry of services) and the CLI, the entry point, do;
* each service imports the core and ``schemas/``, never another service;
* the contracts (``schemas/``) import neither, but the generator that documents the services;
* no product module imports the development tools (``tools/labelloop_tools``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = {
    "ingest": "services/ingest/ingest",
    "jobgen": "services/jobgen/jobgen",
    "webhooks": "services/webhooks/webhooks",
    "trainer": "services/trainer/trainer",
    "labeler_assist": "services/labeler-assist/labeler_assist",
}
TOOLS = "labelloop_tools"
COMPOSITION = {"labelloop/composition.py", "labelloop/cli.py"}
"""The modules of ``labelloop/`` that compose the services (the registry, the entry point)."""
REGISTRY_USERS = {"labelloop/serve.py", "labelloop/migrations/__init__.py"}
"""The core modules that read the registry (``labelloop replay`` gets it from the CLI)."""


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function (absolute imports), and
    every module it names to ``importlib.import_module``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def packages(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_core_names_no_service_and_no_tool() -> None:
    offending = {}
    for path in modules("labelloop"):
        name = relative(path)
        if name in COMPOSITION:
            continue
        named = packages(imported(path)) & {*SERVICE_PACKAGES, TOOLS}
        if named:
            offending[name] = sorted(named)
    assert not offending, f"the core imports services or tools: {offending}"


def test_only_the_named_core_modules_read_the_registry() -> None:
    users = {
        relative(path)
        for path in modules("labelloop")
        if relative(path) not in COMPOSITION
        and any(name.split(".")[:2] == ["labelloop", "composition"] for name in imported(path))
    }
    assert users == REGISTRY_USERS


def test_services_do_not_import_each_other() -> None:
    offending = {}
    for package, folder in SERVICE_PACKAGES.items():
        for path in modules(folder):
            others = packages(imported(path)) & (set(SERVICE_PACKAGES) - {package})
            if others:
                offending[relative(path)] = sorted(others)
    assert not offending, f"services import other services: {offending}"


def test_no_product_module_imports_the_development_tools() -> None:
    product = [*modules("labelloop"), *modules("schemas"), *modules("services")]
    offending = [relative(path) for path in product if TOOLS in packages(imported(path))]
    assert not offending, offending


def test_the_contracts_import_neither_the_core_nor_the_services() -> None:
    offending = {}
    for path in modules("schemas"):
        if relative(path) == "schemas/generate.py":  # documents the services: reads them
            continue
        named = packages(imported(path)) & {"labelloop", *SERVICE_PACKAGES}
        if named:
            offending[relative(path)] = sorted(named)
    assert not offending, offending


def test_the_checks_see_the_tree(tmp_path: Path) -> None:
    """A moved folder, or an import form the reader misses, would make every check above pass
    vacuously."""
    from labelloop.composition import SERVICES

    assert all((ROOT / folder / "app.py").exists() for folder in SERVICE_PACKAGES.values())
    assert {entry.app.split(".")[0] for entry in SERVICES} == {*SERVICE_PACKAGES, "labelloop"}
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import importlib\n"
        "def lazy():\n"
        "    from jobgen.models import Job\n"
        "    import trainer.queue\n"
        "    return importlib.import_module('webhooks.app')\n"
    )
    assert packages(imported(probe)) >= {"jobgen", "trainer", "webhooks"}
