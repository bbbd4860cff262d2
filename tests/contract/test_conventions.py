"""Code conventions that keep the services easy to change (DESIGN.md §6): every service folder
has the same shape, domain modules never import gRPC, every module says what it is for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "query_understanding", "retrieval", "ranking", "events")
# The gRPC edge of a service: everything else in its folder is domain logic.
ADAPTER_MODULES = {"__main__.py", "server.py", "servicer.py", "downstream.py"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_service_folders_share_one_shape(service):
    folder = ROOT / "services" / service
    for name in ("__init__.py", "__main__.py", "config.py", "server.py", "servicer.py"):
        assert (folder / name).is_file(), f"services/{service}/{name} is missing"


@pytest.mark.parametrize("service", SERVICES)
def test_domain_modules_never_import_grpc(service):
    for path in sorted((ROOT / "services" / service).glob("*.py")):
        if path.name in ADAPTER_MODULES:
            continue
        grpc_imports = {m for m in imported_modules(path) if m == "grpc" or m.startswith(("grpc.", "grpc_"))}
        assert not grpc_imports, f"{path.relative_to(ROOT)} imports {sorted(grpc_imports)}"


def test_every_module_has_a_docstring():
    missing = []
    for folder in ("services", "training", "protos", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")) or ".venv" in path.parts:
                continue
            if ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) is None:
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"modules without a docstring: {missing}"


# --- import direction ---------------------------------------------------------------------------

# The runtime: what runs in production. It never imports training/ (models reach it as files in
# the model repository), so a service image needs none of the training code or its packages.
RUNTIME = [ROOT / "services" / service for service in SERVICES] + [ROOT / "services" / "common"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of_tree(folders) -> dict[str, set[str]]:
    """module -> the modules of this repository it imports (top-level or lazily, inside a
    function); `from package import name` counts as `package.name` too, which resolves to a
    module when `name` is one."""
    out = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            names = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names.add(node.module)
                    names.update(f"{node.module}.{alias.name}" for alias in node.names)
            out[module_name(path)] = {m for m in names if m.split(".")[0] in ("services", "training")}
    return out


def test_the_runtime_never_imports_training():
    offending = {
        module: sorted(m for m in imported if m == "training" or m.startswith("training."))
        for module, imported in imports_of_tree(RUNTIME).items()
    }
    offending = {module: names for module, names in offending.items() if names}
    assert not offending, f"runtime modules importing training/: {offending}"


def test_training_never_imports_the_cli():
    """The CLI reaches into training/ (one command at a time); training/ uses the local stack
    (services/local/) and never the CLI, so the two folders do not import each other."""
    offending = {
        module: sorted(m for m in imported if m == "services.cli" or m.startswith("services.cli."))
        for module, imported in imports_of_tree([ROOT / "training"]).items()
    }
    offending = {module: names for module, names in offending.items() if names}
    assert not offending, f"training modules importing services/cli: {offending}"


def test_no_import_circle_between_modules():
    graph = imports_of_tree([ROOT / "services", ROOT / "training"])
    known = set(graph)

    def targets(module: str) -> set[str]:
        # The longest module of ours that each imported name is or lies in.
        found = set()
        for name in graph.get(module, ()):
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
        return found

    circles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(targets(module)):
            if state.get(target) == "open":
                circles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    # Packages' __init__ modules hand names on; a circle through one is still a circle.
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles[:5])
