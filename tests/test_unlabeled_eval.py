"""The evaluation stages and the report when labels are absent (issue 21, parts 2 and 4;
docs/data-manifest.md): manifests fabricated here in their on-disk format from the tiny digits
splits (``write_manifest`` + ``save_npy``), then the real stage scripts.

- ``labels.eval`` false (an unlabeled collection): probe and reference stages write why accuracy
  is absent, the cluster stage the label-free cluster sizes and t-SNE of the training images, and
  the report renders with no accuracy in it;
- ``groups`` null: All and per-class only, no Many / Medium / Few / STD key anywhere;
- ``labels.train`` false with a labeled set: ``lt`` / ``ms`` skipped with their reason, the groups
  from the manifest's ``group_counts`` (not ``lt_counts``).
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import copy_project, fake_encoder
from ltcl.data.groups import LT_GROUP_SOURCE, accuracy_report, label_facts
from ltcl.data.splits import load_manifest, load_split, write_manifest
from ltcl.io import read_json, save_npy, sha256_file, write_json

GROUP_KEYS = {"many", "medium", "few", "std"}


def _keys(obj) -> set[str]:
    """Every key of a nested dict."""
    if not isinstance(obj, dict):
        return set()
    return set(obj) | set().union(*(_keys(v) for v in obj.values()))


def _rewrite_unlabeled(proj) -> int:
    """data/lt as an unlabeled collection without a labeled set: only train / lt (the same files),
    ``train_y.npy`` all -1, no classes, no groups. Returns the number of training images."""
    lt = proj.path("data/lt")
    old = load_manifest(lt)
    x = np.array(load_split(lt, "train")[0])
    for f in list(lt.glob("*_x.npy")) + list(lt.glob("*_y.npy")):
        f.unlink()
    save_npy(lt / "train_x.npy", x)
    save_npy(lt / "train_y.npy", np.full(len(x), -1, np.int64))
    arrays = {s: {"x": "train_x.npy", "y": "train_y.npy"} for s in ("train", "lt")}
    write_manifest(lt, dataset="images", class_names=[], class_order=[],
                   counts={"train": np.array([len(x)]), "lt": np.array([len(x)])}, train_counts=None,
                   lt_counts=None, params=old["params"], arrays=arrays, split_records={},
                   extra_manifest={"labels": {"train": False, "eval": False, "note": "an unlabeled test collection"},
                                   "groups": None, "group_counts": None, "group_source": None,
                                   "image_shape": old["image_shape"], "source": "images", "skipped_images": []})
    write_json(proj.path("metrics/dataset.json"), {"source": "images", "size_train": len(x)})
    return len(x)


@pytest.fixture(scope="module")
def unlabeled(lt_project, tmp_path_factory):
    """Every evaluation stage and the report on an unlabeled collection (k-means of a 100-image sample)."""
    proj = copy_project(lt_project, tmp_path_factory.mktemp("unlab") / "p", {"cluster": {"kmeans_samples": 100,
                                                                                          "clusters": 5}})
    n = _rewrite_unlabeled(proj)
    for enc in ("pretrain", "distill"):
        fake_encoder(proj, f"data/models/{enc}.pt")
        proj.stage("linear_probe.py", enc)
        proj.stage("cluster.py", enc)
    for ref in ("pixels", "random"):
        proj.stage("reference_probe.py", ref)
    proj.stage("report.py")
    return proj, n


def test_probe_and_references_say_why_accuracy_is_absent(unlabeled):
    proj, _ = unlabeled
    for name in ("pretrain", "distill", "ref-pixels", "ref-random"):
        assert json.loads(proj.path(f"metrics/probe/{name}.json").read_text()) == {}  # the headline: no number
        m = json.loads(proj.path(f"metrics/probe/{name}_details.json").read_text())
        assert m.pop("labels") == "absent" and m.pop("group_source") is None
        reason = m.pop("reason")
        assert "no labeled evaluation set" in reason and "data.labeled" in reason
        assert m == {}  # no accuracy, no protocol key (and no run card: runs/*.json)
        per_class = pd.read_csv(proj.path(f"metrics/probe/{name}_per_class.csv"))
        assert len(per_class) == 0 and {"class", "full", "few_shot", "knn1", "knn10"} <= set(per_class.columns)


def test_cluster_sizes_of_the_training_images_without_labels(unlabeled):
    """The sorted k-means cluster sizes of the encoder's features of a seeded sample of the
    training split equal sklearn's KMeans on those images' features, sampled here by hand."""
    from sklearn.cluster import KMeans

    from ltcl.eval.protocols import encoder_features
    from ltcl.models.checkpoint import load_encoder

    proj, n = unlabeled
    cfg = proj.params()["cluster"]
    x = load_split(proj.path("data/lt"), "train")[0]
    sample = np.sort(np.random.default_rng(cfg["seed"]).permutation(n)[: cfg["kmeans_samples"]])
    for enc in ("pretrain", "distill"):
        assert json.loads(proj.path(f"metrics/cluster/{enc}.json").read_text()) == {}  # no CHI / DBI
        m = json.loads(proj.path(f"metrics/cluster/{enc}_details.json").read_text())
        assert m["labels"] == "absent" and "data.labeled" in m["reason"]
        assert not _keys(m) & {"chi", "dbi", "nmi", "ari", "geometry"}
        model, spec, _ = load_encoder(proj.path(f"data/models/{enc}.pt"))
        feats = encoder_features(model, spec, x[sample], torch.device("cpu"), False).numpy().astype(np.float64)
        assign = KMeans(n_clusters=cfg["clusters"], n_init=10, random_state=cfg["seed"]).fit_predict(feats)
        sizes = sorted(np.bincount(assign, minlength=cfg["clusters"]).tolist(), reverse=True)
        got = m["cluster_sizes"]
        assert (got["sizes"], got["k"], got["images"], got["of"]) == (sizes, cfg["clusters"], 100, n)
        assert got["largest_smallest_ratio"] == pytest.approx(sizes[0] / sizes[-1])
        tsne = pd.read_csv(proj.path(f"metrics/cluster/{enc}_tsne.csv"))
        assert list(tsne.columns) == ["x", "y", "index", "cluster"] and set(tsne["index"]) <= set(sample.tolist())
        counts = np.bincount(assign, minlength=cfg["clusters"])
        rank = {c: r for r, c in enumerate(sorted(range(cfg["clusters"]), key=lambda c: (-counts[c], c)))}
        row = {int(i): j for j, i in enumerate(sample)}
        assert tsne["cluster"].tolist() == [rank[assign[row[i]]] for i in tsne["index"]]


def test_report_renders_without_any_accuracy(unlabeled):
    proj, _ = unlabeled
    page = proj.path("report/index.html").read_text()
    text = re.sub(r'src="data:image/png;base64,[^"]+"', "", page)
    assert "no labeled evaluation set" in text and "data.labeled" in text
    assert 'alt="cluster sizes"' in page and 'alt="t-SNE pretrain"' in page
    for word in ("<th>All</th>", "<th>Many</th>", "kNN@", "<th>CHI</th>", "<th>NMI</th>", "Linear probe (full)",
                 "raw pixels (reference)"):
        assert word not in text, word
    assert "Without a labeled evaluation set no accuracy is measured" in text  # the Dataset section's note
    # no percentage or accuracy-like number outside the tables of sizes / the params listing
    assert 'id="linear-probe"' in text and 'id="knn-accuracy"' in text
    probe_part = text[text.index('id="linear-probe"'):text.index('id="cluster-quality"')]
    assert probe_part.count("so no accuracy can be measured") == 2 and "data.labeled" in probe_part
    assert not re.search(r"\d+\.\d\d", probe_part)


def _thirds(counts) -> np.ndarray:
    """Many / medium / few by the thirds rule, written out: sort by count (ties by class index)."""
    order = sorted(range(len(counts)), key=lambda c: (counts[c], c))
    third = len(counts) // 3
    out = np.array(["many"] * len(counts), dtype=object)
    out[order[:third]], out[order[third:2 * third]] = "few", "medium"
    return out


def _relabel_manifest(proj, **keys) -> dict:
    """Rewrite data/lt/manifest.json with ``keys`` set (the array files are untouched, their hashes hold)."""
    path = proj.path("data/lt/manifest.json")
    man = read_json(path)
    man.update(keys)
    write_json(path, man)
    return man


@pytest.fixture(scope="module")
def no_groups(lt_project, tmp_path_factory):
    """Real labels, ``groups: null`` (no counts define groups): probe, references, cluster, report."""
    proj = copy_project(lt_project, tmp_path_factory.mktemp("nogroups") / "p", {})
    _relabel_manifest(proj, labels={"train": True, "eval": True, "note": "a labeled set without counts"},
                      groups=None, group_counts=None, group_source=None)
    fake_encoder(proj, "data/models/pretrain.pt")
    proj.stage("linear_probe.py", "pretrain")
    proj.stage("cluster.py", "pretrain")
    proj.stage("reference_probe.py", "pixels")
    proj.stage("report.py")
    return proj


def test_without_groups_no_group_key_at_all(no_groups):
    proj = no_groups
    _, y_test = load_split(proj.path("data/lt"), "test")
    for name in ("pretrain", "ref-pixels"):
        m = json.loads(proj.path(f"metrics/probe/{name}_details.json").read_text())
        assert m["group_source"] is None
        assert not _keys(m) & GROUP_KEYS and not any(k.endswith("_few") for k in m["knn"])
        assert json.loads(proj.path(f"metrics/probe/{name}.json").read_text()) == {  # the headline: All alone
            **{proto: {"all": m[proto]["all"]} for proto in ("full", "few_shot")}, "knn": m["knn"]}
        per_class = pd.read_csv(proj.path(f"metrics/probe/{name}_per_class.csv"))
        assert "group" not in per_class
        n_test = np.bincount(y_test, minlength=10)
        for proto in ("full", "few_shot"):  # All is still the test-weighted mean of the per-class accuracies
            assert m[proto]["all"] == pytest.approx(np.sum(per_class[proto] * n_test) / n_test.sum(), abs=1e-3)
    cl = json.loads(proj.path("metrics/cluster/pretrain_details.json").read_text())
    assert "geometry" not in cl and {"chi", "dbi", "nmi", "ari", "cluster_sizes"} <= set(cl)
    page = proj.path("report/index.html").read_text()
    assert "<th>Many</th>" not in page and "<th>STD</th>" not in page and "<th>All</th>" in page
    assert "Many / Medium / Few groups are absent" in page and "raw pixels (reference)" in page


def test_compare_reads_runs_without_groups_and_absent_labels(no_groups, unlabeled, tmp_path, capsys):
    """``ltcl compare`` on result folders whose probe metrics have no groups or say labels are absent,
    beside ref-* metrics: f's row of the run without groups has All and no group column, the run
    without labels gives no row, and the reference rows are not taken for encoders."""
    from ltcl.cli import main as cli_main
    from ltcl.compare.experiments import from_directory
    from ltcl.compare.table import build_lines

    dirs = []
    for name, proj in (("nogroups", no_groups), ("unlabeled", unlabeled[0])):
        d = tmp_path / name
        shutil.copytree(proj.path("metrics"), d / "metrics")
        shutil.copy(proj.path("params.yaml"), d / "params.yaml")
        dirs.append(d)
    lines, _ = build_lines([from_directory(d) for d in dirs], "full")
    assert [(r.experiment.name, r.encoder) for line in lines for r in line.runs] == [("nogroups", "pretrain")]
    (line,) = lines
    assert "all" in line.mean and not set(line.mean) & GROUP_KEYS
    assert cli_main(["compare", "--dirs", *map(str, dirs), "--out", str(tmp_path / "out")]) == 0
    assert "nan" not in capsys.readouterr().out.lower()


def test_groups_from_group_counts_and_lt_ms_skipped_without_training_labels(lt_project, tmp_path):
    """``labels.train`` false (the training split's labels are -1) with a labeled set whose groups come
    from a counts file: lt and ms are skipped with their reason, even when requested; the groups are the
    thirds of ``group_counts``, not of ``lt_counts``."""
    proj = copy_project(lt_project, tmp_path / "p", {"probe": {"protocols": ["full", "lt", "ms"]}})
    lt = proj.path("data/lt")
    man = read_json(lt / "manifest.json")
    y_file = man["arrays"]["train"]["y"]
    save_npy(lt / y_file, np.full(man["sizes"]["train"], -1, np.int64))
    group_counts = [3, 900, 40, 7, 500, 60, 1, 300, 20, 80]  # a counts file's
    arrays = {k: v for k, v in man["arrays"].items() if k not in ("ms",)}  # the ms split is never read
    _relabel_manifest(proj, labels={"train": False, "eval": True, "note": "a labeled set"}, lt_counts=None,
                      group_counts=group_counts, group_source="counts file counts.csv", arrays=arrays,
                      groups=["few"] * 10, files={**man["files"], y_file: sha256_file(lt / y_file)})
    fake_encoder(proj, "data/models/pretrain.pt")
    proj.stage("linear_probe.py", "pretrain")
    m = json.loads(proj.path("metrics/probe/pretrain_details.json").read_text())
    assert set(m["skipped"]) == {"lt", "ms"} and "labels.train is false" in m["skipped"]["lt"]
    assert "lt" not in m and "ms" not in m and m["group_source"] == "counts file counts.csv"
    per_class = pd.read_csv(proj.path("metrics/probe/pretrain_per_class.csv"))
    want, of_lt = _thirds(group_counts), _thirds(man["lt_counts"])
    assert want.tolist() != of_lt.tolist()  # the two sources give other groups: the test tells them apart
    assert per_class["group"].tolist() == want.tolist()
    assert per_class["train_count"].isna().all()  # no real training counts
    for g in ("many", "medium", "few"):
        assert m["full"][g] == pytest.approx(per_class.loc[want == g, "full"].mean(), abs=1e-3)
    proj.stage("report.py")
    page = proj.path("report/index.html").read_text()
    assert "LT linear probe" in page and "Not run: the lt protocol" in page
    assert "class counts of the counts file counts.csv" in page


def test_label_facts_of_an_old_manifest_and_reports_without_groups():
    old = {"class_names": ["a", "b", "c"], "lt_counts": [30, 3, 10], "groups": ["many", "few", "medium"]}
    facts = label_facts(old)
    assert (facts.train, facts.eval, facts.group_counts, facts.group_source) == (True, True, [30, 3, 10],
                                                                                 LT_GROUP_SOURCE)
    assert label_facts({**old, "groups": None}).group_counts is None
    unlabeled = {"class_names": [], "lt_counts": None, "groups": None, "group_counts": None,
                 "labels": {"train": False, "eval": False, "note": ""}}
    assert not label_facts(unlabeled).eval and not label_facts(unlabeled).has_groups
    rep = accuracy_report(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]), None, 3)
    assert set(rep) == {"all", "per_class"} and rep["all"] == 75.0
