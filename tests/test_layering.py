"""The package's structure, read from its imports (``ast``; nothing is imported but the faces):
one way down, no cycle between files, and a public face per package.

The layers, lowest first, are those of ``docs/architecture.md``. A module may import its own
layer and the layers below it, never one above. Every import counts: at the top of a file, inside
a function, under ``TYPE_CHECKING``, and the modules named as strings to ``lazy(...)`` and
``import_module(...)`` (the package's way of importing torch-heavy modules on first use), so a
cycle cannot hide in a function body.
"""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lookbench"

# Lowest first. A layer is a list of module prefixes; ``lookbench`` itself (its __init__, the
# face of the whole package: it exports the scripting API) is the top.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("lookbench._lazy", "lookbench._messages", "lookbench._references",
              "lookbench._suggest", "lookbench._tempfiles", "lookbench._version",
              "lookbench.choices", "lookbench.directions", "lookbench.hparams",
              "lookbench.units", "lookbench.theory", "lookbench.stats", "lookbench.timeline")),
    ("optim", ("lookbench.optim",)),
    ("tasks", ("lookbench.tasks",)),
    ("results", ("lookbench.results",)),
    ("comparison", ("lookbench.comparison",)),
    ("study", ("lookbench.study",)),
    ("coordination", ("lookbench.coordination",)),
    ("progress", ("lookbench.progress",)),
    ("execution", ("lookbench.execution",)),
    ("launchers", ("lookbench.launchers",)),
    ("report", ("lookbench.report",)),
    ("commands", ("lookbench.api", "lookbench.cli", "lookbench.__main__", "lookbench")),
]


# Besides the order: layers a package does not use although they lie below it, as its
# docstring says (a report reads a study's files and never runs one).
NEVER: dict[str, tuple[str, ...]] = {
    "lookbench.report": ("lookbench.execution", "lookbench.launchers"),
}


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def package_of(name: str, mods: dict[str, Path]) -> str:
    """The package a module belongs to (a package: its parent)."""
    return name.rpartition(".")[0] if "." in name else name


class Import:
    """One name (or module) a module imports from a module of the package."""

    def __init__(self, importer: str, source: str, name: str | None, line: int) -> None:
        self.importer, self.source, self.name, self.line = importer, source, name, line

    def __repr__(self) -> str:
        what = f"{self.source}.{self.name}" if self.name else self.source
        return f"{self.importer}:{self.line} imports {what}"


def imports(mods: dict[str, Path]) -> Iterator[Import]:
    """Every import of a package module by a package module, however it is written."""
    for importer, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        here = importer if path.name == "__init__.py" else package_of(importer, mods)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(importer, alias.name, None, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    if f"{source}.{alias.name}" in mods:  # a module, imported from its package
                        yield Import(importer, f"{source}.{alias.name}", None, node.lineno)
                    else:
                        yield Import(importer, source, alias.name, node.lineno)
            elif (isinstance(node, ast.Call) and node.args
                  and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)
                  and (getattr(node.func, "id", None) in ("lazy", "import_module")
                       or getattr(node.func, "attr", None) == "import_module")):
                yield Import(importer, node.args[0].value, None, node.lineno)
            elif (isinstance(node, ast.Assign) and importer == "lookbench"
                  and any(getattr(t, "id", None) == "_LAZY" for t in node.targets)
                  and isinstance(node.value, ast.Dict)):  # the root face's lazy exports
                for key, value in zip(node.value.keys, node.value.values):
                    if isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                        yield Import(importer, value.value, key.value, node.lineno)


def owner(source: str, mods: dict[str, Path]) -> str | None:
    """The package module an import resolves to (the longest module name that prefixes it)."""
    while source:
        if source in mods:
            return source
        source = source.rpartition(".")[0]
    return None


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS (and docs/architecture.md)"
    return rank


def graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in imports(mods):
        target = owner(imp.source, mods) if imp.source.startswith("lookbench") else None
        if target is not None and target != imp.importer:
            edges[imp.importer].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def faces(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Each package's public face: the names its ``__init__``'s ``__all__`` lists."""
    out = {}
    for name, path in mods.items():
        if path.name != "__init__.py":
            continue
        names: set[str] = set()
        assigned: dict[str, ast.expr] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        assigned[target.id] = node.value
        listed = assigned.get("__all__")
        if isinstance(listed, ast.Call) and listed.args:  # __all__ = sorted(_WHERE)
            listed = assigned.get(getattr(listed.args[0], "id", ""))
        if isinstance(listed, ast.Dict):  # (a lazy face: its table's names)
            names = {k.value for k in listed.keys if isinstance(k, ast.Constant)}
        elif isinstance(listed, (ast.List, ast.Tuple)):
            names = {e.value for e in listed.elts if isinstance(e, ast.Constant)}
        out[name] = names
    return out


def violations(root: Path = PACKAGE) -> dict[str, list[str]]:
    """What breaks each rule, as lines (empty lists: the structure holds)."""
    mods = modules(root)
    edges = graph(mods)
    found: dict[str, list[str]] = {"cycles": [], "upward": [], "private": [], "face": []}
    found["cycles"] = [" <-> ".join(c) for c in cycles(edges)]
    for imp in imports(mods):
        if not imp.source.startswith("lookbench"):
            continue
        target = owner(imp.source, mods)
        if target is None or target == imp.importer:
            continue
        for package, banned in NEVER.items():
            if _inside(imp.importer, package) and any(_inside(target, b) for b in banned):
                found["upward"].append(f"{imp!r}: {package} never imports {target}")
        if layer_of(target) > layer_of(imp.importer):
            found["upward"].append(
                f"{imp!r}: {LAYERS[layer_of(imp.importer)][0]} must not import "
                f"{LAYERS[layer_of(target)][0]}")
    face = faces(mods)
    for imp in imports(mods):
        target = owner(imp.source, mods) if imp.source.startswith("lookbench") else None
        if target is None or target == imp.importer:
            continue
        # A private module or name (a leading underscore) belongs to the package that holds
        # it: its modules, and those of the packages inside it, may import it; no other may.
        path = target.split(".")
        for i, part in enumerate(path[1:], start=1):
            if _private(part) and not _inside(imp.importer, ".".join(path[:i])):
                found["private"].append(f"{imp!r}")
                break
        else:
            holder = target if mods[target].name == "__init__.py" else package_of(target, mods)
            if imp.name and _private(imp.name) and not _inside(imp.importer, holder):
                found["private"].append(f"{imp!r}")
        # A name crossing into a package from outside it is on that package's face (the face
        # itself, ``from lookbench import tasks``, is what a package shows).
        if imp.name is None and mods[target].name == "__init__.py":
            continue
        outer = _outermost_crossed(imp.importer, target, mods)
        if outer is not None:
            listed = face.get(outer, set())
            crossing = imp.name or target.rpartition(".")[2]
            if crossing not in listed:
                found["face"].append(f"{imp!r}: not in {outer}.__all__")
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _outermost_crossed(importer: str, target: str, mods: dict[str, Path]) -> str | None:
    """The highest package (below ``lookbench`` itself) that holds ``target`` and not
    ``importer``: the face the import crosses. None: the import stays inside a package, or
    ``target`` is a module of the root (it is its own face)."""
    parts = target.split(".")
    for i in range(2, len(parts) + 1):
        package = ".".join(parts[:i])
        if package == target and mods[target].name != "__init__.py":
            return None  # (the module itself, not a package)
        if not _inside(importer, package):
            return package
    return None


def test_no_import_cycle_between_files():
    assert violations()["cycles"] == []


def test_no_layer_imports_one_above_it():
    assert violations()["upward"] == []


def test_no_module_imports_another_packages_private_name():
    assert violations()["private"] == []


def test_names_crossing_a_package_boundary_are_on_its_face():
    assert violations()["face"] == []


@pytest.mark.parametrize("package", sorted(p for p, path in modules().items()
                                           if path.name == "__init__.py" and p != "lookbench"))
def test_every_name_on_a_face_is_there(package: str):
    """A face lists only what it gives: every name in ``__all__`` is an attribute (most faces
    import on first use, so this is what catches a misspelt entry)."""
    face = importlib.import_module(package)
    for name in getattr(face, "__all__", []):
        assert getattr(face, name) is not None, f"{package}.{name}"


def test_the_checks_catch_what_they_are_for(tmp_path: Path):
    """The rules, on a small package written for the purpose: each kind of breach is found."""
    root = tmp_path / "lookbench"
    for folder in ("", "tasks", "results", "study", "execution"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "__init__.py").write_text("")
    (root / "hparams.py").write_text("")
    (root / "tasks" / "__init__.py").write_text("__all__ = ['Task']\n")
    (root / "tasks" / "base.py").write_text(
        "def f():\n    from lookbench.results.schema import check\n")  # upward, in a function
    (root / "results" / "__init__.py").write_text("__all__ = []\n")
    (root / "results" / "schema.py").write_text(
        "from lookbench.tasks import base\n")  # with the line above: a cycle
    (root / "study" / "__init__.py").write_text("__all__ = ['TrialConfig']\n")
    (root / "study" / "config.py").write_text("TrialConfig = 1\n")
    (root / "execution" / "__init__.py").write_text("__all__ = []\n")
    (root / "execution" / "worker.py").write_text(
        "from lookbench.study.config import TrialConfig\n"  # on the face: fine
        "from lookbench.study.config import _hidden\n"  # another package's private name
        "from lookbench.tasks.base import f\n"  # not on tasks' face
        "from lookbench import hparams\n")  # a root module: its own face
    found = violations(root)
    assert found["cycles"] == ["lookbench.results.schema <-> lookbench.tasks.base"]
    assert [line.split(":")[0] for line in found["upward"]] == ["lookbench.tasks.base"]
    assert found["private"] == ["lookbench.execution.worker:2 imports "
                                "lookbench.study.config._hidden"]
    assert sorted(found["face"]) == [
        "lookbench.execution.worker:2 imports lookbench.study.config._hidden: not in "
        "lookbench.study.__all__",
        "lookbench.execution.worker:3 imports lookbench.tasks.base.f: not in "
        "lookbench.tasks.__all__",
        "lookbench.results.schema:1 imports lookbench.tasks.base: not in lookbench.tasks.__all__",
        "lookbench.tasks.base:2 imports lookbench.results.schema.check: not in "
        "lookbench.results.__all__"]
