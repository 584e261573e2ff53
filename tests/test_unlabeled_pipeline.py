"""The practitioner's path end to end (issue 21): an unlabeled folder of images (nested, mixed
sizes, names that are no classes), a folder of large photos as the OOD pool and, in the second
run, a small labeled set, through every stage from make-lt-dataset to the report and the export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import make_project

STAGES = [("make_lt_dataset.py",), ("ood_pool.py",), ("ood_sampling.py",), ("pretrain.py",), ("distill.py",)]
PER_ENCODER = ("linear_probe.py", "cluster.py", "export.py")


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """96 unlabeled digit images (long-tailed: 48 / 24 / 12 / 8 / 4 of five digits) at 16 and 24 px
    under date / camera folders; 3 photos of 300 x 200 and 150 x 400 as the OOD pool; a labeled set of
    three digits (8 each) in class folders."""
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path_factory.mktemp("practitioner")
    imgs = (d.images * 255 / 16).astype(np.uint8)
    rng = np.random.default_rng(0)
    n = 0
    for digit, count in zip((0, 1, 2, 3, 4), (48, 24, 12, 8, 4)):
        for i in np.flatnonzero(d.target == digit)[:count]:
            size = 16 if n % 5 < 3 else 24
            img = Image.fromarray(imgs[i]).resize((size, size), Image.BILINEAR)
            folder = ["2023-04-02/pixel7", "2023-05-11/canon/burst"][n % 2]
            _save(root / "collection" / folder / f"IMG_{n:04d}.png", np.asarray(img))
            n += 1
    for k, (w, h) in enumerate([(300, 200), (150, 400), (300, 200)]):
        _save(root / "wallpapers" / f"w{k}.jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    for digit in (0, 1, 2):
        for j, i in enumerate(np.flatnonzero(d.target == digit)[100:108]):
            _save(root / "labeled" / f"digit{digit}" / f"{j}.png", imgs[i])
    return root


def _params(folders, labeled: bool) -> dict:
    data = {"source": "images", "root": str(folders / "collection"), "image_size": 16}
    if labeled:
        data["labeled"] = {"root": str(folders / "labeled"), "groups": "sample", "test_fraction": 0.25}
    return {"data": data,
            "ood": {"strategy": "kdup", "source": "folder", "path": str(folders / "wallpapers"), "pool_size": 200,
                    "budget": 40, "clusters": 4, "warmup_epochs": 1, "interval": 1, "knn_k": 5},
            "pretrain": {"method": "psd", "epochs": 3, "batch_size": 32, "psd": {"k_pos": 2}},
            "distill": {"batch_size": 32, "kdup": {"clusters": 4}},
            "cluster": {"clusters": 4, "tsne_samples": 60}}


def _run_all(proj):
    for args in STAGES:
        proj.stage(*args)
    for enc in ("pretrain", "distill"):
        proj.stage("linear_probe.py", enc)
    for which in ("pixels", "random"):
        proj.stage("reference_probe.py", which)
    for enc in ("pretrain", "distill"):
        proj.stage("cluster.py", enc)
        proj.stage("export.py", enc)
    proj.stage("report.py")


def _json(proj, rel):
    return json.loads(proj.path(rel).read_text())


def test_unlabeled_folder_to_report_and_export(tmp_path, folders):
    proj = make_project(tmp_path, _params(folders, labeled=False))
    _run_all(proj)
    ds = _json(proj, "metrics/dataset.json")
    assert ds["size_train"] == 96 and ds["train_labels"] is False and ds["eval_labels"] is False
    pool = _json(proj, "data/ood/pool.json")
    assert pool["shape"] == [200, 16, 16, 3]  # 200 crops of 3 photos
    for enc in ("pretrain", "distill", "ref-pixels", "ref-random"):
        m = _json(proj, f"metrics/probe/{enc}_details.json")
        assert m["labels"] == "absent" and "data.labeled" in m["reason"]
        assert _json(proj, f"metrics/probe/{enc}.json") == {}  # the headline holds no number
    clu = _json(proj, "metrics/cluster/distill_details.json")
    assert clu["labels"] == "absent" and sum(clu["cluster_sizes"]["sizes"]) == 96  # the tail the model sees
    ood = _json(proj, "metrics/ood_details.json")
    assert "spearman_rarity" not in json.dumps(ood) and ood["selected"] == 40
    assert _json(proj, "metrics/ood.json") == {"selected": 40}  # nothing computed from the placeholder labels
    html = proj.path("report/index.html").read_text()
    for made_up in ("Spearman", "Few-majority", "Many</th>"):
        assert made_up not in html, made_up
    assert "data.labeled" in html  # why there is no accuracy
    assert html.count("data:image/png;base64,") >= 5  # counts, histograms, grids, cluster sizes, curves
    card = _json(proj, "export/distill/model_card.json")
    assert card["data"]["classes"] is None and "absent" in card["probe"]
    md = proj.path("export/distill/model_card.md").read_text()
    assert "No accuracy:" in md and "nan" not in md


def test_with_a_labeled_set_names_groups_and_reference_rows_come_from_it(tmp_path, folders):
    proj = make_project(tmp_path, _params(folders, labeled=True))
    _run_all(proj)
    manifest = _json(proj, "data/lt/manifest.json")
    assert manifest["class_names"] == ["digit0", "digit1", "digit2"]
    assert manifest["group_counts"] == [8, 8, 8] and manifest["group_source"].startswith("labeled set")
    probe = _json(proj, "metrics/probe/distill_details.json")
    assert set(probe["full"]) >= {"many", "medium", "few", "all"}
    assert probe["group_source"].startswith("labeled set")
    pixels = _json(proj, "metrics/probe/ref-pixels_details.json")
    card = _json(proj, "export/distill/model_card.json")
    assert card["above_references"]["full"]["raw pixels"] == pytest.approx(
        probe["full"]["all"] - pixels["full"]["all"], abs=0.01)
    html = proj.path("report/index.html").read_text()
    assert "raw pixels (reference)" in html and "random-init encoder (reference)" in html
    assert "Spearman" not in html  # the training images' labels are still not real
    assert "digit2" in proj.path("metrics/class_counts.csv").read_text()
