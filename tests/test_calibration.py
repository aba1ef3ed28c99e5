"""Temperature scaling, expected calibration error and reliability curves (cryspnet_gen.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from cryspnet_gen.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _overconfident(n: int = 6000, k: int = 6, sharpen: float = 3.0, seed: int = 0):
    """Labels drawn from calibrated probabilities; the classifier reports them sharpened (over-confident)."""
    rng = np.random.default_rng(seed)
    true_p = _softmax(rng.normal(scale=1.5, size=(n, k)))
    y = np.asarray([rng.choice(k, p=row) for row in true_p])
    return apply_temperature(true_p, 1.0 / sharpen), y


def test_temperature_scaling_lowers_ece_of_an_overconfident_classifier():
    p, y = _overconfident()
    before = expected_calibration_error(p, y)
    fit, held_y = p[:3000], y[:3000]
    t = fit_temperature(fit, held_y)
    assert t == pytest.approx(3.0, rel=0.15)  # recovers the sharpening
    after = expected_calibration_error(apply_temperature(p[3000:], t), y[3000:])
    assert before > 0.1
    assert after < 0.03 and after < before / 3


def test_temperature_keeps_the_order_of_classes_and_sums_to_one():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(9), size=200)
    p[:, 3] = 0.0  # an impossible class stays impossible
    p /= p.sum(axis=1, keepdims=True)
    for t in (0.3, 1.0, 4.0):
        q = apply_temperature(p, t)
        assert np.allclose(q.sum(axis=1), 1.0)
        assert (q[:, 3] == 0).all()
        assert (
            np.argsort(-q, axis=1, kind="stable")[:, :8] == np.argsort(-p, axis=1, kind="stable")[:, :8]
        ).all()
    with pytest.raises(ValueError):
        apply_temperature(p, 0.0)


def test_ece_and_reliability_curve_on_known_values():
    # confidence 0.9, right 9 times in 10: calibrated; confidence 0.9, always wrong: ECE 0.9
    p = np.tile([0.9, 0.1], (10, 1))
    y_good = np.array([0] * 9 + [1])
    assert expected_calibration_error(p, y_good) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(p, np.ones(10, dtype=int)) == pytest.approx(0.9)
    curve = reliability_curve([0.05, 0.95, 0.97], [False, True, False], bins=10)
    assert curve["count"] == [1.0, 2.0]
    assert curve["accuracy"] == [0.0, 0.5]
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0
