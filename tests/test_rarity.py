"""The rarity penalty: the class-fixed-effects slope equals a direct least-squares fit with class
dummies (standard error written out) and the within-class (demeaned) fit, recovers a known beta,
refuses rows that cannot separate rarity from difficulty, and reaches `ltcl compare`'s output."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from ltcl.compare import rarity

PROFILE = np.array([500, 300, 180, 110, 65, 40, 24, 14, 9, 5])


def synthetic(beta: float, seeds: int = 5, classes: int = 10, noise: float = 1.5, seed: int = 0,
              permute: bool = True) -> list[pd.DataFrame]:
    """Per-class tables of `seeds` runs: class c has difficulty alpha_c and, in run s, the count
    the permutation of run s gives it; accuracy = alpha_c + beta ln n + noise."""
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(40, 80, classes)
    out = []
    for s in range(seeds):
        order = rng.permutation(classes) if permute else np.arange(classes)
        counts = np.empty(classes, int)
        counts[order] = PROFILE[:classes]
        acc = alpha + beta * np.log(counts) + rng.normal(0, noise, classes)
        out.append(pd.DataFrame({"class": np.arange(classes), "train_count": counts, "full": acc}))
    return out


def dummies_lstsq(points: pd.DataFrame) -> tuple[float, float]:
    """beta and its classical SE written out: X = [ln n, class dummies], b = (X'X)^-1 X'y,
    s^2 = |y - Xb|^2 / (N - p), SE = sqrt(s^2 [(X'X)^-1]_00)."""
    classes = np.sort(points["class"].unique())
    x = np.column_stack([np.log(points["count"].to_numpy(float)),
                         (points["class"].to_numpy()[:, None] == classes[None, :]).astype(float)])
    y = points["acc"].to_numpy(float)
    b, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ b
    s2 = resid @ resid / (len(y) - x.shape[1])
    return float(b[0]), float(math.sqrt(s2 * np.linalg.inv(x.T @ x)[0, 0]))


def within(points: pd.DataFrame) -> float:
    """The same slope from class-demeaned data (the within estimator)."""
    lx = np.log(points["count"].to_numpy(float))
    g = points["class"].to_numpy()
    dx = lx - pd.Series(lx).groupby(g).transform("mean").to_numpy()
    dy = points["acc"].to_numpy(float) - points.groupby("class")["acc"].transform("mean").to_numpy()
    return float(dx @ dy / (dx @ dx))


@pytest.mark.parametrize("beta", [0.0, 4.0, -2.5])
def test_estimate_equals_direct_least_squares_and_recovers_beta(beta):
    p = rarity.penalty(synthetic(beta), "full")
    ref_beta, ref_se = dummies_lstsq(p.points)
    assert p.beta == pytest.approx(ref_beta, abs=1e-9) and p.se == pytest.approx(ref_se, rel=1e-9)
    assert p.beta == pytest.approx(within(p.points), abs=1e-9)
    assert abs(p.beta - beta) < 3 * p.se  # the known slope, within the noise
    lo, hi = p.ci
    assert lo < p.beta < hi and hi - lo == pytest.approx(2 * 1.959963984540054 * p.se)
    assert p.per_halving == pytest.approx(p.beta * math.log(2))
    assert p.n_seeds == 5 and p.n_classes == 10 and p.n_obs == 50


def test_difficulty_does_not_leak_into_beta():
    """Hard classes made rare in every seed bias a pooled slope, not the fixed-effects one: with
    beta = 0 and the count order tied to difficulty in most seeds, pooling finds a slope."""
    tables = synthetic(0.0, seeds=6, noise=0.5, seed=3)
    for t in tables[:4]:  # the easiest classes get the largest counts in four of six runs
        easy_first = np.argsort(-(t["full"].to_numpy()))
        counts = np.empty(10, int)
        counts[easy_first] = PROFILE
        t["train_count"] = counts
    p = rarity.penalty(tables, "full")
    pooled = np.polyfit(np.log(p.points["count"]), p.points["acc"], 1)[0]
    assert abs(pooled) > 2.0 and abs(p.beta) < 3 * p.se + 0.5


@pytest.mark.parametrize("tables, orders, reason", [
    (synthetic(3.0, seeds=2), None, "needs at least 3"),
    (synthetic(3.0), ["given"] * 5, "not permuted"),
    (synthetic(3.0, permute=False), None, "no class changes its count"),
])
def test_rows_without_an_estimate_say_why(tables, orders, reason):
    p = rarity.penalty(tables, "full", orders)
    assert p.beta is None and reason in p.reason


def test_difference_to_the_baseline():
    a = rarity.Penalty(beta=2.0, se=0.5)
    b = rarity.Penalty(beta=5.0, se=1.0)
    diff, se, sig = rarity.difference(a, b)
    assert diff == -3.0 and se == pytest.approx(math.hypot(0.5, 1.0)) and sig
    assert rarity.difference(rarity.Penalty(beta=4.5, se=1.0), b)[2] is False
    assert rarity.difference(rarity.Penalty(reason="x"), b) is None


def write_run(root, method: str, seed: int, table: pd.DataFrame, **params):
    (root / "metrics/probe").mkdir(parents=True)
    p = {"pretrain": {"method": method, "seed": seed}, "data": {"split_seed": seed, **params},
         "distill": {"enabled": False}, "ood": {"strategy": "none"}}
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    acc = float(table["full"].mean())
    g = {"many": acc, "medium": acc, "few": acc, "std": 0.0, "all": acc}
    (root / "metrics/probe/pretrain.json").write_text(json.dumps({"full": g, "few_shot": g}))
    table.assign(few_shot=table["full"]).to_csv(root / "metrics/probe/pretrain_per_class.csv", index=False)


def test_compare_prints_and_plots_the_penalty(tmp_path, capsys):
    from ltcl.cli import main

    dirs = []
    for method, beta, seeds in (("simclr", 6.0, 5), ("sdclr", 1.0, 5), ("ts", 3.0, 2)):
        for s, t in enumerate(synthetic(beta, seeds=seeds, noise=0.5, seed=hash(method) % 1000)):
            d = tmp_path / f"{method}-s{s}"
            write_run(d, method, s, t)
            dirs.append(str(d))
    assert main(["compare", "--dirs", *dirs, "--out", str(tmp_path / "out"), "--reference", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Rarity penalty, linear probe" in text or "Rarity penalty" in text
    simclr = next(line for line in text.splitlines() if line.startswith("SimCLR ") and "beta" in line)
    sdclr = next(line for line in text.splitlines() if line.startswith("SDCLR ") and "beta" in line)
    assert "vs SimCLR" in sdclr and "*" in sdclr and "vs SimCLR" not in simclr
    assert any(line.startswith("TS ") and "needs at least 3" in line for line in text.splitlines())
    html = (tmp_path / "out/compare.html").read_text()
    assert "Rarity penalty" in html and "alt='rarity penalty" in html


def test_group_chart_axis_shows_a_two_point_difference():
    from ltcl.report.plots import accuracy_ylim

    lo, hi = accuracy_ylim([82.4, 84.4, 80.1, 83.0])
    assert 70 < lo < 80.1 and 84.4 < hi < 90  # not 0-100
    assert 2.0 / (hi - lo) > 0.2  # a 2-point gap spans a fifth of the axis
    assert accuracy_ylim([99.5, 100.0])[1] > 100.0  # room for the label of a bar at 100
    assert accuracy_ylim([]) == (0.0, 100.0)
