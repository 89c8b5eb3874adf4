"""The house plan, checked: pages and UI reach the engine only through its interface, no import cycles, no private
names across modules, a thin facade, short server functions (docs: README "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

# What a page or a UI module may import from the engine: the interface and its types, errors, and pure helpers
# (no model, no store, no data-folder path in any of them).
ALLOWED_IN_UI = {
    "engine.api", "engine.errors", "engine.schema", "engine.images", "engine.masks", "engine.evaluation",
    "engine.arena", "engine.sweep", "engine.tables", "engine.catalog.options", "engine.catalog.prompts",
    "engine.catalog.tagging", "engine.rules.models", "engine.rules.modes",
    "engine.rules.controlnets",
    "engine.tune.splits",
    # ui/shared.py builds the engines it hands the pages: the local one in this process (its weights checked first,
    # offline in a second), or the remote client
    "engine.local", "engine.remote", "engine.settings", "engine.hub",
}  # fmt: skip
BUILDERS = {"engine.local", "engine.remote", "engine.settings", "engine.hub"}  # only ui/shared.py


def modules(root: str) -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / root).rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, name: str) -> list[tuple[str, list[str], bool]]:
    """(module, names, at module level) for every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((module, [a.name for a in node.names], id(node) in top))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], id(node) in top) for a in node.names]
    return found


def test_pages_and_ui_use_only_the_engine_interface_and_pure_helpers():
    engine = modules("engine")
    for name, path in {**modules("pages"), **modules("ui")}.items():
        for imported, names, _ in imports(path, name):
            submodules = [f"{imported}.{n}" for n in names if f"{imported}.{n}" in engine]
            for module in submodules or [imported]:
                if not module.startswith("engine"):
                    continue
                assert module in ALLOWED_IN_UI, f"{name} imports {module}"
                if module in BUILDERS:
                    assert name == "ui.shared", f"{name} builds an engine ({module}); only ui/shared.py does"
    for path in [*(REPO / "pages").glob("*.py"), *(REPO / "ui").glob("*.py")]:
        assert "local_only" not in path.read_text(), f"{path.name} still refuses Remote mode"
        # a ControlNet's map comes from the engine (renders.control_preview), where its preprocessor's model is
        assert "control_map" not in path.read_text(), f"{path.name} makes a ControlNet map in the UI process"


def test_the_engine_has_no_import_cycles_and_imports_no_private_names():
    engine = modules("engine")
    graph: dict[str, set[str]] = {name: set() for name in engine}
    for name, path in engine.items():
        for module, names, _ in imports(path, name):
            for private in names:
                assert not (private.startswith("_") and not private.startswith("__") and module.startswith("engine")), (
                    f"{name} imports the private {module}.{private}"
                )
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in engine] or [module]
            graph[name] |= {t for t in targets if t in engine and t != name}

    # every cycle through imports, at module level or inside functions alike
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_facade_is_thin_and_server_functions_are_short():
    assert len((REPO / "engine" / "local.py").read_text().splitlines()) < 300
    for path in (REPO / "engine" / "server").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{path.name}: {node.name} is {length} lines"


def test_every_interface_operation_is_served_and_implemented_remotely():
    from engine import api
    from engine.remote import RemoteEngine
    from engine.rpc import operations

    remote = RemoteEngine("http://127.0.0.1:9")  # nothing is called: only what it implements is looked at
    for service, cls in api.SERVICES.items():
        declared = set(api.operations(cls))
        assert declared == set(operations()[service])
        implemented = getattr(remote, service)
        assert not getattr(type(implemented), "__abstractmethods__", None), f"remote {service} is incomplete"


def test_a_controlnet_type_is_named_in_its_registry_only():
    """Adding a ControlNet type is one registry entry (engine/rules/controlnets.py): no other module spells a type's
    name, hub id or tiny folder ('canny' is also an edge mode's name, so only its id and folder count)."""
    from typing import get_args

    from engine.rules.controlnets import CONTROLS
    from engine.schema import EdgeMode

    spelled = {c.default_id for c in CONTROLS.values()} | {c.tiny_folder for c in CONTROLS.values()}
    spelled |= set(CONTROLS) - set(get_args(EdgeMode))
    registry = REPO / "engine" / "rules" / "controlnets.py"
    found = []
    for root in ("engine", "ui", "pages"):
        for path in sorted((REPO / root).rglob("*.py")):
            if path == registry:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in spelled:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert not found, "ControlNet types named outside their registry: " + "; ".join(found)
