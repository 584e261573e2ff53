"""``ltcl init``: params.yaml for a first KDUP run, fitted to the user's folders (issue 21)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ltcl.cli import main
from ltcl.init import SIZES, choose
from ltcl.params import load_params


def _images(root, n, sizes, rng):
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        d = root / f"2024-0{1 + i % 3}" / ("phone" if i % 2 else "cam")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_init_writes_valid_params_fitted_to_the_folders(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    _images(tmp_path / "coll", 90, [(40, 40), (28, 28), (28, 28)], rng)
    for c in ("a", "b", "c"):
        _images(tmp_path / "lab" / c, 4, [(30, 30)], rng)
    _images(tmp_path / "ood", 5, [(300, 200)], rng)
    (tmp_path / "params.yaml").write_text((Path(__file__).parents[1] / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--images", "coll", "--labeled", "lab", "--ood", "ood"]) == 0
    out = capsys.readouterr().out
    p = load_params("params.yaml")  # valid against the schema
    assert p.data.source == "images" and p.data.root == "coll" and p.data.image_size == 28  # median short side 28
    assert p.data.labeled.root == "lab" and p.data.labeled.layout == "classes" and p.data.labeled.groups == "none"
    assert p.ood.source == "folder" and p.ood.path == "ood" and p.ood.clusters == 3 and p.distill.kdup.clusters == 3
    assert p.ood.budget == 81 and p.ood.pool_size == 1000  # 0.9 N; 10 N_b at least 1,000
    assert p.pretrain.method == "psd" and p.pretrain.batch_size == 32
    # ~1,500 steps on the CPU: a fifth of the epochs (the warm-up) on the 90 ID images, the rest with the 81 OOD images
    assert p.pretrain.epochs == round(1500 / (0.2 * (90 // 32) + 0.8 * ((90 + 81) // 32)))
    text = (tmp_path / "params.yaml").read_text()
    assert text.startswith("# Written by `ltcl init`") and "data.image_size 28" in text
    assert "data.image_size 28" in out and "make repro" in out
    written = yaml.safe_load(text)
    assert list(written)[0] == "data"
    # every params key a dvc.yaml stage names exists in the file (DVC refuses the stage otherwise)
    stages = yaml.safe_load((Path(__file__).parents[1] / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():
        for key in (st.get("do", st).get("params") or []):
            if "${" in str(key):  # a foreach over params.yaml's own entries (external encoders)
                continue
            node = written
            for part in str(key).split("."):
                assert isinstance(node, dict) and part in node, (name, key)
                node = node[part]


def test_choose_rules():
    over, why = choose(20000, [(500, 375)] * 10, gpu=True, n_classes=None, ood_files=None)
    assert over["data"]["image_size"] == 224 and over["model"]["backbone"] == "resnet18"
    assert over["pretrain"]["batch_size"] == 256 and over["ood"]["pool_size"] == 100_000
    assert over["ood"]["budget"] == 18000 and over["ood"]["clusters"] == 10
    over, _ = choose(20000, [(500, 375)] * 10, gpu=False, n_classes=None, ood_files=None)
    assert over["data"]["image_size"] == 64 and over["model"]["backbone"] == "resnet8"  # CPU cap
    over, _ = choose(5000, [(20, 20)], gpu=False, n_classes=4, ood_files=3)
    assert over["data"]["image_size"] == max(s for s in SIZES if s <= 20)
    assert over["ood"]["budget"] <= over["ood"]["pool_size"] // 2


def test_init_refuses_missing_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--images", "nowhere"]) == 2
    assert "not a folder" in capsys.readouterr().err
