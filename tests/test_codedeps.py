"""dvc.yaml's code deps are each stage's import closure (so the cache reruns a stage exactly when
code it runs changed), and the import graph has no circle and no arrow from a lower layer up."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from conftest import REPO
from ltcl import codedeps

# lowest first; a module may import its own layer and the layers below it, never one above
LAYERS = [
    {"ltcl", "errors", "registry", "io", "runtime", "collectives", "params", "method_params", "moved_keys", "codedeps", "params_doc",
     "runrecord", "headline"},
    {"data"}, {"models"}, {"losses"}, {"sampling"}, {"eval"}, {"methods"}, {"train"}, {"report"},
    {"pipeline"},
    {"stage", "launch", "compare", "presets", "released_code", "cli", "embed", "init"},
]


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else module
    (i,) = [i for i, names in enumerate(LAYERS) if top in names]
    return i


def test_dvc_yaml_code_deps_are_the_stages_import_closures():
    assert codedeps.differences(REPO) == []


def test_no_import_circle_and_no_upward_import():
    graph = codedeps.import_graph(REPO)
    assert codedeps.import_cycles(graph) == []
    upward = [f"{m} -> {d}" for m, ds in graph.items() for d in ds if layer(d) > layer(m)]
    assert upward == []


def _copy(tmp: Path) -> Path:
    for d in ("src", "stages", "deps"):
        shutil.copytree(REPO / d, tmp / d, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "dvc.yaml", tmp / "dvc.yaml")
    (tmp / "docs").mkdir()
    shutil.copy(REPO / "docs/params.md", tmp / "docs/params.md")
    return tmp


def test_a_new_import_or_a_new_method_is_caught_and_written(tmp_path):
    repo = _copy(tmp_path)
    stage_code = repo / "src/ltcl/pipeline/ood_sampling.py"
    stage_code.write_text(stage_code.read_text() + "\nimport ltcl.losses.gml  # noqa\n")
    method = repo / "src/ltcl/methods/contrastive.py"
    method.write_text(method.read_text() + "\nfrom ltcl.losses import tase  # noqa\n")
    dvc_yaml = repo / "dvc.yaml"
    assert "distill.seed, " in dvc_yaml.read_text()
    dvc_yaml.write_text(dvc_yaml.read_text().replace("distill.seed, ", ""))  # a hand edit of a generated list
    page = repo / "docs/params.md"
    page.write_text(page.read_text().replace("`ood.budget` | int (>= 0) | `10000`", "`ood.budget` | int | `5000`"))
    diff = codedeps.differences(repo)
    assert "docs/params.md: not the params schema's reference (ltcl.params_doc)" in diff
    assert any(d.startswith("distill: params [") and "distill.seed" in d.split("says")[1]
               and "distill.seed" not in d.split("says")[0] for d in diff)
    (line,) = [d for d in diff if d.startswith("deps/stage/ood_sampling:")]
    assert "src/ltcl/losses/gml.py" in line.split("the stage's code is")[1]
    assert "src/ltcl/losses/gml.py" not in line.split("the stage's code is")[0]
    for name in ("simclr", "sdclr", "psd", "gloco", "gloco-proco"):  # use contrastive.py (ts, tase had tase.py)
        (line,) = [d for d in diff if d.startswith(f"deps/pretrain.method/{name}:")]
        assert "src/ltcl/losses/tase.py" in line.split("the method's code is")[1]
    assert not any(d.startswith(("deps/pretrain.method/gml:", "deps/distill.method/")) for d in diff)
    codedeps.write(repo)
    assert codedeps.differences(repo) == []
    deps = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["ood-sampling"]["deps"]
    assert "deps/stage/ood_sampling" in deps and "data/ood/pool.npy" in deps  # non-code deps kept
    assert (repo / "deps/stage/ood_sampling/ltcl.losses.gml.py").resolve() == (repo / "src/ltcl/losses/gml.py")
    assert (repo / "deps/pretrain.method/psd/ltcl.losses.tase.py").resolve() == (repo / "src/ltcl/losses/tase.py")
    assert "`ood.budget` | int (>= 0) | `10000`" in page.read_text()


def resolved_code(stage: str, params: dict) -> set[str]:
    """The source files DVC hashes for ``stage`` with ``params``: its file deps, and the targets of
    the symlinks in its templated method directory."""
    st = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    out = set()
    for d in st["deps"]:
        for section in ("pretrain", "distill"):
            d = d.replace(f"${{{section}.method}}", params[section]["method"])
        d = d.replace("${ood.strategy}", params["ood"]["strategy"])
        p = REPO / d
        if p.is_dir():
            out.update((q.resolve().relative_to(REPO.resolve())).as_posix() for q in p.iterdir())
        else:
            out.add(d)
    return out


def test_only_the_configured_methods_code_is_a_dep():
    """The measured case of issue 12: losses/gml.py (GML only) is no dep of the KDUP default's
    ood-sampling, pretrain and distill; losses/kdup.py is.  tests/test_dvc_pipeline.py checks the
    same with `dvc status` on a built pipeline."""
    kdup = yaml.safe_load((REPO / "params.yaml").read_text())
    assert (kdup["pretrain"]["method"], kdup["ood"]["strategy"], kdup["distill"]["method"]) == ("psd", "kdup", "kdup")
    for stage in ("ood-sampling", "pretrain", "distill"):
        code = resolved_code(stage, kdup)
        assert "src/ltcl/losses/gml.py" not in code, stage
        assert "src/ltcl/losses/kdup.py" in code, stage
    gml = {**kdup, "pretrain": {"method": "gml"}, "distill": {"method": "gml"}}
    assert "src/ltcl/losses/gml.py" in resolved_code("pretrain", gml)
    assert "src/ltcl/losses/gml.py" in resolved_code("distill", gml)
    # one directory per registered method: no "auto" (distill.method names the method it runs)
    assert sorted(p.name for p in (REPO / "deps/distill.method").iterdir()) == ["gml", "kdup"]


def test_only_the_configured_strategys_code_is_a_dep():
    """ood-sampling and pretrain hash the configured OOD strategy's module (and what it alone
    imports), not another's: COLT's module is no dep of the KDUP default, KDUP's clustering is no
    dep of random sampling."""
    kdup = yaml.safe_load((REPO / "params.yaml").read_text())
    colt = {**kdup, "ood": {"strategy": "colt"}}
    rand = {**kdup, "ood": {"strategy": "random"}}
    for stage in ("ood-sampling", "pretrain"):
        assert "src/ltcl/sampling/strategies/kdup.py" in resolved_code(stage, kdup)
        assert "src/ltcl/sampling/strategies/colt.py" not in resolved_code(stage, kdup)
        assert "src/ltcl/sampling/strategies/colt.py" in resolved_code(stage, colt)
        assert "src/ltcl/sampling/strategies/kdup.py" not in resolved_code(stage, colt)
        random_code = resolved_code(stage, rand)
        assert "src/ltcl/sampling/strategies/random.py" in random_code
        assert not {"src/ltcl/sampling/strategies/clustered.py", "src/ltcl/sampling/budget.py"} & random_code
    from ltcl.registry import STRATEGIES

    assert sorted(p.name for p in (REPO / "deps/ood.strategy").iterdir()) == sorted(STRATEGIES)
