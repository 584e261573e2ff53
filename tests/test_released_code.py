"""TS's period as a fraction of the pre-training (pretrain.ts.period_fraction) and the keys it replaced."""

from __future__ import annotations

import pytest

from ltcl.moved_keys import upgrade_flat
from ltcl.params import ParamsError, validate


def test_the_period_in_epochs_is_refused_with_its_replacement():
    with pytest.raises(ParamsError) as exc:
        validate({"pretrain": {"ts": {"period": 400}}})
    assert "pretrain.ts.period (an epoch count) is now pretrain.ts.period_fraction" in str(exc.value)
    with pytest.raises(ParamsError) as exc:
        validate({"pretrain": {"ts_period": 400}})
    assert ("pretrain.ts_period is now pretrain.ts.period_fraction (T as a fraction of pretrain.epochs, not in "
            "epochs") in str(exc.value)


def test_older_runs_period_becomes_the_fraction_of_their_epochs():
    # a run of TS's protocol recorded before the fraction: T = 400 of 2,000 epochs
    old = {"pretrain.method": "ts", "pretrain.epochs": 2000, "pretrain.ts_period": 400}
    assert upgrade_flat(old) == {"pretrain.method": "ts", "pretrain.epochs": 2000, "pretrain.ts.period_fraction": 0.2}
    assert upgrade_flat({"pretrain.ts_period": 20})["pretrain.ts.period_fraction"] is None  # epochs unknown


def test_the_default_is_tss_five_oscillations_at_any_length():
    for epochs in (60, 2000):
        p = validate({"pretrain": {"method": "ts", "epochs": epochs}, "ood": {"strategy": "none"}}).pretrain
        assert p.epochs / (p.ts.period_fraction * p.epochs) == pytest.approx(5.0)  # TS: 2,000 / (2 x 200)
