"""Dependencies point one way (design rule 9), read from the source with ``ast``: features
never import the node's composition root, and the SFU knows nothing of chat, files or
signaling."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("huddle", "signaling", "calls", "sfu", "chat", "media_store")
FEATURES = ("calls", "chat", "media_store", "sfu")
# Edges still to remove, named exactly so that a new one fails and a removed one must be
# struck off.
REMAINING_NODE_IMPORTS: set[str] = set()
REMAINING_SFU_IMPORTS: set[str] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """The statements run when the module is imported: not function bodies, not
    ``if TYPE_CHECKING:`` blocks."""
    found: list[ast.stmt] = []
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if _type_checking(node) or isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
        ):
            continue
        found.append(node)
        for field in ("body", "orelse", "finalbody", "handlers"):
            pending.extend(getattr(node, field, []))
    return found


def _imports(path: Path, module: str, *, runtime: bool = False) -> set[str]:
    """Every project module ``module`` imports, wherever in the file (lazy and type-only
    imports too); with ``runtime``, only those its import runs."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    nodes = _module_level(tree) if runtime else list(ast.walk(tree))
    for node in nodes:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports the module pkg.mod when there is one.
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    return found


def _graph(*, runtime: bool = False) -> dict[str, set[str]]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[_module_name(path)] = path
    return {
        name: {m for m in _imports(path, name, runtime=runtime) if m in modules and m != name}
        for name, path in modules.items()
    }


def _package(module: str) -> str:
    return module.split(".")[0]


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "huddle.app" in graph
    assert "media_store.routes" in graph["huddle.app"]


def test_no_feature_imports_the_node() -> None:
    offending = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if _package(module) in FEATURES
        for target in targets
        if _package(target) == "huddle"
    )
    assert set(offending) == REMAINING_NODE_IMPORTS


def test_sfu_knows_nothing_of_chat_files_or_signaling() -> None:
    offending = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if _package(module) == "sfu"
        for target in targets
        if _package(target) in ("chat", "media_store", "signaling", "calls")
    )
    assert set(offending) == REMAINING_SFU_IMPORTS


def test_module_level_imports_have_no_cycle() -> None:
    graph = _graph(runtime=True)
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
