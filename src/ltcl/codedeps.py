"""Each DVC stage's code dependencies, derived from the code: the stage script and the import
closure of ltcl's modules it runs, so that ``dvc repro`` reruns a stage exactly when code it
executes changed (and never for code it cannot reach, such as another method's loss).

Imports are read from the source with ``ast`` (top-level and function-local ones alike; importing
``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``).  The methods a stage runs are
chosen by params through ``ltcl.registry``, which imports them by name at run time; their code is
listed per method name in ``deps/<section>.method/<name>/`` as symlinks to the files of the
method's own import closure (DVC hashes a symlink's target), and dvc.yaml depends on
``deps/<section>.method/${<section>.method}``, so a stage depends on the code of the configured
method only.

``ltcl deps`` prints the difference between dvc.yaml and the code; ``ltcl deps --write`` rewrites
the code entries of every stage's deps (other entries and comments are kept) and the symlinks.
``tests/test_codedeps.py`` fails while they differ.  Standard library and ruamel.yaml only (DVC
depends on it): no torch is imported here.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
from pathlib import Path

from ltcl.registry import TABLES, module_of

# stages whose code picks a method through the registry by params: stage -> params section
METHOD_STAGES = {"pretrain": "pretrain", "distill": "distill"}
CODE_PREFIXES = ("stages/", "src/ltcl/", "deps/")
# package data a module reads: a stage that imports the module depends on the data too
DATA_DEPS = {"src/ltcl/data/lists.py": ["src/ltcl/data/lists"]}
SCRIPT = re.compile(r"python3?\s+(stages/[\w/]+\.py)")


def module_files(repo: Path) -> dict[str, Path]:
    """Every module of src/ltcl: dotted name -> file (packages -> their ``__init__.py``)."""
    root = repo / "src"
    out = {}
    for f in sorted((root / "ltcl").rglob("*.py")):
        parts = list(f.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The ltcl modules ``path`` (module ``name``; "" for a script) imports anywhere in its body."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return {m for m in found if m in modules}


def import_graph(repo: Path) -> dict[str, set[str]]:
    """Module -> the ltcl modules its import statements name (directly)."""
    modules = module_files(repo)
    return {m: imported_modules(f, m, modules) - {m} for m, f in modules.items()}


def closure(start: set[str], graph: dict[str, set[str]]) -> set[str]:
    """Every module that runs when ``start`` is imported: the import statements' targets, and
    for each module the ``__init__`` of its parent packages (Python runs them first)."""
    seen, todo = set(), list(start)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            parts = m.split(".")
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
            todo.extend(graph.get(m, ()))
    return {m for m in seen if m in graph}


def rel(repo: Path, f: Path) -> str:
    return f.relative_to(repo).as_posix()


def script_closure(repo: Path, script: str, graph: dict[str, set[str]]) -> set[str]:
    return closure(imported_modules(repo / script, "", module_files(repo)), graph)


def method_dir(section: str, name: str) -> str:
    return f"deps/{section}.method/{name}"


def method_links(repo: Path) -> dict[str, list[str]]:
    """``deps/<section>.method/<name>`` -> the src files that directory must link to: the import
    closure of the method's module minus what the stage using it imports anyway."""
    graph = import_graph(repo)
    modules = module_files(repo)
    stage_code = {s: script_closure(repo, f"stages/{s}.py", graph) for s in METHOD_STAGES}
    out = {}
    for stage, section in METHOD_STAGES.items():
        for name in TABLES[section]:
            own = closure({module_of(section, name)}, graph) - stage_code[stage]
            out[method_dir(section, name)] = sorted(rel(repo, modules[m]) for m in own)
    return out


def stage_scripts(dvc_yaml: dict) -> dict[str, tuple[str, dict]]:
    """Stage name -> (its script, the dict that holds its ``deps``) of a parsed dvc.yaml."""
    out = {}
    for name, st in dvc_yaml["stages"].items():
        body = st["do"] if "do" in st else st
        m = SCRIPT.search(body["cmd"])
        if m:
            out[name] = (m.group(1), body)
    return out


def expected_code_deps(repo: Path, script: str, stage: str, graph=None) -> list[str]:
    """The code entries a stage's deps must hold: its script, the src files it imports, the
    package data they read (:data:`DATA_DEPS`), and the method directory when it runs a method
    chosen by params."""
    graph = graph or import_graph(repo)
    modules = module_files(repo)
    files = sorted(rel(repo, modules[m]) for m in script_closure(repo, script, graph))
    out = [script, *files, *(d for f in files for d in DATA_DEPS.get(f, []))]
    if stage in METHOD_STAGES:
        section = METHOD_STAGES[stage]
        out.append(f"deps/{section}.method/${{{section}.method}}")
    return out


def _load_dvc_yaml(path: Path):
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 120
    y.indent(mapping=2, sequence=4, offset=2)  # dvc.yaml's own layout
    return y, y.load(path.read_text())


def differences(repo: Path) -> list[str]:
    """Human-readable differences between dvc.yaml / deps/ and the code (empty: in sync)."""
    _, doc = _load_dvc_yaml(repo / "dvc.yaml")
    graph = import_graph(repo)
    out = []
    for stage, (script, body) in stage_scripts(doc).items():
        have = [d for d in body.get("deps", []) if isinstance(d, str) and d.startswith(CODE_PREFIXES)]
        want = expected_code_deps(repo, script, stage, graph)
        for d in sorted(set(want) - set(have)):
            out.append(f"{stage}: missing dep {d}")
        for d in sorted(set(have) - set(want)):
            out.append(f"{stage}: dep {d} is not code the stage runs")
    links = method_links(repo)
    for d, files in links.items():
        have = sorted(_link_targets(repo / d))
        if have != files:
            out.append(f"{d}: links {have}, the method's code is {files}")
    for sub in sorted((repo / "deps").glob("*.method/*")):
        if rel(repo, sub) not in links:
            out.append(f"{rel(repo, sub)}: no such method in ltcl.registry")
    return out


def _link_targets(d: Path) -> list[str]:
    """The repo-relative files the symlinks in ``d`` point to."""
    if not d.is_dir():
        return []
    repo = d.parents[2].resolve()
    return [(d / os.readlink(p)).resolve().relative_to(repo).as_posix() for p in sorted(d.iterdir()) if p.is_symlink()]


def write(repo: Path) -> list[str]:
    """Rewrite the code entries of dvc.yaml's deps and the method directories; returns what changed."""
    changes = differences(repo)
    y, doc = _load_dvc_yaml(repo / "dvc.yaml")
    graph = import_graph(repo)
    for stage, (script, body) in stage_scripts(doc).items():
        deps = body.get("deps", [])
        rest = [d for d in deps if not (isinstance(d, str) and d.startswith(CODE_PREFIXES))]
        new = expected_code_deps(repo, script, stage, graph) + list(rest)
        if list(deps) != new:
            deps.clear()
            deps.extend(new)
    with open(repo / "dvc.yaml", "w") as fh:
        y.dump(doc, fh)
    links = method_links(repo)
    for d, files in links.items():
        path = repo / d
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        for f in files:
            name = f.removeprefix("src/").removesuffix(".py").replace("/", ".") + ".py"
            os.symlink(os.path.relpath(repo / f, path), path / name)
    for sub in (repo / "deps").glob("*.method/*"):
        if rel(repo, sub) not in links:
            shutil.rmtree(sub)
    return changes


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out
