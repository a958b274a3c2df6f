"""Architecture figures of a Python package, read from its source with ``ast`` (nothing is imported).

    python scripts/code_figures.py [package_dir] [--top N]

Prints the largest modules (lines, as ``wc -l``), the longest functions (``def`` line to last line),
import cycles, imports of a higher layer (``LAYERS``) and regexes/globs over metric keys outside the
contract module ``<package>.metrics``; ``tests/test_architecture.py`` asserts the limits. Import edges:
every import statement (functions' too) but those under ``if TYPE_CHECKING:``; ``from pkg import sub``
is an edge to ``pkg.sub`` when ``sub`` is a module; importing ``pkg.mod`` also runs ``pkg/__init__``,
an edge unless ``pkg`` encloses the importer (its own packages are initialised before it runs).
"""
from __future__ import annotations

import argparse
import ast
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Layers, lowest first, by the first name below the package; a module may import its own layer or lower.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("foundation", frozenset({"errors", "device", "registry", "escaping", "validate", "files", "yamlfile", "metrics",
                              "records", "card", "compat", "results", "presets", "declarations", "samples"})),
    ("inputs", frozenset({"models", "data"})),
    ("pruning", frozenset({"pruning"})),
    ("evaluation", frozenset({"evaluators", "conditions"})),
    ("engine", frozenset({"engine"})),
    ("analysis", frozenset({"analysis", "potential"})),
    ("outputs", frozenset({"report", "gate"})),
    ("entry", frozenset({"config", "session", "provenance", "finish", "api", "cli", "cli_compare", "__init__",
                         "__main__"})),
)
#: The metric families whose keys only the contract module may parse.
METRIC_PREFIXES: tuple[str, ...] = ("clean/", "corruption/", "noise/", "adversarial/", "calibration/", "ood/",
                                    "agreement/", "shift/")
CONTRACT_MODULE = "metrics"
_RE_FUNCTIONS = frozenset({"compile", "match", "search", "fullmatch"})
_FNMATCH_FUNCTIONS = frozenset({"fnmatch", "fnmatchcase", "filter", "translate"})


@dataclass(frozen=True)
class Module:
    """One source file: dotted name, path from the package's parent, parsed tree and physical line count."""
    name: str
    file: str
    is_package: bool
    tree: ast.Module
    lines: int


@dataclass(frozen=True)
class Function:
    """A function or method: module-qualified name, where it starts and how many lines it spans."""
    name: str
    file: str
    line: int
    lines: int


@dataclass(frozen=True)
class Edge:
    """``importer`` imports ``imported`` at ``line`` of the importer's file (first such line)."""
    importer: str
    imported: str
    line: int


@dataclass(frozen=True)
class Cycle:
    """A strongly connected component (sorted) and one shortest cycle through it, first node repeated last."""
    members: tuple[str, ...]
    shortest: tuple[Edge, ...]

    def describe(self) -> str:
        """``a -> b (line 3 of a) -> a (line 7 of b)``, the way a reader follows the imports."""
        steps = [self.shortest[0].importer] + [f"{e.imported} (line {e.line} of {e.importer})" for e in self.shortest]
        return " -> ".join(steps)


@dataclass(frozen=True)
class LayerViolation:
    """An import of a higher layer's module, or (``imported_layer`` None) a module in no layer."""
    edge: Edge
    importer_layer: str | None
    imported_layer: str | None

    def describe(self) -> str:
        """One line naming both modules and their layers."""
        e = self.edge
        return (f"{e.importer} [{self.importer_layer or 'unlayered'}] imports {e.imported} "
                f"[{self.imported_layer or 'unlayered'}] at line {e.line}")


@dataclass(frozen=True)
class PatternSite:
    """A regex or glob over metric keys: where it is and what it is."""
    file: str
    line: int
    what: str

    def describe(self) -> str:
        """``file:line  what``."""
        return f"{self.file}:{self.line}  {self.what}"


@dataclass(frozen=True)
class Figures:
    """Everything the tool measures; lists are sorted largest/longest first or by name."""
    package_dir: Path
    modules: list[Module]
    functions: list[Function]
    cycles: list[Cycle]
    layer_violations: list[LayerViolation]
    unlayered: list[str]
    metric_patterns: list[PatternSite]


def load_modules(package_dir: Path) -> list[Module]:
    """Parse every ``.py`` file below ``package_dir``, named as Python would import it."""
    modules = []
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        source = path.read_bytes()
        file = path.relative_to(package_dir.parent).as_posix()
        modules.append(Module(name, file, is_package, ast.parse(source, filename=file), source.count(b"\n")))
    return modules


def functions_of(module: Module) -> Iterator[Function]:
    """Every function and method of ``module`` (nested ones too), named ``module.Class.method``."""
    def walk(node: ast.AST, prefix: str) -> Iterator[Function]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                yield Function(name, module.file, child.lineno, (child.end_lineno or child.lineno) - child.lineno + 1)
                yield from walk(child, name)
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}.{child.name}")
            else:
                yield from walk(child, prefix)
    yield from walk(module.tree, module.name)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in or below ``nodes``, except those under ``if TYPE_CHECKING:``."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from import_nodes(node.orelse)
        else:
            yield from import_nodes(ast.iter_child_nodes(node))


def _imported_names(module: Module, node: ast.Import | ast.ImportFrom, known: set[str]) -> Iterator[str]:
    """Dotted names of the package's modules that ``node`` names explicitly."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield _known_prefix(alias.name, known)
        return
    base = node.module or ""
    if node.level:
        package = module.name if module.is_package else module.name.rpartition(".")[0]
        package = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
        base = f"{package}.{base}" if base else package
    for alias in node.names:
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else _known_prefix(base, known)


def _known_prefix(name: str, known: set[str]) -> str:
    """The longest prefix of ``name`` that is a known module ('' when none is)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return ""


def import_edges(modules: list[Module]) -> list[Edge]:
    """Import edges between the package's modules, first line each, sorted by importer then imported."""
    known = {m.name for m in modules}
    first: dict[tuple[str, str], int] = {}
    for module in modules:
        own = {".".join(module.name.split(".")[:i]) for i in range(1, module.name.count(".") + 2)}
        for node in import_nodes(module.tree.body):
            for target in _imported_names(module, node, known):
                if not target:
                    continue
                parts = target.split(".")
                parents = {".".join(parts[:i]) for i in range(1, len(parts))} & known
                for imported in {target} | (parents - own):
                    if imported != module.name:
                        first.setdefault((module.name, imported), node.lineno)
    return [Edge(a, b, line) for (a, b), line in sorted(first.items())]


def strongly_connected(nodes: list[str], edges: list[Edge]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, in order of their first member."""
    graph: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        graph[e.importer].append(e.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: dict[str, None] = {}  # insertion-ordered: a stack with fast membership
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack[start] = None
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while not component or component[-1] != node:
                        component.append(stack.popitem()[0])
                    components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack[child] = None
                work.append((child, iter(graph[child])))
            elif child in stack:
                low[node] = min(low[node], index[child])
    return sorted(components)


def shortest_cycle(members: list[str], edges: list[Edge]) -> tuple[Edge, ...]:
    """A shortest cycle inside one component (breadth first from each member; ties: by name)."""
    inside = set(members)
    out: dict[str, list[Edge]] = {m: [] for m in members}
    for e in edges:
        if e.importer in inside and e.imported in inside:
            out[e.importer].append(e)
    best: tuple[Edge, ...] = ()
    for start in members:
        came: dict[str, tuple[Edge, ...]] = {start: ()}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            closing = next((e for e in out[node] if e.imported == start), None)
            if closing is not None:
                path = came[node] + (closing,)
                if not best or len(path) < len(best):
                    best = path
                break
            for e in out[node]:
                if e.imported not in came:
                    came[e.imported] = came[node] + (e,)
                    queue.append(e.imported)
    return best


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name by its first name below the package (None: in no layer)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return next((layer for layer, names in LAYERS if top in names), None)


def layer_violations(edges: list[Edge]) -> list[LayerViolation]:
    """Imports of a higher layer, and imports from or of a module in no layer."""
    rank = {layer: i for i, (layer, _) in enumerate(LAYERS)}
    found = []
    for e in edges:
        a, b = layer_of(e.importer), layer_of(e.imported)
        if a is None or b is None or rank[a] < rank[b]:
            found.append(LayerViolation(e, a, b))
    return found


_Aliases = tuple[set[str], dict[str, str], set[str], dict[str, str]]


def _aliases(tree: ast.Module) -> _Aliases:
    """Local names of ``re``, of re's matching functions (to their own name), of ``fnmatch`` and of its functions."""
    re_mod, re_fn, fn_mod, fn_fn = {"re"}, {}, {"fnmatch"}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                {"re": re_mod, "fnmatch": fn_mod}.get(a.name, set()).add(a.asname or a.name)
        elif isinstance(node, ast.ImportFrom) and node.module in ("re", "fnmatch") and not node.level:
            names, into = (_RE_FUNCTIONS, re_fn) if node.module == "re" else (_FNMATCH_FUNCTIONS, fn_fn)
            into.update((a.asname or a.name, a.name) for a in node.names if a.name in names)
    return re_mod, re_fn, fn_mod, fn_fn


def _strings(node: ast.AST) -> list[str]:
    """The string constants in ``node`` (an f-string's constant parts included)."""
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _names_metric_family(text: str) -> bool:
    return any(prefix in text for prefix in METRIC_PREFIXES)


def _call_site(node: ast.Call, aliases: _Aliases) -> str | None:
    """What a regex-over-metric-keys or fnmatch call is, or None when ``node`` is neither."""
    re_mod, re_fn, fn_mod, fn_fn = aliases
    func = node.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        module, name = func.value.id, func.attr
        is_re = module in re_mod and name in _RE_FUNCTIONS
        is_fn = module in fn_mod and name in _FNMATCH_FUNCTIONS
    elif isinstance(func, ast.Name):
        name, is_re, is_fn = re_fn.get(func.id) or fn_fn.get(func.id, func.id), func.id in re_fn, func.id in fn_fn
    else:
        return None
    if is_fn:
        return f"fnmatch.{name}(...)"
    pattern = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "pattern"), None)
    if is_re and pattern is not None:
        family = next((s for s in _strings(pattern) if _names_metric_family(s)), None)
        if family is not None:
            return f"re.{name}({family!r})"
    return None


def metric_patterns(module: Module) -> list[PatternSite]:
    """Regexes naming a metric family, fnmatch calls, and module-level tables of metric globs."""
    aliases = _aliases(module.tree)
    found = [PatternSite(module.file, node.lineno, what) for node in ast.walk(module.tree)
             if isinstance(node, ast.Call) and (what := _call_site(node, aliases)) is not None]
    for statement in module.tree.body:
        if isinstance(statement, (ast.Assign, ast.AnnAssign)) and isinstance(
                statement.value, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
            for node in ast.walk(statement.value):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str) and "*" in node.value
                        and _names_metric_family(node.value)):
                    found.append(PatternSite(module.file, node.lineno, f"glob table entry {node.value!r}"))
    return sorted(found, key=lambda s: s.line)


def figures(package_dir: Path | str) -> Figures:
    """Measure the package at ``package_dir``."""
    package_dir = Path(package_dir).resolve()
    modules = load_modules(package_dir)
    edges = import_edges(modules)
    names = sorted(m.name for m in modules)
    contract = f"{package_dir.name}.{CONTRACT_MODULE}"
    cycles = [Cycle(tuple(c), shortest_cycle(c, edges)) for c in strongly_connected(names, edges) if len(c) > 1]
    return Figures(
        package_dir=package_dir,
        modules=sorted(modules, key=lambda m: (-m.lines, m.name)),
        functions=sorted((f for m in modules for f in functions_of(m)), key=lambda f: (-f.lines, f.name)),
        cycles=cycles,
        layer_violations=layer_violations(edges),
        unlayered=[n for n in names if layer_of(n) is None],
        metric_patterns=[s for m in modules if m.name != contract and not m.name.startswith(contract + ".")
                         for s in metric_patterns(m)],
    )


def report(fig: Figures, top: int = 5) -> str:
    """The figures as text, one section each."""
    out = [f"largest modules (lines, of {len(fig.modules)}):"]
    out += [f"  {m.lines:5d}  {m.file}" for m in fig.modules[:top]]
    out.append(f"longest functions (lines, of {len(fig.functions)}):")
    out += [f"  {f.lines:5d}  {f.name}  ({f.file}:{f.line})" for f in fig.functions[:top]]
    out.append(f"import cycles (strongly connected components): {len(fig.cycles)}")
    for c in fig.cycles:
        out += [f"  [{', '.join(c.members)}]", f"    shortest: {c.describe()}"]
    out.append(f"layer violations: {len(fig.layer_violations)}; unlayered modules: {len(fig.unlayered)}")
    out += [f"  {v.describe()}" for v in fig.layer_violations]
    out += [f"  unlayered: {name}" for name in fig.unlayered]
    out.append(f"metric-key patterns outside {fig.package_dir.name}.{CONTRACT_MODULE}: {len(fig.metric_patterns)}")
    out += [f"  {s.describe()}" for s in fig.metric_patterns]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Command line: print the figures of a package (default: robusteval/ beside this script's repo)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package_dir", nargs="?", type=Path,
                        default=Path(__file__).resolve().parent.parent / "robusteval")
    parser.add_argument("--top", type=int, default=5, help="how many modules and functions to list (default 5)")
    args = parser.parse_args(argv)
    print(report(figures(args.package_dir), args.top))


if __name__ == "__main__":
    main()
