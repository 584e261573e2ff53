"""The community's split files: SDCLR's CIFAR index lists (exact images, exact order), the
shipped ImageNet-100-LT / Places-LT lists (sizes and per-class counts), and list-file datasets
of real JPEG files through make-lt-dataset (checks before work, nothing written on failure)."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ltcl.data.lists import BUNDLES, LISTS_DIR, read_list
from ltcl.data.splits import SPLIT_NAMES, load_manifest, load_split
from ltcl.errors import MissingInputError, UserError
from ltcl.params import DataParams
from ltcl.pipeline import make_lt_dataset

N_TRAIN = 50_000


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- CIFAR
def write_cifar(folder: Path, dataset: str, num_classes: int) -> np.ndarray:
    """The official python batches with 50,000 synthetic training images whose first three
    red pixels spell the image's index (base 256); random labels. Returns the labels."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, N_TRAIN)
    data = np.zeros((N_TRAIN, 3072), np.uint8)
    idx = np.arange(N_TRAIN)
    data[:, 0], data[:, 1], data[:, 2] = idx // 65536, (idx // 256) % 256, idx % 256
    key = b"labels" if dataset == "cifar10" else b"fine_labels"
    batches = ([(f"data_batch_{i}", slice((i - 1) * 10_000, i * 10_000)) for i in range(1, 6)]
               if dataset == "cifar10" else [("train", slice(0, N_TRAIN))])
    for name, sl in batches:
        (folder / name).write_bytes(pickle.dumps({b"data": data[sl], key: labels[sl].tolist()}, protocol=2))
    test = {b"data": np.zeros((20, 3072), np.uint8), key: [i % num_classes for i in range(20)]}
    (folder / ("test_batch" if dataset == "cifar10" else "test")).write_bytes(pickle.dumps(test, protocol=2))
    return labels


def image_ids(x: np.ndarray) -> np.ndarray:
    """The index each synthetic image spells (see :func:`write_cifar`)."""
    x = np.asarray(x, dtype=np.int64)
    return x[:, 0, 0, 0] * 65536 + x[:, 0, 1, 0] * 256 + x[:, 0, 2, 0]


# issue 14: train / val / full probe / few-shot / balanced sizes of split k
SIZES = {"cifar10": (11_165, 5_000, 45_000, 450, 11_160), "cifar100": (9_754, 5_000, 45_000, 400, 9_700)}


@pytest.fixture(scope="module", params=["cifar10", "cifar100"])
def cifar_root(request, tmp_path_factory):
    dataset = request.param
    root = tmp_path_factory.mktemp(dataset)
    folder = root / ("cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python")
    labels = write_cifar(folder, dataset, 10 if dataset == "cifar10" else 100)
    return dataset, root, labels


@pytest.mark.parametrize("split_index", [2])
def test_cifar_community_split_is_the_listed_images_in_order(cifar_root, tmp_path, split_index):
    dataset, root, labels = cifar_root
    cfg = DataParams(source=dataset, root=str(root), split="community", split_index=split_index)
    manifest = make_lt_dataset.build(cfg, tmp_path / "lt")
    lists = LISTS_DIR / dataset
    d_i = np.load(lists / f"split{split_index}_D_i.npy")
    val = np.load(lists / "valIdxList.npy")
    s_b = np.load(lists / f"split{split_index}_S_b.npy")
    probe = (np.load(lists / "trainIdxList.npy") if dataset == "cifar10"
             else np.setdiff1d(np.arange(N_TRAIN), val))  # CIFAR-100's trainIdxList is not val's complement
    expected = {"train": d_i, "lt": d_i, "val": val, "probe_full": probe, "few_shot": s_b, "one_percent": s_b}
    for split, idx in expected.items():
        x, y = load_split(tmp_path / "lt", split)
        np.testing.assert_array_equal(image_ids(x), idx, err_msg=split)
        np.testing.assert_array_equal(y, labels[idx], err_msg=split)
    n_train, n_val, n_probe, n_few, _ = SIZES[dataset]
    assert [manifest["sizes"][s] for s in ("train", "val", "probe_full", "few_shot")] == [n_train, n_val, n_probe, n_few]
    assert manifest["lt_counts"] == np.bincount(labels[d_i], minlength=len(manifest["class_names"])).tolist()
    ms_ids = image_ids(load_split(tmp_path / "lt", "ms")[0])
    assert set(ms_ids) <= set(d_i)  # minimum sampling inside D_i
    # the manifest names every list file and its sha256
    assert manifest["split"] == "community"
    assert manifest["params"]["split_index"] == split_index
    for role, name in (("lt", f"split{split_index}_D_i.npy"), ("val", "valIdxList.npy"),
                       ("few_shot", f"split{split_index}_S_b.npy"), ("balanced", f"split{split_index}_D_b.npy")):
        rec = manifest["split_files"][role]
        assert rec == {"file": f"{dataset}/{name}", "sha256": sha256(lists / name)}


def test_cifar_community_balanced_subset_is_d_b(cifar_root, tmp_path):
    dataset, root, _ = cifar_root
    cfg = DataParams(source=dataset, root=str(root), split="community", split_index=4, subset="balanced-subset")
    manifest = make_lt_dataset.build(cfg, tmp_path / "lt")
    d_b = np.load(LISTS_DIR / dataset / "split4_D_b.npy")
    np.testing.assert_array_equal(image_ids(load_split(tmp_path / "lt", "train")[0]), d_b)
    np.testing.assert_array_equal(image_ids(load_split(tmp_path / "lt", "lt")[0]),
                                  np.load(LISTS_DIR / dataset / "split4_D_i.npy"))
    assert manifest["sizes"]["train"] == SIZES[dataset][4]


def test_community_split_refused_for_other_sources_and_bad_index():
    with pytest.raises(ValueError, match="split: community"):
        DataParams(source="digits", split="community")
    with pytest.raises(ValueError, match="split_index"):
        DataParams(source="cifar10", split="community", split_index=6)


# ----------------------------------------------------------------------------- shipped list bundles
@pytest.mark.parametrize("bundle, sizes, classes, head, tail", [
    ("imagenet100-lt", {"train": 12_205, "val": 2_000, "test": 5_000, "balanced": 12_200, "few_shot": 1_200},
     100, 1_280, 6),
    ("places-lt", {"train": 62_500, "val": 7_300, "test": 36_500}, 365, 4_980, 5),
])
def test_shipped_lists_parse_with_the_papers_sizes_and_counts(bundle, sizes, classes, head, tail):
    lists = {role: read_list(LISTS_DIR / rel) for role, rel in BUNDLES[bundle].items()}
    assert {role: len(lf.paths) for role, lf in lists.items()} == sizes
    counts = {role: np.bincount(lf.labels, minlength=classes) for role, lf in lists.items()}
    assert all(len(c) == classes for c in counts.values())
    assert counts["train"].max() == head and counts["train"].min() == tail
    per_class = {"val": sizes["val"] // classes, "test": sizes["test"] // classes}
    for role, k in per_class.items():
        assert (counts[role] == k).all(), role  # balanced evaluation lists
    if bundle == "imagenet100-lt":
        assert (counts["balanced"] == 122).all() and (counts["few_shot"] == 12).all()
    # counts as the list says: the line count of each label equals its bincount
    first = lists["train"].paths[0]
    assert first.startswith("train/") and len(set(lists["train"].paths)) == sizes["train"]
    # the thresholds rule of the papers: > 100 many, 20-100 medium, < 20 few
    many, few = (counts["train"] > 100).sum(), (counts["train"] < 20).sum()
    assert many > 0 and few > 0 and many + few < classes


# ----------------------------------------------------------------------------- list-file datasets
def colour(i: int) -> tuple[int, int, int]:
    return (37 * i) % 256, (91 * i) % 256, (53 * i) % 256


def write_subset_lists(tmp_path: Path) -> tuple[Path, dict]:
    """Tiny JPEGs laid out as a subset of the ImageNet-100 lists (labels 0..3, the first lines
    of each label up to a per-class cap), each a solid colour coding its line; returns the root
    and role -> list file. 252 files in all."""
    caps = {"train": [30, 75, 100, 7], "val": [10] * 4, "test": [15] * 4}  # train counts 30/75/100/7
    root = tmp_path / "imagenet"
    files = {}
    for role, cap in caps.items():
        src = read_list(LISTS_DIR / BUNDLES["imagenet100-lt"][role])
        taken = [0] * 4
        lines = []
        for rel, lab in zip(src.paths, src.labels.tolist()):
            if lab < 4 and taken[lab] < cap[lab]:
                taken[lab] += 1
                lines.append((rel, lab))
        for i, (rel, _) in enumerate(lines):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            size = (20 + i % 7, 16 + i % 5)  # sizes differ, as real photos do
            Image.new("RGB", size, colour(i)).save(path, quality=95)
        files[role] = tmp_path / f"{role}.txt"
        files[role].write_text("".join(f"{rel} {lab}\n" for rel, lab in lines))
    return root, files


@pytest.fixture
def subset(tmp_path):
    root, files = write_subset_lists(tmp_path)
    return root, files


def list_params(root, files, **kw) -> DataParams:
    return DataParams(source="list", split="community", root=str(root), image_size=16, group_rule="thresholds",
                      lists={k: str(v) for k, v in files.items()}, few_shot_fraction=0.1, **kw)


def test_list_dataset_make_lt_dataset_end_to_end(project, subset):
    """make-lt-dataset (the stage, in process) on a folder of JPEGs named by ImageNet-100 lists."""
    root, files = subset
    proj = project
    proj.set_params({"data": {"source": "list", "split": "community", "root": str(root), "image_size": 16,
                              "group_rule": "thresholds", "lists": {k: str(v) for k, v in files.items()},
                              "few_shot_fraction": 0.1, "max_test_per_class": None}})
    proj.stage("make_lt_dataset.py")
    lt = proj.path("data/lt")
    manifest = load_manifest(lt)
    for role, split in (("train", "lt"), ("val", "val"), ("test", "test")):
        lf = read_list(files[role])
        x, y = load_split(lt, split)
        assert x.shape == (len(lf.paths), 16, 16, 3)
        np.testing.assert_array_equal(y, lf.labels)
        # image i is solid colour(i): the listed images, in the listed order (JPEG: within a few levels)
        got = x.reshape(len(x), -1, 3).mean(axis=1)
        want = np.array([colour(i) for i in range(len(x))])
        assert np.abs(got - want).max() < 4, split
        assert manifest["split_files"][role] == {"file": str(files[role]), "sha256": sha256(files[role])}
    counts = np.bincount(read_list(files["train"]).labels, minlength=4)
    assert manifest["lt_counts"] == counts.tolist()
    groups = np.where(counts > 100, "many", np.where(counts < 20, "few", "medium")).tolist()
    assert manifest["groups"] == groups  # thresholds, from the list's own counts
    # without probe_full / few_shot lists: the full probe is the train list, few-shot a balanced draw of it
    assert manifest["arrays"]["probe_full"] == manifest["arrays"]["lt"]
    fy = load_split(lt, "few_shot")[1]
    assert np.bincount(fy, minlength=4).tolist() == [min(5, c) for c in counts]
    metrics = json.loads(proj.path("metrics/dataset.json").read_text())
    assert metrics["split"] == "community" and metrics["split_name"] == "user-lists"
    assert metrics["size_train"] == len(read_list(files["train"]).paths)


def test_list_missing_file_stops_naming_it_and_nothing_is_written(tmp_path, subset):
    root, files = subset
    lf = read_list(files["val"])
    for rel in lf.paths[3:6]:
        (root / rel).unlink()
    out = tmp_path / "lt"
    with pytest.raises(MissingInputError) as exc:
        make_lt_dataset.build(list_params(root, files), out)
    msg = str(exc.value)
    assert "3 of 40 listed files are missing" in msg and str(root / lf.paths[3]) in msg
    assert "ImageNet 2010" in msg and "val" in msg
    assert not out.exists() and not list(tmp_path.glob(".lt.*"))


def test_list_corrupt_file_stops_naming_it_and_nothing_is_written(tmp_path, subset):
    root, files = subset
    lf = read_list(files["train"])
    (root / lf.paths[7]).write_bytes(b"not a jpeg")
    (root / lf.paths[150]).write_bytes(b"\xff\xd8\xff truncated")
    out = tmp_path / "lt"
    out.mkdir()
    (out / "manifest.json").write_text("{}")  # an older build stays as it was
    with pytest.raises(UserError) as exc:
        make_lt_dataset.build(list_params(root, files), out)
    assert "2 listed images could not be decoded" in str(exc.value)
    assert str(root / lf.paths[7]) in str(exc.value)
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    assert not list(tmp_path.glob(".lt.*"))


def test_list_labels_checked_before_work(tmp_path, subset):
    root, files = subset
    bad = tmp_path / "bad_test.txt"
    bad.write_text(files["test"].read_text() + "val/x/y.JPEG 9\n")
    with pytest.raises(UserError, match="labels outside 0..3"):
        make_lt_dataset.build(list_params(root, {**files, "test": bad}), tmp_path / "lt")
    gap = tmp_path / "gap_train.txt"
    gap.write_text("".join(line for line in files["train"].read_text().splitlines(True) if not line.endswith(" 1\n")))
    with pytest.raises(UserError, match=r"classes \[1\] have no training image"):
        make_lt_dataset.build(list_params(root, {**files, "train": gap}), tmp_path / "lt")
    assert not (tmp_path / "lt").exists()


def test_list_parser_refuses_paths_leaving_the_root(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("../etc/passwd 0\n")
    with pytest.raises(UserError, match="without '..'"):
        read_list(p)
    p.write_text("train/a.jpg\n")
    with pytest.raises(UserError, match="expected '<relative path> <label>'"):
        read_list(p)
    assert read_list(p, need_labels=False).labels.tolist() == [-1]


def test_every_split_name_is_in_the_manifest(tmp_path, subset):
    root, files = subset
    manifest = make_lt_dataset.build(list_params(root, files), tmp_path / "lt")
    assert set(manifest["arrays"]) == set(SPLIT_NAMES)


def test_run_card_names_the_split_files_and_their_sha256(tmp_path, subset):
    from ltcl.report.html import split_fact

    root, files = subset
    manifest = make_lt_dataset.build(list_params(root, files), tmp_path / "lt")
    fact = split_fact({"split_name": "user-lists", "split": "community"}, manifest)
    for role in ("train", "val", "test"):
        assert f"{role}: {files[role]} sha256 {sha256(files[role])}" in fact
    assert "not the papers' split files" in split_fact({"split_name": "generated"}, {})
