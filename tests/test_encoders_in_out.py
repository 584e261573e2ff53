"""Encoders in and out through the pipeline's stages: export@<encoder> writes torchvision-layout
safetensors and a model card whose code rebuilds the encoder without ltcl; an export imported as
an external encoder probes to the same numbers as the original; an SDCLR-layout checkpoint is
imported and evaluated like f and g (report and compare rows); another architecture is refused
with the key lists."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import all_keys, copy_project
from ltcl import cli
from ltcl.data.splits import load_split
from ltcl.embed import embed
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
    """The whole probe record of encoder ``name`` (its details file, beside the headline)."""
    return json.loads(proj.path(f"metrics/probe/{name}_details.json").read_text())


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
    rep = build_report(proj.root, title="ltcl report")
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


# ----------------------------------------------------------------------------------------------
# the export back in: ltcl embed on export/<encoder>/encoder.safetensors, and the card's code
# ----------------------------------------------------------------------------------------------


def _images(root):
    """Image files of other sizes and modes than the encoder's 8x8x1 (resized, converted)."""
    from PIL import Image

    rng = np.random.default_rng(5)
    root.mkdir(parents=True)
    for name, mode, (w, h) in (("cat/a.png", "RGB", (20, 13)), ("cat/b.png", "L", (8, 8)),
                               ("dog/c.png", "RGBA", (31, 31)), ("dog/d.jpg", "L", (5, 17))):
        (root / name).parent.mkdir(exist_ok=True)
        bands = {"RGB": 3, "RGBA": 4}.get(mode)
        arr = rng.integers(0, 256, (h, w, bands) if bands else (h, w), dtype=np.uint8)
        Image.fromarray(arr, mode).save(root / name)
    return sorted(p for p in root.rglob("*") if p.is_file())


def _outputs(out):
    return (np.load(out / "embeddings.npy"), (out / "index.csv").read_bytes(),
            json.loads((out / "embed.json").read_text()))


def test_ltcl_embed_on_the_export_equals_the_pt(probed, tmp_path):
    """A split, an image folder and an npz: the same rows, index.csv and (exactly) embeddings,
    the export read from a copy outside the project (its own header and card only)."""
    exported = tmp_path / "elsewhere"
    shutil.copytree(probed.path("export/pretrain"), exported)
    pt = probed.path("data/models/pretrain.pt")
    x, _ = load_split(probed.path("data/lt"), "test")
    np.savez(tmp_path / "d.npz", x_test=np.array(x[:30]))
    _images(tmp_path / "photos")
    sources = {"split": {"split": "test", "lt_dir": probed.path("data/lt")},
               "images": {"images": tmp_path / "photos"}, "npz": {"npz": tmp_path / "d.npz"}}
    for name, src in sources.items():
        a = embed(encoder=pt, out=tmp_path / f"{name}-pt", device="cpu", batch_size=16, **src)
        b = embed(encoder=exported / "encoder.safetensors", out=tmp_path / f"{name}-st", device="cpu",
                  batch_size=16, **src)
        ea, ia, _ = _outputs(tmp_path / f"{name}-pt")
        eb, ib, _ = _outputs(tmp_path / f"{name}-st")
        assert ea.shape[0] == a["n"] == b["n"] > 0, name
        assert np.array_equal(ea, eb), name
        assert ia == ib, name
        assert b["encoder_format"] == "ltcl-export" and b["model_card"] == str(exported / "model_card.json")
        assert {k: v for k, v in a.items() if not k.startswith(("encoder", "model_card"))} == \
            {k: v for k, v in b.items() if not k.startswith(("encoder", "model_card"))}, name


def test_projection_needs_the_pt(probed, tmp_path, capsys):
    base = ["embed", "--split", "test", "--lt-dir", str(probed.path("data/lt")), "--device", "cpu",
            "--space", "projection"]
    assert cli.main([*base, "--encoder", str(probed.path("export/pretrain/encoder.safetensors")),
                     "--out", str(tmp_path / "st")]) == 2
    err = capsys.readouterr().err
    assert "no projection head" in err and "data/models/<encoder>.pt" in err and "Traceback" not in err
    assert not (tmp_path / "st").exists()
    assert cli.main([*base, "--encoder", str(probed.path("data/models/pretrain.pt")),
                     "--out", str(tmp_path / "pt")]) == 0


def test_card_code_runs_as_written_without_ltcl(probed, tmp_path):
    """The card's Python block, run as written from a copy of the export folder by a fresh
    interpreter in which ltcl cannot be imported, embeds image files (preprocessed by its own PIL +
    numpy code) to the numbers `ltcl embed` writes from the .pt, within 1e-5."""
    exported = tmp_path / "export"
    shutil.copytree(probed.path("export/pretrain"), exported)
    md = (exported / "model_card.md").read_text()
    code = md.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.startswith("# needs no ltcl: pip install torch safetensors pillow numpy\n")  # resnet8: no torchvision
    paths = _images(tmp_path / "photos")
    embed(encoder=probed.path("data/models/pretrain.pt"), images=tmp_path / "photos", out=tmp_path / "e",
          device="cpu")
    index = [line.split(",")[0] for line in (tmp_path / "e" / "index.csv").read_text().splitlines()[1:]]
    assert index == [p.relative_to(tmp_path / "photos").as_posix() for p in paths]
    (tmp_path / "card.py").write_text(code)
    driver = ("import sys\nsys.modules['ltcl'] = None  # `import ltcl` fails\n"
              f"exec(compile(open({str(tmp_path / 'card.py')!r}).read(), 'model_card.md', 'exec'))\n"
              f"np.save({str(tmp_path / 'card.npy')!r}, embed({[str(p) for p in paths]!r}))\n")
    proc = subprocess.run([sys.executable, "-c", driver], cwd=exported, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "PASSIVE"})
    assert proc.returncode == 0, proc.stderr
    theirs, ours = np.load(tmp_path / "card.npy"), np.load(tmp_path / "e" / "embeddings.npy")
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)


HOST_FACTS = ("wall_s", "peak_rss_mb", "cpu", "cores", "gpu", "python", "torch_threads", "run")


def test_export_is_byte_stable(probed, tmp_path):
    """Re-exporting the same checkpoint in another process (another hash seed) writes the same
    bytes; neither the card nor the header holds timings or facts of the host."""
    from safetensors import safe_open

    proj = copy_project(probed, tmp_path / "p")
    before = {p.name: p.read_bytes() for p in proj.path("export/pretrain").iterdir()}
    proj.stage("export.py", "pretrain", in_process=False)
    after = {p.name: p.read_bytes() for p in proj.path("export/pretrain").iterdir()}
    assert before == after
    card = json.loads(after["model_card.json"])
    assert not set(all_keys(card)) & set(HOST_FACTS)
    with safe_open(str(proj.path("export/pretrain/encoder.safetensors")), "pt") as f:
        meta = f.metadata()
    assert set(meta) == {"format", "ltcl_spec", "encoder", "method"}
    assert set(json.loads(meta["ltcl_spec"])) == {"backbone", "width", "stem", "channels", "image_size", "mean", "std"}
