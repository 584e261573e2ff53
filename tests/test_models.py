"""Tests for ltcl.models: backbones, FLOP counting, projection head, encoder and SDCLR pruning."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torchvision
from torch import nn

from ltcl.models.heads import Encoder, ProjectionHead, build_encoder
from ltcl.models.pruning import (
    PrunedBranchNorms,
    global_magnitude_masks,
    mask_sparsity,
    prunable_weights,
    pruned_forward,
)
from ltcl.models.resnet import BACKBONES, build_backbone, count_flops


def _bb(name, in_channels, width=1.0, stem="auto", image_size=32):
    """build_backbone with the test's usual architecture (the library takes every argument)."""
    return build_backbone(name, in_channels, width=width, stem=stem, image_size=image_size)


def _enc(name, in_channels, image_size, width=1.0, stem="auto", proj_hidden=512, proj_dim=128, proj_layers=2):
    return build_encoder(name, in_channels, image_size, width=width, stem=stem, proj_hidden=proj_hidden,
                         proj_dim=proj_dim, proj_layers=proj_layers)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin contention on a shared 2-core CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def on_meta(test):
    """Run a structure-only test on the meta device: no weight initialisation and no arithmetic."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        with torch.device("meta"):
            return test(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------------------------

# Reduced widths keep the shape sweep cheap on CPU; width does not change any spatial logic.
SWEEP_WIDTH = {"resnet8": 1.0, "resnet20": 1.0, "resnet32": 0.5, "resnet10": 0.25, "resnet18": 0.25, "resnet50": 0.125}


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_backbone_output_shapes(name: str, in_channels: int) -> None:
    torch.manual_seed(0)
    for size in (8, 28, 32, 64):
        model = _bb(name, in_channels, width=SWEEP_WIDTH[name], image_size=size).eval()
        with torch.no_grad():
            out = model(torch.randn(2, in_channels, size, size))
        assert out.shape == (2, model.out_dim)
        assert torch.isfinite(out).all()


@on_meta
def test_backbone_full_width_out_dims() -> None:
    expected = {"resnet8": 64, "resnet20": 64, "resnet32": 64, "resnet10": 512, "resnet18": 512, "resnet50": 2048}
    for name, dim in expected.items():
        model = _bb(name, 3).eval()
        assert model.out_dim == dim
        assert model(torch.empty(2, 3, 8, 8)).shape == (2, dim)
    assert _bb("resnet18", 3, width=0.5).out_dim == 256
    assert _bb("resnet20", 3, width=2.0).out_dim == 128


def test_backbone_train_mode_and_imagenet_stem_small_input() -> None:
    model = _bb("resnet18", 1, width=0.25, stem="imagenet", image_size=8)
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, model.out_dim)


@on_meta
def test_cifar_stem() -> None:
    model = _bb("resnet18", 3, image_size=32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.padding == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert isinstance(model.fc, nn.Identity)
    assert model.conv1.in_channels == 3 and model.stem == "cifar"
    gray = _bb("resnet50", 1, image_size=28)
    assert gray.conv1.in_channels == 1 and gray.conv1.stride == (1, 1) and isinstance(gray.maxpool, nn.Identity)


@on_meta
def test_imagenet_stem_and_auto() -> None:
    model = _bb("resnet18", 3, image_size=96)  # auto -> imagenet for > 64
    assert model.stem == "imagenet"
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert _bb("resnet18", 3, image_size=64).stem == "cifar"
    assert _bb("resnet18", 3, stem="imagenet", image_size=32).stem == "imagenet"


@on_meta
def test_resnet18_matches_torchvision_layout() -> None:
    ours = _bb("resnet18", 3).state_dict()
    ref = {k: v for k, v in torchvision.models.resnet18(weights=None).state_dict().items() if not k.startswith("fc.")}
    assert set(ours) == set(ref)
    for key, value in ref.items():
        if key != "conv1.weight":
            assert ours[key].shape == value.shape, key
    assert ours["conv1.weight"].shape == (64, 3, 3, 3)
    r50 = _bb("resnet50", 3).state_dict()
    ref50 = {k for k in torchvision.models.resnet50(weights=None).state_dict() if not k.startswith("fc.")}
    assert set(r50) == ref50


def test_small_cifar_resnets_follow_he_et_al() -> None:
    # He et al. 2016, Sect. 4.2: 6n+1 conv layers, 16/32/64 filters, 3x3 stride-1 stem; ResNet-20 has 0.27M params.
    for name, n in (("resnet8", 1), ("resnet20", 3), ("resnet32", 5)):
        model = _bb(name, 3)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 6 * n + 1
        assert convs[0].kernel_size == (3, 3) and convs[0].stride == (1, 1) and convs[0].out_channels == 16
        assert sorted({c.out_channels for c in convs}) == [16, 32, 64]
    n_params = sum(p.numel() for p in _bb("resnet20", 3).parameters())
    assert 0.26e6 < n_params < 0.28e6
    with pytest.raises(ValueError, match="stem"):
        _bb("resnet20", 3, stem="imagenet")


def test_backbone_bad_arguments() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        _bb("resnet19", 3)
    with pytest.raises(ValueError, match="stem"):
        _bb("resnet18", 3, stem="vit")
    with pytest.raises(ValueError, match="image_size"):
        _bb("resnet18", 3, image_size=4)
    with pytest.raises(ValueError, match="in_channels"):
        _bb("resnet18", 0)
    with pytest.raises(ValueError, match="width"):
        _bb("resnet18", 3, width=0.0)


# ---------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------


def _reference_conv_linear_flops(model: nn.Module, shape: tuple[int, ...]) -> int:
    """2 x multiply-adds of every Conv2d / Linear, from output shapes recorded by hooks."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += 2 * out.numel() * k
        else:
            total += 2 * out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(shape))
    for h in handles:
        h.remove()
    return total


def test_count_flops_resnet18_cifar() -> None:
    model = _bb("resnet18", 3, image_size=32)
    model.train()
    flops = count_flops(model, (3, 32, 32))
    assert isinstance(flops, int)
    assert 1.08e9 < flops < 1.14e9  # 0.556 GMACs x 2
    assert model.training  # mode restored


def test_count_flops_matches_hook_reference() -> None:
    for name in ("resnet20", "resnet8"):
        model = _bb(name, 3)
        assert count_flops(model, (2, 3, 32, 32)) == _reference_conv_linear_flops(model, (2, 3, 32, 32))
    enc = _enc("resnet8", 1, 28)
    assert count_flops(enc, (1, 28, 28)) == _reference_conv_linear_flops(enc, (1, 1, 28, 28))
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(enc, (28, 28))


# ---------------------------------------------------------------------------------------------
# Projection head and encoder
# ---------------------------------------------------------------------------------------------


def test_projection_head_structure() -> None:
    head = ProjectionHead(512, 512, 128, 2)
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert (head[0].in_features, head[0].out_features) == (512, 512) and head[0].bias is not None
    assert (head[3].in_features, head[3].out_features) == (512, 128) and head[3].bias is None
    assert head[1].affine and head[4].affine and head[4].num_features == 128
    assert head.out_dim == 128
    head = ProjectionHead(64, 32, 16, 2)
    assert head(torch.randn(5, 64)).shape == (5, 16)
    with pytest.raises(ValueError, match="out_dim"):
        ProjectionHead(64, 32, 0, 2)
    with pytest.raises(ValueError, match="model.proj_layers"):
        ProjectionHead(64, 32, 16, 4)


# SDCLR's heads as its released code writes them (VITA-Group/SDCLR@f1490fc), copied here so the
# comparison does not go through ltcl: models/resnet_prune_multibn.py:163-233 (the dual-BN head of
# --prune_dual_bn, twoLayerProj=False) and models/utils.py:30-59 (the plain SimCLR head).
class _SDCLRBatchNormMultiple(nn.Module):
    def __init__(self, norm, inplanes, bn_names=None):
        super().__init__()
        self.bn_names = bn_names
        self.bn_list = nn.ModuleList([norm(inplanes) for _ in range(len(bn_names))])
        self.bn_names_dict = {bn_name: i for i, bn_name in enumerate(bn_names)}

    def forward(self, x):
        out, name_bn = x[0], x[1]
        return self.bn_list[self.bn_names_dict[name_bn]](out)


class _SDCLRDualProjHead(nn.Module):
    def __init__(self, ch, output_ch=None, bn_names=("nonprune", "prune"), twoLayerProj=False):
        super().__init__()
        self.twoLayerProj = twoLayerProj
        self.fc1 = nn.Linear(ch, ch)
        self.bn1 = _SDCLRBatchNormMultiple(nn.BatchNorm1d, ch, bn_names)
        if not twoLayerProj:
            self.fc2 = nn.Linear(ch, ch, bias=False)
            self.bn2 = _SDCLRBatchNormMultiple(nn.BatchNorm1d, ch, bn_names)
            self.fc3 = nn.Linear(ch, output_ch, bias=False)
            self.bn3 = _SDCLRBatchNormMultiple(nn.BatchNorm1d, output_ch, bn_names)
        else:
            self.fc2 = nn.Linear(ch, output_ch, bias=False)
            self.bn2 = _SDCLRBatchNormMultiple(nn.BatchNorm1d, output_ch, bn_names)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x, bn_name):
        x = self.fc1(x)
        x = self.bn1([x, bn_name])
        x = self.relu(x)
        x = self.fc2(x)
        x = self.bn2([x, bn_name])
        if not self.twoLayerProj:
            x = self.relu(x)
            x = self.fc3(x)
            x = self.bn3([x, bn_name])
        return x


class _SDCLRProjHead(nn.Module):
    def __init__(self, ch, output_cnt=None):
        super().__init__()
        self.fc1 = nn.Linear(ch, ch)
        self.bn1 = nn.BatchNorm1d(ch)
        self.fc2 = nn.Linear(ch, output_cnt, bias=False)
        self.bn2 = nn.BatchNorm1d(output_cnt)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu(self.bn1(self.fc1(x)))
        return self.bn2(self.fc2(x))


def _randomise_bns(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.copy_(torch.rand(t.shape, generator=g) - 0.5)
            m.running_var.data.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_three_layer_head_is_sdclrs_dual_bn_head(mode) -> None:
    """model.proj_layers 3 = SDCLR's --prune_dual_bn head: same parameters in the same order, and, given
    the same weights, the same output and BN statistics for the dense branch (bn_list.0, "nonprune")
    and for the pruned branch (bn_list.1, "prune" = ltcl's PrunedBranchNorms)."""
    ch, out = 512, 128
    torch.manual_seed(0)
    ours = ProjectionHead(ch, ch, out, 3)
    _randomise_bns(ours, 1)
    norms = PrunedBranchNorms(ours)
    _randomise_bns(norms, 2)
    theirs = _SDCLRDualProjHead(ch, out)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # the dense head: everything but the pruned branch's BatchNorms; with them: SDCLR's whole head
    assert count(ours) == sum(p.numel() for n, p in theirs.named_parameters() if ".bn_list.1." not in n)
    assert count(ours) + count(norms) == count(theirs) == 2 * ch * ch + ch + ch * out + 2 * 2 * (2 * ch + out)
    # layer order: SDCLR's fc1, bn1, fc2, bn2, fc3, bn3 (each bn: bn_list.0 dense, bn_list.1 pruned)
    mapping = {"0": "fc1", "1": "bn1", "3": "fc2", "4": "bn2", "6": "fc3", "7": "bn3"}
    assert [type(m) for m in ours] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear, nn.BatchNorm1d]
    sd = {}
    for key, value in ours.state_dict().items():
        idx, rest = key.split(".", 1)
        sd[f"{mapping[idx]}.bn_list.0.{rest}" if mapping[idx].startswith("bn") else f"{mapping[idx]}.{rest}"] = value
    for name, value in norms.substitutions().items():
        idx, rest = name.split(".", 1)
        sd[f"{mapping[idx]}.bn_list.1.{rest}"] = value.detach()
    assert sorted(sd) == sorted(theirs.state_dict()) and [k for k in theirs.state_dict() if k in sd] == list(
        theirs.state_dict())
    assert [tuple(theirs.state_dict()[k].shape) for k in theirs.state_dict()] == [tuple(sd[k].shape) for k in
                                                                                  theirs.state_dict()]
    theirs.load_state_dict(sd)
    ours.train(mode == "train")
    theirs.train(mode == "train")
    norms.train(mode == "train")
    x = torch.randn(16, ch)
    torch.testing.assert_close(ours(x), theirs(x, "nonprune"), rtol=0, atol=0)
    torch.testing.assert_close(pruned_forward(ours, {}, x, norms=norms), theirs(x, "prune"), rtol=0, atol=0)
    # the BN statistics each branch updated (train mode) are SDCLR's
    after = {}
    for key, value in ours.state_dict().items():
        idx, rest = key.split(".", 1)
        after[f"{mapping[idx]}.bn_list.0.{rest}" if mapping[idx].startswith("bn") else f"{mapping[idx]}.{rest}"] = value
    for name, value in norms.substitutions().items():
        idx, rest = name.split(".", 1)
        after[f"{mapping[idx]}.bn_list.1.{rest}"] = value.detach()
    _assert_same_state({k: after[k] for k in theirs.state_dict()}, theirs.state_dict())


def test_two_layer_head_is_sdclrs_simclr_head() -> None:
    """model.proj_layers 2 = models/utils.py proj_head (SDCLR's SimCLR runs, COLT, TS), given the same weights."""
    torch.manual_seed(0)
    ours = ProjectionHead(64, 64, 16, 2)
    _randomise_bns(ours, 3)
    theirs = _SDCLRProjHead(64, 16)
    names = {"0": "fc1", "1": "bn1", "3": "fc2", "4": "bn2"}
    theirs.load_state_dict({f"{names[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}": v
                            for k, v in ours.state_dict().items()})
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    x = torch.randn(8, 64)
    for train in (True, False):
        ours.train(train)
        theirs.train(train)
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_encoder_outputs() -> None:
    torch.manual_seed(0)
    enc = _enc("resnet8", 3, 32, proj_hidden=32, proj_dim=16)
    assert isinstance(enc, Encoder) and enc.feature_dim == 64 and enc.proj_dim == 16
    x = torch.randn(6, 3, 32, 32)
    h, z = enc(x)
    assert h.shape == (6, 64) and z.shape == (6, 16)
    enc.eval()
    h, z = enc(x)
    torch.testing.assert_close(enc.features(x), h)
    torch.testing.assert_close(enc.head(h), z)
    big = _enc("resnet18", 1, 28, width=0.25)
    assert big.feature_dim == 128 and big.head[0].out_features == 512 and big.proj_dim == 128


# ---------------------------------------------------------------------------------------------
# SDCLR pruning
# ---------------------------------------------------------------------------------------------


def _small_encoder(seed: int = 0, dtype: torch.dtype = torch.float32) -> Encoder:
    torch.manual_seed(seed)
    enc = _enc("resnet8", 3, 16, width=0.5, proj_hidden=16, proj_dim=8).to(dtype)
    # Non-trivial BN parameters so that BN sharing vs copying is visible.
    for m in enc.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return enc


def test_mask_ratio_exact_and_threshold() -> None:
    enc = _small_encoder()
    weights = prunable_weights(enc)
    n = sum(w.numel() for w in weights.values())
    for ratio in (0.0, 0.3, 0.9, 0.999, 1.0):
        masks = global_magnitude_masks(enc, ratio)
        n_zero = sum(int((~m).sum()) for m in masks.values())
        assert n_zero == round(ratio * n)
        assert abs(mask_sparsity(masks) - ratio) <= 1.0 / n + 1e-12
        if 0 < ratio < 1:
            pruned = torch.cat([weights[k].detach().abs()[~m] for k, m in masks.items()])
            kept = torch.cat([weights[k].detach().abs()[m] for k, m in masks.items()])
            assert pruned.max() <= kept.min()  # one global threshold over all layers


def test_mask_ratio_exact_with_ties() -> None:
    enc = _small_encoder()
    with torch.no_grad():
        for i, w in enumerate(prunable_weights(enc).values()):
            w.copy_(torch.randint(0, 3, w.shape).to(w.dtype) * (1 if i % 2 else -1))  # heavy ties
    n = sum(w.numel() for w in prunable_weights(enc).values())
    masks = global_magnitude_masks(enc, 0.9)
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.9 * n)


def test_masks_cover_only_backbone_conv_and_linear() -> None:
    enc = _small_encoder()
    masks = global_magnitude_masks(enc, 0.9)
    expected = {
        f"{name}.weight"
        for name, m in enc.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not name.startswith("head")
    }
    assert set(masks) == expected
    assert all(k.startswith("backbone.") for k in masks)
    params = dict(enc.named_parameters())
    for k, m in masks.items():
        assert m.dtype == torch.bool and m.shape == params[k].shape
    # Linear layers inside a plain module are prunable; biases and BN are not.
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    assert set(prunable_weights(seq, exclude=())) == {"0.weight", "3.weight"}
    # Backbone alone: names relative to the backbone.
    assert all(not k.startswith("backbone.") for k in global_magnitude_masks(enc.backbone, 0.5))


def test_mask_bad_arguments() -> None:
    enc = _small_encoder()
    with pytest.raises(ValueError, match="ratio"):
        global_magnitude_masks(enc, 1.5)
    with pytest.raises(ValueError, match="prunable"):
        global_magnitude_masks(nn.BatchNorm1d(4), 0.5)
    masks = global_magnitude_masks(enc, 0.5)
    with pytest.raises(ValueError, match="not in model"):
        pruned_forward(enc.backbone, masks, torch.randn(2, 3, 16, 16))


def _masked_copy(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    ref = copy.deepcopy(model)
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for k, m in masks.items():
            params[k].mul_(m.to(params[k].dtype))
    return ref


@pytest.mark.parametrize("train", [False, True])
def test_pruned_forward_equals_masked_copy(train: bool) -> None:
    enc = _small_encoder(dtype=torch.float64).train(train)
    masks = global_magnitude_masks(enc, 0.9)
    ref = _masked_copy(enc, masks)
    before = {k: v.clone() for k, v in enc.named_parameters()}
    x = torch.randn(8, 3, 16, 16, dtype=torch.float64)
    h, z = pruned_forward(enc, masks, x)
    h_ref, z_ref = ref(x)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(z, z_ref)
    # Dense weights untouched; shared BN buffers updated exactly like the copy's.
    for k, v in enc.named_parameters():
        assert torch.equal(v, before[k])
    for (k, b), (_, b_ref) in zip(enc.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(b, b_ref, msg=k)
    # The dense forward differs (90% of the weights matter).
    assert not torch.allclose(enc.eval()(x)[1], ref.eval()(x)[1])


def test_pruned_branch_gradient_flows_to_dense_weights() -> None:
    enc = _small_encoder(dtype=torch.float64)
    masks = global_magnitude_masks(enc, 0.9)
    ref = _masked_copy(enc, masks)
    x = torch.randn(8, 3, 16, 16, dtype=torch.float64)
    proj = torch.randn(8, 8, dtype=torch.float64)
    (pruned_forward(enc, masks, x)[1] * proj).sum().backward()
    (ref(x)[1] * proj).sum().backward()
    params, ref_params = dict(enc.named_parameters()), dict(ref.named_parameters())
    for name, p in params.items():
        assert p.grad is not None, name
        if name in masks:
            m = masks[name]
            torch.testing.assert_close(p.grad, ref_params[name].grad * m)
            assert (p.grad[~m] == 0).all()
            assert p.grad[m].abs().sum() > 0
        else:  # BN, biases and the head: identical to the masked copy
            torch.testing.assert_close(p.grad, ref_params[name].grad)


def test_dual_bn_pruned_branch() -> None:
    enc = _small_encoder(dtype=torch.float64).train()
    masks = global_magnitude_masks(enc, 0.9)
    norms = PrunedBranchNorms(enc)
    n_bn = sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in enc.modules())
    assert len(norms.norms) == n_bn
    with torch.no_grad():  # make the pruned branch's BNs differ from the dense ones
        for m in norms.norms:
            m.weight.mul_(2.0)
            m.bias.add_(0.3)
    # Reference: masked copy whose BNs are replaced by the branch BNs.
    ref = _masked_copy(enc, masks)
    for name, bn in zip(norms.bn_names, norms.norms):
        parent_name, _, attr = name.rpartition(".")
        parent = ref.get_submodule(parent_name) if parent_name else ref
        setattr(parent, attr, copy.deepcopy(bn))
    dense_buffers = {k: v.clone() for k, v in enc.named_buffers()}
    x = torch.randn(8, 3, 16, 16, dtype=torch.float64)
    h, z = pruned_forward(enc, masks, x, norms=norms)
    h_ref, z_ref = ref(x)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(z, z_ref)
    for k, v in enc.named_buffers():  # dense BN statistics untouched
        assert torch.equal(v, dense_buffers[k]), k
    ref_bns = dict(ref.named_modules())
    for name, bn in zip(norms.bn_names, norms.norms):  # branch statistics updated
        torch.testing.assert_close(bn.running_mean, ref_bns[name].running_mean)
        assert int(bn.num_batches_tracked) == 1
    z.sum().backward()
    assert all(m.weight.grad is not None for m in norms.norms)
    assert all(m.weight.grad is None for m in enc.modules() if isinstance(m, nn.BatchNorm2d))
