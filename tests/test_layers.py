"""Layers import downward only: logic (no Dagster) -> resources -> assets and checks -> jobs, sensors ->
definitions -> entry points. Asset modules do not import each other. Read from the source, so the rule holds."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("ft_assets", "resources", "data_checks")
LOGIC, RESOURCES, ASSETS, JOBS, DEFINITIONS, ENTRY = range(6)
NAMES = ["logic", "resources", "assets/checks", "jobs/sensors", "definitions", "entry points"]
ENTRY_POINTS = {"ft_assets.cli", "ft_assets.recipe_run"}
JOB_MODULES = {"ft_assets.jobs", "ft_assets.automation.sensors", "ft_assets.automation.ingest"}
ASSET_DECORATORS = ("@asset", "@multi_asset", "@asset_check", "@multi_asset_check")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Project modules ``path`` imports (at module level or inside functions), resolved to the known module."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import module` imports the module; `from pkg import name` imports pkg (its __init__)
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.split(".")[0] in PACKAGES:
                out.add(name)
    return out


def layer(name: str, path: Path) -> int:
    source = path.read_text()
    if name == "ft_assets.definitions":
        return DEFINITIONS
    if name in ENTRY_POINTS or name.startswith("ft_assets.serving.cli"):
        return ENTRY
    if name in JOB_MODULES:
        return JOBS
    if any(line.lstrip().startswith(ASSET_DECORATORS) for line in source.splitlines()):
        return ASSETS
    uses_dagster = any(isinstance(n, (ast.Import, ast.ImportFrom)) and any(
        (getattr(n, "module", None) or a.name).split(".")[0] == "dagster" for a in n.names)
        for n in ast.walk(ast.parse(source)))
    builds_resources = name.startswith("resources.") and "from resources import" in source
    return RESOURCES if uses_dagster or builds_resources else LOGIC


def upward_arrows() -> list[str]:
    found = modules()
    known = set(found)
    layers = {name: layer(name, path) for name, path in found.items()}
    arrows = []
    for name, path in sorted(found.items()):
        if path.name == "__init__.py":
            continue  # package re-exports (resources/__init__ is lazy, PEP 562)
        for target in sorted(imports_of(path, known) - {name}):
            # resources/__init__ re-exports the resources (lazily, PEP 562); other packages' __init__ are logic
            target_layer = RESOURCES if target == "resources" else layers[target]
            if target_layer > layers[name]:
                arrows.append(f"{name} ({NAMES[layers[name]]}) -> {target} ({NAMES[target_layer]})")
            elif layers[name] == ASSETS and target_layer == ASSETS:
                arrows.append(f"{name} -> {target}: asset modules import no other asset module")
    return arrows


def test_no_module_imports_upward_or_sideways_between_asset_modules():
    arrows = upward_arrows()
    assert not arrows, f"{len(arrows)} upward import(s):\n" + "\n".join(arrows)


def test_the_layer_rule_sees_a_real_upward_import(tmp_path, monkeypatch):
    """The checker itself: a logic module that imports an asset module is reported."""
    found = modules()
    logic = next(n for n, p in found.items() if layer(n, p) == LOGIC and p.name != "__init__.py")
    asset = next(n for n, p in found.items() if layer(n, p) == ASSETS)
    fake = tmp_path / "fake.py"
    fake.write_text(f"import {asset}\n")
    assert asset in imports_of(fake, set(found))
    assert layer(logic, found[logic]) < layer(asset, found[asset])
