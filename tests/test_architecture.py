"""The house's shape, checked from the source (DESIGN.md "The house"; issue #14).

The import graph of `kms_core`, `gateway` and `adapters` is read with `ast`: every `import` and
`from ... import` anywhere in a module, at module level or inside functions, because a
function-level import still couples the two modules and is how cycles hide. Imports under
`if TYPE_CHECKING:` are included too, in both the cycle and the layering checks: they never run,
but a type-only back-reference is still the two-way dependency the design rules out (issue #14
counts `keystore/hsm` <-> `hsm_asym`, whose way back is type-only, among the cycles).

Rules:
- no import cycle (strongly connected component of more than one module, or a self-import);
- `kms_core` never imports `gateway` or `adapters`; `adapters` never import `gateway`;
- products (`gateway.*`, `adapters.*`) reach the KMS only through `kms_core.client` (module or
  package, with its submodules) and `kms_core.sigv4`, except the composition roots listed in
  COMPOSITION_ROOTS, each with its reason;
- `gateway.cli` is the only gateway module that imports the adapters;
- importing `kms_core.client` loads neither sqlalchemy nor sqlmodel;
- no module of the three packages over MAX_MODULE_LINES lines and no function over
  MAX_FUNCTION_LINES lines unless a reason is written at its top: a comment line starting with
  `# long:` before the module's (or function's) first statement after its docstring, e.g.

      def route(self, request: Request) -> Response:
          \"\"\"...\"\"\"
          # long: one flat table of S3 operations reads better than a dispatcher per verb
          ...

- no test module imports another test module (`test_*.py`); a conftest is imported only from
  its own directory or below (what crosses directories goes in a helper module).

Today's known violations are listed in KNOWN_* below with their issue. A new violation fails,
and so does an entry that no longer matches what the code does: whoever fixes one deletes (or,
for a cycle that shrank, narrows) its entry, so the lists only shrink.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kms_core", "gateway", "adapters")
PRODUCTS = ("gateway", "adapters")
KMS_SEAMS = ("kms_core.client", "kms_core.sigv4")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
LONG_MARK = "# long:"

# Modules that build an embedded KMS and so may import the service, the database and the key
# stores; everything else in the products talks to a client handed to it.
COMPOSITION_ROOTS: dict[str, str] = {
    "gateway.cli": "the `ssegw` command: parses options and wires the KMS, proxy and adapters",
    "gateway.serve": "`ssegw serve`: starts the embedded KMS (service, database, HSM) beside the proxy",
    "adapters.block.cli": "`ssegw block` without --kms-url opens an embedded KMS on the data dir",
    "adapters.file.cli": "`ssegw file` without --kms-url opens an embedded KMS on the data dir",
    "gateway.s3.cli": "`ssegw s3 assign-bucket` opens the KMS store of --data-dir / --db-url",
}

# Import cycles on main when this test was written (issue #14). Each entry is one strongly
# connected component; a cycle found must lie inside an entry, and an entry must equal a cycle
# found (a cycle that shrank gets its entry narrowed to what is left).
KNOWN_CYCLES: dict[frozenset[str], int] = {}

# Imports that break the layering today: (importer, imported) -> issue.
KNOWN_LAYERING: dict[tuple[str, str], int] = {
}

# Set while importing kms_core.client still loads the database stack (#14 item 1).
KNOWN_HEAVY_CLIENT: int | None = None

# Modules over MAX_MODULE_LINES and functions ("module:Qual.name") over MAX_FUNCTION_LINES
# without a `# long:` reason, on main when this test was written.
KNOWN_LONG_MODULES: dict[str, int] = {}
KNOWN_LONG_FUNCTIONS: dict[str, int] = {}

@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    type_only: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(packages: Iterable[str]) -> dict[str, Path]:
    return {module_name(p): p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, type_only
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]), True)
            for child in node.orelse:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]), type_only)
        else:
            yield from _import_nodes(node, type_only)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: Iterable[str]) -> list[Import]:
    """Every import in `path` that names a module in `known` (the most specific one)."""
    known = set(known)
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    def target(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    for node, type_only in _import_nodes(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = _resolve(module, path.name == "__init__.py", node)
            names = [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            hit = target(name)
            if hit is not None and hit != module or (hit == module and name == module):
                found.append(Import(module, hit, node.lineno, type_only))
    return found


def import_graph(packages: Iterable[str]) -> list[Import]:
    modules = package_modules(packages)
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def strongly_connected(edges: Iterable[tuple[str, str]]) -> list[frozenset[str]]:
    """Cycles: components of more than one module, and modules importing themselves."""
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        graph.setdefault(src, set()).add(dst)
        graph.setdefault(dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(root: str) -> None:  # iterative Tarjan: the graph may be deeper than the recursion limit
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layering_breaks(imports: Iterable[Import]) -> dict[tuple[str, str], str]:
    breaks: dict[tuple[str, str], str] = {}
    for imp in imports:
        src, dst = _top(imp.importer), _top(imp.imported)
        why = None
        if src == "kms_core" and dst in PRODUCTS:
            why = "kms_core never imports the products"
        elif src == "adapters" and dst == "gateway":
            why = "adapters never import gateway"
        elif src == "gateway" and dst == "adapters" and imp.importer != "gateway.cli":
            why = "only gateway.cli (the composition root) wires the adapters in"
        elif (
            src in PRODUCTS
            and dst == "kms_core"
            and imp.importer not in COMPOSITION_ROOTS
            and not any(_within(imp.imported, seam) for seam in KMS_SEAMS)
        ):
            why = f"products reach the KMS only through {' and '.join(KMS_SEAMS)}"
        if why is not None:
            breaks.setdefault((imp.importer, imp.imported), f"line {imp.line}: {why}")
    return breaks


def _format(items: Iterable[object]) -> str:
    return "\n".join(f"  {item}" for item in items)


def _check_exact(kind: str, found: set[object], known: set[object]) -> None:
    new = found - known
    gone = known - found
    assert not new, f"new {kind} (fix it, or if it must stay, say why in the code):\n{_format(sorted(map(repr, new)))}"
    assert not gone, f"fixed {kind}: delete these entries from the known list:\n{_format(sorted(map(repr, gone)))}"


def test_no_import_cycles() -> None:
    edges = [(i.importer, i.imported) for i in import_graph(PACKAGES)]
    cycles = strongly_connected(edges)
    unknown = [sorted(c) for c in cycles if not any(c <= known for known in KNOWN_CYCLES)]
    assert not unknown, f"new import cycles:\n{_format(unknown)}"
    stale = [sorted(known) for known in KNOWN_CYCLES if known not in cycles]
    assert not stale, (
        "known cycles that are gone or smaller: delete or narrow these entries to the cycles left "
        f"({[sorted(c) for c in cycles]}):\n{_format(stale)}"
    )


def test_layering() -> None:
    breaks = layering_breaks(import_graph(PACKAGES))
    new = {pair: why for pair, why in breaks.items() if pair not in KNOWN_LAYERING}
    assert not new, "imports that break DESIGN.md's layering:\n" + _format(
        f"{src} -> {dst} ({why})" for (src, dst), why in sorted(new.items())
    )
    gone = sorted(set(KNOWN_LAYERING) - set(breaks))
    assert not gone, f"fixed layering breaks: delete these entries from KNOWN_LAYERING:\n{_format(gone)}"


def test_composition_roots_exist() -> None:
    modules = package_modules(PACKAGES)
    assert sorted(set(COMPOSITION_ROOTS) - set(modules)) == []


def test_client_import_leaves_the_database_stack_unloaded() -> None:
    probe = (
        "import sys, kms_core.client; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'sqlmodel'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    heavy = out.stdout.split()
    if KNOWN_HEAVY_CLIENT is None:
        assert heavy == [], f"`import kms_core.client` loads the database stack: {heavy[:10]}..."
    else:
        assert heavy, "kms_core.client is light now: set KNOWN_HEAVY_CLIENT to None"


def _reason_before_body(lines: list[str], first_line: int, body: list[ast.stmt]) -> bool:
    """A `# long:` comment between `first_line` and the first statement after the docstring."""
    statements = body
    if statements and isinstance(statements[0], ast.Expr) and isinstance(statements[0].value, ast.Constant):
        statements = statements[1:]
    end = statements[0].lineno - 1 if statements else len(lines)
    return any(line.strip().startswith(LONG_MARK) for line in lines[first_line - 1 : end])


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def long_code() -> tuple[set[str], set[str]]:
    modules: set[str] = set()
    functions: set[str] = set()
    for name, path in package_modules(PACKAGES).items():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text, str(path))
        if len(lines) > MAX_MODULE_LINES and not _reason_before_body(lines, 1, tree.body):
            modules.add(name)
        for qualname, func in _functions(tree):
            assert func.end_lineno is not None
            if func.end_lineno - func.lineno + 1 > MAX_FUNCTION_LINES and not _reason_before_body(
                lines, func.lineno, func.body
            ):
                functions.add(f"{name}:{qualname}")
    return modules, functions


def test_module_and_function_size() -> None:
    modules, functions = long_code()
    _check_exact(f"modules over {MAX_MODULE_LINES} lines without a `{LONG_MARK}` reason", set(modules),
                 set(KNOWN_LONG_MODULES))
    _check_exact(f"functions over {MAX_FUNCTION_LINES} lines without a `{LONG_MARK}` reason", set(functions),
                 set(KNOWN_LONG_FUNCTIONS))


def test_imports_between_test_modules() -> None:
    modules = package_modules(["tests"])
    found: dict[tuple[str, str], int] = {}
    for name, path in modules.items():
        for imp in imports_of(name, path, modules):
            leaf = imp.imported.rpartition(".")[2]
            own_dirs = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
            if leaf.startswith("test_") or (
                leaf == "conftest" and not _within(own_dirs, imp.imported.rpartition(".")[0])
            ):
                found.setdefault((imp.importer, imp.imported), imp.line)
    assert not found, (
        "tests share code through conftest.py (their own directory's or an ancestor's) or helper "
        f"modules, never by importing a test module or another directory's conftest:\n{_format(sorted(found))}"
    )


def test_the_checks_see_what_they_check(tmp_path: Path) -> None:
    # The rules above pass vacuously if the graph comes out empty; these are facts of the tree.
    edges = {(i.importer, i.imported) for i in import_graph(PACKAGES)}
    assert ("gateway.cli", "gateway.serve") in edges or any(src == "gateway.cli" for src, _ in edges)
    assert any(_top(src) == "gateway" and _top(dst) == "kms_core" for src, dst in edges)
    assert strongly_connected([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == [frozenset("abc")]
    assert strongly_connected([("a", "a"), ("a", "b")]) == [frozenset("a")]
    assert layering_breaks([Import("kms_core.x", "gateway.y", 1, False)])
    assert layering_breaks([Import("adapters.x", "kms_core.service", 1, False)])
    assert not layering_breaks([Import("adapters.x", "kms_core.client.http", 1, False)])
    # A function-level import and a TYPE_CHECKING import are both seen, the latter as type-only.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n"
        "def f() -> None:\n    from . import c\n"
    )
    found = imports_of("pkg.a", pkg / "a.py", ["pkg.a", "pkg.b", "pkg.c"])
    assert {(i.imported, i.type_only) for i in found} == {("pkg.b", True), ("pkg.c", False)}
