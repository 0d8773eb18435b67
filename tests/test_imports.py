"""The import graph of the project's own code points down (docs/architecture.md, "Layers").

The graph is read with ``ast`` from the source files (nothing is imported): every ``import`` and
``from ... import`` of a project module, at module top or inside a function, is an edge. The
tests fail on a cycle between modules, a cycle between packages, an import that points up the
layering of docs/architecture.md, and an import a package's "imports only" rule forbids; the
message lists the offending edges as ``file:line importer -> imported``. Packages are checked at
two levels: top-level (``training`` vs ``metrics``) and innermost (``torch_utils`` vs
``torch_utils.ops``). ``tests/`` is not part of the graph; scripts in a folder without
``__init__.py`` (``benchmarks/``) are CLIs. Imports by string (``importlib``) are not seen.

    python tests/test_imports.py          # print every finding (exit 1 when there are any)
"""
from __future__ import annotations

import ast
import os
import re
import sys
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {"tests", "build", "dist", "node_modules", "__pycache__"}   # plus hidden dirs (.venv, .git)
TOP = "CLIs"        # the layer of top-level scripts (and benchmarks/): may import everything below

# Module rules of the "Rules" list that are not a whole package's: metrics never imports the
# training loop (generator metrics take a network object).
FORBIDDEN_MODULES = {"metrics": ("training.training_loop", "training.launch")}


@dataclass(frozen=True)
class Edge:
    src: str        # importing module, dotted ("training.loss", "train", "benchmarks.bench_train")
    dst: str        # imported project module
    path: str       # file of src, relative to the root
    line: int
    local: bool     # inside a function (or class) body rather than at module level

    def __str__(self) -> str:
        where = " (function-local)" if self.local else ""
        return f"{self.path}:{self.line} {self.src} -> {self.dst}{where}"


# ---------------------------------------------------------------------------------------------
# Modules and edges.

def find_modules(root: str) -> Dict[str, str]:
    """Dotted module name -> file path (relative) of every project .py file outside tests/."""
    modules = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS
                             and not d.endswith(".egg-info"))
        rel_dir = os.path.relpath(dirpath, root)
        parts = [] if rel_dir == "." else rel_dir.split(os.sep)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            stem = name[:-3]
            dotted = ".".join(parts + ([] if stem == "__init__" else [stem]))
            modules[dotted] = os.path.join(*parts, name) if parts else name
    return modules


def _is_package(modules: Dict[str, str], name: str) -> bool:
    return modules.get(name, "").endswith("__init__.py")


def _resolve(modules: Dict[str, str], name: str) -> Optional[str]:
    """The most specific project module ``name`` names (``a.b.attr`` -> ``a.b``), or None."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self):
        self.found: List[Tuple[int, bool, int, Optional[str], Sequence[str]]] = []
        self._depth = 0     # > 0 inside a def / class body

    def _nested(self, node):
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _nested

    def visit_Import(self, node: ast.Import):
        for alias in node.names:
            self.found.append((node.lineno, self._depth > 0, 0, alias.name, ()))

    def visit_ImportFrom(self, node: ast.ImportFrom):
        self.found.append((node.lineno, self._depth > 0, node.level, node.module,
                           [a.name for a in node.names]))


def module_edges(root: str, modules: Dict[str, str], name: str) -> List[Edge]:
    """Project imports of one module (top-level and function-local)."""
    path = modules[name]
    with open(os.path.join(root, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    visitor = _ImportVisitor()
    visitor.visit(tree)
    package = name if _is_package(modules, name) else name.rpartition(".")[0]
    # A script in a folder that is not a package (benchmarks/) imports its siblings by bare name.
    script_dir = "" if not package or _is_package(modules, package) else package
    edges = []
    for line, local, level, module, names in visitor.found:
        if level:       # relative: from .x import y / from .. import z
            base = package.split(".") if package else []
            base = base[:len(base) - (level - 1)]
            target = ".".join(base + ([module] if module else []))
        else:
            target = module
        candidates = [f"{target}.{n}" for n in names if n != "*"] or [target]
        for cand in candidates:
            dst = _resolve(modules, cand)
            if dst is None and script_dir:
                dst = _resolve(modules, f"{script_dir}.{cand}")
            # "from pkg import name" names the package unless name is a submodule of it.
            if dst is not None and dst != name:
                edges.append(Edge(name, dst, path, line, local))
    return sorted(set(edges), key=lambda e: (e.line, e.dst))   # `from m import a, b`: one edge


def build_graph(root: str) -> Tuple[Dict[str, str], List[Edge]]:
    modules = find_modules(root)
    edges = [e for name in modules for e in module_edges(root, modules, name)]
    return modules, edges


# ---------------------------------------------------------------------------------------------
# Packages and layers.

def top_package(modules: Dict[str, str], name: str) -> str:
    """The top-level package of a module; a top-level script is its own node."""
    head = name.split(".")[0]
    return head if _is_package(modules, head) else name


def inner_package(modules: Dict[str, str], name: str) -> str:
    """The innermost package holding a module (``torch_utils.ops`` for its ops); scripts: themselves."""
    if _is_package(modules, name):
        return name
    parent = name.rpartition(".")[0]
    return parent if parent and _is_package(modules, parent) else name


def read_layering(doc_path: str) -> Tuple[List[str], Dict[str, Set[str]]]:
    """From docs/architecture.md: the packages of the layer diagram, top first (after the CLIs),
    and the "`pkg/` imports only `a/` and `b/`" / "imports nothing of the project" rules."""
    with open(doc_path, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Layers", 1)[1]
    diagram = section.split("```", 2)[1]
    layers = []
    for line in diagram.splitlines():
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)/\s", line + " ")
        if m:
            layers.append(m.group(1))
    rules_text = section.split("```", 2)[2].split("\n## ", 1)[0]
    only: Dict[str, Set[str]] = {}
    for m in re.finditer(r"`(\w+)/` imports (nothing of the project|only ((?:`\w+/`(?:,| and| or|\s)*)+))",
                         rules_text):
        only[m.group(1)] = set() if m.group(2).startswith("nothing") else set(re.findall(r"`(\w+)/`", m.group(3)))
    return layers, only


def layer_of(modules: Dict[str, str], layers: Sequence[str], name: str) -> Tuple[int, str]:
    """(rank, layer name): 0 for the CLIs / scripts, then the diagram's order top to bottom."""
    pkg = top_package(modules, name)
    if pkg in layers:
        return layers.index(pkg) + 1, pkg
    return 0, TOP


# ---------------------------------------------------------------------------------------------
# Findings.

def strongly_connected(nodes: Iterable[str], succ: Dict[str, Set[str]]) -> List[List[str]]:
    """Tarjan's SCCs with more than one node (a cycle), each sorted; iterative."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out = []
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(succ.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(succ.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def cycles(edges: Sequence[Edge], node_of) -> List[Tuple[List[str], List[Edge]]]:
    """(nodes, edges between them) of each cycle of the graph whose nodes are ``node_of(module)``."""
    succ: Dict[str, Set[str]] = {}
    nodes = set()
    for e in edges:
        a, b = node_of(e.src), node_of(e.dst)
        nodes.update((a, b))
        if a != b:
            succ.setdefault(a, set()).add(b)
    found = []
    for comp in strongly_connected(nodes, succ):
        members = set(comp)
        found.append((comp, sorted((e for e in edges if node_of(e.src) in members and node_of(e.dst) in members
                                    and node_of(e.src) != node_of(e.dst)), key=str)))
    return found


def upward_imports(modules, edges, layers, only) -> List[Tuple[Edge, str]]:
    """Edges that point up the layering, or out of a package's "imports only" list."""
    bad = []
    for e in edges:
        (rank_a, layer_a), (rank_b, layer_b) = layer_of(modules, layers, e.src), layer_of(modules, layers, e.dst)
        if layer_a == layer_b:
            continue
        if rank_b < rank_a:
            bad.append((e, f"{layer_a} is below {layer_b}"))
        elif layer_a in only and layer_b not in only[layer_a]:
            allowed = ", ".join(sorted(only[layer_a])) or "nothing of the project"
            bad.append((e, f"{layer_a} imports only {allowed}"))
        elif any(e.dst == m or e.dst.startswith(m + ".") for m in FORBIDDEN_MODULES.get(layer_a, ())):
            bad.append((e, f"{layer_a} never imports {e.dst}"))
    return bad


def _unique(groups):
    seen, out = set(), []
    for nodes, g in groups:
        if tuple(nodes) not in seen:
            seen.add(tuple(nodes))
            out.append((nodes, g))
    return out


def findings(root: str, doc_path: Optional[str] = None) -> Dict[str, List[str]]:
    """Every problem of the tree at ``root``, by kind (empty lists: the graph is clean)."""
    modules, edges = build_graph(root)
    layers, only = read_layering(doc_path or os.path.join(root, "docs", "architecture.md"))
    packages = sorted({top_package(modules, m) for m in modules if _is_package(modules, top_package(modules, m))})
    fmt = lambda groups: [f"cycle between {', '.join(n)}:\n    " + "\n    ".join(map(str, g))   # noqa: E731
                          for n, g in groups]
    return {
        "unplaced packages": [f"{p}/ is not in the layer diagram of docs/architecture.md"
                              for p in packages if p not in layers],
        "module cycles": fmt(cycles(edges, lambda m: m)),
        "package cycles": fmt(_unique(cycles(edges, lambda m: top_package(modules, m))
                                      + cycles(edges, lambda m: inner_package(modules, m)))),
        "upward imports": [f"{e}   [{why}]" for e, why in upward_imports(modules, edges, layers, only)],
    }


def _report(found: Dict[str, List[str]]) -> str:
    return "\n".join(f"{kind}:\n  " + "\n  ".join(items) for kind, items in found.items() if items)


# ---------------------------------------------------------------------------------------------
# Tests.

def test_layering_read_from_docs():
    layers, only = read_layering(os.path.join(ROOT, "docs", "architecture.md"))
    order = ["explorer", "evaluation", "apps", "inversion", "faces", "metrics", "training", "degradations", "torch_utils", "dnnlib"]
    assert sorted(order, key=layers.index) == order, layers
    assert only["dnnlib"] == set() and only["torch_utils"] == {"dnnlib"}
    assert only["faces"] == {"dnnlib"}


def test_project_imports_point_down():
    found = findings(ROOT)
    assert not any(found.values()), "import graph problems (see docs/architecture.md):\n" + _report(found)


def test_graph_sees_local_and_relative_imports():
    modules, edges = build_graph(ROOT)
    pairs = {(e.src, e.dst) for e in edges}
    assert ("training.networks", "training.degrad_block") in pairs     # a plain top-level import
    assert ("inversion", "inversion.api") in pairs                      # `from .api import ...` in __init__
    assert "train" in modules and "benchmarks.bench_train" in modules


def _write(root, files: Dict[str, str]):
    for rel, src in files.items():
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(src)


_DOC = """# Architecture
## Layers (imports only point down)
```
CLIs (top-level, thin)   run.py
high/                    uses low
low/                     base
```
Rules:
- `low/` imports nothing of the project.
## Modules
"""


def test_checker_catches_planted_problems(tmp_path):
    _write(tmp_path, {
        "docs/architecture.md": _DOC,
        "run.py": "import high.a\n",
        "high/__init__.py": "",
        "high/a.py": "from . import b\n",
        "high/b.py": "def f():\n    from high.a import g   # local import closing a cycle\n",
        "low/__init__.py": "",
        "low/x.py": "import os\n\ndef f():\n    import high.a\n",       # upward, function-local
    })
    found = findings(str(tmp_path))
    assert len(found["module cycles"]) == 1
    assert "high/a.py:1 high.a -> high.b" in found["module cycles"][0]
    assert "high/b.py:2 high.b -> high.a (function-local)" in found["module cycles"][0]
    assert found["package cycles"] == []
    assert found["upward imports"] == ["low/x.py:4 low.x -> high.a (function-local)   [low is below high]"]


def test_checker_catches_package_cycle_and_unplaced_package(tmp_path):
    _write(tmp_path, {
        "docs/architecture.md": _DOC.replace("- `low/` imports nothing of the project.\n", ""),
        "high/__init__.py": "", "high/a.py": "from low import y\n",
        "low/__init__.py": "", "low/y.py": "", "low/z.py": "from high.a import *\n",
        "extra/__init__.py": "",
    })
    found = findings(str(tmp_path))
    assert found["module cycles"] == []          # a -> y, z -> a: no cycle between files
    assert len(found["package cycles"]) == 1 and "low/z.py:1 low.z -> high.a" in found["package cycles"][0]
    assert found["upward imports"] == ["low/z.py:1 low.z -> high.a   [low is below high]"]
    assert found["unplaced packages"] == ["extra/ is not in the layer diagram of docs/architecture.md"]


def test_checker_catches_metrics_importing_the_training_loop(tmp_path):
    doc = _DOC.replace("high/", "metrics/").replace("low/                     base",
                                                    "training/                base")
    _write(tmp_path, {
        "docs/architecture.md": doc.replace("- `low/` imports nothing of the project.\n", ""),
        "metrics/__init__.py": "", "metrics/m.py": "from training import checkpoint, training_loop\n",
        "training/__init__.py": "", "training/checkpoint.py": "", "training/training_loop.py": "",
    })
    found = findings(str(tmp_path))
    assert found["upward imports"] == ["metrics/m.py:1 metrics.m -> training.training_loop   "
                                       "[metrics never imports training.training_loop]"]


if __name__ == "__main__":
    problems = findings(ROOT)
    print(_report(problems) or "import graph clean")
    sys.exit(1 if any(problems.values()) else 0)
