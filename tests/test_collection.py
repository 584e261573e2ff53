"""data.source: images (an unlabeled collection) with its optional labeled set, on image files
written here in their real formats; the long-tailed draw of labeled sources reports what it left
out; user lists may skip unreadable files (issue 21)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ltcl.data.groups import class_groups
from ltcl.data.splits import load_split
from ltcl.errors import UserError
from ltcl.io import read_json
from ltcl.params import ParamsError, validate
from ltcl.pipeline import make_lt_dataset

SIZE = 12


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _expected(path: Path, size: int = SIZE) -> np.ndarray:
    """What a stored row must be, computed here with PIL alone: RGB, bilinear resize of the whole image."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im, np.uint8)


@pytest.fixture()
def collection(tmp_path):
    """25 images under date / camera folders at three depths, 40x40 and 28x28 (and one 30x50),
    PNG and JPEG, colour and gray."""
    rng = np.random.default_rng(1)
    root = tmp_path / "coll"
    files = []
    for i in range(25):
        folder = ["2023-04-02/pixel7", "2023-05-01/canon/burst", "misc"][i % 3]
        h, w = (40, 40) if i % 5 < 2 else (28, 28)
        if i == 7:
            h, w = 30, 50
        arr = rng.integers(0, 256, (h, w, 3) if i % 4 else (h, w), dtype=np.uint8)
        p = root / folder / f"IMG_{i:04d}.{'jpg' if i % 2 else 'png'}"
        _write(p, arr)
        files.append(p)
    return root


def _sorted_walk(root: Path) -> list[str]:
    """The expected order: at each level entries sorted by name, depth first (written here with os.walk)."""
    out = []

    def walk(d):
        for name in sorted(os.listdir(d)):
            p = d / name
            if p.is_dir():
                walk(p)
            elif name.lower().endswith((".png", ".jpg")):
                out.append(str(p.relative_to(root)))

    walk(root)
    return out


def _run(tmp_path, data: dict, extra: dict | None = None):
    params = validate({"data": {"source": "images", "image_size": SIZE, **data}, **(extra or {})})
    lt = tmp_path / "lt"
    manifest = make_lt_dataset.run(params, lt, tmp_path / "dataset.json", tmp_path / "counts.csv")
    return manifest, lt, read_json(tmp_path / "dataset.json")


def test_every_image_in_recorded_order(tmp_path, collection):
    manifest, lt, metrics = _run(tmp_path, {"root": str(collection)})
    order = _sorted_walk(collection)
    assert len(order) == 25
    assert (lt / "train_files.txt").read_text().splitlines() == order
    x, y = load_split(lt, "train")
    assert x.shape == (25, SIZE, SIZE, 3)
    for row, rel in enumerate(order):
        np.testing.assert_array_equal(x[row], _expected(collection / rel), err_msg=rel)
    assert (y == -1).all()
    assert manifest["labels"]["train"] is False and manifest["labels"]["eval"] is False
    assert manifest["lt_counts"] is None and manifest["groups"] is None and manifest["class_names"] == []
    assert set(manifest["arrays"]) == {"train", "lt"}
    assert "train_files.txt" in manifest["files"]
    assert metrics["size_train"] == 25 and metrics["train_labels"] is False and metrics["skipped_images"] == 0
    assert "imbalance_ratio" not in metrics  # no made-up class counts


def test_path_list_order_and_refusals(tmp_path, collection):
    order = _sorted_walk(collection)[::-1][:10]
    lst = tmp_path / "paths.txt"
    lst.write_text("\n".join(order) + "\n")
    _, lt, _ = _run(tmp_path, {"root": str(collection), "images": str(lst)})
    assert (lt / "train_files.txt").read_text().splitlines() == order
    x, _ = load_split(lt, "train")
    for row, rel in enumerate(order):
        np.testing.assert_array_equal(x[row], _expected(collection / rel))
    lst.write_text(order[0] + " 3\n")
    with pytest.raises(UserError, match="ends in a label"):
        _run(tmp_path, {"root": str(collection), "images": str(lst)})


def test_bad_file_error_names_it_and_writes_nothing(tmp_path, collection, caplog):
    (collection / "misc" / "broken.png").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING):
        with pytest.raises(UserError, match=r"1 of 26 images could not be decoded.*broken\.png.*on_bad_image: skip"):
            _run(tmp_path, {"root": str(collection)})
    assert not (tmp_path / "lt").exists()
    assert "skipping" not in caplog.text  # nothing was skipped: the stage stopped


def test_skip_counts_logs_and_loses_nothing_else(tmp_path, collection, caplog):
    (collection / "2023-05-01" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with caplog.at_level(logging.WARNING):
        manifest, lt, metrics = _run(tmp_path, {"root": str(collection), "on_bad_image": "skip"})
    assert "broken.jpg" in caplog.text
    assert [Path(p).name for p in manifest["skipped_images"]] == ["broken.jpg"]
    assert metrics["skipped_images"] == 1
    order = _sorted_walk(collection)
    order.remove("2023-05-01/broken.jpg")
    assert (lt / "train_files.txt").read_text().splitlines() == order
    x, _ = load_split(lt, "train")
    assert len(x) == 25
    for row, rel in enumerate(order):
        np.testing.assert_array_equal(x[row], _expected(collection / rel))


@pytest.fixture()
def labeled(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "labeled"
    sizes = {"heron": 10, "owl": 7, "wren": 5}
    for name, n in sizes.items():
        for i in range(n):
            _write(root / name / f"{i}.png", rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    return root, sizes


def _rows_of(x, root: Path, rels):
    """Which labeled files the rows of x are (by content)."""
    lookup = {_expected(root / r).tobytes(): r for r in rels}
    return [lookup[row.tobytes()] for row in np.asarray(x)]


def test_labeled_set_gives_names_splits_and_groups(tmp_path, collection, labeled):
    root, sizes = labeled
    manifest, lt, metrics = _run(tmp_path, {"root": str(collection),
                                            "labeled": {"root": str(root), "groups": "sample"}})
    assert manifest["class_names"] == ["heron", "owl", "wren"]
    rels = [f"{c}/{i}.png" for c, n in sizes.items() for i in range(n)]
    seen = {}
    for split in ("probe_full", "val", "test"):
        x, y = load_split(lt, split)
        files = _rows_of(x, root, rels)
        assert [manifest["class_names"][c] for c in y] == [f.split("/")[0] for f in files]
        seen[split] = set(files)
    assert not (seen["probe_full"] & seen["val"]) and not (seen["probe_full"] & seen["test"])
    assert not (seen["val"] & seen["test"])
    assert set().union(*seen.values()) == set(rels)  # every labeled image in exactly one split
    # stratified: test = round(0.3 n), val = round(0.2 of the rest) per class
    test_counts = np.bincount(load_split(lt, "test")[1], minlength=3)
    assert test_counts.tolist() == [int(np.floor(0.3 * n + 0.5)) for n in sizes.values()]
    few_x, few_y = load_split(lt, "few_shot")
    assert set(_rows_of(few_x, root, rels)) <= seen["probe_full"] and np.bincount(few_y).tolist() == [1, 1, 1]
    assert manifest["group_counts"] == list(sizes.values())
    assert manifest["groups"] == class_groups(list(sizes.values()), "thirds").tolist()
    assert manifest["group_source"] == "labeled set (a sample of the collection)"
    assert manifest["labels"] == {"train": False, "eval": True, "note": manifest["labels"]["note"]}
    assert (tmp_path / "counts.csv").read_text().splitlines()[1].startswith("0,0,heron,,10,")


def test_labeled_groups_absent_or_from_counts_file(tmp_path, collection, labeled):
    root, _ = labeled
    manifest, _, metrics = _run(tmp_path, {"root": str(collection), "labeled": {"root": str(root)}})
    assert manifest["groups"] is None and manifest["group_source"] is None and metrics["group_source"] == "none"
    counts = tmp_path / "counts_in_collection.csv"
    counts.write_text("class,count\nwren,300\nheron,4\nowl,40\n")
    manifest, _, _ = _run(tmp_path, {"root": str(collection), "labeled": {
        "root": str(root), "groups": "counts", "counts_file": str(counts)}})
    assert manifest["group_counts"] == [4, 40, 300]
    assert manifest["groups"] == ["few", "medium", "many"]
    counts.write_text("wren,300\nheron,4\n")
    with pytest.raises(UserError, match=r"no count for classes \['owl'\]"):
        _run(tmp_path, {"root": str(collection), "labeled": {
            "root": str(root), "groups": "counts", "counts_file": str(counts)}})


def test_labeled_train_test_layout(tmp_path, collection):
    rng = np.random.default_rng(3)
    root = tmp_path / "lab2"
    for split, n in (("train", 6), ("test", 3)):
        for c in ("a", "b"):
            for i in range(n):
                _write(root / split / c / f"{i}.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    manifest, lt, _ = _run(tmp_path, {"root": str(collection), "labeled": {"root": str(root), "layout": "train-test"}})
    assert manifest["class_names"] == ["a", "b"]
    assert manifest["sizes"]["test"] == 6 and manifest["sizes"]["val"] == 2 and manifest["sizes"]["probe_full"] == 10
    test_rels = [f"test/{c}/{i}.png" for c in ("a", "b") for i in range(3)]
    assert _rows_of(load_split(lt, "test")[0], root, test_rels) == test_rels


def test_params_refuse_what_needs_labels():
    base = {"data": {"source": "images", "root": "x", "image_size": 32}}
    with pytest.raises(ParamsError, match="supervised"):
        validate({**base, "pretrain": {"method": "gloco"}, "ood": {"strategy": "none"}})
    with pytest.raises(ParamsError, match=r"pretrain\.tase\.clusters: 0 means"):
        validate({**base, "pretrain": {"method": "tase"}})
    with pytest.raises(ParamsError, match="image_size"):
        validate({"data": {"source": "images", "root": "x"}})
    with pytest.raises(ParamsError, match="data.labeled is only read"):
        validate({"data": {"source": "digits", "labeled": {"root": "x"}}})


def test_long_tailed_draw_reports_what_it_left_out(tmp_path, caplog):
    params = validate({"data": {"source": "digits", "imbalance_ratio": 10.0, "val_per_class": 10,
                                "max_per_class": 60}})
    (tmp_path / "metrics").mkdir()
    with caplog.at_level(logging.WARNING):
        manifest = make_lt_dataset.run(params, tmp_path / "data/lt", tmp_path / "metrics/dataset.json",
                                       tmp_path / "c.csv")
    from ltcl.data.sources import load_source

    raw = load_source("digits", download=False, on_bad_image="error")
    n_train = len(raw.y_train)
    rec = manifest["subsampling"]
    kept = int(np.sum(manifest["lt_counts"]))
    assert rec == {"source_images": n_train, "kept": kept, "held_out": 100, "unused": n_train - kept - 100,
                   "reason": rec["reason"]}
    assert "imbalance_ratio 10.0" in rec["reason"]
    assert read_json(tmp_path / "metrics/dataset.json")["unused_images"] == n_train - kept - 100
    assert f"pre-training uses {kept} of the source's {n_train}" in caplog.text
    from ltcl.report.html import build_report

    md = build_report(tmp_path, title="ltcl report").to_markdown()  # the report says it where the data set is described
    assert f"Pre-training uses {kept} of the source's {n_train} training images" in md


def test_own_labeled_folder_keeps_every_image(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "own"
    counts = {"a": 30, "b": 12, "c": 4}
    for c, n in counts.items():
        for i in range(n):
            _write(root / "train" / c / f"{i}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        _write(root / "test" / c / "0.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    params = validate({"data": {"source": "folder", "root": str(root), "val_per_class": 2, "max_per_class": 5}})
    manifest = make_lt_dataset.run(params, tmp_path / "lt", tmp_path / "d.json", tmp_path / "c.csv")
    assert manifest["lt_counts"] == [n - 2 for n in counts.values()]  # all but val: max_per_class not applied
    assert "subsampling" not in manifest
    params = validate({"data": {"source": "folder", "root": str(root), "val_per_class": 2, "max_per_class": 2,
                                "longtail": "draw", "imbalance_ratio": 2.0}})
    manifest = make_lt_dataset.run(params, tmp_path / "lt", tmp_path / "d.json", tmp_path / "c.csv")
    assert manifest["subsampling"]["unused"] == sum(counts.values()) - 6 - sum(manifest["lt_counts"])


def test_user_lists_may_skip_unreadable_files(tmp_path, caplog):
    rng = np.random.default_rng(5)
    root = tmp_path / "root"
    lines = {"train": [], "val": [], "test": []}
    for role in lines:
        for c in (0, 1):
            for i in range(4):
                rel = f"{role}/{c}/{i}.png"
                _write(root / rel, rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
                lines[role].append(f"{rel} {c}")
    (root / "train/1/3.png").write_bytes(b"broken")
    files = {}
    for role, ls in lines.items():
        files[role] = str(tmp_path / f"{role}.txt")
        Path(files[role]).write_text("\n".join(ls) + "\n")
    base = {"source": "list", "split": "community", "root": str(root), "lists": files, "image_size": 10}
    with caplog.at_level(logging.WARNING):
        with pytest.raises(UserError, match="on_bad_image: skip"):
            make_lt_dataset.run(validate({"data": base}), tmp_path / "lt", tmp_path / "d.json", tmp_path / "c.csv")
    assert "skipping" not in caplog.text
    manifest = make_lt_dataset.run(validate({"data": {**base, "on_bad_image": "skip"}}), tmp_path / "lt",
                                   tmp_path / "d.json", tmp_path / "c.csv")
    assert manifest["lt_counts"] == [4, 3] and len(manifest["skipped_images"]) == 1
    x, y = load_split(tmp_path / "lt", "lt")
    assert y.tolist() == [0, 0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(x[6], _expected(root / "train/1/2.png", 10))
    assert read_json(tmp_path / "d.json")["skipped_images"] == 1
    bundle = validate({"data": {"source": "list", "split": "community", "lists": "places-lt", "image_size": 10,
                                "on_bad_image": "skip", "root": str(root)}})
    with pytest.raises(UserError, match="published subset"):
        make_lt_dataset.build(bundle.data, tmp_path / "x")


def test_labeled_lists_layout_checked_like_list_files(tmp_path, collection):
    rng = np.random.default_rng(6)
    root = tmp_path / "lab3"
    lines = {"train": [], "test": []}
    for role, n in (("train", 5), ("test", 2)):
        for c in (0, 1):
            for i in range(n):
                rel = f"{role}/cls{c}/{i}.png"
                _write(root / rel, rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
                lines[role].append(f"{rel} {c}")
    files = {}
    for role, ls in lines.items():
        files[role] = tmp_path / f"{role}.txt"
        files[role].write_text("\n".join(ls) + "\n")
    lab = {"root": str(root), "layout": "lists", "lists": {k: str(v) for k, v in files.items()}}
    manifest, lt, _ = _run(tmp_path, {"root": str(collection), "labeled": lab})
    assert manifest["class_names"] == ["cls0", "cls1"] and manifest["sizes"]["test"] == 4
    assert manifest["sizes"]["val"] + manifest["sizes"]["probe_full"] == 10
    files["test"].write_text(lines["test"][0] + "\n" + "test/cls1/0.png 2\n")
    with pytest.raises(UserError, match="labels outside 0..1"):
        _run(tmp_path, {"root": str(collection), "labeled": lab})
