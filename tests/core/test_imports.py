"""The ``scheduler`` package has no import cycles, lazy imports included.

The graph is read with ``ast`` from every module file under ``scheduler/``, never by importing:

* nodes are the package's modules (``scheduler/ops/__init__.py`` is ``scheduler.ops``);
* every ``import`` / ``from ... import`` statement is an edge, at module level or inside a
  function (lazy imports run sooner or later, and a cycle through them breaks the same way once
  someone hoists one); imports under ``if TYPE_CHECKING:`` never run and are not edges;
* ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``;
* package ``__init__`` re-exports: naming a package (``import pkg``, ``from pkg import name``)
  depends on everything its ``__init__`` imports, lazily too - ``scheduler.config``'s
  ``__getattr__`` re-exports lead to both ``compiled`` and ``loader``;
* importing ``a.b.c`` also initialises the packages ``a`` and ``a.b``.  That runs only their
  ``__init__``'s top level (never its functions, so never a lazy ``__getattr__``), so such an
  edge goes to a node of its own, ``a.b.__init__``, whose edges are the top-level imports of
  ``a/b/__init__.py``.  Packages that contain the importing module get no edge: they are already
  initialising when it runs (a package importing its own submodules is not a cycle);
* names resolved from strings at run time (``scheduler.kinds`` entry points, ``python -m``
  children) are not imports and not edges.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "scheduler"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE
INIT = ".__init__"  # suffix of the node for a package's top-level initialisation


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # file:line of the import statement


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every ``*.py`` under the package."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement in ``tree`` with whether it is lazy (inside a function);
    ``if TYPE_CHECKING:`` bodies are skipped."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, lazy = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, lazy
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend((child, lazy) for child in node.orelse)
            continue
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _targets(name: str, importer: str, modules: dict[str, Path]) -> list[str]:
    """The nodes an import of module ``name`` runs, seen from ``importer`` (see the docstring)."""
    parts = name.split(".")
    out = []
    for i in range(1, len(parts)):  # the enclosing packages: their top level only
        package = ".".join(parts[:i])
        if package in modules and importer != package and not importer.startswith(package + "."):
            out.append(package + INIT)
    if name in modules and name != importer:
        out.append(name)
    return out


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, list[Edge]]:
    """Node -> its edges to other nodes of the package (see the module docstring)."""
    modules = module_files() if modules is None else modules
    top = modules[PACKAGE].parent.parent  # the directory holding the package
    graph: dict[str, list[Edge]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        graph.setdefault(module, [])
        if is_package:  # naming the package runs its top level, then whatever its functions import
            graph[module + INIT] = []
            graph[module].append(Edge(module, module + INIT, f"{path.relative_to(top).as_posix()}:1"))
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, lazy in _imports(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                base = _absolute(module, is_package, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    names.append(sub if sub in modules else base)
            where = f"{path.relative_to(top).as_posix()}:{node.lineno}"
            for name in names:
                if name != PACKAGE and not name.startswith(PACKAGE + "."):
                    continue
                source = module + INIT if is_package and not lazy else module
                for target in _targets(name, module, modules):
                    if all(e.target != target for e in graph[source]):
                        graph[source].append(Edge(source, target, where))
    return graph


def cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """One cycle (as its edges) through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan; the package is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                connect(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, list[Edge]], component: set[str]) -> list[Edge]:
    """A shortest cycle through the component's alphabetically first module (breadth first)."""
    start = min(component)
    paths: dict[str, list[Edge]] = {start: []}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for edge in graph[node]:
            if edge.target == start:
                return [*paths[node], edge]
            if edge.target in component and edge.target not in paths:
                paths[edge.target] = [*paths[node], edge]
                queue.append(edge.target)
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def describe(cycle: list[Edge]) -> str:
    return "\n".join(f"  {e.source} -> {e.target}  ({e.where})" for e in cycle)


def test_the_package_has_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles in the scheduler package:\n" + "\n\n".join(describe(c) for c in found)


# (importer, imported, why): no direct edge from a module in the first to one in the second
# (a module and the modules of its package are "in" it; "scheduler" is every module).
FORBIDDEN = [
    ("scheduler", "scheduler.cli", "the command line is the top: commands get their context from scheduler.app"),
    ("scheduler.ops", "scheduler.daemon", "operations see the daemon only through scheduler.daemon_view"),
    ("scheduler.ops", "scheduler.runner", "operations use the nouns of scheduler.runs, or a runner from scheduler.app"),
    ("scheduler.daemon", "scheduler.ops", "extensions are handed to the daemon, it never imports them"),
    ("scheduler.planner", "scheduler.runner", "the planning step needs RunRequest (scheduler.runs), not processes"),
    ("scheduler", "scheduler.sample", "the sample API and demo are not part of the core"),
    ("scheduler.web", "scheduler.daemon", "the web console changes state through the store, never the daemon"),
    ("scheduler.web", "scheduler.runner", "the web console never runs a job itself"),
]
ENTRY_POINTS = {("scheduler.__main__", "scheduler.cli"), ("scheduler.cli", "scheduler.sample")}
# What of scheduler.kinds is not a specific kind: the rest is reached through the registry only.
KINDS_COMMON = {"scheduler.kinds", "scheduler.kinds.base", "scheduler.kinds.registry", "scheduler.kinds.hooks"}
THROUGH_THE_REGISTRY = {
    "scheduler.config": "config/ imports no specific kind: the loader builds its models from scheduler.kinds.registry",
    "scheduler.runner": "the runner learns how a kind runs from scheduler.kinds.registry",
    "scheduler.worker": "the worker resolves a kind's model and executor through scheduler.kinds.registry",
    "scheduler.daemon": "the daemon runs the kinds' hooks as the registry names them",
}


def specific_kinds(modules: dict[str, Path] | None = None) -> list[str]:
    """The modules and packages directly under ``scheduler.kinds`` that are one kind each."""
    modules = module_files() if modules is None else modules
    return sorted({".".join(name.split(".")[:3]) for name in modules
                   if name.startswith("scheduler.kinds.") and ".".join(name.split(".")[:3]) not in KINDS_COMMON})


def _in(module: str, package: str) -> bool:
    module = module.removesuffix(INIT)
    return module == package or module.startswith(package + ".")


def layer_violations(modules: dict[str, Path] | None = None) -> list[str]:
    """Each import against the rules above (FORBIDDEN, and the kinds reached through the registry)."""
    modules = module_files() if modules is None else modules
    wrong = []
    rules = FORBIDDEN + [(importer, kind, why) for importer, why in THROUGH_THE_REGISTRY.items()
                         for kind in specific_kinds(modules)]
    for source, edges in import_graph(modules).items():
        for edge in edges:
            for importer, imported, why in rules:
                if not (_in(source, importer) and _in(edge.target, imported)) or _in(source, imported):
                    continue
                if any(_in(source, a) and _in(edge.target, b) for a, b in ENTRY_POINTS):
                    continue
                wrong.append(f"{edge.source} -> {edge.target} ({edge.where}): {why}")
    return wrong


def test_imports_point_down_the_layers() -> None:
    """The directions of docs/architecture.md; only the entry points cross them."""
    wrong = layer_violations()
    assert not wrong, "\n".join(wrong)


def test_the_walker_sees_lazy_imports_reexports_and_parent_packages(tmp_path: Path) -> None:
    """The rules of the module docstring, on a small package of known shape."""
    pkg = tmp_path / PACKAGE
    files = {
        "__init__.py": "",
        "a.py": "def f():\n    from scheduler.b import g\n",  # lazy import
        "b.py": "from scheduler.sub import thing\n",  # a name re-exported by a package __init__
        "sub/__init__.py": "def __getattr__(name):\n    from scheduler.sub import impl\n"
                           "    return getattr(impl, name)\n",
        "sub/impl.py": "import scheduler.a\nfrom . import sibling\n",
        "sub/sibling.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import scheduler.b\n",
        "other/__init__.py": "import scheduler.a\n\ndef __getattr__(name):\n    from scheduler import leaf\n",
        "other/deep.py": "x = 1\n",
        "leaf.py": "from scheduler.other.deep import x\n",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    graph = import_graph(module_files(pkg))
    targets = {name: sorted(e.target.removeprefix("scheduler.") for e in edges) for name, edges in graph.items()}
    assert targets["scheduler.a"] == ["b"]
    assert targets["scheduler.b"] == ["sub"]
    assert targets["scheduler.sub"] == ["sub.__init__", "sub.impl"]  # a lazy re-export is an edge
    assert targets["scheduler.sub.__init__"] == []
    assert targets["scheduler.sub.impl"] == ["a", "sub.sibling"]  # no edge to its own package
    assert targets["scheduler.sub.sibling"] == []  # TYPE_CHECKING imports never run
    assert targets["scheduler.other"] == ["leaf", "other.__init__"]
    assert targets["scheduler.other.__init__"] == ["a"]
    # Importing a submodule runs the package's top level, not its __getattr__: no cycle via leaf.
    assert targets["scheduler.leaf"] == ["other.__init__", "other.deep"]
    found = cycles(graph)
    assert [sorted(e.source for e in c) for c in found] == [
        ["scheduler.a", "scheduler.b", "scheduler.sub", "scheduler.sub.impl"]]
    assert "scheduler.sub.impl -> scheduler.a  (scheduler/sub/impl.py:1)" in describe(found[0])


def test_the_specific_kinds_are_known_and_config_reaches_them_only_through_the_registry(tmp_path: Path) -> None:
    """Every kind on disk is covered by the rule, and the rule catches config/ importing one."""
    assert specific_kinds() == ["scheduler.kinds.command", "scheduler.kinds.container", "scheduler.kinds.ingest",
                                "scheduler.kinds.python"]
    pkg = tmp_path / PACKAGE
    files = {
        "__init__.py": "",
        "config/__init__.py": "",
        "config/loader.py": "from scheduler.kinds.registry import BUILTIN\n\n"
                            "def f():\n    import scheduler.kinds.toy\n",
        "kinds/__init__.py": "",
        "kinds/registry.py": "",
        "kinds/toy/__init__.py": "",
        "kinds/toy/spec.py": "from scheduler.config import loader\n",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    modules = module_files(pkg)
    assert specific_kinds(modules) == ["scheduler.kinds.toy"]
    assert layer_violations(modules) == [
        "scheduler.config.loader -> scheduler.kinds.toy (scheduler/config/loader.py:4): "
        + THROUGH_THE_REGISTRY["scheduler.config"]]
