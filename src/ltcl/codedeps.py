"""Each DVC stage's code dependencies, derived from the code: the stage script and the import
closure of ltcl's modules it runs, so that ``dvc repro`` reruns a stage exactly when code it
executes changed (and never for code it cannot reach, such as another method's loss).

Imports are read from the source with ``ast`` (top-level and function-local ones alike; importing
``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``).  dvc.yaml names the code of a stage
by two kinds of folders of symlinks (DVC hashes a symlink's target), so that it reads as the
pipeline rather than as import lists:

* ``deps/stage/<script>/``: the src files of the stage script's own import closure;
* ``deps/<section>.<choice>/<name>/``: the code of a method (strategy) chosen by params through
  ``ltcl.registry``, which imports it by name at run time; dvc.yaml depends on
  ``deps/pretrain.method/${pretrain.method}``, so a stage depends on the configured one's code only.

The ``params`` of the training stages and the report are :data:`ltcl.params.STAGE_PARAMS` (the
shared keys and the configured method's subsection, ``pretrain.${pretrain.method}``), written on
one line each; ``runtime`` is added where the stage runs torch.

``ltcl deps`` prints the difference between dvc.yaml / deps/ / docs/params.md and the code;
``ltcl deps --write`` rewrites the code entries of every stage's deps (other entries and comments
are kept), those params lists, the symlinks and the params reference (:mod:`ltcl.params_doc`).  ``tests/test_codedeps.py`` fails while they differ.  Standard library and ruamel.yaml
only (DVC depends on it): no torch is imported here.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shutil
from pathlib import Path

from ltcl import params_doc
from ltcl.params import STAGE_PARAMS
from ltcl.registry import CHOICE, TABLES, module_of

# stages whose code picks a method (strategy) through the registry by params: stage -> params sections
METHOD_STAGES = {"ood-sampling": ("ood",), "pretrain": ("pretrain", "ood"), "distill": ("distill",)}
STAGE_DIR = "deps/stage"
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
    return f"deps/{section}.{CHOICE[section]}/{name}"


def stage_dir(script: str) -> str:
    """The folder of links to the src files ``script`` imports (``stages/pretrain.py`` -> deps/stage/pretrain)."""
    return f"{STAGE_DIR}/{Path(script).stem}"


def method_links(repo: Path) -> dict[str, list[str]]:
    """``deps/<section>.<choice>/<name>`` -> the src files that directory must link to: the import
    closure of the method's (strategy's) module minus what every stage choosing it imports anyway."""
    graph = import_graph(repo)
    modules = module_files(repo)
    stage_code = {s: script_closure(repo, f"stages/{s.replace('-', '_')}.py", graph) for s in METHOD_STAGES}
    out = {}
    for section in TABLES:
        users = [stage_code[s] for s, sections in METHOD_STAGES.items() if section in sections]
        if not users:
            continue
        shared = set.intersection(*users)
        for name in TABLES[section]:
            own = closure({module_of(section, name)}, graph) - shared
            out[method_dir(section, name)] = sorted(rel(repo, modules[m]) for m in own)
    return out


def stage_links(repo: Path, dvc_yaml: dict, graph=None) -> dict[str, list[str]]:
    """``deps/stage/<script>`` -> the src files of the script's import closure, for every stage script."""
    graph = graph or import_graph(repo)
    modules = module_files(repo)
    return {stage_dir(script): sorted(rel(repo, modules[m]) for m in script_closure(repo, script, graph))
            for script, _ in stage_scripts(dvc_yaml).values()}


def all_links(repo: Path, dvc_yaml: dict, graph=None) -> dict[str, list[str]]:
    return {**stage_links(repo, dvc_yaml, graph), **method_links(repo)}


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
    """The code entries a stage's deps must hold: its script, the folder of links to the src
    files it imports, the package data they read (:data:`DATA_DEPS`), and the method (strategy)
    folder of each choice its code makes by params."""
    graph = graph or import_graph(repo)
    modules = module_files(repo)
    files = sorted(rel(repo, modules[m]) for m in script_closure(repo, script, graph))
    out = [script, stage_dir(script), *(d for f in files for d in DATA_DEPS.get(f, []))]
    for section in METHOD_STAGES.get(stage, ()):
        out.append(f"deps/{section}.{CHOICE[section]}/${{{section}.{CHOICE[section]}}}")
    return out


def expected_params(stage: str, body: dict) -> list[str] | None:
    """The params list of a stage whose params :data:`STAGE_PARAMS` states (None for the others):
    ``runtime`` (when dvc.yaml's entry has it: every torch stage reads it) and the stage's view."""
    if stage not in STAGE_PARAMS:
        return None
    runtime = ["runtime"] if "runtime" in (body.get("params") or []) else []
    entries = list(dict.fromkeys([*runtime, *STAGE_PARAMS[stage]]))
    whole = {e for e in entries if "." not in e}
    kept = [e for e in entries if "." not in e or e.split(".")[0] not in whole]  # a whole section covers its keys
    return [e for g in _by_section(kept).values() for e in g]


def _by_section(entries: list[str]) -> dict[str, list[str]]:
    """Params entries grouped by their section, in the order of first appearance."""
    groups: dict[str, list[str]] = {}
    for e in entries:
        groups.setdefault(e.split(".")[0], []).append(e)
    return groups


PLACEHOLDER = "__ltcl_params__"


def _flow_params(text: str, generated: dict[str, list[str]]) -> str:
    """Write each generated params list as a flow sequence, one line per params section, so that
    the stage stays short and a reader sees which sections it reads."""

    def lines(m: re.Match) -> str:
        indent, stage = m.group(1), m.group(2)
        pad = indent + "  "
        rows, line = [], ""
        for g in _by_section(generated[stage]).values():  # a section per line (whole sections share one), wrapped
            for i, e in enumerate(f"'{e}'" if "$" in e else e for e in g):
                if line and (i == 0 and "." in e or len(pad) + len(line) + len(e) > 108):
                    rows.append(line)
                    line = ""
                line += (", " if line else "") + e
        rows.append(line)
        head = f"{indent}params:  # ltcl.params.STAGE_PARAMS[{stage!r}] (+ runtime), written by `ltcl deps --write`\n"
        return head + f"{pad}[" + f",\n{pad} ".join(rows) + "]"

    return re.sub(rf"^( +)params: {PLACEHOLDER}([\w-]+)(?: +#.*)?$", lines, text, flags=re.M)


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
        params, listed = expected_params(stage, body), list(body.get("params") or [])
        if params is not None and listed != params:
            out.append(f"{stage}: params {listed}, ltcl.params.STAGE_PARAMS says {params}")
    links = all_links(repo, doc, graph)
    for d, files in links.items():
        have = sorted(_link_targets(repo / d))
        if have != files:
            what = "the stage's code" if d.startswith(STAGE_DIR) else "the method's code"
            out.append(f"{d}: links {have}, {what} is {files}")
    for sub in sorted(_link_dirs(repo)):
        if rel(repo, sub) not in links:
            out.append(f"{rel(repo, sub)}: no such stage script in dvc.yaml or method in ltcl.registry")
    page = repo / params_doc.PAGE
    if not page.is_file() or page.read_text() != params_doc.render():
        out.append(f"{params_doc.PAGE}: not the params schema's reference (ltcl.params_doc)")
    return out


def _link_dirs(repo: Path) -> list[Path]:
    """Every folder of links under deps/ (deps/stage/* and deps/<section>.<choice>/*)."""
    return [p for p in (repo / "deps").glob("*/*") if p.is_dir()]


def _link_targets(d: Path) -> list[str]:
    """The repo-relative files the symlinks in ``d`` point to."""
    if not d.is_dir():
        return []
    repo = d.parents[2].resolve()
    return [(d / os.readlink(p)).resolve().relative_to(repo).as_posix() for p in sorted(d.iterdir()) if p.is_symlink()]


def _link_name(f: str) -> str:
    """``src/ltcl/losses/kdup.py`` -> ``ltcl.losses.kdup.py`` (a package's ``__init__`` keeps its name)."""
    return f.removeprefix("src/").removesuffix(".py").replace("/", ".") + ".py"


def write(repo: Path) -> list[str]:
    """Rewrite the code entries of dvc.yaml's deps and the method directories; returns what changed."""
    changes = differences(repo)
    y, doc = _load_dvc_yaml(repo / "dvc.yaml")
    graph = import_graph(repo)
    generated: dict[str, list[str]] = {}
    for stage, (script, body) in stage_scripts(doc).items():
        deps = body.get("deps", [])
        rest = [d for d in deps if not (isinstance(d, str) and d.startswith(CODE_PREFIXES))]
        new = expected_code_deps(repo, script, stage, graph) + list(rest)
        if list(deps) != new:
            deps.clear()
            deps.extend(new)
        params = expected_params(stage, body)
        if params is not None:
            generated[stage] = params
            body["params"] = f"{PLACEHOLDER}{stage}"  # written by _flow_params after the dump
    buf = io.StringIO()
    y.dump(doc, buf)
    (repo / "dvc.yaml").write_text(_flow_params(buf.getvalue(), generated))
    links = all_links(repo, doc, graph)
    for d, files in links.items():
        path = repo / d
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        for f in files:
            os.symlink(os.path.relpath(repo / f, path), path / _link_name(f))
    for sub in _link_dirs(repo):
        if rel(repo, sub) not in links:
            shutil.rmtree(sub)
    (repo / params_doc.PAGE).write_text(params_doc.render())
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
