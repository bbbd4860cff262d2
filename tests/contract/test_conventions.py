"""Code conventions that keep the code easy to change (DESIGN.md §6): every service folder has
the same shape, domain modules never import gRPC, every module says what it is for and fits in
one sitting, no function takes more than six parameters, and imports run one way: the CLI's
commands reach training/ (lazily), training/ reaches the local stack, the runtime reaches
neither."""

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
RUNTIME = [ROOT / "services" / name for name in (*SERVICES, "common", "local")]


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


def test_only_the_cli_commands_reach_training_and_only_when_a_command_runs():
    """Of the CLI, only its command modules import training/, and only inside the function that
    runs a command (most through `commands.delegate`, which names a training function as
    "module:function"), so `shelfwise search` loads no torch. Every delegated target exists."""
    commands = ROOT / "services" / "cli" / "commands"
    offending = {}
    for path in sorted((ROOT / "services" / "cli").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # Command modules may import training lazily: only their top level is checked.
        nodes = tree.body if path.parent == commands else list(ast.walk(tree))
        names = {
            name
            for node in nodes
            for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        }
        if any(name.split(".")[0] == "training" for name in names):
            offending[str(path.relative_to(ROOT))] = sorted(n for n in names if n.split(".")[0] == "training")
    assert not offending, f"CLI modules importing training/ outside a command's function: {offending}"
    targets = []
    for path in sorted((ROOT / "services" / "cli" / "commands").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "delegate":
                targets.append(node.args[3].value)
    assert targets, "no delegated command found: did delegate change its signature?"
    missing = []
    for target in targets:
        module, _, function = target.partition(":")
        path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
        defined = path.is_file() and any(
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function
            for node in ast.parse(path.read_text(encoding="utf-8")).body
        )
        if not defined:
            missing.append(target)
    assert not missing, f"delegated commands whose function does not exist: {missing}"


# --- size ---------------------------------------------------------------------------------------

MAX_MODULE_LINES = 450
MAX_PARAMETERS = 6


def source_modules():
    for folder in ("services", "training"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if not path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                yield path


def test_every_module_fits_in_one_sitting():
    long = {
        str(path.relative_to(ROOT)): lines
        for path in source_modules()
        if (lines := path.read_text(encoding="utf-8").count("\n")) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (cut them along a seam): {long}"


def parameter_count(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Every parameter but self/cls; *args and **kwargs count one each."""
    arguments = function.args
    named = [a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs]
    return len([n for n in named if n not in ("self", "cls")]) + (arguments.vararg is not None) + (
        arguments.kwarg is not None
    )


def test_no_function_takes_more_than_six_parameters():
    wide = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({parameter_count(node)})"
        for path in source_modules()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and parameter_count(node) > MAX_PARAMETERS
    ]
    assert not wide, f"functions with more than {MAX_PARAMETERS} parameters (group what travels together): {wide}"


def test_test_modules_share_helpers_only_through_tests_support():
    """A test module imports shared helpers from tests/support/, never from conftest.py or from
    another test module (which would run that module's tests' imports, and tie them together)."""
    offending = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for name in imported_modules(path):
            # The fuzz test runs its sibling fuzz target, which is not a test module.
            if name.startswith("tests.") and not name.startswith("tests.support") and name != "tests.fuzz":
                offending.setdefault(str(path.relative_to(ROOT)), []).append(name)
    assert not offending, f"test modules importing from other test modules: {offending}"
