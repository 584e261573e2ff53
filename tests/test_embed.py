"""``ltcl embed``: an encoder's per-image features on disk, equal to what the probe stage extracts."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import copy_project, fake_encoder
from ltcl import cli
from ltcl import embed as embed_mod
from ltcl.data.pool import to_channels
from ltcl.data.sources.folder import read_image_file
from ltcl.data.splits import load_manifest, load_split
from ltcl.embed import embed
from ltcl.errors import UserError
from ltcl.models.features import extract_features
from ltcl.eval.protocols import encoder_features
from ltcl.models.checkpoint import load_encoder

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def enc(lt_project, tmp_path_factory):
    """(project copy holding data/lt and an untrained encoder at data/models/distill.pt, model, spec)."""
    proj = copy_project(lt_project, tmp_path_factory.mktemp("embed") / "p")
    fake_encoder(proj, "data/models/distill.pt")
    model, spec, _ = load_encoder(proj.path("data/models/distill.pt"), CPU)
    return proj, model, spec


def read_index(out) -> list[dict]:
    with open(out / "index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def outputs(out):
    emb = np.load(out / "embeddings.npy", allow_pickle=False)
    return emb, read_index(out), json.loads((out / "embed.json").read_text())


def run_split(proj, out, **kw):
    return embed(encoder=proj.path("data/models/distill.pt"), split="test", lt_dir=proj.path("data/lt"), out=out,
                 device="cpu", **kw)


def test_split_equals_the_probe_stage_features(enc, tmp_path):
    proj, model, spec = enc
    rec = run_split(proj, tmp_path / "e")
    x, y = load_split(proj.path("data/lt"), "test")
    ref = encoder_features(model, spec, x, CPU, False).numpy()  # linear_probe.run's extraction
    emb, rows, meta = outputs(tmp_path / "e")
    assert emb.dtype == np.float32 and emb.flags.c_contiguous and emb.shape == (len(x), model.feature_dim)
    assert np.array_equal(emb, ref)
    assert [r["index"] for r in rows] == [str(i) for i in range(len(x))]
    assert [int(r["label"]) for r in rows] == y.tolist()
    manifest = load_manifest(proj.path("data/lt"))
    fx, fy = manifest["arrays"]["test"]["x"], manifest["arrays"]["test"]["y"]
    assert meta == rec
    assert (meta["n"], meta["d"], meta["space"]) == (len(x), model.feature_dim, "backbone")
    assert meta["source"]["files"] == {fx: manifest["files"][fx], fy: manifest["files"][fy]}
    assert (meta["mean"], meta["std"], meta["image_size"]) == (spec["mean"], spec["std"], spec["image_size"])
    sidecar = proj.path("data/models/distill.pt.sha256").read_text().split()[0]
    assert meta["encoder_sha256"] == sidecar


def test_streamed_in_batches_still_equal(enc, tmp_path, monkeypatch):
    proj, model, spec = enc
    chunks = []

    class Recording(embed_mod.NpyWriter):
        def write(self, chunk):
            chunks.append(len(chunk))
            super().write(chunk)

    monkeypatch.setattr(embed_mod, "NpyWriter", Recording)
    run_split(proj, tmp_path / "e", batch_size=7)
    x, _ = load_split(proj.path("data/lt"), "test")
    assert len(x) > 7 and max(chunks) == 7 and sum(chunks) == len(x) and len(chunks) == -(-len(x) // 7)
    emb, rows, _ = outputs(tmp_path / "e")
    assert np.array_equal(emb, encoder_features(model, spec, x, CPU, False).numpy())
    assert len(rows) == len(x)


def test_projection_space(enc, tmp_path):
    proj, model, spec = enc
    run_split(proj, tmp_path / "e", space="projection")
    x, _ = load_split(proj.path("data/lt"), "test")
    ref = extract_features(lambda t: model(t)[1], x, batch_size=1024, device=CPU, mean=spec["mean"],
                           std=spec["std"]).numpy()
    emb, _, meta = outputs(tmp_path / "e")
    assert emb.shape == (len(x), model.proj_dim) and meta["space"] == "projection"
    assert np.array_equal(emb, ref)


def write_png(path, size, mode="RGB", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def expected_folder(model, spec, paths):
    imgs = [to_channels(read_image_file(p, spec["image_size"])[None], spec["channels"])[0] for p in paths]
    return encoder_features(model, spec, np.stack(imgs), CPU, False).numpy()


def test_folder_in_class_subfolders(enc, tmp_path):
    proj, model, spec = enc
    root = tmp_path / "photos"
    files = {"cat/a.png": ((8, 8), "RGB"), "cat/b.png": ((20, 13), "RGB"), "dog/c.png": ((20, 13), "L"),
             "dog/sub/d.png": ((8, 8), "L")}
    for i, (rel, (size, mode)) in enumerate(files.items()):
        write_png(root / rel, size, mode, seed=i)
    rec = embed(encoder=proj.path("data/models/distill.pt"), images=root, out=tmp_path / "e", device="cpu",
                batch_size=2, folder_labels=True)  # two chunks (not 3: a batch of one rounds differently on CPU)
    emb, rows, meta = outputs(tmp_path / "e")
    assert [(r["path"], r["label"]) for r in rows] == [("cat/a.png", "cat"), ("cat/b.png", "cat"),
                                                       ("dog/c.png", "dog"), ("dog/sub/d.png", "dog")]
    assert np.array_equal(emb, expected_folder(model, spec, [root / r["path"] for r in rows]))
    assert rec["n"] == 4 and meta["source"]["kind"] == "images" and meta["source"]["skipped"] == []
    # without --folder-labels no label is made up from folder names (date / camera folders are no classes)
    embed(encoder=proj.path("data/models/distill.pt"), images=root, out=tmp_path / "n", device="cpu", batch_size=2)
    assert {r["label"] for r in read_index(tmp_path / "n")} == {""}
    # a flat folder: no class layout, so no labels, and --folder-labels is refused
    flat = tmp_path / "flat"
    write_png(flat / "x.png", (8, 8))
    write_png(flat / "y" / "z.png", (8, 8))
    embed(encoder=proj.path("data/models/distill.pt"), images=flat, out=tmp_path / "f", device="cpu")
    assert [(r["path"], r["label"]) for r in read_index(tmp_path / "f")] == [("x.png", ""), ("y/z.png", "")]
    with pytest.raises(UserError, match="lies in no sub-folder"):
        embed(encoder=proj.path("data/models/distill.pt"), images=flat, out=tmp_path / "g", device="cpu",
              folder_labels=True)


def test_npz(enc, tmp_path):
    proj, model, spec = enc
    x, y = load_split(proj.path("data/lt"), "test")
    x = np.array(x[:20])
    np.savez(tmp_path / "d.npz", x_train=x[:5], x_test=x, y_test=y[:20])
    embed(encoder=proj.path("data/models/distill.pt"), npz=tmp_path / "d.npz", out=tmp_path / "e", device="cpu")
    emb, rows, meta = outputs(tmp_path / "e")
    assert np.array_equal(emb, encoder_features(model, spec, x, CPU, False).numpy())
    assert [(int(r["index"]), int(r["label"])) for r in rows] == list(enumerate(y[:20].tolist()))
    assert (meta["source"]["key"], meta["source"]["label_key"]) == ("x_test", "y_test")
    # NHW grayscale under another key, no labels
    np.savez(tmp_path / "g.npz", imgs=x[..., 0])
    embed(encoder=proj.path("data/models/distill.pt"), npz=tmp_path / "g.npz", key="imgs", out=tmp_path / "g",
          device="cpu")
    emb, rows, _ = outputs(tmp_path / "g")
    assert np.array_equal(emb, encoder_features(model, spec, x, CPU, False).numpy())
    assert {r["label"] for r in rows} == {""}


def test_bad_inputs(enc, tmp_path, capsys):
    proj, _, spec = enc
    ckpt = proj.path("data/models/distill.pt")
    with pytest.raises(UserError, match="known splits: .*test"):
        embed(encoder=ckpt, split="nope", lt_dir=proj.path("data/lt"), out=tmp_path / "e", device="cpu")
    size = spec["image_size"]
    np.savez(tmp_path / "big.npz", x=np.zeros((3, size * 2, size * 2, 1), np.uint8))
    with pytest.raises(UserError, match="resize"):
        embed(encoder=ckpt, npz=tmp_path / "big.npz", out=tmp_path / "e", device="cpu")
    np.savez(tmp_path / "f.npz", x=np.zeros((3, size, size, 1), np.float32))
    with pytest.raises(UserError, match="resize"):
        embed(encoder=ckpt, npz=tmp_path / "f.npz", out=tmp_path / "e", device="cpu")
    # a corrupt PNG stops the run, named, and nothing is left; --skip-bad skips it
    root = tmp_path / "photos"
    for i, rel in enumerate(("a/1.png", "a/2.png", "b/3.png")):
        write_png(root / rel, (8, 8), seed=i)
    (root / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError, match=r"1 unreadable image file\(s\).*bad\.png.*--skip-bad"):
        embed(encoder=ckpt, images=root, out=tmp_path / "e", device="cpu", batch_size=2)
    assert not any((tmp_path / "e" / f).exists() for f in embed_mod.OUTPUTS)
    rec = embed(encoder=ckpt, images=root, out=tmp_path / "e", device="cpu", batch_size=2, skip_bad=True)
    emb, rows, _ = outputs(tmp_path / "e")
    assert [r["path"] for r in rows] == ["a/1.png", "a/2.png", "b/3.png"] and emb.shape[0] == 3
    assert rec["source"]["skipped"] == ["b/bad.png"]
    assert not (tmp_path / "e" / "embeddings.npy.part").exists()
    # the CLI: one message, exit 2
    assert cli.main(["embed", "--encoder", str(ckpt), "--images", str(root), "--out", str(tmp_path / "c"),
                     "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ltcl embed: 1 unreadable") and "bad.png" in err and "Traceback" not in err


def test_cli(enc, tmp_path, capsys):
    proj, model, spec = enc
    out = tmp_path / "e"
    assert cli.main(["embed", "--encoder", str(proj.path("data/models/distill.pt")), "--split", "val",
                     "--lt-dir", str(proj.path("data/lt")), "--out", str(out), "--device", "cpu",
                     "--batch-size", "16"]) == 0
    x, _ = load_split(proj.path("data/lt"), "val")
    assert f"{len(x)} x {model.feature_dim} backbone" in capsys.readouterr().out
    assert np.array_equal(np.load(out / "embeddings.npy"), encoder_features(model, spec, x, CPU, False).numpy())


def test_projection_refused_for_an_encoder_without_a_head(enc, tmp_path):
    """An imported external encoder (spec head "none") has no projection head: --space projection
    stops before anything is written instead of returning h under the name of z."""
    from torch import nn

    from ltcl.models.checkpoint import save_encoder
    from ltcl.models.heads import Encoder

    proj, model, spec = enc
    ext = tmp_path / "ext-x.pt"
    save_encoder(ext, Encoder(model.backbone, nn.Identity()),
                 {**spec, "head": "none", "proj_hidden": 0, "proj_dim": 0})
    with pytest.raises(UserError, match="imported from outside ltcl.*no projection head.*--space backbone"):
        embed(encoder=ext, split="test", lt_dir=proj.path("data/lt"), out=tmp_path / "e", device="cpu",
              space="projection")
    assert not (tmp_path / "e").exists()
    rec = embed(encoder=ext, split="test", lt_dir=proj.path("data/lt"), out=tmp_path / "e", device="cpu")
    x, _ = load_split(proj.path("data/lt"), "test")
    assert rec["encoder_format"] == "ltcl-checkpoint" and rec["model_card"] is None
    assert np.array_equal(np.load(tmp_path / "e" / "embeddings.npy"),
                          encoder_features(model, spec, x, CPU, False).numpy())
