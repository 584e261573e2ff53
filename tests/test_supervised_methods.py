"""GloCo, GloCo+ProCo (paper 001) and GML teacher / student (paper 002) take real steps and use
the labels, temperatures, coresets and queues the papers describe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltcl.losses.gml import gml_queue_lengths
from ltcl.methods.base import TrainSet
from ltcl.methods.distill.gml import GMLStudent
from ltcl.params import Params, ParamsError, validate
from ltcl.registry import PRETRAIN, get_method
from ltcl.runtime import Runtime
from ltcl.train.loop import fit
from ltcl.train.session import build_augment, new_encoder

COUNTS = [16, 8, 4, 2]  # a long-tailed toy set


def setup(method: str, distill: dict | None = None, **pretrain):
    torch.manual_seed(0)
    params = Params.model_validate({
        "model": {"backbone": "resnet8", "proj_hidden": 32, "proj_dim": 16},
        "ood": {"strategy": "none"},
        "pretrain": {"method": method, "epochs": 2, "batch_size": 10, "warmup_epochs": 1, **pretrain},
        "distill": {"method": "gml" if method == "gml" else "kdup", "epochs": 2, "batch_size": 10, "warmup_epochs": 0,
                    "gml": {"k": 40, "km": 2, **(distill or {})}},
    })
    rt = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=True)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), COUNTS)
    x = rng.integers(0, 255, size=(len(y), 8, 8, 1), dtype=np.uint8)
    model, spec = new_encoder(params.model, x, rt)
    aug = build_augment(params.augment, spec, rt.device)
    data = TrainSet.from_numpy(x, y, 4, rt.device)
    return model, spec, aug, data, params, rt


@pytest.mark.parametrize("method", ["gloco", "gloco-proco", "gml"])
def test_supervised_method_trains(method):
    model, _, aug, data, params, rt = setup(method)
    m = get_method(method)(model, data, params.pretrain, rt, aug)
    assert PRETRAIN[method].supervised
    before = [p.detach().clone() for p in m.model.parameters()]
    logs = fit(m, params.pretrain, rt)
    assert len(logs) == 2 and all(np.isfinite(l.loss) for l in logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, m.model.parameters()))


def test_gloco_adaptive_temperature_and_global_positives():
    model, _, aug, data, params, rt = setup("gloco", gloco={"gamma": 0.2, "k": 3})
    m = get_method("gloco")(model, data, params.pretrain, rt, aug)
    # Eq. 13: tau_c = gamma + (1 - gamma) n_c / n_max
    want = [0.2 + 0.8 * c / 16 for c in COUNTS]
    assert m.class_tau.tolist() == pytest.approx(want)
    seen = []
    import ltcl.methods.gloco as sup
    orig = sup.sample_global_positive_indices

    def spy(anchors, labels, k, generator=None):
        out = orig(anchors, labels, k, generator=generator)
        seen.append((anchors.clone(), out.clone()))
        return out
    sup.sample_global_positive_indices = spy
    try:
        idx = torch.arange(0, 30, 3)
        out = m.training_step(idx)
    finally:
        sup.sample_global_positive_indices = orig
    assert out.images == 5 * len(idx) and np.isfinite(float(out.loss.detach()))
    anchors, glob = seen[0]
    assert glob.shape == (len(idx), 3)
    assert torch.equal(data.labels[glob], data.labels[anchors][:, None].expand(-1, 3))  # same class


def test_proco_coreset_per_class_and_two_prototype_sets():
    model, _, aug, data, params, rt = setup("gloco-proco", **{"gloco-proco": {"coreset": 0.25}})
    m = get_method("gloco-proco")(model, data, params.pretrain, rt, aug)
    m.on_epoch_start(0)
    got = np.bincount(data.labels[m.coreset].numpy(), minlength=4)
    assert got.tolist() == [4, 2, 1, 1]  # round(0.25 n_c), at least one per class
    assert m.prototypes.shape == (2, 4, 16) and bool(m.present.all())
    assert not torch.allclose(m.prototypes[0], m.prototypes[1])  # two augmented views of the coreset
    first = m.coreset.clone()
    m.on_epoch_start(1)
    assert torch.equal(first, m.coreset)  # chosen once


def test_supervised_methods_refuse_ood():
    with pytest.raises(ValueError, match="ood.strategy: none"):
        Params.model_validate({"pretrain": {"method": "gloco"}, "ood": {"strategy": "kdup"}})
    model, _, aug, data, params, rt = setup("gml")
    data = data.with_extra(torch.zeros(3, 8, 8, 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="labelled long-tailed split"):
        get_method("gml")(model, data, params.pretrain, rt, aug)


def test_distill_method_is_named_and_auto_is_refused():
    # distill.method names the subsection dvc.yaml lists (distill.${distill.method}): no "auto"
    assert Params.model_validate({}).distill.method == "kdup"
    with pytest.raises(ParamsError, match=r"distill.method: auto is gone; set distill.method: gml after "
                                          r"pretrain.method: gml, else kdup"):
        validate({"pretrain": {"method": "gml"}, "ood": {"strategy": "none"}, "distill": {"method": "auto"}})
    # the student of a GML teacher is GML's; an explicit kdup is refused with what to set
    with pytest.raises(ParamsError, match="distill.method: gml"):
        validate({"pretrain": {"method": "gml"}, "ood": {"strategy": "none"}, "distill": {"method": "kdup"}})
    validate({"pretrain": {"method": "gml"}, "ood": {"strategy": "none"}, "distill": {"method": "kdup", "enabled": False}})


def student(train_tau=False):
    model, spec, aug, data, params, rt = setup("gml", distill={"train_tau": train_tau})
    teacher, _ = new_encoder(params.model, data.x.numpy(), rt)
    return GMLStudent(model, data, params.distill, rt, aug, teacher=teacher), params, teacher


def test_gml_student_queues_follow_eq6_and_teacher_stays_frozen():
    m, params, teacher = student()
    assert m.queue.lengths.tolist() == gml_queue_lengths(torch.tensor(COUNTS), 40, 2).tolist()
    assert int(m.queue.lengths.sum()) == 40
    t_before = [p.detach().clone() for p in teacher.parameters()]
    logs = fit(m, params.distill, m.runtime)
    assert all(np.isfinite(l.loss) for l in logs) and "gml" in logs[-1].parts and "cls" in logs[-1].parts
    assert all(torch.equal(a, b) for a, b in zip(t_before, teacher.parameters()))
    feats, labels = m.queue.contents()
    assert len(feats) > 0 and feats.shape[1] == teacher.feature_dim
    # every filled slot of class c holds a teacher feature of an image of class c
    ids, _ = m.queue_ids.contents()
    assert torch.equal(m.data.labels[ids[:, 0].long()], labels)
    pred = m.predict(torch.randint(0, 256, (5, 8, 8, 1), dtype=torch.uint8))
    assert pred.shape == (5,) and set(pred.tolist()) <= set(range(4))


def test_gml_trainable_temperature_moves_and_excludes_own_sample():
    m, params, _ = student(train_tau=True)
    tau0 = m.tau
    fit(m, params.distill, m.runtime)
    assert m.tau != pytest.approx(tau0)
    labels = torch.tensor([0, 0, 1])
    yy = torch.tensor([0, 1])
    other = torch.tensor([[False, True, True], [True, True, False]])
    mask = GMLStudent.tau_mask(labels, yy, other)
    # query 0 keeps only the other class-0 slot; query 1's class has only its own slot: kept
    assert mask.tolist() == [[False, True, True], [True, True, True]]


def test_gml_pipeline_stages_report_classifier_accuracy(lt_project, tmp_path):
    """pretrain.method=gml trains the teacher (f), distill.method gml trains the GML student (g);
    both metrics files carry their classifier's Many/Med/Few/STD/All, the report marks the rows."""
    import json

    from conftest import copy_project

    # make-lt-dataset from the shared project; a 10-sample t-SNE (cluster stage): nothing below
    # depends on its size
    proj = copy_project(lt_project, tmp_path / "p", {"pretrain": {"method": "gml"}, "distill": {"method": "gml", "epochs": 2, "gml": {"k": 64}},
                                                     "cluster": {"tsne_samples": 10}})
    for script in ("ood_sampling.py", "pretrain.py", "distill.py"):
        proj.stage(script)
    pre = json.loads(proj.path("metrics/pretrain.json").read_text())
    dis = json.loads(proj.path("metrics/distill.json").read_text())
    assert pre["supervised"] and pre["method"] == "gml"
    assert dis["method"] == "gml" and dis["supervised"] and dis["tau_g"] == pytest.approx(0.1)
    from ltcl.data.splits import load_manifest, load_split

    groups = load_manifest(proj.path("data/lt"))["groups"]
    n_test = np.bincount(load_split(proj.path("data/lt"), "test")[1], minlength=len(groups))
    assert len(set(n_test)) == 1  # a class-balanced test split: All is the mean over the classes
    for m in (pre, dis):
        c = m["classifier"]
        assert set(c) == {"many", "medium", "few", "std", "all"}
        # (the classifier report is rounded to 4 decimals)
        assert c["std"] == pytest.approx(np.std([c["many"], c["medium"], c["few"]]), abs=3e-4)
        assert c["all"] == pytest.approx(sum(c[g] * groups.count(g) for g in ("many", "medium", "few")) / len(groups),
                                         abs=3e-4)
    proj.stage("linear_probe.py", "distill")
    proj.stage("cluster.py", "distill")
    proj.stage("linear_probe.py", "pretrain")
    proj.stage("cluster.py", "pretrain")
    proj.stage("report.py")
    md = proj.path("report/report.md").read_text()
    assert "supervised" in md.lower() and "classifier" in md.lower()


def test_classifier_report_scores_the_test_split_by_long_tailed_groups(lt_project):
    """A method's own classifier (GML teacher / student) is scored like the probe: on the test split,
    per Many/Medium/Few group of the long-tailed counts.  The stand-in classifier is right exactly on
    the Many classes, so the expected report is known without the code under test: Many 100, Medium
    and Few 0, All = the Many classes' share of the test images."""
    from ltcl.data.splits import load_manifest, load_split
    from ltcl.eval.classifier import classifier_report

    lt = lt_project.path("data/lt")
    manifest = load_manifest(lt)
    x_test, y_test = load_split(lt, "test")
    label_of = {img.tobytes(): int(c) for img, c in zip(x_test, y_test)}
    groups = np.asarray(manifest["groups"])
    many = set(np.flatnonzero(groups == "many").tolist())
    n_classes = len(manifest["class_names"])
    assert many and (groups != "many").any()

    class RightOnMany:
        def predict(self, x):  # a KeyError here: not the test split's images
            true = np.array([label_of[img.tobytes()] for img in x])
            return np.where(np.isin(true, list(many)), true, (true + 1) % n_classes)

    rep = classifier_report(RightOnMany(), lt, manifest, manifest["group_rule"])
    share = 100.0 * np.isin(y_test, list(many)).mean()
    assert rep["many"] == 100.0 and rep["medium"] == 0.0 and rep["few"] == 0.0
    assert rep["all"] == pytest.approx(round(share, 4))
    assert rep["std"] == pytest.approx(round(float(np.std([100.0, 0.0, 0.0])), 4))
