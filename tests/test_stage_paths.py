"""Each stage's paths are written once, in its script (stages/<stage>.py), and dvc.yaml agrees:
every path the script names is a dep or an output of its dvc.yaml stage, and every output dvc.yaml
declares is one the script names (or one the library derives from them: the run record
``runs/<label>.json`` of ``ltcl.stage.run_stage``, the ``<headline>_details.json`` of
``ltcl.headline``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from ltcl.codedeps import stage_scripts

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("data/", "metrics/", "runs/", "export/", "dvclive/", "report")
# paths a stage script takes from the library rather than writing them itself
LIBRARY = {"runtime": {"data/runtime.json"}}  # ltcl.runtime.FACTS_FILE (checked below)
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def script_paths(script: Path, arg: str) -> set[str]:
    """The path literals of ``script`` (f-strings rendered with the stage's command-line argument)."""
    tree = ast.parse(script.read_text())
    parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    out = set()
    for node in ast.walk(tree):
        if id(node) in parts:
            continue
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else arg for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        if text.startswith(ROOTS) and " " not in text:
            out.add(text)
    return out


def _paths(entries) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries or []}


def declared(stage: str) -> list[tuple[str, str, set[str], set[str]]]:
    """(stage label, the script's argument, deps, outputs) for each instance of a dvc.yaml stage."""
    st = STAGES[stage]
    body = st.get("do", st)
    items = st.get("foreach", [""])
    if isinstance(items, str):  # ${external}: one made-up external encoder
        items = ["mine"]
    out = []
    for item in items:
        def sub(paths):
            return {p.replace("${item}", item).replace("${key}", item) for p in paths}

        outs = sub(_paths(body.get("outs")) | _paths(body.get("metrics")) | _paths(body.get("plots")))
        arg = next(iter(sub([body["cmd"]]))).split(".py")[1].strip()
        out.append((f"{stage}@{item}" if item else stage, arg, sub(_paths(body.get("deps"))), outs))
    return out


CASES = [(stage, script) for stage, (script, _) in stage_scripts({"stages": STAGES}).items()]


@pytest.mark.parametrize("stage,script", CASES, ids=[c[0] for c in CASES])
def test_stage_script_and_dvc_yaml_name_the_same_paths(stage, script):
    for label, arg, deps, outs in declared(stage):
        named = script_paths(REPO / script, arg) | LIBRARY.get(stage, set())
        undeclared = {n for n in named if n not in deps | outs and not any(o.startswith(n + "/") for o in deps | outs)}
        assert undeclared == set(), f"{label}: {script} names paths dvc.yaml does not list"
        derived = {o for o in outs if o.startswith("runs/") or o.endswith("_details.json")}
        missing = {o for o in outs - derived - named if not any(o.startswith(n + "/") for n in named)}
        assert missing == set(), f"{label}: dvc.yaml declares outputs {script} does not name"


def test_the_library_paths_are_the_librarys():
    from ltcl.runtime import FACTS_FILE

    assert LIBRARY == {"runtime": {FACTS_FILE}}
