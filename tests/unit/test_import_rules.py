"""The layout's import rules, read from the source with `ast` (function-local imports included).

Each side of the runtime is a package:
- `linux/` is the only place that calls ctypes and imports nothing of handcar;
- the shared leaves (`handcar/*.py`: errors, jsonio, log, signals, sync, hooks, procfs) import
  only each other and `linux/`;
- `spec/`, `seccomp/` and `cgroups/` are libraries: never `runtime/`, `init/` or `cli/`;
- `init/` is the child's side: never `runtime/` or `cli/`;
- `runtime/` is the library API: never `cli/`;
- `cli/` is a thin layer: only `runtime/`'s public API and the shared leaves;
- `crashcart/` is its own program: only `linux/` and the shared leaves.

No `_private` name is imported from another module, and no module reaches a cycle through
the imports that run (typing-only imports under `if TYPE_CHECKING:` are read for the layer
rules but cannot form a cycle at run time).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
LEAVES = {"errors", "jsonio", "log", "signals", "sync", "hooks", "procfs", "machine", "python"}
# The typed model, imported under `if TYPE_CHECKING:` only (tests/unit/test_spec_types.py
# checks that): any layer may name its types, at no cost and with no dependency at run time.
TYPE_VOCABULARY = {"handcar.spec.types", "handcar.cgroups.types"}

# What each group may import, besides itself. "leaf" is the set of shared modules above.
ALLOWED: dict[str, set[str]] = {
    "linux": set(),
    "leaf": {"leaf", "linux"},
    "spec": {"leaf", "linux"},
    "seccomp": {"leaf", "linux"},
    "cgroups": {"leaf", "linux", "spec"},
    "init": {"leaf", "linux", "spec", "seccomp", "cgroups"},
    "runtime": {"leaf", "linux", "spec", "seccomp", "cgroups", "init"},
    "cli": {"leaf", "runtime"},
    "crashcart": {"leaf", "linux"},
}


def group(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in LEAVES:
        return "leaf"
    return parts[1]


class Import:
    def __init__(self, source: str, target: str, names: list[str], line: int, typing_only: bool):
        self.source = source
        self.target = target
        self.names = names
        self.line = line
        self.typing_only = typing_only

    def __repr__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target} {self.names}"


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def read_imports(path: Path, modules: set[str], root: Path = SRC) -> list[Import]:
    """Every handcar import in one file, each resolved to the module it loads."""
    source = module_name(path, root)
    found: list[Import] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for stmt in child.body:
                    visit_stmt(stmt, True)
                for stmt in child.orelse:
                    visit_stmt(stmt, typing_only)
                continue
            visit_stmt(child, typing_only)

    def visit_stmt(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "handcar":
                    found.append(Import(source, alias.name, [], node.lineno, typing_only))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module.split(".")[0] == "handcar":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    if sub in modules:  # `from handcar.cgroups import v1`: the submodule
                        found.append(Import(source, sub, [], node.lineno, typing_only))
                    else:
                        found.append(
                            Import(source, node.module, [alias.name], node.lineno, typing_only)
                        )
        visit(node, typing_only)

    visit(ast.parse(path.read_text()), False)
    return found


def all_modules(root: Path = SRC) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted((root / "handcar").rglob("*.py"))}


def layer_violations(imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        if imp.typing_only and imp.target in TYPE_VOCABULARY:
            continue
        source, target = group(imp.source), group(imp.target)
        if source != target and target not in ALLOWED[source]:
            problems.append(f"{imp}: {source}/ may not import {target}/")
    return problems


def private_violations(imports: list[Import]) -> list[str]:
    return [
        f"{imp}: a private name crosses a module boundary"
        for imp in imports
        if imp.target != imp.source
        and any(name.startswith("_") and not name.startswith("__") for name in imp.names)
    ]


def cli_violations(imports: list[Import]) -> list[str]:
    """The CLI goes through runtime/'s public API: no private runtime module either."""
    return [
        f"{imp}: cli/ uses runtime/'s public API only"
        for imp in imports
        if group(imp.source) == "cli"
        and group(imp.target) == "runtime"
        and any(part.startswith("_") for part in imp.target.split("."))
    ]


def find_cycle(imports: list[Import]) -> list[str]:
    """A cycle among the imports that run, as the list of modules on it, or []."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.typing_only and imp.target != imp.source:
            graph.setdefault(imp.source, set()).add(imp.target)
    visiting: list[str] = []
    done: set[str] = set()

    def walk(node: str) -> list[str]:
        if node in visiting:
            return visiting[visiting.index(node) :] + [node]
        if node in done:
            return []
        visiting.append(node)
        for nxt in sorted(graph.get(node, ())):
            cycle = walk(nxt)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return []

    for start in sorted(graph):
        cycle = walk(start)
        if cycle:
            return cycle
    return []


def package_init_violations(modules: dict[str, Path], root: Path = SRC) -> list[str]:
    """A package's __init__ imports nothing of handcar, so `import handcar.x.y` pays for y only.
    linux/ is the exception by design: its __init__ is the libc layer itself."""
    problems = []
    for name, path in modules.items():
        if path.name == "__init__.py" and name not in ("handcar", "handcar.linux"):
            imports = read_imports(path, set(modules), root)
            problems += [
                f"{imp}: a package __init__ imports nothing"
                for imp in imports
                if not (imp.typing_only and imp.target in TYPE_VOCABULARY)
            ]
    return problems


def tree_imports(root: Path = SRC) -> tuple[dict[str, Path], list[Import]]:
    modules = all_modules(root)
    imports = [imp for path in modules.values() for imp in read_imports(path, set(modules), root)]
    return modules, imports


def violations(root: Path = SRC) -> list[str]:
    modules, imports = tree_imports(root)
    problems = layer_violations(imports) + private_violations(imports) + cli_violations(imports)
    problems += package_init_violations(modules, root)
    cycle = find_cycle(imports)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    return problems


def test_the_tree_keeps_the_rules() -> None:
    assert violations() == []


def test_every_module_belongs_to_a_known_group() -> None:
    unknown = {group(name) for name in all_modules()} - set(ALLOWED)
    assert not unknown


def _copy_tree(tmp_path: Path) -> Path:
    for path in (SRC / "handcar").rglob("*.py"):
        target = tmp_path / path.relative_to(SRC)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    return tmp_path


@pytest.mark.parametrize(
    ("file", "added", "expected"),
    [
        ("handcar/init/rootfs.py", "from handcar.runtime.state import StateStore", "init/ may not"),
        ("handcar/linux/sched.py", "from handcar.errors import HandcarError", "linux/ may not"),
        ("handcar/runtime/state.py", "from handcar.cli.main import main", "runtime/ may not"),
        ("handcar/cli/commands.py", "from handcar.init.rootfs import jq", "cli/ may not"),
        ("handcar/spec/validate.py", "from handcar.init import rootfs", "spec/ may not"),
        ("handcar/cgroups/v1.py", "from handcar.runtime import state", "cgroups/ may not"),
        ("handcar/crashcart/targets.py", "from handcar.runtime import state", "crashcart/ may"),
        ("handcar/runtime/exec.py", "from handcar.runtime.state import _lock", "private name"),
        ("handcar/cgroups/fs.py", "from handcar.cgroups import manager", "import cycle"),
        ("handcar/spec/__init__.py", "from handcar.spec import validate", "imports nothing"),
        # The typed model is free to name for type checking only, not to import at run time.
        ("handcar/cli/commands.py", "from handcar.spec.types import Spec", "cli/ may not"),
    ],
)
def test_a_forbidden_import_is_caught(tmp_path: Path, file: str, added: str, expected: str) -> None:
    """The rules fail when broken: each forbidden import, added to a copy of the tree."""
    root = _copy_tree(tmp_path)
    path = root / file
    path.write_text(path.read_text() + f"\n\ndef _added() -> None:\n    {added}\n")
    found = set(violations(root)) - set(violations())  # what the added import alone broke
    assert any(expected in problem for problem in found), found
