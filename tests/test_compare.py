"""``ltcl compare`` / ``ltcl queue`` on fake experiments in the real ``dvc exp show --json`` shape:
row names, ordering, mean +- std over seeds, best and not-significant marks, params diff, honest
baselines, rendering; every queue preset validates against the params schema."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from ltcl.cli import main as cli_main
from ltcl.compare.experiments import from_directory, from_exp_show, method_label
from ltcl.compare.queue import compute_matched_epochs, presets, queue_commands
from ltcl.compare.render import html_page, markdown_table, text_table
from ltcl.compare.table import build_lines, honest_baselines
from ltcl.eval.protocols import probe_headline
from ltcl.params import validate
from ltcl.presets import merged

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "params.yaml").read_text())
# the embedded default's long-tailed split size, given explicitly: metrics/dataset.json is a DVC output, absent
# from a fresh clone until `dvc pull` (the compute-matched row of the honest preset reads it)
N_ID = 403


def params_with(over: dict) -> dict:
    return merged(BASE, over)


def probe(all_, few=None, many=None):
    return {"full": {"many": many or all_ + 2, "medium": all_, "few": few if few is not None else all_ - 3,
                     "std": 1.0, "all": all_, "val": 0.0, "best_epoch": 1},
            "few_shot": {"many": 1, "medium": 1, "few": 1, "std": 0, "all": all_ - 10},
            "knn": {"k1": all_ - 1, "k10": all_ - 0.5}}


def rec(name: str, over: dict, f: float, g: float | None = None) -> dict:
    """An experiment as ``dvc exp show --json`` gives it: its params and its headline metrics files
    (ltcl.headline: dvc.yaml declares no other metric)."""
    p = params_with(over)
    metrics = {"metrics/probe/pretrain.json": {"data": probe_headline(probe(f))},
               "metrics/cluster/pretrain.json": {"data": {"chi": 100.0 + f, "dbi": 2.0}},
               "metrics/ood.json": {"data": {"selected": 10}}}
    if g is not None:
        metrics["metrics/probe/distill.json"] = {"data": probe_headline(probe(g))}
    return {"rev": f"{abs(hash(name)) % 10**12:012x}", "name": name, "error": None, "experiments": None,
            "data": {"rev": "x", "params": {"params.yaml": {"data": p}}, "metrics": metrics}}


def exp_show(recs: list[dict]) -> list[dict]:
    return [{"rev": "workspace", "name": None, "error": None, "experiments": None,
             "data": {"params": {"params.yaml": {"data": BASE}}, "metrics": {}}},
            {"rev": "a" * 40, "name": "main", "error": None, "data": {"params": {}, "metrics": {}},
             "experiments": [{"name": r["name"], "executor": None, "revs": [r]} for r in recs]}]


SIMCLR = {"pretrain": {"method": "simclr"}, "ood": {"strategy": "none"}, "distill": {"enabled": False}}
COLT = {"pretrain": {"method": "simclr"}, "ood": {"strategy": "colt"}, "distill": {"enabled": False}}
KDUP = {"pretrain": {"method": "psd"}, "ood": {"strategy": "kdup"}, "distill": {"enabled": True}}


def seeded(over: dict, s: int) -> dict:
    return merged(over, {"data.split_seed": s, "pretrain.seed": s})


def test_rows_named_as_papers_and_seeds_averaged():
    recs = [rec(f"kdup-s{s}", seeded(KDUP, s), 82 + 2 * s, 85 + 2 * s) for s in range(3)]  # newest first,
    recs += [rec(f"colt-s{s}", seeded(COLT, s), 81 + s) for s in range(3)]  # as dvc exp show lists them
    recs += [rec(f"simclr-s{s}", seeded(SIMCLR, s), 80 + s) for s in range(3)]
    exps = from_exp_show(exp_show(recs))
    assert len(exps) == 9
    lines, keys = build_lines(exps, "full")
    assert [l.label for l in lines] == ["SimCLR", "SimCLR + COLT", "SimCLR + KDUP (f)", "SimCLR + KDUP (g)"]
    assert "data.split_seed" not in keys and "pretrain.method" in keys and "ood.strategy" in keys
    by = {l.label: l for l in lines}
    assert len(by["SimCLR"].runs) == 3
    assert by["SimCLR"].mean["all"] == pytest.approx(81.0)
    assert by["SimCLR"].std["all"] == pytest.approx(np.std([80, 81, 82], ddof=1))
    g = by["SimCLR + KDUP (g)"]
    assert g.mean["all"] == pytest.approx(87.0) and "all" in g.best
    # g beats KDUP (f) by 3 points with std 2 + 2: sqrt(8) = 2.83 < 3 -> significant
    assert "all" not in g.not_significant
    assert "std" in by["SimCLR"].best  # all STDs equal: the first is kept as best...
    assert "std" in by["SimCLR"].not_significant  # ...but marked not significant


def test_not_significant_when_within_combined_spread():
    recs = [rec(f"a-s{s}", seeded(SIMCLR, s), [80, 84][s]) for s in range(2)]
    recs += [rec(f"b-s{s}", seeded(COLT, s), [81, 84][s]) for s in range(2)]
    lines, _ = build_lines(from_exp_show(exp_show(recs)), "full")
    best = [l for l in lines if "all" in l.best][0]
    assert best.label == "SimCLR + COLT" and "all" in best.not_significant
    text = text_table(lines, "t", [])
    assert "(n.s.)" in text and "not a win" in text


def test_params_diff_listed_and_supervised_marked():
    recs = [rec("simclr", SIMCLR, 80), rec("gloco", {**SIMCLR, "pretrain": {"method": "gloco"}}, 85)]
    lines, keys = build_lines(from_exp_show(exp_show(recs)), "full")
    md = markdown_table(lines, "Linear probe, full", keys)
    assert "pretrain.method=gloco" in md and "pretrain.method=simclr" in md
    assert "GloCo *" in md and "supervised" in md
    assert "**85.00**" in md


def test_honest_baselines_cost_and_share_recovered():
    recs = [rec("simclr", SIMCLR, 80), rec("simclr-bal", merged(SIMCLR, {"data.subset": "balanced-subset"}), 90),
            rec("kdup", KDUP, 84, 85), rec("honest-simclr-matched", merged(SIMCLR, {"pretrain.epochs": 99}), 82)]
    lines, _ = build_lines(from_exp_show(exp_show(recs)), "full")
    labels = [l.label for l in lines]
    assert "SimCLR [balanced subset]" in labels and "SimCLR (compute-matched)" in labels
    h = honest_baselines(lines)
    assert h["imbalance_cost"]["SimCLR"]["all"] == pytest.approx(10.0)
    assert h["share_recovered"]["SimCLR + KDUP (g)"]["all"] == pytest.approx(0.5)
    assert h["share_recovered"]["SimCLR (compute-matched)"]["all"] == pytest.approx(0.2)


def test_share_recovered_undefined_when_cost_is_noise():
    """A balanced-minus-LT difference inside the seeds' spread gives no share (None, "n/a")."""
    from ltcl.compare.render import honest_text

    recs = [rec(f"simclr-s{s}", seeded(SIMCLR, s), [80, 82][s]) for s in range(2)]
    recs += [rec(f"bal-s{s}", seeded(merged(SIMCLR, {"data.subset": "balanced-subset"}), s), [81, 81.5][s])
             for s in range(2)]
    recs += [rec(f"kdup-s{s}", seeded(KDUP, s), 83, 84) for s in range(2)]
    lines, _ = build_lines(from_exp_show(exp_show(recs)), "full")
    h = honest_baselines(lines)
    assert h["imbalance_cost"]["SimCLR"]["all"] == pytest.approx(0.25)
    assert h["share_recovered"]["SimCLR + KDUP (g)"]["all"] is None
    assert "all n/a" in honest_text(h)


def test_html_is_self_contained(tmp_path):
    recs = [rec("simclr", SIMCLR, 80), rec("kdup", KDUP, 84, 85)]
    lines, keys = build_lines(from_exp_show(exp_show(recs)), "full")
    page = html_page([("Linear probe, full", lines, keys, [])])
    assert "data:image/png;base64," in page and "http" not in page.replace("http-equiv", "")
    assert "<b>85.00</b>" in page


def test_compare_cli_on_result_directories(tmp_path, capsys):
    dirs = []
    for r in [rec("simclr", SIMCLR, 80), rec("kdup", KDUP, 84, 85)]:
        d = tmp_path / r["name"]
        for path, m in r["data"]["metrics"].items():
            f = d / path[len("metrics/"):]
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(m["data"]))
        (d / "params.yaml").write_text(yaml.safe_dump(r["data"]["params"]["params.yaml"]["data"]))
        dirs.append(str(d))
    assert from_directory(dirs[1]).metrics["probe/distill"]["full"]["all"] == 85
    out = tmp_path / "out"
    assert cli_main(["compare", "--dirs", *dirs, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SimCLR + KDUP (g)" in printed and "[85.00]" in printed
    assert (out / "compare.html").exists() and (out / "compare.md").exists()


def test_the_distilled_row_is_named_by_the_distill_method_param(tmp_path):
    """g's row name comes from ``distill.method`` (metrics/distill.json is no DVC metric); a run from
    before the param had kdup | gml only (``auto``) is named by the rule auto followed: GML's student
    after pretrain.method gml.  A result folder's details files are no metrics of it."""
    gml = {"pretrain": {"method": "gml"}, "ood": {"strategy": "none"}, "distill": {"enabled": True, "method": "gml"}}
    old = rec("old", gml, 70, 72)
    old["data"]["params"]["params.yaml"]["data"]["distill"]["method"] = "auto"
    simclr_gml = {**SIMCLR, "distill": {"enabled": True, "method": "gml"}}  # GML's student of a SimCLR f
    exps = from_exp_show(exp_show([rec("gml", gml, 70, 71), old, rec("kdup", KDUP, 84, 85),
                                   rec("simclr-gml", simclr_gml, 80, 81)]))
    labels = {e.name: [l.label for l in build_lines([e], "full")[0]] for e in exps}
    assert labels == {"gml": ["GML teacher", "GML student"], "old": ["GML teacher", "GML student"],
                      "kdup": ["SimCLR + KDUP (f)", "SimCLR + KDUP (g)"],
                      "simclr-gml": ["SimCLR (f)", "SimCLR student"]}
    d = tmp_path / "kdup"
    (d / "metrics" / "probe").mkdir(parents=True)
    (d / "params.yaml").write_text(yaml.safe_dump(params_with(KDUP)))
    (d / "metrics" / "probe" / "pretrain.json").write_text(json.dumps(probe_headline(probe(80.0))))
    (d / "metrics" / "probe" / "pretrain_details.json").write_text(json.dumps(probe(80.0)))
    assert set(from_directory(d).metrics) == {"probe/pretrain"}


def test_method_labels():
    assert method_label({"pretrain.method": "psd", "pretrain.pruned_branch": True,
                         "ood.strategy": "kdup"}) == "SDCLR + KDUP"
    assert method_label({"pretrain.method": "sdclr", "ood.strategy": "colt"}) == "SDCLR + COLT"
    assert method_label({"pretrain.method": "psd", "ood.strategy": "none"}) == "SimCLR + PSD"
    # Table 3 (PSD + distillation with another sampler), Table 12, Table 5's strong baseline
    assert method_label({"pretrain.method": "psd", "ood.strategy": "random"}) == "SimCLR + KDUP (random sampling)"
    assert method_label({"pretrain.method": "psd", "ood.strategy": "colt"}) == "SimCLR + KDUP (COLT sampling)"
    assert method_label({"pretrain.method": "psd", "ood.strategy": "augment"}) == "SimCLR + KDUP (augmented ID)"
    assert method_label({"pretrain.method": "simclr", "ood.strategy": "kdup"}) == "SimCLR + KDUP sampling"
    assert method_label({"pretrain.method": "simclr", "ood.strategy": "random"}) == "SimCLR + random OOD"
    assert method_label({"pretrain.method": "bcl", "ood.strategy": "none"}) == "BCL-I"
    assert method_label({"pretrain.method": "bcl", "pretrain.pruned_branch": True}) == "BCL-D"
    assert method_label({"pretrain.method": "simclr", "pretrain.gh.enabled": True}) == "SimCLR + GH"
    assert method_label({"pretrain.method": "sdclr", "pretrain.gh": True}) == "SDCLR + GH"  # -S pretrain.gh=true
    assert method_label({"pretrain.method": "bcl", "pretrain.gh.enabled": False}) == "BCL-I"


def test_table3_and_table5_rows_keep_the_papers_order():
    from ltcl.compare.table import Line, line_order

    labels = ["SimCLR + KDUP (g)", "SimCLR + KDUP (COLT sampling) (f)", "SimCLR + COLT", "SimCLR + KDUP sampling",
              "SimCLR + KDUP (random sampling) (f)", "SimCLR", "SimCLR + KDUP (f)"]
    ordered = [ln.label for ln in sorted((Line(lb, False, []) for lb in labels), key=line_order)]
    assert ordered == ["SimCLR", "SimCLR + COLT", "SimCLR + KDUP sampling", "SimCLR + KDUP (random sampling) (f)",
                       "SimCLR + KDUP (COLT sampling) (f)", "SimCLR + KDUP (f)", "SimCLR + KDUP (g)"]


@pytest.mark.parametrize("preset", list(presets(BASE, N_ID)))
def test_every_queue_preset_validates(preset):
    rows = presets(BASE, N_ID)[preset]
    assert rows and len({n for n, _ in rows}) == len(rows)
    for name, over in rows:
        validate(merged(BASE, over))  # raises ParamsError on an unknown key or bad combination
    cmds = queue_commands(preset, BASE, seeds=2, n_id=N_ID)
    assert len(cmds) == 2 * len(rows) and all(c[:4] == ["dvc", "exp", "run", "--queue"] for c in cmds)
    assert any("data.split_seed=1" in c for c in cmds[1])


def test_table2_preset_has_the_six_rows():
    labels = [method_label(merged(BASE, o) and {k: v for k, v in _flat(merged(BASE, o)).items()})
              for _, o in presets(BASE, N_ID)["table2"]]
    assert labels == ["SimCLR", "SimCLR + COLT", "SimCLR + KDUP", "SDCLR", "SDCLR + COLT", "SDCLR + KDUP"]


def _flat(d):
    from ltcl.compare.experiments import flatten
    return flatten(d)


def test_compute_matched_epochs_counts_steps():
    p = params_with({"pretrain": {"epochs": 60, "batch_size": 128}, "ood": {"warmup_epochs": 20, "budget": 400}})
    # 20 epochs x ceil(403/128)=4 steps + 40 epochs x ceil(803/128)=7 steps = 360 steps -> 90 ID epochs
    assert compute_matched_epochs(p, n_id=403) == math.ceil((20 * 4 + 40 * 7) / 4)


def test_published_rows_for_cifar10_table2():
    from ltcl.compare.reference import published_rows

    rows = published_rows({"data.source": "cifar10", "data.imbalance_ratio": 100.0}, "full", REPO / "reference")
    names = {(r["paper"], r["method"]) for r in rows}
    assert ("003", "SimCLR + COLT") in names
    assert all((r["paper"], r["table"]) in {("003", "2"), ("003", "3"), ("000", "1"), ("000", "2"), ("001", "3"),
                                           ("002", "3")} for r in rows)
    assert published_rows({"data.source": "digits"}, "full", REPO / "reference") == []


COMMUNITY = {"data": {"source": "cifar10", "split": "community", "imbalance_ratio": 100.0}}
GENERATED = {"data": {"source": "cifar10", "split": "generated", "imbalance_ratio": 100.0}}
HIDDEN = ("published numbers hidden (papers 000, 003): these runs use ltcl-generated splits, the papers used "
          "SDCLR's split files; set data.split: community")


def compared(split: dict, tmp_path: Path) -> tuple[str, str, str]:
    """compare's text, Markdown and HTML for SimCLR + KDUP on ``split`` (via result directories)."""
    r = rec("kdup", merged(KDUP, flat_of(split)), 84, 85)
    d = tmp_path / "kdup"
    for path, m in r["data"]["metrics"].items():
        f = d / path[len("metrics/"):]
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(m["data"]))
    (d / "params.yaml").write_text(yaml.safe_dump(r["data"]["params"]["params.yaml"]["data"]))
    out = tmp_path / "out"
    assert cli_main(["compare", "--dirs", str(d), "--out", str(out), "--reference", str(REPO / "reference")]) == 0
    return tuple((out / f"compare.{x}").read_text() for x in ("txt", "md", "html"))


def flat_of(d):
    from ltcl.compare.experiments import flatten
    return flatten(d)


def test_community_split_row_shows_published_numbers(tmp_path):
    text, md, page = compared(COMMUNITY, tmp_path)
    for out in (text, md, page):
        assert "SimCLR + KDUP (published, 003 T2, on SDCLR/COLT split files)" in out
        assert "published numbers hidden" not in out
    assert "90.26" in text and "90.26" in page  # paper 003 Table 2, All


def test_generated_split_row_hides_published_numbers_and_says_why(tmp_path):
    text, md, page = compared(GENERATED, tmp_path)
    for out in (text, md, page.replace("&#x27;", "'")):
        assert "(published" not in out
        assert HIDDEN in out


def test_published_rows_follow_each_papers_split():
    from ltcl.compare.reference import published_for

    folder = REPO / "reference"
    rows, notes = published_for([flat_of(COMMUNITY)], "full", folder)
    assert {r["paper"] for r in rows} == {"000", "003"} and notes == []
    # papers 001 / 002 built CIFAR-LT by Cui et al.'s rule: shown for generated runs only
    sup_c, notes_c = published_for([flat_of(COMMUNITY)], "classifier", folder)
    sup_g, notes_g = published_for([flat_of(GENERATED)], "classifier", folder)
    assert sup_c == [] and "papers 001" in notes_c[0] and "class_order: given" in notes_c[0]
    assert {r["paper"] for r in sup_g} == {"001"} and notes_g == []
    c100, _ = published_for([{**flat_of(GENERATED), "data.source": "cifar100"}], "classifier", folder)
    assert {r["paper"] for r in c100} == {"001", "002"} and all(r["split"] == "generated" for r in c100)


@pytest.mark.parametrize("bundle,dataset", [("imagenet100-lt", "imagenet100"), ("places-lt", "places")])
def test_list_bundles_map_to_the_reference_datasets(bundle, dataset):
    from ltcl.compare.reference import published_for

    params = {"data.source": "list", "data.lists": bundle, "data.split": "community",
              "data.imbalance_ratio": 10.0}  # the generator's ratio does not label list data sets
    rows, notes = published_for([params], "few_shot", REPO / "reference")
    assert rows and {r["dataset"] for r in rows} == {dataset} and notes == []
    assert ("003", "KDUP") in {(r["paper"], r["method"]) for r in rows}


def test_split_index_repeats_are_one_row():
    base = merged(KDUP, flat_of(COMMUNITY))
    recs = [rec(f"kdup-s{k}", merged(base, {"data.split_index": k, "pretrain.seed": k - 1}), 80 + k, 82 + k)
            for k in (1, 2, 3)]
    lines, keys = build_lines(from_exp_show(exp_show(recs)), "full")
    assert [len(l.runs) for l in lines] == [3, 3] and "data.split_index" not in keys


def test_set_param_values_parse_with_dvcs_override_grammar():
    from ltcl.compare.queue import set_param_args

    args = set_param_args({"report.title": "A (b): c", "data.root": "data/raw", "augment.crop_scale": [0.1, 1.0],
                           "data.lists": None, "x.quote": "it's"})
    assert args[1::2] == ["report.title='A (b): c'", "data.root=data/raw", "augment.crop_scale=[0.1, 1.0]",
                          "data.lists=null", "x.quote='it\\'s'"]


def test_queue_colt_rows_use_colts_domain_loss():
    rows = dict(presets(BASE, N_ID)["table2"])
    assert rows["simclr-colt"]["pretrain.domain_loss"] == "colt" and rows["sdclr-colt"]["pretrain.domain_loss"] == "colt"
    assert "pretrain.domain_loss" not in rows["simclr-kdup"]


def test_queue_rows_use_their_authors_head_and_ts_protocol():
    """SDCLR's rows run SDCLR's dual-BN 3-Linear head (its --prune_dual_bn runs), every other row the
    2-Linear SimCLR head of SDCLR's / COLT's / TS's code; the TS row TS's published protocol (t_max 200
    of 2,000 epochs = period fraction 0.2, tau 0.1 .. 1.0); whatever the workspace's params hold."""
    table = presets(BASE, N_ID)
    assert {n: o["model.proj_layers"] for n, o in table["table2"]} == {
        "simclr": 2, "simclr-colt": 2, "simclr-kdup": 2, "sdclr": 3, "sdclr-colt": 3, "sdclr-kdup": 3}
    methods = dict(table["methods"])
    assert {n: o["model.proj_layers"] for n, o in methods.items()} == {
        "m-simclr": 2, "m-sdclr": 3, "m-ts": 2, "m-tase": 2, "m-bcl": 2, "m-bcl-d": 3, "m-gh": 2, "m-colt": 2,
        "m-mak": 2, "m-kdup": 2, "m-gloco": 2, "m-gloco-proco": 2, "m-gml": 2}
    # MAK's rows: its protocol (SimCLR retrained, no distillation, the sampling model as long as the final one)
    for mak in (methods["m-mak"], dict(table["table3"])["sampling-mak"]):
        assert (mak["ood.strategy"], mak["pretrain.method"], mak["distill.enabled"], mak["ood.warmup_epochs"]) == (
            "mak", "simclr", False, BASE["pretrain"]["epochs"])
    assert {n: o["model.proj_layers"] for n, o in table["table000"]} == {
        "t000-simclr": 2, "t000-sdclr": 3, "t000-ts": 2, "t000-gh": 2, "t000-bcl": 2, "t000-tase": 2}
    gh = dict(table["table000"])["t000-gh"]  # GH's released runs: L_GH after 500 of 1,000 epochs, two-stage lr
    assert (gh["pretrain.gh.enabled"], gh["pretrain.gh.warmup_fraction"], gh["pretrain.lr_schedule"],
            gh["pretrain.lr_split"], gh["pretrain.lr_stage1_min"]) == (True, 0.5, "two-stage", 0.5, 0.6)
    assert (methods["m-bcl-d"]["pretrain.pruned_branch"], methods["m-bcl-d"]["pretrain.bcl.rand_k"]) == (True, 2)
    assert {k: methods["m-ts"][k] for k in methods["m-ts"] if k.startswith("pretrain.ts.")} == {
        "pretrain.ts.period_fraction": 0.2, "pretrain.ts.tau_min": 0.1, "pretrain.ts.tau_max": 1.0}
    for preset, rows in table.items():
        assert all("model.proj_layers" in o for _, o in rows), preset
    # a workspace running SDCLR + KDUP with a 2-layer head: the KDUP rows, which inherit its pruned branch, get 3
    sdclr_ws = params_with({"pretrain.pruned_branch": True, "model.proj_layers": 2})
    assert {o["model.proj_layers"] for _, o in presets(sdclr_ws, N_ID)["table6"]} == {3}
    assert dict(presets(sdclr_ws, N_ID)["table2"])["simclr-kdup"]["model.proj_layers"] == 2  # sets pruned_branch false


def test_queue_seeds_on_community_splits_take_split_index():
    from ltcl.errors import UserError

    params = params_with(COMMUNITY)
    cmds = queue_commands("table11", params, seeds=5, n_id=N_ID)
    assert sorted(a for c in cmds[:5] for a in c if a.startswith("data.split_index=")) == [
        f"data.split_index={k}" for k in range(1, 6)]
    with pytest.raises(UserError, match="--seeds 5 or fewer"):
        queue_commands("table11", params, seeds=6, n_id=N_ID)


@pytest.mark.skipif(not any(__import__("shutil").which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
                    reason="no headless Chromium here (apt-get install chromium)")
def test_compare_html_renders_offline_in_headless_chromium(tmp_path):
    """The comparison page renders with the network off: screenshot is not blank."""
    import subprocess
    import sys

    recs = [rec("simclr", SIMCLR, 80), rec("kdup", KDUP, 84, 85)]
    lines, keys = build_lines(from_exp_show(exp_show(recs)), "full")
    page = tmp_path / "compare.html"
    page.write_text(html_page([("Linear probe, full", lines, keys, [])]))
    out = subprocess.run([sys.executable, str(REPO / "scripts/screenshot_html.py"), str(page), str(tmp_path / "s.png")],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "s.png").stat().st_size > 5000


def test_training_minutes_come_from_the_run_records(tmp_path):
    """A result folder's training minutes are the warm-up, pre-training and (for g) distillation
    seconds of its run records (runs/*.json: not metrics, so not in dvc exp show); the records
    are not taken for metrics files, and a folder without them has no minutes column."""
    from ltcl.compare.table import build_lines

    def folder(name: str, records: bool) -> Path:
        d = tmp_path / name
        p = params_with(KDUP)
        (d / "metrics" / "probe").mkdir(parents=True)
        (d / "params.yaml").write_text(yaml.safe_dump(p))
        for enc, acc in (("pretrain", 80.0), ("distill", 82.0)):
            (d / "metrics" / "probe" / f"{enc}.json").write_text(json.dumps(probe(acc)))
        (d / "metrics" / "pretrain.json").write_text(json.dumps({"method": "psd", "epochs": 3}))
        (d / "metrics" / "distill.json").write_text(json.dumps({"enabled": True, "method": "kdup", "epochs": 1}))
        if records:
            (d / "runs").mkdir()
            for stage, timings in (("ood-sampling", {"warmup": {"seconds": 30.0}, "seconds": {"total": 2.0}}),
                                   ("pretrain", {"seconds": 90.0}), ("distill", {"seconds": 60.0})):
                record = {"stage": stage, "run": {}, "timings": timings}
                (d / "runs" / f"{stage}.json").write_text(json.dumps(record))
        return d

    exp = from_directory(folder("with", True))
    assert not any(k.startswith("runs") for k in exp.metrics)
    lines, _ = build_lines([exp], "full")
    minutes = {line.label: line.mean.get("minutes") for line in lines}
    assert minutes == {"SimCLR + KDUP (f)": pytest.approx(2.0), "SimCLR + KDUP (g)": pytest.approx(3.0)}
    lines, _ = build_lines([from_directory(folder("without", False))], "full")
    assert all("minutes" not in line.mean for line in lines)


def test_training_minutes_of_a_dvc_experiment_come_from_its_commit(tmp_path):
    """For ``dvc exp show`` experiments the run records are read from each experiment's git commit
    in the repository given (``ltcl.compare.experiments.read_at_rev``: DVC's file system at that
    commit, git-tracked or DVC-tracked files alike)."""
    import subprocess

    repo, other = tmp_path / "repo", tmp_path / "other"
    (repo / "runs").mkdir(parents=True)
    other.mkdir()
    for stage, secs in (("ood-sampling", {"warmup": {"seconds": 12.0}}), ("pretrain", {"seconds": 48.0})):
        (repo / "runs" / f"{stage}.json").write_text(json.dumps({"stage": stage, "timings": secs}))
    for cmd in (["init", "-q"], ["add", "runs"], ["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "r"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True)
    subprocess.run(["git", "init", "-q"], cwd=other, check=True)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    r = rec("simclr", SIMCLR, 80)
    r["rev"] = rev
    lines, _ = build_lines(from_exp_show(exp_show([r]), repo=repo), "full")
    assert lines[0].mean["minutes"] == pytest.approx(1.0)
    lines, _ = build_lines(from_exp_show(exp_show([r]), repo=other), "full")  # a repository without that commit
    assert "minutes" not in lines[0].mean
