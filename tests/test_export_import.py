"""Backbone export (safetensors, torchvision layout, model-card code) and import of external
checkpoints (ltcl-export, torchvision, SDCLR, COLT) - ltcl.models.export / ltcl.models.external."""

from __future__ import annotations

import ast
import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from ltcl.embed import embed
from ltcl.errors import MissingInputError, UserError
from ltcl.io import sha256_file
from ltcl.models.checkpoint import ACCEPTED_ENCODERS, load_encoder, save_encoder
from ltcl.models.export import (backbone_state, export_metadata, layer_differences, load_snippet, module_code,
                               save_backbone)
from ltcl.models.external import FORMATS, load_external_backbone
from ltcl.models.heads import build_encoder
from ltcl.models.pruning import PrunedBranchNorms
from ltcl.models.resnet import build_backbone

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
PACKAGE_OF = {"PIL": "pillow"}  # import name -> pip package, where they differ


def imported_modules(code: str) -> set[str]:
    """Top-level modules ``code`` imports (read with ast, independently of the card writer)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out.add(node.module.split(".")[0])
    return out


def pip_line_packages(code: str) -> set[str]:
    first = code.splitlines()[0]
    assert first.startswith("# needs no ltcl: pip install "), first
    return set(first.split("pip install ", 1)[1].split())


def spec_of(backbone: str, stem: str, width: float = 1.0, channels: int = 3, image_size: int = 32) -> dict:
    return {"backbone": backbone, "width": width, "stem": stem, "proj_hidden": 32, "proj_dim": 16, "proj_layers": 2,
            "channels": channels, "image_size": image_size, "mean": [0.5] * channels, "std": [0.25] * channels}


def randomise_norms(model: nn.Module, channels: int, size: int, seed: int = 0) -> None:
    """Non-trivial BN affine parameters and running statistics (three train-mode passes), then eval."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, channels, size, size, generator=g))
    model.eval()


def batch(channels: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(3, channels, size, size, generator=torch.Generator().manual_seed(7))


def trained_encoder(spec: dict):
    torch.manual_seed(0)
    enc = build_encoder(spec["backbone"], spec["channels"], spec["image_size"], width=spec["width"],
                        proj_hidden=spec["proj_hidden"], proj_dim=spec["proj_dim"], proj_layers=spec["proj_layers"],
                        stem=spec["stem"])
    randomise_norms(enc.backbone, spec["channels"], spec["image_size"])
    return enc.eval()


def assert_same_features(a: nn.Module, b, x: torch.Tensor) -> None:
    with torch.no_grad():
        fa, fb = a.eval()(x), b(x)
    assert fa.shape == fb.shape
    torch.testing.assert_close(fa, fb, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------


def test_backbone_state_is_torchvision_layout_without_head() -> None:
    enc = build_encoder("resnet18", 3, 64, width=1.0, proj_hidden=32, proj_dim=16, proj_layers=2, stem="imagenet")
    PrunedBranchNorms(enc)  # SDCLR's pruned-branch norms live outside the encoder state
    state = backbone_state(enc.half())
    tv = set(torchvision.models.resnet18().state_dict()) - {"fc.weight", "fc.bias"}
    assert set(state) == tv
    assert "bn1.num_batches_tracked" in state and not any(k.startswith("head.") for k in state)
    for key, t in state.items():
        assert t.device.type == "cpu" and t.is_contiguous()
        assert t.dtype == (torch.int64 if key.endswith("num_batches_tracked") else torch.float32), key


def test_resnet18_imagenet_export_loads_into_torchvision(tmp_path) -> None:
    spec = spec_of("resnet18", "imagenet", image_size=64)
    enc = trained_encoder(spec)
    path = tmp_path / "backbone.safetensors"
    save_backbone(path, enc, {"backbone": "resnet18", "stem": "imagenet"})
    with safe_open(str(path), "pt") as fh:
        assert fh.metadata() == {"format": "pt", "backbone": "resnet18", "stem": "imagenet"}
    tv = torchvision.models.resnet18()
    tv.fc = nn.Identity()
    tv.load_state_dict(load_file(str(path)), strict=True)
    assert_same_features(tv, enc.features, batch(3, 64))
    # the model card's code for this case is plain torchvision
    code = module_code(spec)
    assert "torchvision.models.resnet18()" in code and "model.fc = torch.nn.Identity()" in code
    assert layer_differences(spec) == [("fc = Identity: the model returns the 512-d pooled features instead of "
                                        "class logits")]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


@pytest.mark.parametrize("backbone,stem,width,channels", [
    ("resnet18", "cifar", 1.0, 3),
    ("resnet18", "cifar", 0.5, 1),
    ("resnet10", "imagenet", 1.0, 3),
    ("resnet50", "imagenet", 0.25, 3),
    ("resnet8", "cifar", 1.0, 3),
    ("resnet20", "cifar", 0.5, 1),
])
def test_module_code_and_snippet_rebuild_the_backbone(tmp_path, backbone, stem, width, channels) -> None:
    spec = spec_of(backbone, stem, width, channels)
    enc = trained_encoder(spec)
    path = tmp_path / "w.safetensors"
    save_backbone(path, enc, {})
    snippet = load_snippet(spec, str(path))
    assert "strict=True" in snippet and "load_file(" in snippet
    assert module_code(spec) in snippet
    # every import it makes is named on its first line, none is ltcl's
    imported = imported_modules(snippet)
    assert "ltcl" not in imported
    assert pip_line_packages(snippet) == {PACKAGE_OF.get(m, m) for m in imported}
    assert ("torchvision" in imported) == (backbone in ("resnet18", "resnet10", "resnet50"))
    namespace: dict = {}  # nothing pre-imported: the code's own imports must suffice
    exec(snippet, namespace)  # builds `model`, loads the weights strictly, sets eval mode
    model = namespace["model"]
    assert set(model.state_dict()) == set(load_file(str(path)))
    assert_same_features(model, enc.features, batch(channels))


def test_layer_differences_name_the_changed_layers() -> None:
    cifar = "\n".join(layer_differences(spec_of("resnet18", "cifar", 0.5)))
    assert "3x3 stride 1 padding 1 instead of 7x7 stride 2" in cifar and "no max-pool" in cifar
    assert "width multiplier 0.5" in cifar and "32/64/128/256" in cifar
    small = "\n".join(layer_differences(spec_of("resnet8", "cifar")))
    assert "16/32/64" in small and "option-A" in small and "no downsample" in small
    assert "resnet10 is not" in "\n".join(layer_differences(spec_of("resnet10", "imagenet")))
    with pytest.raises(UserError, match="unknown backbone"):
        module_code(spec_of("vgg", "cifar"))


# ----------------------------------------------------------------------------------------------
# import
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone,width", [("resnet18", 0.5), ("resnet8", 1.0)])
def test_ltcl_export_round_trip(tmp_path, backbone, width) -> None:
    enc = trained_encoder(spec_of(backbone, "cifar", width))
    path = tmp_path / "b.safetensors"
    save_backbone(path, enc, {"backbone": backbone})
    model = load_external_backbone(path, "ltcl-export", backbone, "cifar", width, 3, 32)
    want = enc.backbone.state_dict()
    got = model.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert not model.training and model.import_report["format"] == "ltcl-export"


def torchvision_resnet18() -> nn.Module:
    torch.manual_seed(1)
    tv = torchvision.models.resnet18()
    randomise_norms(tv, 3, 64)
    return tv


@pytest.mark.parametrize("wrap", ["bare", "state_dict+module"])
def test_torchvision_state_dict_import(tmp_path, wrap) -> None:
    tv = torchvision_resnet18()
    sd = tv.state_dict()
    assert "fc.weight" in sd
    if wrap != "bare":
        sd = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
    path = tmp_path / "tv.pth"
    torch.save(sd, path)
    model = load_external_backbone(path, "torchvision", "resnet18", "imagenet", 1.0, 3, 64)
    assert model.import_report["dropped"] == {"classifier fc": 2}
    tv.fc = nn.Identity()
    assert_same_features(tv, model, batch(3, 64))


# SDCLR (VITA-Group/SDCLR @ 34c932e): models/resnet_prune_multibn.py names; the dense branch is
# bn_list.0 ("nonprune"), the pruned branch bn_list.1 ("prune"); proj_head with three fc layers.

def _bn_prefixes(model: nn.Module) -> set[str]:
    return {name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def sdclr_state(backbone: nn.Module, dual_bn: bool, feat: int) -> dict[str, torch.Tensor]:
    """An SDCLR train_simCLR.py ``state_dict`` (DDP ``module.`` prefix) holding ``backbone``'s
    weights (dense branch) plus a pruned-branch copy of every BN with other values, the
    ``normalize`` buffers and the projection head."""
    g = torch.Generator().manual_seed(3)
    bns = _bn_prefixes(backbone)
    out: dict[str, torch.Tensor] = {}
    for key, value in backbone.state_dict().items():
        prefix, leaf = key.rsplit(".", 1)
        if dual_bn and prefix.endswith("downsample.0"):
            prefix = prefix[: -len("0")] + "conv"
        if dual_bn and prefix in bns:
            if prefix.endswith("downsample.1"):
                prefix = prefix[: -len("1")] + "bn"
            out[f"{prefix}.bn_list.0.{leaf}"] = value.clone()
            pruned = value.clone() if leaf == "num_batches_tracked" else torch.rand(value.shape, generator=g) + 0.5
            out[f"{prefix}.bn_list.1.{leaf}"] = pruned
        else:
            out[f"{prefix}.{leaf}"] = value.clone()
    out["normalize.mean"], out["normalize.std"] = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    head = nn.ModuleDict({"fc1": nn.Linear(feat, feat), "bn1": nn.BatchNorm1d(feat),
                          "fc2": nn.Linear(feat, feat, bias=False), "bn2": nn.BatchNorm1d(feat),
                          "fc3": nn.Linear(feat, 16, bias=False), "bn3": nn.BatchNorm1d(16)})
    for key, value in head.state_dict().items():
        name, leaf = key.split(".", 1)
        if name.startswith("bn") and dual_bn:
            out[f"fc.{name}.bn_list.0.{leaf}"] = value
            out[f"fc.{name}.bn_list.1.{leaf}"] = value.clone()
        elif dual_bn or name in ("fc1", "bn1", "fc2", "bn2"):  # single-BN proj_head: fc1/bn1/fc2/bn2
            out[f"fc.{key}"] = value
    return {f"module.{k}": v for k, v in out.items()}


@pytest.mark.parametrize("backbone,dual_bn", [("resnet18", True), ("resnet18", False), ("resnet32", True)])
def test_sdclr_checkpoint_import(tmp_path, backbone, dual_bn) -> None:
    torch.manual_seed(2)
    net = build_backbone(backbone, 3, width=1.0, stem="cifar", image_size=32)
    randomise_norms(net, 3, 32)
    sd = sdclr_state(net, dual_bn, net.out_dim)
    if backbone == "resnet18" and dual_bn:  # real SDCLR names
        for key in ("module.bn1.bn_list.0.weight", "module.layer2.0.downsample.conv.weight",
                    "module.layer2.0.downsample.bn.bn_list.1.running_var", "module.fc.fc3.weight",
                    "module.fc.bn3.bn_list.1.num_batches_tracked", "module.normalize.std"):
            assert key in sd, key
    path = tmp_path / "model.pt"
    torch.save({"epoch": 500, "state_dict": sd, "optim": {"state": {}, "param_groups": [{"lr": 0.5, "params": [0]}]}},
               path)
    model = load_external_backbone(path, "sdclr", backbone, "cifar", 1.0, 3, 32)
    assert_same_features(net, model, batch())
    report = model.import_report
    assert report["input_normalization"]["mean"] == pytest.approx(IMAGENET_MEAN)
    assert report["input_normalization"]["std"] == pytest.approx(IMAGENET_STD)
    n_bn_tensors = 5 * len(_bn_prefixes(net))
    assert report["dropped"].get("pruned-branch BatchNorms (bn_list.1)", 0) == (n_bn_tensors if dual_bn else 0)


def test_colt_checkpoint_import(tmp_path) -> None:
    torch.manual_seed(4)
    net = build_backbone("resnet18", 3, width=0.5, stem="cifar", image_size=32)
    randomise_norms(net, 3, 32)
    sd = sdclr_state(net, dual_bn=False, feat=net.out_dim)  # COLT models/resnet.py == SDCLR single-BN names
    assert "module.layer2.0.downsample.1.running_mean" in sd and "module.fc.fc2.weight" in sd
    path = tmp_path / "model.pt"
    torch.save({"epoch": 2, "state_dict": sd, "optim": {"state": {}, "param_groups": []}}, path)
    model = load_external_backbone(path, "colt", "resnet18", "cifar", 0.5, 3, 32)
    assert_same_features(net, model, batch())
    assert model.import_report["input_normalization"]["std"] == pytest.approx(IMAGENET_STD)
    # COLT has no dual BN: an SDCLR dual-BN checkpoint is not silently accepted as COLT
    torch.save({"state_dict": sdclr_state(net, dual_bn=True, feat=net.out_dim)}, path)
    with pytest.raises(UserError, match=r"bn_list\.0"):
        load_external_backbone(path, "colt", "resnet18", "cifar", 0.5, 3, 32)


# ----------------------------------------------------------------------------------------------
# refusals
# ----------------------------------------------------------------------------------------------


def test_resnet50_checkpoint_refused_for_resnet18(tmp_path) -> None:
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(UserError) as err:
        load_external_backbone(path, "torchvision", "resnet18", "imagenet", 1.0, 3, 64)
    msg = str(err.value)
    assert str(path) in msg
    assert "checkpoint key(s) unused: [" in msg and "layer1.0.conv3.weight" in msg
    assert "model key(s) missing: [" in msg and "more)" in msg  # capped lists with counts
    assert "shape mismatch" in msg and "layer1.0.conv1.weight" in msg
    torch.save(torchvision.models.resnet18().state_dict(), path)  # and the other way round
    with pytest.raises(UserError, match=r"0 checkpoint key\(s\) unused: \[\]; 165 model key\(s\) missing: "
                                        r"\[layer1\.0\.conv3\.weight, "):
        load_external_backbone(path, "torchvision", "resnet50", "imagenet", 1.0, 3, 64)


def test_missing_key_and_wrong_stem_named(tmp_path) -> None:
    sd = torchvision_resnet18().state_dict()
    del sd["layer3.1.bn2.running_var"]
    path = tmp_path / "tv.pth"
    torch.save(sd, path)
    with pytest.raises(UserError, match=r"0 checkpoint key\(s\) unused: \[\]; 1 model key\(s\) missing: "
                                        r"\[layer3\.1\.bn2\.running_var\]"):
        load_external_backbone(path, "torchvision", "resnet18", "imagenet", 1.0, 3, 64)
    torch.save(torchvision_resnet18().state_dict(), path)
    with pytest.raises(UserError, match=r"conv1\.weight: checkpoint \(64, 3, 7, 7\), model \(64, 3, 3, 3\)"):
        load_external_backbone(path, "torchvision", "resnet18", "cifar", 1.0, 3, 32)


def test_bad_files_and_formats(tmp_path) -> None:
    assert FORMATS == ("ltcl-export", "torchvision", "sdclr", "colt")
    with pytest.raises(MissingInputError):
        load_external_backbone(tmp_path / "nope.pt", "sdclr", "resnet18", "cifar", 1.0, 3, 32)
    mask = tmp_path / "mask_100.pt"
    torch.save({"epoch": 100, "pruneMask": {"conv1": torch.ones(2, dtype=torch.bool)}}, mask)
    with pytest.raises(UserError, match="pruning-mask file"):
        load_external_backbone(mask, "sdclr", "resnet18", "cifar", 1.0, 3, 32)
    with pytest.raises(UserError, match="unknown checkpoint format"):
        load_external_backbone(mask, "moco", "resnet18", "cifar", 1.0, 3, 32)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="safetensors"):
        load_external_backbone(junk, "ltcl-export", "resnet18", "cifar", 1.0, 3, 32)
    with pytest.raises(UserError, match="torch.load"):
        load_external_backbone(junk, "torchvision", "resnet18", "cifar", 1.0, 3, 32)


# ----------------------------------------------------------------------------------------------
# the export read back: ltcl embed on encoder.safetensors, the card's code on image files
# ----------------------------------------------------------------------------------------------

CARD_TOL = {"rtol": 1e-5, "atol": 1e-5}  # card code (plain NCHW, (x/255 - mean)/std) vs ltcl embed


def export_pair(tmp_path, channels: int, size: int = 16):
    """A .pt checkpoint and its export (encoder.safetensors + a card holding its sha256), as the
    export stage writes them, of a resnet8 with non-trivial BatchNorm statistics."""
    spec = {**spec_of("resnet8", "auto", 0.5, channels, size), "mean": [0.4, 0.5, 0.6][:channels],
            "std": [0.2, 0.25, 0.3][:channels]}
    enc = trained_encoder(spec)
    pt = tmp_path / "enc.pt"
    save_encoder(pt, enc, spec)
    out = tmp_path / "export"
    out.mkdir()
    save_backbone(out / "encoder.safetensors", enc, export_metadata(spec))
    card = {"weights": "encoder.safetensors", "weights_sha256": sha256_file(out / "encoder.safetensors"),
            "architecture": {"backbone": "resnet8", "width": 0.5, "channels": channels, "image_size": size,
                             "stem": "cifar"},
            "input": {"size": [size, size], "mean": spec["mean"], "std": spec["std"]}}
    (out / "model_card.json").write_text(json.dumps(card))
    return spec, enc, pt, out


def write_images(root):
    """Files of several modes and sizes: resized or not, gray / RGB / alpha / palette."""
    rng = np.random.default_rng(3)
    files = {"a_rgb_wide.png": ("RGB", (23, 11)), "b_gray_exact.png": ("L", (16, 16)),
             "c_gray_tall.png": ("L", (9, 30)), "d_rgba.png": ("RGBA", (40, 40)), "e_palette.png": ("P", (16, 16)),
             "f_gray_alpha.png": ("LA", (12, 20)), "g_rgb_exact.jpg": ("RGB", (16, 16))}
    root.mkdir(parents=True, exist_ok=True)
    for name, (mode, (w, h)) in files.items():
        bands = {"RGB": 3, "RGBA": 4, "LA": 2}.get(mode, 1)
        arr = rng.integers(0, 256, (h, w, bands) if bands > 1 else (h, w), dtype=np.uint8)
        Image.fromarray(arr, {"P": "L"}.get(mode, mode)).convert(mode).save(root / name)
    return sorted(root.iterdir())


def card_namespace(out, spec, monkeypatch):
    """Run the card's code as written (it opens 'encoder.safetensors' relative to the export folder)
    in a fresh namespace."""
    code = load_snippet(spec, "encoder.safetensors")
    monkeypatch.chdir(out)
    ns: dict = {}
    exec(compile(code, "model_card.md", "exec"), ns)  # noqa: S102 - the card's code under test
    return ns


@pytest.mark.parametrize("channels", [1, 3])
def test_card_code_embeds_image_files_as_ltcl_embed_does(tmp_path, monkeypatch, channels) -> None:
    spec, enc, pt, out = export_pair(tmp_path, channels)
    paths = write_images(tmp_path / "imgs")
    embed(encoder=pt, images=tmp_path / "imgs", out=tmp_path / "e", device="cpu", batch_size=len(paths))
    ref = np.load(tmp_path / "e" / "embeddings.npy")
    ns = card_namespace(out, spec, monkeypatch)
    theirs = ns["embed"](paths)
    assert theirs.shape == ref.shape == (len(paths), enc.feature_dim)
    np.testing.assert_allclose(theirs, ref, **CARD_TOL)
    # its input, computed here with PIL + numpy as the card states it, equals ltcl's preprocessing
    from ltcl.data.pool import to_channels
    from ltcl.data.sources.folder import read_image_file

    for p in paths:
        x = to_channels(read_image_file(p, 16)[None], channels)[0].astype(np.float32)
        want = ((x / 255 - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32))
        np.testing.assert_allclose(ns["preprocess"](p), want.transpose(2, 0, 1), rtol=0, atol=1e-6)
    if channels == 3:  # the 23x11 RGB file is squashed whole to 16x16, PIL bilinear
        with Image.open(paths[0]) as im:
            direct = np.asarray(im.resize((16, 16), Image.BILINEAR), dtype=np.float32)
        np.testing.assert_allclose(ns["preprocess"](paths[0]),
                                   ((direct / 255 - spec["mean"]) / spec["std"]).transpose(2, 0, 1), atol=1e-5)


def test_card_preprocessing_constants_are_ltcls() -> None:
    """The card's gray modes and luma weights are those ltcl's image reading uses."""
    from ltcl.data import pool
    from ltcl.data.sources import folder
    from ltcl.models import export

    assert set(export.GRAY_MODES) == folder._GRAY_MODES
    assert np.array_equal(np.asarray(export.LUMA, np.float32), pool.LUMA)
    pre = export.preprocessing(spec_of("resnet8", "cifar", 1.0, 1, 28))
    assert "Image.BILINEAR" in pre["resize"] and "no crop" in pre["resize"] and "28 x 28" in pre["resize"]
    assert "0.299 R + 0.587 G + 0.114 B" in pre["channel_conversion"]
    assert "replicated" in export.preprocessing(spec_of("resnet8", "cifar"))["channel_conversion"]


def test_embed_reads_the_export_like_the_pt(tmp_path) -> None:
    spec, enc, pt, out = export_pair(tmp_path, 3)
    write_images(tmp_path / "imgs")
    a = embed(encoder=pt, images=tmp_path / "imgs", out=tmp_path / "a", device="cpu", batch_size=3)
    b = embed(encoder=out / "encoder.safetensors", images=tmp_path / "imgs", out=tmp_path / "b", device="cpu",
              batch_size=3)
    assert np.array_equal(np.load(tmp_path / "a" / "embeddings.npy"), np.load(tmp_path / "b" / "embeddings.npy"))
    assert (tmp_path / "a" / "index.csv").read_bytes() == (tmp_path / "b" / "index.csv").read_bytes()
    assert (a["encoder_format"], b["encoder_format"]) == ("ltcl-checkpoint", "ltcl-export")
    assert b["model_card"] == str(out / "model_card.json") and a["model_card"] is None
    same = ("space", "source", "n", "d", "image_size", "channels", "mean", "std")
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
    # the header alone suffices (the card is checked when it is there, not required)
    (out / "model_card.json").unlink()
    c = embed(encoder=out / "encoder.safetensors", images=tmp_path / "imgs", out=tmp_path / "c", device="cpu",
              batch_size=3)
    assert np.array_equal(np.load(tmp_path / "a" / "embeddings.npy"), np.load(tmp_path / "c" / "embeddings.npy"))
    assert c["model_card"] is None


def accepted_alternatives(msg: str) -> None:
    assert ".pt" in msg and "encoder.safetensors" in msg and "model_card.json" in msg and "external" in msg
    assert all(fmt in msg for fmt in FORMATS), msg


def test_export_refusals_name_the_alternatives(tmp_path) -> None:
    from safetensors.torch import save_file

    spec, enc, pt, out = export_pair(tmp_path, 1)
    weights = out / "encoder.safetensors"
    write_images(tmp_path / "imgs")
    run = {"images": tmp_path / "imgs", "out": tmp_path / "e", "device": "cpu"}
    # the export holds no projection head
    with pytest.raises(UserError, match=r"no projection head.*\.pt checkpoint.*--space backbone"):
        embed(encoder=weights, space="projection", **run)
    assert not (tmp_path / "e").exists()
    embed(encoder=pt, space="projection", **run)  # the .pt has it
    # a stage (load_encoder) given the export: a .pt is needed, the alternatives named
    with pytest.raises(UserError, match="is a safetensors file") as exc:
        load_encoder(weights)
    accepted_alternatives(str(exc.value))
    # a torch file that is no ltcl checkpoint
    torch.save({"state_dict": {}}, tmp_path / "tv.pt")
    with pytest.raises(UserError, match="not an ltcl encoder checkpoint") as exc:
        embed(encoder=tmp_path / "tv.pt", **run)
    accepted_alternatives(str(exc.value))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a readable ltcl encoder checkpoint") as exc:
        embed(encoder=tmp_path / "junk.pt", **run)
    accepted_alternatives(str(exc.value))
    # a safetensors file that is not an ltcl export (no ltcl_spec, no card beside it)
    foreign = tmp_path / "foreign" / "weights.safetensors"
    foreign.parent.mkdir()
    save_file(backbone_state(enc), str(foreign))
    with pytest.raises(UserError, match="not an ltcl export") as exc:
        embed(encoder=foreign, **run)
    accepted_alternatives(str(exc.value))
    # a card that does not describe the file beside it
    card = json.loads((out / "model_card.json").read_text())
    (out / "model_card.json").write_text(json.dumps({**card, "weights_sha256": "0" * 64}))
    with pytest.raises(UserError, match="sha256 differs from the card"):
        embed(encoder=weights, **run)
    (out / "model_card.json").write_text(json.dumps({**card, "input": {**card["input"], "mean": [0.1]}}))
    with pytest.raises(UserError, match=r"disagree \(mean: \[0\.1\] in the card, \[0\.4\] in the header"):
        embed(encoder=weights, **run)
    # weights of another architecture than the header declares
    (out / "model_card.json").unlink()
    other = build_backbone("resnet20", 1, width=0.5, stem="cifar", image_size=16)
    save_file(backbone_state(other), str(weights), metadata={"ltcl_spec": json.dumps(
        {k: spec[k] for k in ("backbone", "width", "stem", "channels", "image_size", "mean", "std")})})
    with pytest.raises(UserError, match="do not fit the resnet8 its header declares.*layer1.1"):
        embed(encoder=weights, **run)


def test_accepted_encoders_lists_every_external_format() -> None:
    accepted_alternatives(ACCEPTED_ENCODERS)


def test_save_backbone_is_byte_stable(tmp_path) -> None:
    """safetensors writes its metadata map in a random order per call; the export sorts it, so
    the same weights and metadata give the same bytes, still read back by safetensors."""
    enc = trained_encoder(spec_of("resnet8", "cifar", 0.5, 1, 8))
    meta = {"ltcl_spec": '{"a": "b"}', "encoder": "pretrain", "method": "simclr, OOD sampling kdup"}
    files = []
    for i in range(6):
        save_backbone(tmp_path / f"{i}.safetensors", enc, meta)
        files.append((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(set(files)) == 1
    with safe_open(str(tmp_path / "0.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt", **meta}
    loaded = load_file(str(tmp_path / "0.safetensors"))
    assert set(loaded) == set(backbone_state(enc))
    assert all(torch.equal(loaded[k], v) for k, v in backbone_state(enc).items())


# ------------------------------------------------------------------------------------ the head's layers
def test_a_three_layer_checkpoint_loads_with_its_head_and_a_two_layer_params_refuse_it(tmp_path):
    """The encoder spec carries model.proj_layers: a checkpoint of SDCLR's 3-Linear head rebuilds that
    head (weights equal), params asking for 2 layers refuse it naming the key, and a spec written
    before the key existed is refused as invalid (its stage reruns)."""
    from ltcl.errors import UserError
    from ltcl.models.checkpoint import build_from_spec, encoder_spec, load_encoder, save_encoder
    from ltcl.params import ModelParams

    cfg = ModelParams(backbone="resnet8", proj_hidden=16, proj_dim=8, proj_layers=3)
    spec = encoder_spec(cfg, 1, 8, [0.5], [0.25])
    assert spec["proj_layers"] == 3
    torch.manual_seed(0)
    enc = build_from_spec(spec)
    save_encoder(tmp_path / "f.pt", enc, spec)
    back, spec_back, _ = load_encoder(tmp_path / "f.pt", model_cfg=cfg, image_shape=(8, 8, 1))
    assert [type(m) for m in back.head if isinstance(m, nn.Linear)] == [nn.Linear] * 3
    for (k, a), (k2, b) in zip(enc.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    with pytest.raises(UserError, match=r"model.proj_layers is 2 in params.yaml but 3 in the checkpoint"):
        load_encoder(tmp_path / "f.pt", model_cfg=cfg.model_copy(update={"proj_layers": 2}))
    old = {k: v for k, v in spec.items() if k != "proj_layers"}
    save_encoder(tmp_path / "old.pt", enc, old)
    with pytest.raises(UserError, match="model spec is invalid"):
        load_encoder(tmp_path / "old.pt")
