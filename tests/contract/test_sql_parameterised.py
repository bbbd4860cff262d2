"""SQL goes to PostgreSQL only as fixed text with $n parameters: never built from values.

An AST scan of services/ and training/: every asyncpg query call (execute, executemany, fetch,
fetchrow, fetchval, cursor, prepare, copy_from_query, and the table name of the copy_*_table
calls) must get as its query

- a string literal, or
- a module-level constant (UPPER_CASE name, or an item of one: built at import time, before any
  input exists), or
- a local variable whose every assignment in the function is one of these, or
- the result of the one identifier-quoting helper for DDL (`drop_table_sql`, partition names,
  which DDL cannot take as parameters; it accepts plain lower-case identifiers only).

An f-string, `%`, `.format()`, `+` or any other call there fails the test, naming the file and
line. A few call sites are allowed by name below, each with its reason. The scanner itself is
tested on bad snippets, so that it cannot quietly pass everything.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("services", "training")
QUERY_METHODS = {"execute", "executemany", "fetch", "fetchrow", "fetchval", "cursor", "prepare", "copy_from_query"}
TABLE_METHODS = {"copy_records_to_table", "copy_to_table", "copy_from_table"}
IDENTIFIER_HELPERS = {"drop_table_sql"}
CONSTANT_NAME = re.compile(r"^_?[A-Z][A-Z0-9_]*$")
# (file, function) -> why its query call is not a constant, and why that is safe.
ALLOWED_CALL_SITES = {
    ("services/common/database.py", "apply_migrations"): "runs the packaged migration files "
    "(services/common/migrations/*.sql): code shipped with the service, never input",
}


def _function_scopes(tree: ast.AST):
    """(function node or None for the module, its direct statements' nodes)."""
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    return parents


def _enclosing_function(node: ast.AST, parents: dict) -> ast.AST | None:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return node
    return None


def _assignments(function: ast.AST, name: str) -> list[ast.AST] | None:
    """Values assigned to `name` inside `function`; None if it is also bound some other way
    (a parameter, a loop target, `with ... as`), which the scanner cannot follow."""
    values = []
    arguments = function.args
    if name in {a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]}:
        return None
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == name:
                    values.append(node.value)
                elif any(isinstance(t, ast.Name) and t.id == name for t in ast.walk(target)):
                    return None  # unpacking
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name) and node.target.id == name:
            if isinstance(node, ast.AugAssign) or node.value is None:
                return None
            values.append(node.value)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            if any(isinstance(t, ast.Name) and t.id == name for t in ast.walk(node.target)):
                return None
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None and any(
                    isinstance(t, ast.Name) and t.id == name for t in ast.walk(item.optional_vars)
                ):
                    return None
        elif isinstance(node, ast.NamedExpr) and node.target.id == name:
            values.append(node.value)
    return values


def problem(expression: ast.AST, function: ast.AST | None, seen: frozenset = frozenset()) -> str | None:
    """Why `expression` is not a fixed query text, or None when it is."""
    if isinstance(expression, ast.Constant) and isinstance(expression.value, str):
        return None
    if isinstance(expression, ast.JoinedStr):
        if any(isinstance(part, ast.FormattedValue) for part in expression.values):
            return "an f-string"
        return None
    if isinstance(expression, ast.BinOp) and isinstance(expression.op, ast.Mod):
        return "%-formatting"
    if isinstance(expression, ast.BinOp) and isinstance(expression.op, ast.Add):
        return "concatenation"
    if isinstance(expression, ast.Call):
        if isinstance(expression.func, ast.Attribute) and expression.func.attr == "format":
            return ".format()"
        if isinstance(expression.func, ast.Name) and expression.func.id in IDENTIFIER_HELPERS:
            return None
        return f"the result of a call ({ast.unparse(expression.func)})"
    if isinstance(expression, ast.Subscript):
        return problem(expression.value, function, seen)
    if isinstance(expression, ast.Name):
        name = expression.id
        if function is not None and name not in seen:
            values = _assignments(function, name)
            if values is None:
                return f"`{name}`, bound where the scanner cannot follow it (a parameter or loop variable)"
            if values:
                for value in values:
                    reason = problem(value, function, seen | {name})
                    if reason:
                        return f"`{name}` = {reason}"
                return None
        if CONSTANT_NAME.match(name):
            return None
        return f"`{name}`, not a module-level UPPER_CASE constant"
    return f"{type(expression).__name__} ({ast.unparse(expression)[:60]})"


def violations(source: str, path: str = "<snippet>") -> list[str]:
    tree = ast.parse(source)
    parents = _function_scopes(tree)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        method = node.func.attr
        if method not in QUERY_METHODS | TABLE_METHODS:
            continue
        keyword = "query" if method in QUERY_METHODS else "table_name"
        argument = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == keyword), None)
        if argument is None:
            continue
        function = _enclosing_function(node, parents)
        if (path, getattr(function, "name", None)) in ALLOWED_CALL_SITES:
            continue
        reason = problem(argument, function)
        if reason:
            found.append(f"{path}:{node.lineno}: {method}() gets {reason}; pass values as $n parameters")
    return found


def test_sql_is_only_sent_as_fixed_text_with_parameters():
    found = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            found += violations(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert not found, "SQL built from values:\n" + "\n".join(found)


def test_every_allowed_call_site_still_exists():
    for (path, function), _reason in ALLOWED_CALL_SITES.items():
        assert f"def {function}(" in (REPO / path).read_text(encoding="utf-8"), (path, function)


BAD = {
    "f-string": 'async def f(c, t):\n    await c.fetch(f"SELECT * FROM x WHERE id = {t}")',
    "percent": 'async def f(c, t):\n    await c.execute("DELETE FROM x WHERE id = %s" % t)',
    "format": 'async def f(c, t):\n    await c.fetchval("SELECT {}".format(t))',
    "concatenation": 'async def f(c, t):\n    await c.fetchrow("SELECT * FROM x WHERE id = " + t)',
    "local f-string": 'async def f(c, t):\n    sql = f"SELECT {t}"\n    await c.executemany(sql, [])',
    "one bad branch": 'async def f(c, t):\n    sql = "SELECT 1"\n    if t:\n        sql = "SELECT " + t\n    await c.fetch(sql)',
    "keyword": 'async def f(c, t):\n    await c.fetch(query=f"SELECT {t}")',
    "parameter": 'async def f(c, sql):\n    await c.execute(sql)',
    "other call": 'async def f(c, t):\n    await c.execute(build(t))',
    "lower-case global": 'async def f(c):\n    await c.execute(sql_text)',
    "copy from query": 'async def f(c, t):\n    await c.copy_from_query(f"SELECT {t}", output="x")',
    "copy table name": 'async def f(c, t):\n    await c.copy_records_to_table(t + "_in", records=[])',
}
GOOD = {
    "literal": 'async def f(c, t):\n    await c.fetch("SELECT * FROM x WHERE id = $1", t)',
    "module constant": '_QUERY = f"SELECT {1}"\nasync def f(c, t):\n    await c.fetch(_QUERY, t)',
    "constant item": 'async def f(c, k):\n    await c.fetch(_QUERIES[k])',
    "local literal": 'async def f(c, t):\n    sql = "SELECT $1"\n    await c.fetch(sql, t)',
    "identifier helper": 'async def f(c, name):\n    await c.execute(drop_table_sql(name))',
    "fixed copy table": 'async def f(c, rows):\n    await c.copy_records_to_table("x_in", records=rows)',
}


@pytest.mark.parametrize("snippet", BAD.values(), ids=BAD.keys())
def test_the_scanner_catches_sql_built_from_values(snippet):
    assert violations(textwrap.dedent(snippet)), snippet


@pytest.mark.parametrize("snippet", GOOD.values(), ids=GOOD.keys())
def test_the_scanner_accepts_fixed_sql_with_parameters(snippet):
    assert violations(textwrap.dedent(snippet)) == []
