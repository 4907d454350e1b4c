"""The package layout, checked on the source: who may import whom, and no import cycles.

Every import counts, including those inside functions and under `if TYPE_CHECKING:`: a cycle
hidden by a lazy import is still a cycle for whoever reads or changes the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "controlplane"

# Modules the translator may use besides controlplane.ir and itself: generic helpers that know
# nothing of any frontend (protobuf wire helpers, xDS type URLs).
TRANSLATE_MAY_USE = {"controlplane.protowire", "controlplane.xds.resources"}
# Frontends turn objects into IR; they never reach into the translator or the xDS server.
FRONTENDS = ("controlplane.ingress", "controlplane.gatewayapi", "controlplane.knative", "controlplane.eastwest",
             "controlplane.services")
# Cycles still to be broken, as sorted module tuples (none left).
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every controlplane module `path` imports, wherever the import statement is."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports pkg.mod when that is a module, else a name of pkg.
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]  # fmt: skip
        else:
            continue
        out.update(n for n in names if n.startswith("controlplane"))
    return {_nearest(n, known) for n in out} - {None}  # type: ignore[misc]


def _nearest(name: str, known: set[str]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(p, known) - {m} for m, p in mods.items()}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_translate_imports_only_the_ir() -> None:
    bad = {
        (m, dep)
        for m, deps in graph().items()
        if _within(m, "controlplane.translate")
        for dep in deps
        if not (
            _within(dep, "controlplane.translate")
            or _within(dep, "controlplane.ir")
            or dep in TRANSLATE_MAY_USE
            or dep == "controlplane"
        )
    }
    assert not bad, f"translate/ may import only ir/ and {sorted(TRANSLATE_MAY_USE)}: {sorted(bad)}"


def test_ir_imports_nothing_else() -> None:
    bad = {(m, d) for m, deps in graph().items() if _within(m, "controlplane.ir") for d in deps
           if not _within(d, "controlplane.ir") and d != "controlplane"}  # fmt: skip
    assert not bad, f"the IR depends on nothing of Meridian's: {sorted(bad)}"


def test_frontends_never_import_translate_or_xds() -> None:
    bad = {
        (m, d)
        for m, deps in graph().items()
        if any(_within(m, f) for f in FRONTENDS)
        for d in deps
        if _within(d, "controlplane.translate") or _within(d, "controlplane.xds")
    }
    assert not bad, f"frontends build IR only: {sorted(bad)}"


def cycles(g: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[tuple[str, ...]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(tuple(sorted(comp)))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    found = set(cycles(graph()))
    assert found <= KNOWN_CYCLES, f"import cycles: {sorted(found - KNOWN_CYCLES)}"


def test_cycle_finder_finds_a_cycle() -> None:
    """The check itself can fail: a two-module loop and a lazy import are both found."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [("a", "b")]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_status_admin_and_kube_mode_read_the_view_not_the_app() -> None:
    """Status, admin, history and Kubernetes mode depend on the engine's IngressView (or the cache),
    never on the app or the controller's internals."""
    g = graph()
    readers = ["controlplane.status", "controlplane.status_tracking", "controlplane.admin", "controlplane.kube_mode"]
    readers += [m for m in g if _within(m, "controlplane.history")]
    for m in readers:
        assert not g[m] & {"controlplane.app", "controlplane.controller"}, (m, sorted(g[m]))


def test_kube_mode_does_not_swallow_import_errors() -> None:
    """A broken status module must fail loudly, not make status writing vanish."""
    tree = ast.parse((ROOT / "kube_mode.py").read_text())
    handlers = [h for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler)]
    assert not [h for h in handlers if "ImportError" in ast.dump(h.type) if h.type is not None]


MAX_CLASS_LINES = 250


def test_no_class_is_250_lines_or_more() -> None:
    """One concept per class: none reaches 250 lines (decorators and docstring included)."""
    big = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                size = (node.end_lineno or node.lineno) - start + 1
                if size >= MAX_CLASS_LINES:
                    big.append(f"{path.relative_to(ROOT.parent)}:{node.name} ({size} lines)")
    assert not big, f"classes of {MAX_CLASS_LINES} lines or more: {big}"
