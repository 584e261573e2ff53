"""Encoders in and out through the pipeline's stages: export@<encoder> writes torchvision-layout
safetensors and a model card whose code rebuilds the encoder without ltcl; an export imported as
an external encoder probes to the same numbers as the original; an SDCLR-layout checkpoint is
imported and evaluated like f and g (report and compare rows); another architecture is refused
with the key lists."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import copy_project
from ltcl.data.splits import load_split
from ltcl.models.checkpoint import load_encoder
from test_export_import import sdclr_state


@pytest.fixture(scope="module")
def probed(built_project, tmp_path_factory):
    """The built tiny project (f pre-trained) with f's linear probe and its export."""
    proj = copy_project(built_project, tmp_path_factory.mktemp("export") / "p")
    proj.stage("linear_probe.py", "pretrain")
    proj.stage("export.py", "pretrain")
    return proj


def probe_numbers(proj, name: str) -> dict:
    m = json.loads(proj.path(f"metrics/probe/{name}.json").read_text())
    m.pop("run", None)
    return m


def test_export_files_and_card_code_rebuild_the_encoder_without_ltcl(probed):
    out = probed.path("export/pretrain")
    assert sorted(p.name for p in out.iterdir()) == ["encoder.safetensors", "model_card.json", "model_card.md"]
    card = json.loads((out / "model_card.json").read_text())
    model, spec, _ = load_encoder(probed.path("data/models/pretrain.pt"))
    assert card["architecture"]["backbone"] == spec["backbone"] == "resnet8"
    assert card["input"]["mean"] == spec["mean"] and card["input"]["size"] == [8, 8]
    assert card["probe"]["full"]["all"] == probe_numbers(probed, "pretrain")["full"]["all"]
    assert card["data"]["manifest_sha256"] and card["code"]["ltcl"]
    assert any("option-A" in d for d in card["layers_differing_from_torchvision"])
    # the card's Python block, run in a namespace with torch and torchvision only, loads the weights
    md = (out / "model_card.md").read_text()
    code = md.split("```python\n", 1)[1].split("```", 1)[0].replace("'encoder.safetensors'", repr(str(
        out / "encoder.safetensors")))
    ns: dict = {}
    exec(compile(code, "model_card.md", "exec"), ns)  # noqa: S102 - the card's own code, under test
    x, _ = load_split(probed.path("data/lt"), "test")
    xt = torch.from_numpy(np.array(x[:64])).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(spec["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(spec["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        ours = model.features((xt - mean) / std)
        theirs = ns["model"]((xt - mean) / std)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert not any(k.startswith(("head.", "fc.")) for k in _safetensor_keys(out / "encoder.safetensors"))


def _safetensor_keys(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def test_export_imported_as_external_probes_to_the_same_numbers(probed, tmp_path):
    proj = copy_project(probed, tmp_path / "p")
    proj.set_params({"external": {"rt": {"path": str(proj.path("export/pretrain/encoder.safetensors")),
                                         "format": "ltcl-export", "backbone": "resnet8"}}})
    proj.stage("import_encoder.py", "rt")
    proj.stage("linear_probe.py", "ext-rt")
    assert probe_numbers(proj, "ext-rt") == probe_numbers(proj, "pretrain")
    ckpt = torch.load(proj.path("data/models/ext-rt.pt"), weights_only=True)
    assert ckpt["external"]["normalisation_from"] == "the export's header"


def write_sdclr_checkpoint(path, channels: int = 1):
    """A checkpoint laid out as SDCLR's released ones (module. prefixes, projection head,
    dual-BN pruning branch) for a CIFAR-stem ResNet-18 at width 0.25."""
    from ltcl.models.resnet import build_backbone

    backbone = build_backbone("resnet18", channels, width=0.25, stem="cifar", image_size=8)
    torch.save({"epoch": 1, "state_dict": sdclr_state(backbone, True, backbone.out_dim)}, path)
    return backbone


def test_sdclr_checkpoint_is_evaluated_like_f_and_g(built_project, tmp_path):
    proj = copy_project(built_project, tmp_path / "p")
    original = write_sdclr_checkpoint(tmp_path / "sdclr.pth")
    ext = {"path": str(tmp_path / "sdclr.pth"), "format": "sdclr", "backbone": "resnet18", "stem": "cifar",
           "width": 0.25}
    proj.set_params({"external": {"sdclr": ext}})
    proc = proj.stage("import_encoder.py", "sdclr", check=False)  # SDCLR's ImageNet statistics: 3 channels
    assert proc.returncode == 2 and "set external.sdclr.mean and .std" in proc.stderr
    proj.set_params({"external": {"sdclr": {**ext, "mean": [0.5], "std": [0.25]}}})
    proj.stage("import_encoder.py", "sdclr")
    model, spec, ckpt = load_encoder(proj.path("data/models/ext-sdclr.pt"))
    for k, v in original.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    assert ckpt["external"]["dropped"]  # head and pruned-branch norms dropped by rule
    proj.stage("linear_probe.py", "ext-sdclr")
    proj.stage("cluster.py", "ext-sdclr")
    metrics = probe_numbers(proj, "ext-sdclr")
    assert {"full", "few_shot"} <= set(metrics)
    # the report and ltcl compare show it beside ltcl's own encoders
    from ltcl.compare.experiments import from_directory
    from ltcl.compare.table import build_lines
    from ltcl.report.html import build_report

    proj.stage("linear_probe.py", "pretrain")
    rep = build_report(proj.root)
    assert "sdclr (external encoder, imported)" in rep.to_html()
    lines, _ = build_lines([from_directory(proj.root)], "full")
    ext = [line for line in lines if line.label.startswith("sdclr (external")]
    assert len(ext) == 1 and ext[0].mean["all"] == pytest.approx(metrics["full"]["all"])
    assert "minutes" not in ext[0].mean  # not trained by this run


def test_external_of_another_architecture_refused_with_key_lists(built_project, tmp_path):
    proj = copy_project(built_project, tmp_path / "p")
    write_sdclr_checkpoint(tmp_path / "sdclr.pth")
    proj.set_params({"external": {"wrong": {"path": str(tmp_path / "sdclr.pth"), "format": "sdclr",
                                            "backbone": "resnet10", "stem": "cifar", "width": 0.25}}})
    proc = proj.stage("import_encoder.py", "wrong", check=False)
    assert proc.returncode == 2
    assert "unused" in proc.stderr and "layer1.1." in proc.stderr  # resnet18's second blocks, not in resnet10
    assert not proj.path("data/models/ext-wrong.pt").exists()
