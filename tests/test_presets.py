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
def test_paper000_cifar100_preset_has_tases_cifar100_keys_and_table000_runs_on_it():
    from ltcl.compare.queue import presets

    p = merged_params(REPO / "configs" / "paper000_cifar100_lt.yaml")
    assert (p.data.source, p.data.split, p.pretrain.epochs, p.pretrain.batch_size) == ("cifar100", "community", 2000, 512)
    assert (p.pretrain.tase.warmup, p.pretrain.tase.full, p.pretrain.tase.clusters) == (300, 1000, 100)
    raw = deep_merge(read_yaml(REPO / "params.yaml"), read_yaml(REPO / "configs" / "paper000_cifar100_lt.yaml"))
    rows = dict(presets(raw, n_id=9754)["table000"])
    assert list(rows) == ["t000-simclr", "t000-sdclr", "t000-ts", "t000-gh", "t000-bcl", "t000-tase"]


def test_presets_exist():
    names = {p.name for p in PRESETS}
    for expected in ("kdup_cifar10_lt.yaml", "kdup_cifar100_lt.yaml", "kdup_imagenet100_lt.yaml",
                     "kdup_places_lt.yaml", "tase_cifar10_lt.yaml", "gloco_cifar10_lt.yaml",
                     "gml_cifar100_lt.yaml", "cpu_fashion_mnist_lt.yaml", "paper000_cifar100_lt.yaml"):
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
    """Each preset key exists in the schema on its own (not only after merging), a method's own
    subsection's keys included (``pretrain.gloco-proco.alpha``)."""
    def keys(model) -> dict:  # params.yaml name -> field
        return {f.alias or name: f for name, f in model.model_fields.items()}

    over = read_yaml(preset)
    fields = Params.model_fields
    for section, values in over.items():
        assert section in fields, f"{preset.name}: unknown section {section!r}"
        allowed = keys(fields[section].annotation)
        for key, value in values.items():
            assert key in allowed, f"{preset.name}: unknown key {section}.{key}"
            if isinstance(value, dict) and hasattr(allowed[key].annotation, "model_fields"):
                sub = keys(allowed[key].annotation)
                assert set(value) <= set(sub), f"{preset.name}: unknown keys {section}.{key}.{set(value) - set(sub)}"


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
    assert p.data.image_size == 32 and p.data.imbalance_ratio == 100
    assert (p.data.split, p.data.split_index) == ("community", 1)  # SDCLR's lists: 11,165 / 500 val / 1% S_b
    assert p.pretrain.domain_loss == "eq9"
    assert p.model.backbone == "resnet18"
    assert p.pretrain.method == "psd" and p.pretrain.pruned_branch is False
    assert p.pretrain.epochs == 2000
    assert p.pretrain.batch_size == 512
    assert p.pretrain.lr == pytest.approx(0.5)
    assert p.pretrain.temperature == pytest.approx(0.2)
    assert p.pretrain.psd.k_pos == 3
    assert p.pretrain.alpha == pytest.approx(0.3)
    assert p.ood.strategy == "kdup"
    assert p.ood.source == "npy" and p.ood.path
    assert p.ood.budget == 10_000
    assert p.ood.interval == 25
    assert p.ood.knn_k == 10
    assert p.ood.momentum == pytest.approx(0.9)
    assert p.ood.warmup_epochs == 100
    assert p.distill.enabled is True and p.distill.method == "kdup"
    assert p.distill.epochs == 500
    assert p.distill.kdup.k_kd == 5
    assert p.distill.kdup.beta == pytest.approx(0.4)
    assert set(p.probe.protocols) == {"full", "few_shot"}
    assert p.probe.epochs == 30 and p.probe.few_shot_epochs == 100


def test_kdup_large_presets_values():
    im = merged_params(REPO / "configs" / "kdup_imagenet100_lt.yaml")
    pl = merged_params(REPO / "configs" / "kdup_places_lt.yaml")
    for p in (im, pl):
        assert (p.data.source, p.data.split) == ("list", "community")
        assert p.data.image_size == 224 and p.data.group_rule == "thresholds"
        assert p.model.backbone == "resnet50"
        assert p.distill.epochs == 500
    assert (im.data.lists, pl.data.lists) == ("imagenet100-lt", "places-lt")
    assert (im.ood.source, im.ood.path) == ("list", "imagenet-r") and im.ood.root
    assert pl.ood.source == "folder" and pl.ood.path  # Places-Extra69: brought by the user
    assert (im.pretrain.epochs, im.ood.interval) == (1000, 50)
    assert (pl.pretrain.epochs, pl.ood.interval) == (500, 25)


# which rule builds each CIFAR preset's split (header of each file: the paper's words)
CIFAR_SPLITS = {"kdup_cifar10_lt.yaml": "community", "kdup_cifar100_lt.yaml": "community",
                "tase_cifar10_lt.yaml": "community",  # paper 000 Sec. 4.1 "Following SDCLR", 11,165 images
                "paper000_cifar100_lt.yaml": "community",  # paper 000 Sec. 4.1: 450 to 4 per class, 9,754 images
                "gloco_cifar10_lt.yaml": "generated", "gml_cifar100_lt.yaml": "generated"}  # Cui et al. 2019
GENERATOR_KEYS = ("profile", "val_per_class", "max_per_class", "pareto_min", "class_order", "few_shot_fraction")


@pytest.mark.parametrize("name", sorted(CIFAR_SPLITS))
def test_cifar_presets_split_rule(name):
    """Community presets take SDCLR's split 1 and set none of the generator's keys (the lists fix
    the images); generated ones keep Cui et al.'s rule: class 0 is the head, no val hold-out."""
    over = read_yaml(REPO / "configs" / name)["data"]
    p = merged_params(REPO / "configs" / name)
    assert p.data.split == CIFAR_SPLITS[name] and p.data.imbalance_ratio == 100
    if p.data.split == "community":
        assert over["split_index"] == 1
        assert not set(GENERATOR_KEYS) & set(over), set(GENERATOR_KEYS) & set(over)
    else:
        assert (p.data.class_order, p.data.val_per_class, p.data.profile) == ("given", 0, "exp")
    assert "split rule" in (REPO / "configs" / name).read_text().lower()


def test_no_preset_claims_not_comparable_for_a_community_split():
    for preset in PRESETS:
        over = read_yaml(preset)
        if over.get("data", {}).get("split") == "community":
            assert "not comparable" not in preset.read_text().lower(), preset.name


# --------------------------------------------------------------------------- ltcl preset run
def commands(preset: str, **kw) -> list[list[str]]:
    from ltcl.presets import run_commands_for

    return run_commands_for(REPO / "configs" / preset, params_file=REPO / "params.yaml", **kw)


def set_args(cmd: list[str]) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == "-S"]


def value_of(cmd: list[str], key: str) -> list[str]:
    return [a.split("=", 1)[1] for a in set_args(cmd) if a.split("=", 1)[0] == key]


def test_preset_run_community_seeds_take_each_split_once():
    cmds = commands("kdup_cifar10_lt.yaml", seeds=5, queue=True)
    assert len(cmds) == 5 and all(c[:4] == ["dvc", "exp", "run", "--queue"] for c in cmds)
    assert [c[c.index("-n") + 1] for c in cmds] == [f"kdup-cifar10-lt-s{k}" for k in range(1, 6)]
    assert sorted(v for c in cmds for v in value_of(c, "data.split_index")) == ["1", "2", "3", "4", "5"]
    for k, c in enumerate(cmds, 1):
        assert value_of(c, "data.split_index") == [str(k)]  # exactly once per command
        for key in ("pretrain.seed", "distill.seed", "probe.seed"):
            assert value_of(c, key) == [str(k - 1)]


def test_preset_run_more_seeds_than_community_splits_is_refused():
    from ltcl.errors import UserError

    with pytest.raises(UserError, match=r"SDCLR's 5 published CIFAR-LT splits.*--seeds 5 or fewer"):
        commands("kdup_cifar100_lt.yaml", seeds=6)


def test_preset_run_generated_split_varies_split_seed():
    cmds = commands("gml_cifar100_lt.yaml", seeds=3, name="gml")
    assert [c[c.index("-n") + 1] for c in cmds] == ["gml-s1", "gml-s2", "gml-s3"]
    assert [value_of(c, "data.split_seed") for c in cmds] == [["0"], ["1"], ["2"]]
    assert all(not value_of(c, "data.split_index") for c in cmds)
    assert "--queue" not in cmds[0]


def test_preset_run_user_overrides_last_and_lists_quoted():
    import shlex

    cmds = commands("kdup_cifar10_lt.yaml", user_args=["pretrain.pruned_branch=true", "augment.crop_scale=[0.2, 1.0]"])
    (cmd,) = cmds
    assert cmd[cmd.index("-n") + 1] == "kdup-cifar10-lt"  # no --seeds: one experiment, preset values as they are
    assert set_args(cmd)[-2:] == ["pretrain.pruned_branch=true", "augment.crop_scale=[0.2, 1.0]"]
    assert value_of(cmd, "pretrain.pruned_branch") == ["false", "true"]  # the preset's first, the user's wins
    assert "augment.crop_scale=[0.1, 1.0]" in cmd  # a list value is one argument...
    assert "'augment.crop_scale=[0.1, 1.0]'" in shlex.join(cmd)  # ...quoted when printed
    # DVC parses -S with Hydra's grammar: a string with parentheses must be quoted for it
    assert "report.title='KDUP on CIFAR-10-LT (paper 003 settings)'" in cmd


def test_preset_run_validates_user_overrides():
    from ltcl.params import ParamsError

    with pytest.raises(ParamsError, match="split_index"):
        commands("kdup_cifar10_lt.yaml", user_args=["data.split_index=9"])


def test_preset_run_cli_with_dvc_mocked(monkeypatch, capsys):
    import ltcl.cli

    ran: list[list[str]] = []
    monkeypatch.setattr(ltcl.cli, "run_commands", lambda cmds: ran.extend(cmds))
    monkeypatch.chdir(REPO)
    argv = ["preset", "run", "configs/tase_cifar10_lt.yaml", "--seeds", "2", "--queue", "--name", "tase",
            "-S", "pretrain.epochs=10"]
    assert ltcl.cli.main(argv) == 0
    assert [c[:6] for c in ran] == [["dvc", "exp", "run", "--queue", "-n", f"tase-s{k}"] for k in (1, 2)]
    assert all(c[-2:] == ["-S", "pretrain.epochs=10"] for c in ran)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 4 and [ln.startswith("# tase-s") for ln in out] == [True, False, True, False]  # what, then cmd
    ran.clear()
    assert ltcl.cli.main(argv + ["--dry-run"]) == 0 and ran == []
    assert ltcl.cli.main(["preset", "run", "configs/tase_cifar10_lt.yaml", "--seeds", "6"]) == 2
    assert "--seeds 5 or fewer" in capsys.readouterr().err
    assert ran == []


def _dry_run(capsys, preset: str, *sets: str) -> str:
    import ltcl.cli

    argv = ["preset", "run", f"configs/{preset}", "--dry-run"]
    for item in sets:
        argv += ["-S", item]
    assert ltcl.cli.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("# ") and lines[1].startswith("dvc exp run")
    return lines[0]


HEAD2 = "head model.proj_layers 2 = Linear-BN-ReLU-Linear-BN (models/utils.py proj_head"
HEAD3 = "head model.proj_layers 3 = Linear-BN-ReLU-Linear-BN-ReLU-Linear-BN (SDCLR's dual-BN proj_head"
COLT_ROW = ("ood.strategy=colt", "distill.enabled=false", "pretrain.domain_loss=colt")


def test_preset_dry_run_prints_each_rows_period_and_head(monkeypatch, capsys):
    """`ltcl preset run --dry-run` says, for TS, TASE, SDCLR and COLT rows, the period and the head
    the deviation table (docs/deviations.md) gives them: TS T = 400 of 2,000 epochs (TS's t_max 200),
    TASE no period, SDCLR's rows 3 Linears, SimCLR's / COLT's 2."""
    monkeypatch.chdir(REPO)
    ts = _dry_run(capsys, "ts_cifar10_lt.yaml")
    assert ts.startswith("# ts-cifar10-lt: TS; " + HEAD2) and "NOTE" not in ts
    assert ("TS period T = 400 epochs = pretrain.ts.period_fraction 0.2 x pretrain.epochs 2000 (TS's t_max = 200), "
            "tau 0.1 .. 1") in ts
    short = _dry_run(capsys, "ts_cifar10_lt.yaml", "pretrain.epochs=60")  # the period follows the run's length
    assert "T = 12 epochs = pretrain.ts.period_fraction 0.2 x pretrain.epochs 60 (TS's t_max = 6)" in short
    off = _dry_run(capsys, "ts_cifar10_lt.yaml", "pretrain.ts.period_fraction=0.1")
    assert "NOTE: TS's published runs use pretrain.ts.period_fraction 0.2 (this run: 0.1)" in off
    tase = _dry_run(capsys, "tase_cifar10_lt.yaml")
    assert tase.startswith("# tase-cifar10-lt: TASE; " + HEAD2)
    assert "TASE B 50 / F 10 / S 500 epochs" in tase and "no period" in tase and "NOTE" not in tase
    kdup = _dry_run(capsys, "kdup_cifar10_lt.yaml")
    assert kdup.startswith("# kdup-cifar10-lt: SimCLR + KDUP; " + HEAD2) and "NOTE" not in kdup
    sdclr_kdup = _dry_run(capsys, "kdup_cifar10_lt.yaml", "pretrain.pruned_branch=true", "model.proj_layers=3")
    assert sdclr_kdup.startswith("# kdup-cifar10-lt: SDCLR + KDUP; " + HEAD3) and "NOTE" not in sdclr_kdup
    assert "pruned branch prune_ratio 0.9" in sdclr_kdup
    forgot = _dry_run(capsys, "kdup_cifar10_lt.yaml", "pretrain.pruned_branch=true")
    assert HEAD2 in forgot and "NOTE: the authors' code runs this row with model.proj_layers 3" in forgot
    colt = _dry_run(capsys, "kdup_cifar10_lt.yaml", "pretrain.method=simclr", *COLT_ROW)
    assert colt.startswith("# kdup-cifar10-lt: SimCLR + COLT; " + HEAD2) and "pretrain.domain_loss colt" in colt
    assert "NOTE" not in colt
    sdclr_colt = _dry_run(capsys, "kdup_cifar10_lt.yaml", "pretrain.method=sdclr", "model.proj_layers=3", *COLT_ROW)
    assert sdclr_colt.startswith("# kdup-cifar10-lt: SDCLR + COLT; " + HEAD3) and "NOTE" not in sdclr_colt
    eq9 = _dry_run(capsys, "kdup_cifar10_lt.yaml", "pretrain.method=simclr", "ood.strategy=colt")
    assert "NOTE: COLT's released code computes L_DD as pretrain.domain_loss colt" in eq9


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
