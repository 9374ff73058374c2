"""Every DVC stage lists, as deps, all the project code it runs, so that `dvc repro` reruns it when that code changes.

Per stage: its module (`python -m pipelines.<stage>` in `cmd`) and every `components` / `pipelines` module it
imports, transitively, found statically (tests/import_graph.py: pure `ast`, nothing imported), including lazy
imports inside functions, relative imports, `from package import submodule` and each package's __init__.py.
A file is covered when the stage's deps name it or a folder holding it.
"""
from __future__ import annotations

import itertools
import posixpath
import re
import shlex
from pathlib import Path
from typing import Any, Iterable

import pytest
import yaml

from tests.import_graph import PROJECT_PACKAGES, ImportGraph, walk

REPO_ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = REPO_ROOT / "dvc.yaml"

_VAR = re.compile(r"\$\{\s*([A-Za-z_][\w.\-]*)\s*\}")


# ---------------------------------------------------------------- dvc.yaml -> (stage name, cmd, deps)

def _lookup(ctx: dict, dotted: str) -> Any:
    value: Any = ctx
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(dotted)
    return value


def _interpolate(value: Any, ctx: dict) -> Any:
    """DVC-style `${a.b}` substitution in strings, lists and dicts; an unknown name is left as written."""
    if isinstance(value, str):
        whole = _VAR.fullmatch(value.strip())
        if whole:
            try:
                return _lookup(ctx, whole.group(1))
            except KeyError:
                return value

        def sub(m: re.Match) -> str:
            try:
                return str(_lookup(ctx, m.group(1)))
            except KeyError:
                return m.group(0)
        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [_interpolate(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, ctx) for k, v in value.items()}
    return value


def _global_context(doc: dict, root: Path) -> dict:
    """What `${...}` may name: params.yaml (DVC's default) and dvc.yaml's inline `vars` dicts."""
    ctx: dict = {}
    params = root / "params.yaml"
    if params.is_file():
        ctx.update(yaml.safe_load(params.read_text()) or {})
    for entry in doc.get("vars") or []:
        if isinstance(entry, dict):
            ctx.update(entry)
    return ctx


def _label(value: Any, index: int) -> str:
    return str(value) if isinstance(value, (str, int, float, bool)) else str(index)


def expand_stages(doc: dict, root: Path = REPO_ROOT) -> list[tuple[str, dict]]:
    """(name, definition) for every stage, `foreach` and `matrix` stages expanded into their instances."""
    ctx = _global_context(doc, root)
    out: list[tuple[str, dict]] = []
    for name, stage in (doc.get("stages") or {}).items():
        if not isinstance(stage, dict):
            continue
        if "foreach" in stage:
            items = _interpolate(stage["foreach"], ctx)
            body = stage.get("do") or {}
            if isinstance(items, dict):
                pairs = [(str(k), {**ctx, "key": k, "item": v}) for k, v in items.items()]
            elif isinstance(items, list):
                pairs = [(_label(v, i), {**ctx, "item": v}) for i, v in enumerate(items)]
            else:  # unresolvable template: check the body as written
                pairs = [("*", ctx)]
            out += [(f"{name}@{label}", _interpolate(body, local)) for label, local in pairs]
        elif "matrix" in stage:
            matrix = _interpolate(stage["matrix"], ctx)
            body = {k: v for k, v in stage.items() if k != "matrix"}
            if not isinstance(matrix, dict) or not all(isinstance(v, list) for v in matrix.values()):
                out.append((f"{name}@*", body))
                continue
            keys = list(matrix)
            for combo in itertools.product(*(list(enumerate(matrix[k])) for k in keys)):
                item = {k: v for k, (_, v) in zip(keys, combo)}
                label = "-".join(_label(v, i) for i, v in combo)
                out.append((f"{name}@{label}", _interpolate(body, {**ctx, "item": item})))
        else:
            out.append((name, _interpolate(stage, ctx)))
    return out


def stage_modules(cmd: str | list | None, root: Path = REPO_ROOT, wdir: str = ".") -> list[str]:
    """Project modules a stage's command runs: `python [opts] -m pkg.mod [args]` or `python path/to/mod.py`."""
    cmds = cmd if isinstance(cmd, list) else [cmd] if cmd else []
    found: list[str] = []
    for line in cmds:
        try:
            tokens = shlex.split(str(line))
        except ValueError:
            tokens = str(line).split()
        for i, tok in enumerate(tokens):
            if tok == "-m" and i + 1 < len(tokens):
                mod = tokens[i + 1]
            elif tok.startswith("-m") and len(tok) > 2 and not tok.startswith("--"):
                mod = tok[2:]
            elif tok.endswith(".py"):
                path = posixpath.normpath(posixpath.join(wdir, tok))
                if not (root / path).is_file():
                    continue
                mod = path[:-3].replace("/", ".")
            else:
                continue
            if mod.split(".")[0] in PROJECT_PACKAGES and mod not in found:
                found.append(mod)
    return found


def normalise(path: str, wdir: str = ".") -> str:
    """Repo-relative posix form of a dep path: no `./`, no trailing slash, wdir applied."""
    return posixpath.normpath(posixpath.join(wdir, str(path).strip().replace("\\", "/").rstrip("/") or "."))


def stage_deps(stage: dict) -> list[str]:
    wdir = str(stage.get("wdir") or ".")
    deps: list[str] = []
    for dep in stage.get("deps") or []:
        for path in (dep if isinstance(dep, dict) else [dep]):  # a `- path: {options}` entry names its path
            deps.append(normalise(path, wdir))
    return deps


def uncovered(files: Iterable[str], deps: Iterable[str]) -> list[str]:
    """The files that neither a dep naming them nor a dep naming a folder above them covers."""
    deps = {normalise(d) for d in deps}
    if "." in deps:
        return []

    def covered(f: str) -> bool:
        return f in deps or any(f.startswith(d + "/") for d in deps)
    return [f for f in files if not covered(f)]


def missing_deps_message(name: str, graph: ImportGraph, missing: list[str]) -> str:
    lines = [f"dvc.yaml stage '{name}' lacks deps: {', '.join(missing)}"]
    for f in missing:
        importers = sorted(graph.files[f])
        shown = ", ".join(importers[:4]) + (f" and {len(importers) - 4} more" if len(importers) > 4 else "")
        lines.append(f"  {f} (imported by {shown})" if importers else f"  {f} (the stage's own module)")
    return "\n".join(lines)


# ---------------------------------------------------------------- the checks, one test id per stage

_DOC = yaml.safe_load(DVC_YAML.read_text()) if DVC_YAML.is_file() else {}
STAGES = expand_stages(_DOC or {})


@pytest.mark.parametrize("name,stage", STAGES, ids=[n for n, _ in STAGES])
def test_stage_deps_cover_imported_code(name: str, stage: dict):
    modules = stage_modules(stage.get("cmd"), wdir=str(stage.get("wdir") or "."))
    if not modules:
        pytest.skip(f"stage '{name}' runs no project module: {stage.get('cmd')!r}")
    graph = walk(REPO_ROOT, modules)
    assert not graph.unresolved, (
        f"dvc.yaml stage '{name}': imports of project modules that no file provides: "
        + "; ".join(f"{m} (in {', '.join(sorted(by)) or 'cmd'})" for m, by in sorted(graph.unresolved.items())))
    missing = uncovered(sorted(graph.files), stage_deps(stage))
    assert not missing, missing_deps_message(name, graph, missing)


@pytest.mark.parametrize("name,stage", STAGES, ids=[n for n, _ in STAGES])
def test_stage_code_deps_exist(name: str, stage: dict):
    """A code dep that was moved or deleted makes `dvc repro` fail with a missing dependency."""
    stale = [d for d in stage_deps(stage)
             if d.split("/")[0] in PROJECT_PACKAGES and not (REPO_ROOT / d).exists()]
    assert not stale, f"dvc.yaml stage '{name}' lists deps that do not exist: {', '.join(stale)}"


# ---------------------------------------------------------------- the machinery itself, on tiny fakes

def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_walker_follows_lazy_relative_and_submodule_imports(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/main.py": ("import os\nimport other\nfrom pkg.sub import alpha\n\n"
                        "def run():\n    from .lazy import thing  # lazy, relative\n    return thing\n"),
        "pkg/lazy.py": "from pkg.sub.beta import VALUE  # an attribute, not a submodule\nthing = VALUE\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/alpha.py": "from .. import helpers  # level-2 relative: `helpers` is a submodule of pkg\n",
        "pkg/sub/beta.py": "VALUE = 1\n",
        "pkg/sub/gamma.py": "import pkg.unused\n",  # never imported: neither it nor what it imports counts
        "pkg/helpers.py": "",
        "pkg/unused.py": "",
        "other/__init__.py": "",  # not a project package
        "other/thing.py": "",
    })
    graph = walk(tmp_path, ["pkg.main"], packages=("pkg",))
    assert set(graph.files) == {"pkg/__init__.py", "pkg/main.py", "pkg/lazy.py", "pkg/helpers.py",
                                "pkg/sub/__init__.py", "pkg/sub/alpha.py", "pkg/sub/beta.py"}
    assert graph.unresolved == {}
    assert graph.files["pkg/main.py"] == set()
    assert graph.files["pkg/lazy.py"] == {"pkg/main.py"}
    assert graph.files["pkg/helpers.py"] == {"pkg/sub/alpha.py"}
    assert graph.files["pkg/sub/beta.py"] == {"pkg/lazy.py"}
    assert graph.files["pkg/sub/__init__.py"] == {"pkg/main.py", "pkg/lazy.py"}


def test_walker_reports_imports_no_file_provides(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "from pkg import gone\n",
                      "pkg/mod.py": "import pkg.moved.away\nfrom ... import nope\n"})
    graph = walk(tmp_path, ["pkg.mod"], packages=("pkg",))
    assert set(graph.files) == {"pkg/__init__.py", "pkg/mod.py"}  # `gone` may be an attribute: not an error
    assert set(graph.unresolved) == {"pkg.moved.away", "<relative import above top level in pkg/mod.py>"}


def test_dvc_yaml_parsing_and_coverage(tmp_path):
    doc = {"vars": [{"mods": ["a", "b"]}], "stages": {
        "plain": {"cmd": "python -u -m pipelines.prepare --set x=1", "deps": ["components/data/", "./pipelines/x.py"]},
        "each": {"foreach": "${mods}", "do": {"cmd": ["echo hi", "python -m pipelines.${item}"],
                                             "deps": ["components/${item}.py"]}},
        "grid": {"matrix": {"m": ["c"], "n": [1, 2]}, "cmd": "python -m pipelines.${item.m}", "deps": []},
    }}
    stages = dict(expand_stages(doc, root=tmp_path))
    assert list(stages) == ["plain", "each@a", "each@b", "grid@c-1", "grid@c-2"]
    assert stage_modules(stages["plain"]["cmd"]) == ["pipelines.prepare"]
    assert stage_modules(stages["each@b"]["cmd"]) == ["pipelines.b"]
    assert stage_modules(stages["grid@c-2"]["cmd"]) == ["pipelines.c"]
    assert stage_modules("dvc exp show") == []
    assert stage_deps(stages["plain"]) == ["components/data", "pipelines/x.py"]
    assert stage_deps(stages["each@a"]) == ["components/a.py"]
    files = ["components/data/toy.py", "components/datax.py", "pipelines/x.py", "components/errors.py"]
    assert uncovered(files, stage_deps(stages["plain"])) == ["components/datax.py", "components/errors.py"]
    assert uncovered(files, ["."]) == []
