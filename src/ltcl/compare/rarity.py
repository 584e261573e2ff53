"""The rarity penalty: what being rare costs a class of the same difficulty, from permuted seeds.

Many/Medium/Few group accuracies mix two things: which classes are rare (the seed decides) and how
hard those classes are (classes differ far more in difficulty than rarity moves them). With class
orders permuted across seeds, each class is seen at several training counts, so a regression of
per-class test accuracy on log(count) with one intercept per class (class fixed effects)

    a_{c,s} = alpha_c + beta * ln n_{c,s} + e_{c,s}

separates them: ``beta`` is the accuracy (percentage points) a class gains per e-fold more
training images, ``beta ln 2`` per doubling, with its difficulty ``alpha_c`` held fixed. A method
helps the tail when it lowers beta. The fit is ordinary least squares with class dummies
(statsmodels), its standard error the classical one (residual variance with N - C - 1 degrees of
freedom); the difference of two rows' betas has SE sqrt(SE1^2 + SE2^2) (independent runs) and is
marked significant when it lies outside 1.96 of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MIN_SEEDS = 3
Z95 = 1.959963984540054


@dataclass
class Penalty:
    """The rarity penalty of one row (``beta`` is None with a ``reason`` when it has no estimate)."""

    beta: float | None = None
    se: float | None = None
    n_obs: int = 0
    n_classes: int = 0
    n_seeds: int = 0
    reason: str = ""
    points: pd.DataFrame = field(default_factory=pd.DataFrame)  # class, seed, count, acc (for the plot)
    intercepts: np.ndarray | None = None

    @property
    def ci(self) -> tuple[float, float] | None:
        return None if self.beta is None else (self.beta - Z95 * self.se, self.beta + Z95 * self.se)

    @property
    def per_halving(self) -> float | None:
        """Accuracy points lost per halving of a class's images (beta ln 2)."""
        return None if self.beta is None else self.beta * math.log(2)


def fit(points: pd.DataFrame) -> tuple[float, float, np.ndarray]:
    """(beta, its SE, the class intercepts) of ``acc ~ C(class) + ln(count)`` (OLS, statsmodels)."""
    import statsmodels.api as sm

    classes = np.sort(points["class"].unique())
    dummies = (points["class"].to_numpy()[:, None] == classes[None, :]).astype(float)
    design = np.column_stack([np.log(points["count"].to_numpy(dtype=float)), dummies])
    res = sm.OLS(points["acc"].to_numpy(dtype=float), design).fit()
    return float(res.params[0]), float(res.bse[0]), np.asarray(res.params[1:])


def penalty(tables: list[pd.DataFrame], protocol: str, class_orders: list | None = None) -> Penalty:
    """The rarity penalty over seeds: ``tables`` are the per-class CSVs of one row's runs (columns
    ``class``, ``train_count``, ``<protocol>``); ``class_orders`` the runs' ``data.class_order``."""
    rows = []
    for seed, t in enumerate(tables):
        if protocol not in t.columns:
            continue
        ok = t[protocol].notna() & (t["train_count"] > 0)
        rows.append(pd.DataFrame({"class": t.loc[ok, "class"].to_numpy(), "seed": seed,
                                  "count": t.loc[ok, "train_count"].to_numpy(), "acc": t.loc[ok, protocol].to_numpy()}))
    pts = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["class", "seed", "count", "acc"])
    out = Penalty(n_obs=len(pts), n_classes=int(pts["class"].nunique()) if len(pts) else 0, n_seeds=len(rows),
                  points=pts)
    if len(rows) < MIN_SEEDS:
        out.reason = f"{len(rows)} seed(s): needs at least {MIN_SEEDS} runs with permuted class orders"
        return out
    if class_orders and any(str(o) == "given" for o in class_orders):
        out.reason = "class order not permuted (data.class_order: given): every seed gives each class its count"
        return out
    varying = pts.groupby("class")["count"].nunique()
    if (varying <= 1).all():
        out.reason = "no class changes its count across seeds: rarity and difficulty cannot be separated"
        return out
    if len(pts) <= out.n_classes + 1:
        out.reason = "too few observations for the class intercepts and the slope"
        return out
    out.beta, out.se, out.intercepts = fit(pts)
    return out


def difference(a: Penalty, base: Penalty) -> tuple[float, float, bool] | None:
    """(beta_a - beta_base, its SE, significant at 95%) or None when either has no estimate."""
    if a.beta is None or base.beta is None:
        return None
    diff, se = a.beta - base.beta, math.hypot(a.se, base.se)
    return diff, se, abs(diff) > Z95 * se


def row_name(line, shared_label: bool = False) -> str:
    """A table line's name; with ``shared_label`` (another line has the same label) the params
    that set it apart are added."""
    extra = ", ".join(f"{k}={v}" for k, v in sorted(line.params.items())) if shared_label else ""
    return line.label + (f" [{extra}]" if extra else "")


def line_penalties(lines, protocol: str) -> dict[str, Penalty]:
    """The rarity penalty of every line of a comparison table (its runs' per-class CSVs)."""
    from collections import Counter

    from ltcl.compare.experiments import per_class_table

    labels = Counter(line.label for line in lines)
    out = {}
    for line in lines:
        tables = [per_class_table(r.experiment, r.encoder) for r in line.runs]
        missing = sum(t is None for t in tables)
        p = penalty([t for t in tables if t is not None], protocol,
                    [r.experiment.params.get("data.class_order", "permuted") for r in line.runs])
        if missing and p.beta is None:
            p.reason += f" ({missing} run(s) without a per-class CSV)"
        out[row_name(line, labels[line.label] > 1)] = p
    return out


def baseline_label(labels: list[str], named: str | None = None) -> str | None:
    """The row differences are taken to: ``named``, else plain SimCLR if present."""
    if named:
        return named if named in labels else None
    return next((label for label in labels if label == "SimCLR" or label.startswith("SimCLR [")), None)


def table_rows(penalties: dict[str, Penalty], base: str | None) -> list[dict]:
    """One dict per row: label, seeds, beta, SE, CI, per halving, difference to the baseline."""
    out = []
    for label, p in penalties.items():
        r = {"label": label, "seeds": p.n_seeds, "beta": p.beta, "se": p.se, "ci": p.ci,
             "per_halving": p.per_halving, "reason": p.reason}
        if base and label != base:
            r["diff"] = difference(p, penalties[base])
        out.append(r)
    return out


def _f(v, digits=2) -> str:
    return "-" if v is None else f"{v:+.{digits}f}"


def text_rows(rows: list[dict], base: str | None) -> list[str]:
    lines = []
    for r in rows:
        if r["beta"] is None:
            lines.append(f"{r['label']:<36} {r['seeds']:>2}  no estimate: {r['reason']}")
            continue
        lo, hi = r["ci"]
        s = (f"{r['label']:<36} {r['seeds']:>2}  beta {r['beta']:+.2f} +- {r['se']:.2f} [{lo:+.2f}, {hi:+.2f}]"
             f"  per halving {r['per_halving']:+.2f}")
        d = r.get("diff")
        if d is not None:
            s += f"  vs {base}: {d[0]:+.2f} +- {d[1]:.2f}" + (" *" if d[2] else " (n.s.)")
        lines.append(s)
    return lines


def text_block(title: str, rows: list[dict], base: str | None) -> str:
    head = (f"Rarity penalty, {title}: beta = accuracy points per e-fold more training images\n"
            "(class fixed effects: a_cs = alpha_c + beta ln n_cs); 95% CI; per halving = beta ln 2")
    foot = (f"* differs from {base} at 95% (SE of the difference sqrt(SE1^2 + SE2^2)); (n.s.) not significant.\n"
            "A method helps the tail when it lowers beta." if base else "no SimCLR row: no differences shown")
    return "\n".join([head, *text_rows(rows, base), foot])


def plot_png(penalties: dict[str, Penalty], title: str) -> str:
    """Per-class accuracy against training count (log axis): one colour per row, seeds as points,
    the fitted common slope (beta, mean class intercept) as a line. A data URI."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, p) in enumerate(penalties.items()):
        if p.points.empty:
            continue
        c = colours[i % len(colours)]
        ax.scatter(p.points["count"], p.points["acc"], s=12, alpha=0.45, color=c)
        name = label if p.beta is None else f"{label} (beta {p.beta:+.2f})"
        if p.beta is not None:
            n = np.geomspace(p.points["count"].min(), p.points["count"].max(), 50)
            ax.plot(n, float(np.mean(p.intercepts)) + p.beta * np.log(n), color=c, lw=2, label=name)
        else:
            ax.scatter([], [], color=c, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_title(f"{title}\nper-class accuracy vs count (points: classes x seeds; lines: fitted slope)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")  # the legend beside the axes stays in the image
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
