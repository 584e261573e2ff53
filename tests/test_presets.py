"""Paper presets (configs/*.yaml) and published numbers (reference/*.csv) stay valid.

Every preset is merged over params.yaml key by key (as ``ltcl.presets`` does) and must pass the
params schema; paper 003's CIFAR-10-LT preset must hold the values the paper states (Sec. 4.1);
every reference CSV must have the agreed columns and numeric cells in [0, 100].
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ltcl.params import Params, ParamsError, read_yaml, validate

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "configs").glob("*.yaml"))
REFERENCE = sorted((REPO / "reference").glob("*.csv"))

COLUMNS = ["paper", "table", "dataset", "imbalance_ratio", "protocol", "method", "many", "medium", "few", "std",
           "all", "knn1", "knn10", "source_note"]
ACCURACY_COLUMNS = ["many", "medium", "few", "std", "all", "knn1", "knn10"]
DATASETS = {"cifar10", "cifar100", "imagenet100", "places", "imagenet_lt", "inaturalist"}
PROTOCOLS = {"full", "few_shot", "ms", "lt", "one_percent", "knn1", "knn10", "classifier"}


def deep_merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` applied key by key (nested mappings merged, anything else replaced)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def merged_params(preset: Path) -> Params:
    raw = deep_merge(read_yaml(REPO / "params.yaml"), read_yaml(preset))
    return validate(raw, path=preset)


# --------------------------------------------------------------------------- presets
def test_presets_exist():
    names = {p.name for p in PRESETS}
    for expected in ("kdup_cifar10_lt.yaml", "kdup_cifar100_lt.yaml", "kdup_imagenet100_lt.yaml",
                     "kdup_places_lt.yaml", "tase_cifar10_lt.yaml", "gloco_cifar10_lt.yaml",
                     "gml_cifar100_lt.yaml", "cpu_fashion_mnist_lt.yaml"):
        assert expected in names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_validates_over_params_yaml(preset):
    over = read_yaml(preset)  # also refuses duplicate keys
    assert over, f"{preset.name} is empty"
    try:
        merged_params(preset)
    except ParamsError as exc:  # pragma: no cover - the message is the useful part
        pytest.fail(str(exc))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_only_uses_schema_keys(preset):
    """Each preset key exists in the schema on its own (not only after merging)."""
    over = read_yaml(preset)
    fields = Params.model_fields
    for section, values in over.items():
        assert section in fields, f"{preset.name}: unknown section {section!r}"
        allowed = fields[section].annotation.model_fields
        for key in values:
            assert key in allowed, f"{preset.name}: unknown key {section}.{key}"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_has_header_comment(preset):
    first = preset.read_text().lstrip().splitlines()[0]
    assert first.startswith("#"), f"{preset.name} must start with a header comment"


def test_merge_replaces_lists_and_keeps_unset_keys():
    base = {"augment": {"crop_scale": [0.5, 1.0], "flip": False}, "probe": {"lr": 1.0}}
    out = deep_merge(base, {"augment": {"crop_scale": [0.1, 1.0]}})
    assert out == {"augment": {"crop_scale": [0.1, 1.0], "flip": False}, "probe": {"lr": 1.0}}
    assert base["augment"]["crop_scale"] == [0.5, 1.0]


def test_kdup_cifar10_lt_values():
    """Paper 003 Sec. 4.1 (and COLT's schedule) on CIFAR-10-LT."""
    p = merged_params(REPO / "configs" / "kdup_cifar10_lt.yaml")
    assert p.data.source == "cifar10" and p.data.download is True
    assert p.data.image_size == 32 and p.data.profile == "exp"
    assert p.data.imbalance_ratio == 100
    assert (p.data.val_per_class, p.data.max_per_class) == (500, 4500)
    assert p.data.few_shot_fraction == pytest.approx(0.01)
    assert p.model.backbone == "resnet18"
    assert p.pretrain.method == "psd" and p.pretrain.sdclr is False
    assert p.pretrain.epochs == 2000
    assert p.pretrain.batch_size == 512
    assert p.pretrain.lr == pytest.approx(0.5)
    assert p.pretrain.temperature == pytest.approx(0.2)
    assert p.pretrain.k_pos == 3
    assert p.pretrain.alpha == pytest.approx(0.3)
    assert p.ood.strategy == "kdup"
    assert p.ood.source == "npy" and p.ood.path
    assert p.ood.budget == 10_000
    assert p.ood.interval == 25
    assert p.ood.knn_k == 10
    assert p.ood.momentum == pytest.approx(0.9)
    assert p.ood.warmup_epochs == 100
    assert p.distill.enabled is True and p.distill_method == "kdup"
    assert p.distill.epochs == 500
    assert p.distill.k_kd == 5
    assert p.distill.beta == pytest.approx(0.4)
    assert set(p.probe.protocols) == {"full", "few_shot"}
    assert p.probe.epochs == 30 and p.probe.few_shot_epochs == 100


def test_kdup_large_presets_values():
    im = merged_params(REPO / "configs" / "kdup_imagenet100_lt.yaml")
    pl = merged_params(REPO / "configs" / "kdup_places_lt.yaml")
    for p in (im, pl):
        assert p.data.source == "folder" and p.data.profile == "pareto"
        assert p.model.backbone == "resnet50"
        assert p.distill.epochs == 500
        assert p.ood.source == "folder" and p.ood.path
    assert (im.pretrain.epochs, im.ood.interval, im.data.max_per_class) == (1000, 50, 1280)
    assert (pl.pretrain.epochs, pl.ood.interval, pl.data.max_per_class) == (500, 25, 4980)


def test_cpu_preset_matches_the_study():
    """cpu_fashion_mnist_lt.yaml carries scripts/fmnist_lt_study.py's COMMON settings."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fmnist_lt_study", REPO / "scripts" / "fmnist_lt_study.py")
    if spec is None or not (REPO / "scripts" / "fmnist_lt_study.py").exists():
        pytest.skip("scripts/fmnist_lt_study.py not present")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    over = read_yaml(REPO / "configs" / "cpu_fashion_mnist_lt.yaml")
    for section, values in mod.COMMON.items():
        for key, v in values.items():
            assert over[section][key] == v, f"{section}.{key}: preset {over[section].get(key)!r} != study {v!r}"


# --------------------------------------------------------------------------- reference numbers
def test_reference_files_exist():
    names = {p.name for p in REFERENCE}
    for expected in ("paper003_table1.csv", "paper003_table2.csv", "paper003_table3.csv",
                     "paper000_table1.csv", "paper001_table3.csv", "paper002_table1.csv",
                     "paper002_table3.csv"):
        assert expected in names


@pytest.mark.parametrize("csv_path", REFERENCE, ids=lambda p: p.name)
def test_reference_csv(csv_path):
    import pandas as pd

    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    assert list(df.columns) == COLUMNS
    assert len(df) > 0
    stem = csv_path.stem  # paper003_table2
    paper, table = stem.removeprefix("paper").split("_table")
    assert set(df["paper"]) == {paper}
    assert set(df["table"]) == {table}
    assert set(df["dataset"]) <= DATASETS, set(df["dataset"]) - DATASETS
    assert set(df["protocol"]) <= PROTOCOLS, set(df["protocol"]) - PROTOCOLS
    assert (df["method"].str.strip() != "").all()
    for col in ACCURACY_COLUMNS:
        cells = df[col].str.strip()
        filled = cells[cells != ""]
        values = pd.to_numeric(filled, errors="coerce")
        bad = filled[values.isna()]
        assert bad.empty, f"{col}: not numbers: {bad.tolist()}"
        assert ((values >= 0) & (values <= 100)).all(), f"{col}: outside [0, 100]: {values.tolist()}"
    ratio = df["imbalance_ratio"].str.strip()
    ratio = pd.to_numeric(ratio[ratio != ""], errors="raise")
    assert (ratio >= 1).all()
    # every row carries at least one number
    has_number = (df[ACCURACY_COLUMNS].apply(lambda c: c.str.strip() != "")).any(axis=1)
    assert has_number.all(), df[~has_number]


def test_reference_parses_with_default_pandas():
    """The way ltcl.compare.reference reads them: default dtypes, numeric columns float or empty."""
    import pandas as pd

    for csv_path in REFERENCE:
        df = pd.read_csv(csv_path)
        for col in ACCURACY_COLUMNS + ["imbalance_ratio"]:
            assert pd.api.types.is_numeric_dtype(df[col]), f"{csv_path.name}: {col} is {df[col].dtype}"


def test_kdup_table2_headline_numbers():
    import pandas as pd

    df = pd.read_csv(REPO / "reference" / "paper003_table2.csv", dtype=str)
    row = df[(df["dataset"] == "cifar10") & (df["method"] == "SimCLR + KDUP")].iloc[0]
    assert (row["many"], row["medium"], row["few"], row["std"], row["all"]) == ("93.80", "89.17", "87.36", "2.71", "90.26")
    assert row["protocol"] == "full" and row["imbalance_ratio"] == "100"


def test_presets_yaml_is_plain_mapping():
    for preset in PRESETS:
        data = yaml.safe_load(preset.read_text())
        assert isinstance(data, dict)
        assert all(isinstance(v, dict) for v in data.values()), preset.name
