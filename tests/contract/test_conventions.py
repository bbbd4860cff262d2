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
