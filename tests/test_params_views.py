"""Each stage's params are exactly the keys it reads (issue 22): one subsection per method and
OOD strategy, old flat keys refused with their new name, the stage views that model files and
resume fingerprints hold, dvc.yaml's params lists, and DVC itself ignoring an unconfigured
method's keys."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from ltcl.moved_keys import MOVED, upgrade_flat
from ltcl.params import STAGE_PARAMS, Params, ParamsError, stage_view, validate
from ltcl.registry import DISTILL, PRETRAIN, STRATEGIES, get_method, load

SECTIONS = {"pretrain": PRETRAIN, "distill": DISTILL, "ood": dict.fromkeys(STRATEGIES)}


def _at(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


# --------------------------------------------------------------------------- the old flat keys
@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_flat_key_is_refused_with_its_new_key(old):
    section, key = old.split(".")
    new = MOVED[old]
    value = _at(Params().model_dump(mode="json"), new[0])  # the new key exists, with its default
    with pytest.raises(ParamsError) as exc:
        validate({section: {key: value}})
    assert f"{old} is now {' / '.join(new)}" in str(exc.value)
    assert "unknown key" not in str(exc.value)
    for n in new:  # every new key is a key of the schema; the old one is not
        _at(Params().model_dump(mode="json"), n)
    if old == "pretrain.sdclr":  # the old flag's name is now the sdclr method's (empty) subsection
        assert _at(Params().model_dump(mode="json"), old) == {}
    else:
        with pytest.raises(KeyError):
            _at(Params().model_dump(mode="json"), old)


def test_old_values_and_the_sdclr_flag_are_refused_with_what_to_set():
    cases = {
        ("pretrain", "sdclr", True): "pretrain.sdclr is now pretrain.pruned_branch",
        ("pretrain", "method", "gloco+proco"): "pretrain.method: gloco+proco is now gloco-proco",
        ("distill", "method", "auto"): "distill.method: auto is gone; set distill.method: gml after pretrain.method: "
                                       "gml, else kdup",
        ("pretrain", "tase_warmup", 5): "pretrain.tase_warmup is now pretrain.tase.warmup",
        ("distill", "gml_k", 64): "distill.gml_k is now distill.gml.k",
        ("ood", "colt_topk", 3): "ood.colt_topk is now ood.colt.topk",
    }
    for (section, key, value), message in cases.items():
        with pytest.raises(ParamsError, match=message.replace(".", r"\.").replace("+", r"\+")):
            validate({section: {key: value}})
    # the sdclr method's own (empty) subsection is a mapping, not the old flag: accepted
    assert validate({"pretrain": {"sdclr": {}}}).pretrain.sdclr.model_dump() == {}


def test_older_runs_read_under_the_new_keys():
    old = {"pretrain.method": "gloco+proco", "pretrain.tase_warmup": 7, "pretrain.tau_max": 0.8,
           "pretrain.sdclr": True, "distill.k_kd": 4, "ood.colt_momentum": 0.9, "probe.lr": 1.0}
    assert upgrade_flat(old) == {
        "pretrain.method": "gloco-proco", "pretrain.tase.warmup": 7, "pretrain.ts.tau_max": 0.8,
        "pretrain.tase.tau_max": 0.8, "pretrain.gloco.tau_max": 0.8, "pretrain.gloco-proco.tau_max": 0.8,
        "pretrain.pruned_branch": True, "distill.kdup.k_kd": 4, "ood.colt.momentum": 0.9, "probe.lr": 1.0}
    new = {"pretrain.psd.k_pos": 3, "pretrain.method": "psd"}
    assert upgrade_flat(new) == new


# --------------------------------------------------------------------------- one subsection each
@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_method_and_strategy_has_its_subsection(section):
    names = set(SECTIONS[section])
    model = type(getattr(Params(), section))
    assert set(model.subsections()) == names  # the schema: one per registered name, no other
    yaml_section = yaml.safe_load((REPO / "params.yaml").read_text())[section]
    assert names <= set(yaml_section), names - set(yaml_section)  # DVC needs each listed key in params.yaml
    for name in names:
        assert isinstance(yaml_section[name], dict), name
        sub = getattr(model(), model.subsections()[name])
        assert set(yaml_section[name]) == set(sub.model_dump()), name  # params.yaml writes every key of it
    # keys beside the subsections: none is the name of a subsection's key that belongs to one method
    common = set(model.model_fields) - set(model.subsections().values())
    assert not common & {"k_pos", "tase_warmup", "gml_scale", "k_kd", "colt_topk"}


def _own_reads(source: str) -> list[tuple[str, ast.AST]]:
    """``(key, node)`` for every ``<x>.own.<key>`` read in ``source``, and every ``<alias>.<key>``
    of a local name bound to ``<x>.own`` (``own = self.cfg.own``, ``own, b = self.cfg.own, n``)."""
    tree = ast.parse(textwrap.dedent(source))
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            pairs = [(node.targets[0], node.value)]
            if isinstance(node.targets[0], ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs = list(zip(node.targets[0].elts, node.value.elts))
            for target, value in pairs:
                if isinstance(target, ast.Name) and isinstance(value, ast.Attribute) and value.attr == "own":
                    aliases.add(target.id)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            v = node.value
            if (isinstance(v, ast.Attribute) and v.attr == "own") or (isinstance(v, ast.Name) and v.id in aliases):
                out.append((node.attr, node))
    return out


def _subsection_reads(source: str, names: set[str]) -> list[str]:
    """``cfg.<name>`` / ``config.<name>`` reads of a subsection by its name (bypassing ``own``)."""
    return [f"{n.value.id if isinstance(n.value, ast.Name) else '...'}.{n.attr}"
            for n in ast.walk(ast.parse(textwrap.dedent(source)))
            if isinstance(n, ast.Attribute) and n.attr in names
            and ((isinstance(n.value, ast.Attribute) and n.value.attr == "cfg")
                 or (isinstance(n.value, ast.Attribute) and n.value.attr == "config")
                 or (isinstance(n.value, ast.Name) and n.value.id in ("cfg", "config")))]


def _method_classes(cls) -> list[type]:
    return [c for c in cls.__mro__ if c.__module__.startswith("ltcl.methods")]


@pytest.mark.parametrize("section,name", [("pretrain", n) for n in PRETRAIN] + [("distill", n) for n in DISTILL])
def test_a_method_reads_only_its_own_subsection(section, name):
    """Every ``cfg.own.<key>`` the method's classes read (its own and inherited code) is a key of
    its subsection, and no method names another's subsection directly."""
    model = type(getattr(Params(), section))
    sub = model.model_fields[model.subsections()[name]].annotation
    fields = set(sub.model_fields)
    for cls in _method_classes(get_method(name, section)):
        source = inspect.getsource(cls)
        bad = sorted({k for k, _ in _own_reads(source)} - fields)
        assert not bad, f"{cls.__name__} ({section}.{name}) reads {bad}, not keys of {section}.{name}"
        assert not _subsection_reads(source, set(model.subsections().values())), cls.__name__


def test_the_ast_check_sees_a_method_reading_another_methods_key():
    """The check above, on a method that reads TS's key through TASE's ``own``."""
    src = "class X:\n    def f(self):\n        own = self.cfg.own\n        return own.period + self.cfg.own.warmup\n"
    assert sorted(k for k, _ in _own_reads(src)) == ["period", "warmup"]
    assert _subsection_reads("def f(cfg):\n    return cfg.tase.warmup\n", {"tase"}) == ["cfg.tase"]


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_strategy_reads_only_its_own_subsection(name):
    """Every ``config.own.<key>`` a strategy's classes read (its module and what it inherits) is a
    key of its subsection ``ood.<name>``, and none names a subsection directly."""
    ood = type(Params().ood)
    fields = set(ood.model_fields[ood.subsections()[name]].annotation.model_fields)
    for cls in [c for c in load("ood", name).__mro__ if c.__module__.startswith("ltcl.sampling")]:
        source = inspect.getsource(cls)
        bad = sorted({k for k, _ in _own_reads(source)} - fields)
        assert not bad, f"{cls.__name__} (ood.{name}) reads {bad}, not keys of ood.{name}"
        assert not _subsection_reads(source, set(ood.subsections().values())), cls.__name__


def test_sampling_code_outside_the_strategies_reads_no_strategys_keys():
    """Only a strategy's own module reads ``own``: the shared pieces (sampling/*.py, the
    strategies' base) read the ood section's shared keys only."""
    ood = type(Params().ood)
    shared = [*sorted((REPO / "src/ltcl/sampling").glob("*.py")), REPO / "src/ltcl/sampling/strategies/base.py",
              REPO / "src/ltcl/sampling/strategies/__init__.py"]
    for path in shared:
        source = path.read_text()
        assert not _own_reads(source) and not _subsection_reads(source, set(ood.subsections().values())), path
    colt = (REPO / "src/ltcl/sampling/strategies/colt.py").read_text()
    assert sorted(k for k, _ in _own_reads(colt)) == ["momentum", "topk"]  # the check sees COLT's reads


# --------------------------------------------------------------------------- a stage's view
def test_stage_view_holds_the_configured_methods_subsection_only():
    p = Params()  # psd, kdup, kdup
    view = stage_view(p, STAGE_PARAMS["pretrain"])
    dump = p.model_dump(mode="json")
    # the direct computation: every listed key of params.yaml, the configured subsections resolved
    want: dict = {}
    for entry in STAGE_PARAMS["pretrain"]:
        key = entry.replace("${pretrain.method}", "psd").replace("${ood.strategy}", "kdup")
        *parents, leaf = key.split(".")
        node = want
        for q in parents:
            node = node.setdefault(q, {})
        node[leaf] = _at(dump, key)
    assert view == want
    assert view["pretrain"]["psd"] == {"k_pos": 3} and view["ood"]["kdup"] == {}
    others = set(PRETRAIN) - {"psd"}
    assert not others & set(view["pretrain"]) and "colt" not in view["ood"]  # no gml, tase, ... section
    assert set(view) == {"model", "augment", "data", "pretrain", "ood"} and set(view["data"]) == {"group_rule"}
    # a whole section: every key but the other methods' (strategies') subsections
    whole = stage_view(p, ["pretrain", "ood"])
    subs = {"pretrain": set(PRETRAIN) - {"psd"}, "ood": set(STRATEGIES) - {"kdup"}}
    assert whole == {s: {k: v for k, v in dump[s].items() if k not in subs[s]} for s in ("pretrain", "ood")}

    gml = validate({"pretrain": {"method": "gml"}, "ood": {"strategy": "none"}, "distill": {"method": "gml"}})
    dview = stage_view(gml, STAGE_PARAMS["distill"])["distill"]
    assert dview["gml"] == gml.distill.gml.model_dump() and "kdup" not in dview
    wview = stage_view(gml, STAGE_PARAMS["ood-sampling"])
    listed = {k.split(".", 1)[1] for k in STAGE_PARAMS["ood-sampling"] if k.startswith("ood.")}
    assert set(wview["ood"]) == listed - {"${ood.strategy}"} | {"none"}  # strategy none's (empty) subsection
    assert not set(PRETRAIN) & set(wview["pretrain"])  # the warm-up reads no method's own key


def test_resume_fingerprint_ignores_other_methods_keys():
    from ltcl.train.session import stage_resumer

    def fp(raw: dict) -> str:
        return stage_resumer("pretrain", validate(raw), STAGE_PARAMS["pretrain"], [], None, 1).fp

    base = fp({})
    assert fp({"pretrain": {"gml": {"scale": 20.0}, "tase": {"warmup": 3}}, "ood": {"colt": {"topk": 4}}}) == base
    assert fp({"distill": {"kdup": {"beta": 0.9}}, "probe": {"lr": 3.0}}) == base  # other stages' keys
    assert fp({"pretrain": {"psd": {"k_pos": 2}}}) != base
    assert fp({"ood": {"knn_k": 11}}) != base
    assert fp({"runtime": {"threads": 3}}) != base  # the fingerprint's runtime section


def test_dvc_yaml_lists_each_stages_view():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage, entries in STAGE_PARAMS.items():
        listed = [e for e in stages[stage]["params"] if not e.startswith("runtime")]
        whole = {e for e in entries if "." not in e}  # a whole section listed covers its keys
        assert sorted(listed) == sorted(e for e in set(entries) if "." not in e or e.split(".")[0] not in whole), stage
        assert len(listed) == len(set(listed)), stage


# --------------------------------------------------------------------------- DVC itself
def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"DVC_NO_ANALYTICS": "1", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
           "HOME": str(cwd), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    cmd = [sys.executable, "-m", "dvc", *args] if args[0] != "git" else list(args)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def test_dvc_ignores_an_unconfigured_methods_keys(tmp_path):
    """A two-stage pipeline over the repository's params.yaml (empty mappings and the gloco-proco
    subsection included) listing ``pretrain.${pretrain.method}``: a key of a method that is not
    configured leaves ``dvc status`` clean, one of the configured method makes the stage stale,
    and ``dvc exp run -S`` sets a key of the gloco-proco subsection."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          a:
            cmd: python -c "open('a.txt', 'w').write('a')"
            params:
              - pretrain.epochs
              - pretrain.${pretrain.method}
            outs: [a.txt]
          b:
            cmd: python -c "open('b.txt', 'w').write(open('a.txt').read())"
            deps: [a.txt]
            outs: [b.txt]
        """))
    _dvc(tmp_path, "git", "init", "-q")
    _dvc(tmp_path, "init", "-q")
    _dvc(tmp_path, "config", "core.analytics", "false")
    _dvc(tmp_path, "repro")
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["a"]["params"]["params.yaml"]
    assert lock == {"pretrain.epochs": 60, "pretrain.psd": {"k_pos": 3}}
    _dvc(tmp_path, "git", "add", "-A")
    _dvc(tmp_path, "git", "commit", "-qm", "baseline")

    def status(update: dict) -> str:
        raw = yaml.safe_load((REPO / "params.yaml").read_text())
        for key, value in update.items():
            *parents, leaf = key.split(".")
            _at(raw, ".".join(parents))[leaf] = value
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        return _dvc(tmp_path, "status").stdout

    clean = "Data and pipelines are up to date."
    assert clean in status({"pretrain.gml.scale": 20.0, "pretrain.tase.warmup": 3, "pretrain.gloco-proco.k": 5})
    assert "modified:           pretrain.psd" in status({"pretrain.psd.k_pos": 2})
    assert "pretrain.simclr" in status({"pretrain.method": "simclr"})  # an empty mapping is a params key too
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    _dvc(tmp_path, "exp", "run", "-S", "pretrain.method=gloco-proco", "-S", "pretrain.gloco-proco.k=4")
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["a"]["params"]["params.yaml"]
    assert lock["pretrain.gloco-proco"]["k"] == 4 and set(lock) == {"pretrain.epochs", "pretrain.gloco-proco"}
