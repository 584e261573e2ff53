"""Issue 7, "Bad input": every bad input of the issue's list stops the stage a user meets it in
with one clear message (naming the file, key or value), exit code 2, no traceback, and none of
the stage's outputs written.  Also the safe loading of ``folder`` sources (symlinks leaving the
root, non-regular and corrupt files, ``data.on_bad_image``).

Stage tests run the real scripts in a copy of a tiny project (``conftest.make_project``), in
this process through ``runpy`` (``Project.stage`` and :func:`stage_inproc`), which runs the
same ``run_stage`` path (message, exit code, removal of outputs) without a 10-20 s
interpreter start per case.  The few checks below the stage level (``domain_knn``,
``load_encoder``) are marked as such.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import Project, copy_project, fake_encoder, make_project, refused, stage_inproc

# --------------------------------------------------------------------------- helpers


MAKE_LT_OUTS = ("data/lt", "metrics/dataset.json", "metrics/class_counts.csv")


@pytest.fixture
def built(lt_project, tmp_path) -> Project:
    """A private copy, that a test may change, of make-lt-dataset done once on the tiny KDUP
    params (conftest's ``lt_project``, without its ood-pool outputs: no pool here)."""
    proj = copy_project(lt_project, tmp_path / "p")
    shutil.rmtree(proj.path("data/ood"))
    return proj


def idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_mnist(root: Path, gz: bool) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(40) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(20) % 10,
    }
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, arr in arrays.items():
        blob = idx_bytes(arr)
        paths[name] = root / (name + ".gz" if gz else name)
        paths[name].write_bytes(gzip.compress(blob) if gz else blob)
    return paths


def write_cifar10(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 10)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


class _RunsCode:
    """Unpickling this calls os.system: what a tampered CIFAR batch could hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_folder_data(root: Path, classes=("a", "b", "c"), n_train=6, n_test=2, size=(8, 8)) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            for i in range(n):
                write_png(root / split / c / f"{i}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))


FOLDER_DATA = {"source": "folder", "val_per_class": 1, "max_per_class": 4, "imbalance_ratio": 2.0,
               "max_test_per_class": None}


def folder_project(tmp_path: Path) -> tuple[Project, Path]:
    raw = tmp_path / "raw"
    make_folder_data(raw)
    proj_dir = tmp_path / "proj"
    proj_dir.mkdir()
    return make_project(proj_dir, {"data": {**FOLDER_DATA, "root": str(raw)}}), raw


def npz_project(tmp_path: Path, **override) -> Project:
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.integers(0, 256, (30, 8, 8, 1), dtype=np.uint8), y_train=np.arange(30) % 3,
                  x_test=rng.integers(0, 256, (9, 8, 8, 1), dtype=np.uint8), y_test=np.arange(9) % 3,
                  class_names=np.array(["a", "b", "c"]))
    arrays.update(override)
    np.savez(tmp_path / "data.npz", **arrays)
    (tmp_path / "proj").mkdir()
    return make_project(tmp_path / "proj", {"data": {**FOLDER_DATA, "source": "npz",
                                                      "root": str(tmp_path / "data.npz")}})


# --------------------------------------------------------------------------- data files


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_truncated_or_corrupt_idx(tmp_path, gz):
    paths = write_mnist(tmp_path / "raw", gz)
    bad = paths["train-images-idx3-ubyte"]
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    proj = make_project(tmp_path, {"data": {"source": "mnist", "root": str(tmp_path / "raw")}})
    proc = proj.stage("make_lt_dataset.py", check=False)
    refused(proc, str(bad), "gzip" if gz else "truncated", absent=MAKE_LT_OUTS, proj=proj)


@pytest.mark.parametrize("damage", ["truncated batch", "code-running batch", "truncated archive"])
def test_truncated_or_corrupt_cifar(tmp_path, damage):
    raw = tmp_path / "raw"
    write_cifar10(raw / "cifar-10-batches-py")
    marker = tmp_path / "PWNED"
    bad = raw / "cifar-10-batches-py" / "data_batch_3"
    if damage == "truncated batch":
        bad.write_bytes(bad.read_bytes()[:5000])
        needles = (str(bad), "corrupt or truncated pickle")
    elif damage == "code-running batch":
        bad.write_bytes(pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]}, protocol=2))
        needles = (str(bad), "refused global", "system")
    else:
        with tarfile.open(raw / "cifar-10-python.tar.gz", "w:gz") as tf:
            tf.add(raw / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        shutil.rmtree(raw / "cifar-10-batches-py")
        blob = (raw / "cifar-10-python.tar.gz").read_bytes()
        (raw / "cifar-10-python.tar.gz").write_bytes(blob[: len(blob) // 2])
        needles = (str(raw / "cifar-10-python.tar.gz"), "corrupt or truncated archive")
    proj = make_project(tmp_path, {"data": {"source": "cifar10", "root": str(raw)}})
    proc = proj.stage("make_lt_dataset.py", check=False)
    refused(proc, *needles, absent=MAKE_LT_OUTS, proj=proj)
    assert not marker.exists()  # the planted command never ran


@pytest.mark.parametrize("case", ["folder sizes", "npz sizes", "npz channels"])
def test_mixed_image_sizes_or_channels(tmp_path, case):
    if case == "folder sizes":
        proj, raw = folder_project(tmp_path)
        odd = raw / "train" / "b" / "odd.png"
        write_png(odd, np.zeros((12, 10, 3), np.uint8))
        needles = ("mixed image sizes", "12x10", str(odd), "data.image_size")
    elif case == "npz sizes":
        proj = npz_project(tmp_path, x_test=np.zeros((9, 10, 10, 1), np.uint8))
        needles = (f"npz {tmp_path / 'data.npz'}: mixed image sizes", "(8, 8)", "(10, 10)", "data.image_size")
    else:
        proj = npz_project(tmp_path, x_test=np.zeros((9, 8, 8, 3), np.uint8))
        needles = (f"npz {tmp_path / 'data.npz'}: mixed channel counts", "train images have 1 channel(s)",
                   "test images 3")
    proc = proj.stage("make_lt_dataset.py", check=False)
    refused(proc, *needles, absent=MAKE_LT_OUTS, proj=proj)


@pytest.mark.parametrize("case", ["label out of range", "class without images"])
def test_labels_out_of_range_or_class_without_images(tmp_path, case):
    if case == "label out of range":
        proj = npz_project(tmp_path, y_test=np.array([0, 1, 2, 0, 1, 7, 0, 1, -1]))
        needles = (f"npz {tmp_path / 'data.npz'}: y_test has out-of-range labels [-1, 7]", "allowed 0..2")
    else:
        proj = npz_project(tmp_path, y_train=np.where(np.arange(30) % 3 == 1, 0, np.arange(30) % 3))
        needles = (f"npz {tmp_path / 'data.npz'}: classes missing from the train split: 1 (b)",)
    proc = proj.stage("make_lt_dataset.py", check=False)
    refused(proc, *needles, absent=MAKE_LT_OUTS, proj=proj)


def test_imbalance_leaves_a_class_empty(project):
    project.set_params({"data": {"max_per_class": 5, "imbalance_ratio": 10.0}})
    proc = project.stage("make_lt_dataset.py", check=False)
    refused(proc, "would get zero images with n_max=5 and ratio=10.0", "data.max_per_class", "data.imbalance_ratio",
            absent=MAKE_LT_OUTS, proj=project)


# --------------------------------------------------------------------------- params.yaml


PARAMS_CASES = {
    # the pool must hold ood.budget distinct images
    "pool smaller than budget": ({"ood": {"strategy": "kdup", "pool_size": 30, "budget": 60}},
                                 "ood.pool_size (30) is smaller than ood.budget (60)"),
    "budget zero with a strategy": ({"ood": {"strategy": "colt", "budget": 0}},
                                    "ood.budget is 0 but ood.strategy is 'colt'"),
    "k_pos not below the OOD domain": ({"ood": {"strategy": "kdup", "budget": 60},
                                        "pretrain": {"method": "psd", "psd": {"k_pos": 60}, "epochs": 3}},
                                       "pretrain.psd.k_pos (60) must be smaller than ood.budget (60)"),
    # a key of the flat layout before the per-method subsections: the message names its new place
    "old flat key": ({"pretrain": {"tase_warmup": 5}}, "pretrain.tase_warmup is now pretrain.tase.warmup"),
    "unknown data source": ({"data": {"source": "imagenet"}},
                            "data.source: Input should be 'digits', 'fashion-mnist', 'mnist', 'cifar10'"),
    "unknown method": ({"pretrain": {"method": "byol"}},
                       "pretrain.method: unknown method 'byol'; known: simclr, sdclr, psd"),
    "unknown pool source": ({"ood": {"source": "source", "pool_source": "imagenet"}},
                            "ood.pool_source: unknown data source 'imagenet'; known: digits"),
    "misspelt key": ({"data": {"imbalance_ratoi": 10}},
                     "data.imbalance_ratoi: unknown key (did you mean 'imbalance_ratio'?)"),
}


@pytest.mark.parametrize("case", list(PARAMS_CASES))
def test_bad_params(project, case):
    """Checked by every stage before any work (here the first one, make-lt-dataset)."""
    updates, needle = PARAMS_CASES[case]
    project.set_params(updates)
    proc = project.stage("make_lt_dataset.py", check=False)
    refused(proc, "params.yaml: invalid parameters", needle, absent=MAKE_LT_OUTS, proj=project)


def test_duplicate_key(project):
    text = project.path("params.yaml").read_text()
    project.write_params_text(text.replace("data:\n", "data:\n  split_seed: 1\n", 1).replace(
        "data:\n", "data:\n  split_seed: 2\n", 1))
    proc = project.stage("ood_pool.py", check=False)
    refused(proc, "params.yaml: duplicate key 'split_seed' at line 3 (first defined at line 2)",
            absent=("data/ood/pool.npy", "data/ood/pool.json"), proj=project)


# --------------------------------------------------------------------------- OOD sampling, training


def test_pool_smaller_than_budget_npy(built, tmp_path):
    """An .npy pool has as many images as rows (ood.pool_size does not apply): checked when
    ood-sampling opens it."""
    np.save(tmp_path / "small.npy", np.zeros((30, 8, 8, 1), np.uint8))
    built.set_params({"ood": {"source": "npy", "path": str(tmp_path / "small.npy")}})
    built.stage("ood_pool.py")
    proc = stage_inproc(built, "ood_sampling.py")
    refused(proc, "the OOD pool data/ood/pool.npy has 30 images, fewer than ood.budget=60",
            absent=("data/ood/warmup.pt", "data/ood/selection.npz", "metrics/ood.json"), proj=built)


def test_more_clusters_than_samples(built):
    built.set_params({"ood": {"clusters": 5000}})
    proc = stage_inproc(built, "ood_sampling.py")  # refused before the pool is opened
    refused(proc, "ood.clusters=5000 is larger than the ID set",
            absent=("data/ood/warmup.pt", "data/ood/selection.npz", "metrics/ood.json"), proj=built)


@pytest.mark.parametrize("update, needle", [
    ({"kdup": {"k_kd": 5000}}, "distill.kdup.k_kd=5000 needs more than 5000 ID images"),
    ({"kdup": {"clusters": 5000}}, "distill.kdup.clusters=5000 is larger than the ID set"),
    ({"batch_size": 5000}, "distill.batch_size=5000 is larger than the training set"),
])
def test_distill_sizes_larger_than_the_data(built, update, needle):
    """k_kd (f's neighbours within the ID domain, the only domain distill sees), the clusters
    of f's embeddings and the batch size, each larger than the ID set."""
    fake_encoder(built)
    built.set_params({"distill": update})
    proc = stage_inproc(built, "distill.py")
    refused(proc, needle, absent=("data/models/distill.pt", "data/models/distill.pt.sha256",
                                  "metrics/distill.json"), proj=built)


def test_batch_size_larger_than_dataset(built):
    built.set_params({"pretrain": {"batch_size": 5000}})
    proc = stage_inproc(built, "pretrain.py")
    refused(proc, "pretrain.batch_size=5000 is larger than the training set", "lower it to at most",
            absent=("data/models/pretrain.pt", "data/models/pretrain.pt.sha256", "metrics/pretrain.json"),
            proj=built)


def test_k_pos_larger_than_the_id_domain():
    """Below the stage level: the ID domain's size is only known once the split is loaded,
    so PSD's neighbour search refuses it (the OOD domain is checked in params.yaml)."""
    import torch

    from ltcl.sampling.neighbours import domain_knn

    z = torch.randn(12, 4)
    dom = torch.tensor([0] * 3 + [1] * 9)
    with pytest.raises(ValueError, match=r"pretrain.psd.k_pos=3 .* but the ID domain has 3; lower pretrain.psd.k_pos"):
        domain_knn(z, dom, 3)
    assert domain_knn(z, dom, 2).shape == (12, 2)


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("script", ["distill.py", "linear_probe.py", "pretrain.py"])
def test_checkpoint_from_a_different_model(built, script):
    """distill and linear-probe loading a pretrain.pt made with another backbone; pretrain
    continuing from an ood-sampling warm-up made with another backbone."""
    if script == "pretrain.py":
        from ltcl.io import load_checkpoint, save_checkpoint

        fake_encoder(built, "data/ood/warmup.pt", backbone="resnet20")
        warm = load_checkpoint(built.path("data/ood/warmup.pt"))
        save_checkpoint(built.path("data/ood/warmup.pt"), {**warm, "epoch": 1})
        proc = stage_inproc(built, script)
        refused(proc, "data/ood/warmup.pt was made for another model or data set (resnet20); rerun ood-sampling",
                absent=("data/models/pretrain.pt", "data/models/pretrain.pt.sha256", "metrics/pretrain.json"),
                proj=built)
        return
    fake_encoder(built, backbone="resnet20")  # params.yaml has resnet8
    proc = stage_inproc(built, script, *(["pretrain"] if script == "linear_probe.py" else []))
    outs = (("data/models/distill.pt", "metrics/distill.json") if script == "distill.py"
            else ("metrics/probe/pretrain.json", "metrics/probe/pretrain_per_class.csv"))
    refused(proc, "data/models/pretrain.pt is a checkpoint of a different model",
            "model.backbone is 'resnet8' in params.yaml but 'resnet20' in the checkpoint", absent=outs, proj=built)


def test_checkpoint_for_other_images_or_not_an_encoder(built, tmp_path):
    """Below the stage level (load_encoder, which both stages use): a checkpoint made for
    other images, and files that are not ltcl encoders."""
    import torch

    from ltcl.models.checkpoint import load_encoder
    from ltcl.params import ModelParams

    fake_encoder(built, image_shape=(16, 16, 3))
    with pytest.raises(ValueError, match=r"pretrain.pt was trained on 16x16x3 images but the data set holds 8x8x1"):
        load_encoder(built.path("data/models/pretrain.pt"), model_cfg=ModelParams(**built.params()["model"]),
                     image_shape=(8, 8, 1))
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "torchvision.pt")
    with pytest.raises(ValueError, match=r"torchvision.pt: not an ltcl encoder checkpoint \(keys: \['state_dict'\]\)"):
        load_encoder(tmp_path / "torchvision.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"junk.pt: not a readable ltcl encoder checkpoint"):
        load_encoder(tmp_path / "junk.pt")


# --------------------------------------------------------------------------- folder sources: safe loading


def test_folder_symlink_outside_root_refused(tmp_path):
    proj, raw = folder_project(tmp_path)
    secret = tmp_path / "secret.png"
    write_png(secret, np.zeros((8, 8, 3), np.uint8))
    link = raw / "train" / "a" / "link.png"
    link.symlink_to(secret)
    proc = proj.stage("make_lt_dataset.py", check=False)
    refused(proc, f"refused {link}", f"resolves to {secret}", "outside the data root", absent=MAKE_LT_OUTS, proj=proj)
    link.unlink()
    (raw / "train" / "d").symlink_to(tmp_path, target_is_directory=True)  # a class directory leaving the root
    proc = proj.stage("make_lt_dataset.py", check=False)
    refused(proc, f"refused {raw / 'train' / 'd'}", "outside the data root", absent=MAKE_LT_OUTS, proj=proj)


@pytest.mark.parametrize("kind", ["corrupt", "fifo"])
def test_folder_bad_image_error_names_it(tmp_path, kind):
    proj, raw = folder_project(tmp_path)
    bad = raw / "train" / "b" / "bad.png"
    if kind == "corrupt":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    else:
        os.mkfifo(bad)  # not a regular file: never opened
    proc = proj.stage("make_lt_dataset.py", check=False)
    refused(proc, f"unreadable image {bad}", *(["is not a regular file"] if kind == "fifo" else []),
            absent=MAKE_LT_OUTS, proj=proj)


def test_folder_on_bad_image_skip_logs_and_counts(tmp_path):
    proj, raw = folder_project(tmp_path)
    bad = [raw / "train" / "b" / "bad.png", raw / "test" / "c" / "bad.jpg"]
    for b in bad:
        b.write_bytes(b"garbage")
    proj.set_params({"data": {"on_bad_image": "skip"}})
    proc = proj.stage("make_lt_dataset.py")
    for b in bad:
        assert f"skipping unreadable image {b}" in proc.stderr
    assert json.loads(proj.path("metrics/dataset.json").read_text())["skipped_images"] == 2
    manifest = json.loads(proj.path("data/lt/manifest.json").read_text())
    assert manifest["skipped_images"] == [str(b) for b in bad]
    assert manifest["sizes"]["test"] == 6  # 3 classes x 2 readable images; bad.jpg skipped
