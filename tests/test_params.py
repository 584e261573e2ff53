"""Bad parameters stop a stage with one clear message, a non-zero exit and no output."""

from __future__ import annotations

import pytest

from ltcl.params import ParamsError, load_params, validate


@pytest.mark.parametrize(
    "updates, needle",
    [
        ({"data": {"imbalance_ratio": 0.5}}, "data.imbalance_ratio"),
        ({"data": {"few_shot_fraction": 1.5}}, "data.few_shot_fraction"),
        ({"data": {"few_shot_fraction": 0.0}}, "data.few_shot_fraction"),
        ({"data": {"source": "imagenet"}}, "data.source"),
        ({"data": {"val_per_class": "ten"}}, "data.val_per_class"),
        ({"pretrain": {"epochs": 0}}, "pretrain.epochs"),
        ({"pretrain": {"method": "byol"}}, "unknown method 'byol'"),
        ({"pretrain": {"lr": -1}}, "pretrain.lr"),
        ({"probe": {"epochs": 0}}, "probe.epochs"),
        ({"data": {"imbalance_ratoi": 10}}, "data.imbalance_ratoi: unknown key"),
        ({"prob": {"epochs": 3}}, "prob: unknown key"),
    ],
)
def test_validation_names_the_key(updates, needle):
    with pytest.raises(ParamsError) as exc:
        validate(updates)
    assert needle in str(exc.value)


def test_unknown_key_lists_allowed():
    with pytest.raises(ParamsError, match="allowed here: .*imbalance_ratio"):
        validate({"data": {"ratio": 10}})


def test_duplicate_key(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("data:\n  source: digits\n  source: mnist\n")
    with pytest.raises(ParamsError, match="duplicate key 'source'"):
        load_params(f)


def test_repo_params_are_valid():
    from conftest import REPO

    load_params(REPO / "params.yaml")


@pytest.mark.parametrize("script", ["make_lt_dataset.py", "pretrain.py"])
def test_stage_refuses_bad_params(project, script):
    project.set_params({"data": {"imbalance_ratio": 0.5}})
    # make-lt-dataset (which does not import torch: ~1 s) in a fresh interpreter, so that one
    # case checks a real process's exit status and stderr; pretrain in this process
    proc = project.stage(script, check=False, in_process=script != "make_lt_dataset.py")
    assert proc.returncode == 2
    assert "data.imbalance_ratio" in proc.stderr and "Traceback" not in proc.stderr
    assert not project.path("data/lt").exists() and not project.path("data/models").exists()


def test_missing_data_names_paths(project, tmp_path):
    project.set_params({"data": {"source": "cifar10", "root": str(tmp_path / "nowhere")}})
    proc = project.stage("make_lt_dataset.py", check=False)
    assert proc.returncode == 2
    assert "nowhere" in proc.stderr and "download" in proc.stderr
    assert not project.path("data/lt").exists()
