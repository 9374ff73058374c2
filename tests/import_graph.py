"""Static (pure `ast`, nothing imported) walk of the project modules a module pulls in, transitively.

Used by tests/test_dvc_deps.py to check that every DVC stage lists, as deps, all the code it runs.
Counted as an import: every `import a.b.c` (a, a.b and a.b.c), every `from m import n` (m, plus m.n where
m is a package and n one of its submodules), relative imports, `from pkg import *` (the submodules named
in the package's literal `__all__`), `importlib.import_module("literal")` / `__import__("literal")`, at
any depth (inside functions, `try`, `if`), and the `__init__.py` of every package on the way. Only
modules whose top-level package is one of `packages` are followed; they resolve to files under `root`
the way the import system would (regular package, then module, then namespace package).
"""
from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

PROJECT_PACKAGES = ("components", "pipelines")


@dataclass
class ImportGraph:
    """`files`: repo-relative posix path -> the files importing it (empty for a start module).
    `unresolved`: project module names that no file provides -> the files importing them."""
    files: dict[str, set[str]] = field(default_factory=dict)
    unresolved: dict[str, set[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Resolved:
    files: tuple[Path, ...]  # the __init__.py of each package on the way, then the module's own file
    is_package: bool         # a (regular or namespace) package: `from it import name` may name a submodule


def resolve(root: Path, module: str) -> _Resolved | None:
    """The files that importing `module` executes, or None when some part of the dotted name has no file."""
    parts = module.split(".")
    if not all(parts):
        return None
    files: list[Path] = []
    is_package = False
    for i in range(1, len(parts) + 1):
        base = root.joinpath(*parts[:i])
        if (base / "__init__.py").is_file():
            files.append(base / "__init__.py")
            is_package = True
        elif base.with_suffix(".py").is_file():
            if i < len(parts):  # a plain module has no submodules: `a.b.c` with a/b.py cannot import
                return None
            files.append(base.with_suffix(".py"))
            is_package = False
        elif base.is_dir():  # namespace package: nothing runs, but its submodules can be imported
            is_package = True
        else:
            return None
    return _Resolved(tuple(files), is_package)


def module_name(root: Path, path: Path) -> tuple[str, bool]:
    """Dotted name of the module in `path` (under `root`) and whether it is a package's __init__.py."""
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _literal_all(path: Path) -> list[str]:
    """The names in a module's literal `__all__ = [...]` (empty when absent or computed)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError):
        return []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                names = ast.literal_eval(node.value)
            except ValueError:
                return []
            return [n for n in names if isinstance(n, str)]
    return []


def imports_of(path: Path, module: str, is_package: bool) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(absolute module, names from it) for every import statement in the file; names is () for `import m`.
    A relative import that climbs above the top-level package yields the module name '' (unresolvable)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            if node.level == 0:
                yield node.module or "", names
                continue
            pkg_parts = package.split(".") if package else []
            up = node.level - 1
            if up >= len(pkg_parts):  # beyond the top-level package: an ImportError at run time
                yield "", names
                continue
            base = pkg_parts[: len(pkg_parts) - up]
            yield ".".join(base + ([node.module] if node.module else [])), names
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if fname in ("import_module", "__import__") and not node.args[0].value.startswith("."):
                yield node.args[0].value, ()


def walk(root: Path, modules: Iterable[str], packages: Iterable[str] = PROJECT_PACKAGES) -> ImportGraph:
    """Every file under `root` that importing `modules` executes, restricted to the top-level `packages`."""
    root = Path(root).resolve()
    packages = tuple(packages)
    graph = ImportGraph()
    queue: deque[Path] = deque()

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    def add(files: Iterable[Path], importer: str | None) -> None:
        for f in files:
            key = rel(f)
            if key not in graph.files:
                graph.files[key] = set()
                queue.append(f)
            if importer is not None and importer != key:
                graph.files[key].add(importer)

    def project(name: str) -> bool:
        return name.split(".")[0] in packages

    for start in modules:
        found = resolve(root, start)
        if found is None:
            graph.unresolved.setdefault(start, set())
        else:
            add(found.files, None)

    while queue:
        path = queue.popleft()
        importer = rel(path)
        name, is_package = module_name(root, path)
        for target, names in imports_of(path, name, is_package):
            if target and not project(target):
                continue
            found = resolve(root, target) if target else None
            if found is None:
                graph.unresolved.setdefault(target or f"<relative import above top level in {importer}>",
                                            set()).add(importer)
                continue
            add(found.files, importer)
            if not found.is_package:
                continue
            if "*" in names:
                init = found.files[-1] if found.files and found.files[-1].name == "__init__.py" else None
                names = tuple(n for n in names if n != "*") + (tuple(_literal_all(init)) if init else ())
            for n in names:  # `from package import submodule`; a plain attribute resolves to nothing
                sub = resolve(root, f"{target}.{n}")
                if sub is not None:
                    add(sub.files, importer)
    return graph
