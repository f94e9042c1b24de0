"""The package's import graph has no cycles, and every function-level import says why it is lazy.

Every ``import`` and ``from ... import`` of every module counts: at module level, inside
functions and inside ``if TYPE_CHECKING:`` blocks, relative and absolute. ``from a.b import c``
counts as importing ``a.b.c`` when ``c`` is a submodule, and as importing ``a.b`` otherwise.

Convention for an import inside a function (or method): it carries a trailing comment
``# lazy: <reason>`` on its first line, or it belongs to a run of consecutive import statements
whose first statement carries one or stands right below a line that is only such a comment. The
reason names what the lazy import saves:

* ``heavy: <module>``  - a heavy module the caller should not pay for up front (torch, ...);
* ``optional: <module>`` - a module that may not be installed (onnx, deepspeed, ...);
* ``fast cli`` - keeps ``murauer-dist --help`` and light commands from importing the rest.

For example ``import torch  # lazy: heavy: torch``, or, for a block::

    # lazy: heavy: torch (the parent process only starts the workers)
    import torch
    from murauer_dist.models import build_model

Import graph edges of a module's parent packages (``import a.b.c`` also runs ``a/__init__`` and
``a/b/__init__``) are not counted; a package's ``__init__`` that imports its submodules, and those
submodules importing one another by absolute name, is the normal way packages work. Imports by
name at run time (``importlib.import_module(...)``, as bench/__init__ and shards/__init__ do) are
not seen.
"""
import ast
import re
from pathlib import Path

from conftest import REPO

PACKAGE = "murauer_dist"
ROOT = REPO / PACKAGE
LAZY_COMMENT = re.compile(r"#\s*lazy:\s*(heavy: \S.*|optional: \S.*|fast cli\b.*)$")


def module_files():
    """Map each module's dotted name to its file."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def resolve(module, node, known):
    """The package modules an import node brings in, from module ``module``."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return [_nearest_known(name, known) for name in names if name.split(".")[0] == PACKAGE]
    is_package = known[module].name == "__init__.py"
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != PACKAGE:
        return []
    found = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        found.append(sub if sub in known else _nearest_known(target, known))
    return found


def _nearest_known(name, known):
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def import_nodes(tree):
    """(node, inside_function) for every import in the tree."""
    return [(node, block is not None) for node, block in _imports_with_blocks(tree)]


def _imports_with_blocks(tree):
    """(node, first line of its run of consecutive imports, or None outside functions) for every import."""
    out = []

    def walk(node, in_function):
        for _field, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            block_start = None
            for child in children:
                if not isinstance(child, ast.AST):
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    if block_start is None:
                        block_start = child.lineno
                    out.append((child, block_start if in_function else None))
                    continue
                block_start = None
                walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    walk(tree, False)
    return out


def parse_all():
    known = module_files()
    graph, function_imports = {}, []
    for module, path in known.items():
        source = path.read_text()
        tree = ast.parse(source, str(path))
        lines = source.splitlines()
        edges = {}
        for node, block_start in _imports_with_blocks(tree):
            for target in resolve(module, node, known):
                if target in known and target != module:
                    edges.setdefault(target, node.lineno)
            if block_start is not None:
                function_imports.append((path, node.lineno, block_start, lines))
        graph[module] = edges
    return graph, function_imports


def find_cycles(graph):
    """Every strongly connected component of more than one module, each shown as one cycle through it."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = [0]

    def strongconnect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(set(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph, component):
    """A shortest cycle inside a strongly connected component, as a list of modules."""
    start = min(component)
    previous, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    chain = [v]
                    while previous[chain[-1]] is not None:
                        chain.append(previous[chain[-1]])
                    return chain[::-1] + [start]
                if w in component and w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")


def describe(graph, cycle):
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        steps.append(f"{a} -> {b} (line {graph[a][b]})")
    return " -> ".join(cycle) + "\n      " + "\n      ".join(steps)


def _lazy_comment_on(line):
    return "#" in line and bool(LAZY_COMMENT.search(line[line.index("#"):]))


def has_lazy_reason(lines, lineno, block_start):
    """The import's own line says why, or its block's first line, or the comment line above the block."""
    if _lazy_comment_on(lines[lineno - 1]) or _lazy_comment_on(lines[block_start - 1]):
        return True
    above = lines[block_start - 2].strip() if block_start >= 2 else ""
    return above.startswith("#") and _lazy_comment_on(above)


def test_cycle_finder_reports_a_readable_chain():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    (cycle,) = find_cycles(graph)
    assert cycle == ["a", "b", "c", "a"]
    assert describe(graph, cycle).startswith("a -> b -> c -> a")


def test_resolve_counts_submodules_relative_and_type_only_imports():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from murauer_dist.train import loop\n"
        "from . import step\n"
        "from .guards import x\n"
        "if TYPE_CHECKING:\n"
        "    from ..methods import STAGES\n"
        "def f():\n"
        "    import murauer_dist.dist  # lazy: heavy: torch\n"
    )
    known = {m: Path(f"{m}.py") for m in (
        "murauer_dist.train.run_state", "murauer_dist.train.loop", "murauer_dist.train.step",
        "murauer_dist.train.guards", "murauer_dist.methods", "murauer_dist.dist", "murauer_dist.train")}
    known["murauer_dist.train"] = Path("__init__.py")
    found = [(t, f) for node, f in import_nodes(tree) for t in resolve("murauer_dist.train.run_state", node, known)]
    assert found == [
        ("murauer_dist.train.loop", False), ("murauer_dist.train.step", False), ("murauer_dist.train.guards", False),
        ("murauer_dist.methods", False), ("murauer_dist.dist", True)]


def test_lazy_comment_convention():
    source = (
        "def f():\n"
        "    # lazy: heavy: torch\n"
        "    import torch\n"
        "    from a import b\n"
        "    x = 1\n"
        "    import c\n"
        "    import d  # lazy: optional: onnx\n"
        "    import e  # lazy: cycle-free\n"
        "    import g  # lazy: fast cli\n"
    )
    lines = source.splitlines()
    found = {node.lineno: has_lazy_reason(lines, node.lineno, block)
             for node, block in _imports_with_blocks(ast.parse(source))}
    assert found == {3: True, 4: True, 6: False, 7: True, 8: False, 9: True}


def test_no_import_cycles():
    graph, _ = parse_all()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (type-only imports count too):\n  " + "\n  ".join(
        describe(graph, c) for c in cycles)


def test_function_level_imports_say_why_they_are_lazy():
    _, function_imports = parse_all()
    missing = [
        f"{path.relative_to(REPO)}:{lineno}: {lines[lineno - 1].strip()}"
        for path, lineno, block_start, lines in function_imports
        if not has_lazy_reason(lines, lineno, block_start)
    ]
    assert not missing, (
        "imports inside functions need '# lazy: heavy: <module>', '# lazy: optional: <module>' or "
        "'# lazy: fast cli' on their line or the line above; otherwise import at the top:\n  "
        + "\n  ".join(missing))
