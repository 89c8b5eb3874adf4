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
    "engine.uploads",  # send_model: a model file to the engine in parts, through the interface
    # ui/shared.py builds the engines it hands the pages: the local one in this process (its weights checked first,
    # offline in a second), or the remote client
    "engine.local", "engine.remote", "engine.settings", "engine.hub", "engine.doctor",
}  # fmt: skip
# (engine.doctor: the local models, checked where the engine could not start)
BUILDERS = {"engine.local", "engine.remote", "engine.settings", "engine.hub", "engine.doctor"}  # only ui/shared.py


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


def package(module: str) -> str:
    """The node a module counts as among packages: a subpackage of engine as a whole, a top-level module alone."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_between_packages():
    """Issue 31: no cycle among the engine's packages either (a subpackage as one node, a top-level module alone),
    function-local imports counted: rules below schema, render above models, the services above render, the local
    engine above the services (engine.tune.cli talks to the engine interface and is handed its engine)."""
    engine = modules("engine")
    graph: dict[str, set[str]] = {}
    for name, path in engine.items():
        for module, names, _ in imports(path, name):
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in engine] or [module]
            graph.setdefault(package(name), set()).update(package(t) for t in targets if t in engine)
    for start in list(graph):  # whatever a package reaches, it must not reach itself again
        seen, todo = set(), [t for t in graph.get(start, ()) if t != start]
        while todo:
            node = todo.pop()
            assert node != start, f"{start} imports, through other packages, itself"
            if node not in seen:
                seen.add(node)
                todo += [t for t in graph.get(node, ()) if t != node]
    cli = [m for m, _, _ in imports(engine["engine.tune.cli"], "engine.tune.cli")]
    assert not [m for m in cli if m in ("engine.local", "engine.retrieval") or m.startswith("engine.services")], cli


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


def engine_reads(tree: ast.AST) -> list[tuple[str, str | None, int]]:
    """Every member read off a name `engine` in a module: (member, the member read off that in turn, line), as
    `engine.jobs.room` → ("jobs", "room", n), `engine.follow` → ("follow", None, n), `getattr(engine, "x")` too."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "engine":
            found.append((node.attr, None, node.lineno))
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "engine"
        ):
            found.append((node.value.attr, node.attr, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == "engine"
            and isinstance(node.args[1], ast.Constant)
        ):
            found.append((node.args[1].value, None, node.lineno))
    return found


def test_the_server_reaches_its_engine_only_through_the_interface():
    """Issue 31: engine/server/ reads only what `api.Engine` declares (its services and their operations, its own
    methods), so it serves any engine, a `RemoteEngine` too; and it imports no engine implementation."""
    from engine import api

    declared = set(api.Engine.__annotations__) | {n for n in vars(api.Engine) if not n.startswith("_")}
    server = {n: p for n, p in modules("engine").items() if n.startswith("engine.server")}
    assert server
    for name, path in server.items():
        for member, inner, line in engine_reads(ast.parse(path.read_text())):
            assert member in declared, f"{path.name}:{line} reads engine.{member}, which api.Engine does not declare"
            if inner is not None and member in api.SERVICES:
                ops = api.operations(api.SERVICES[member])
                assert inner in ops, f"{path.name}:{line} reads engine.{member}.{inner}, not an operation of {member}"
        for imported, names, _ in imports(path, name):
            targets = [f"{imported}.{n}" for n in names] + [imported]
            for banned in ("engine.local", "engine.remote", "engine.settings", "engine.jobs", "engine.services"):
                assert not any(t == banned or t.startswith(banned + ".") for t in targets), f"{name} imports {banned}"


def test_a_render_result_names_no_file_on_the_engine_machine():
    """Issue 31: a result carries its images as bytes and its files relative to the data folder, no `paths`."""
    from engine import api

    assert "paths" not in api.RenderResult.model_fields
    assert "files" in api.RenderResult.model_fields
