"""Probability calibration: temperature scaling, expected calibration error and reliability curves.

A classifier is *calibrated* when, among the predictions it makes with top-1 confidence ``c``, a fraction ``c``
is right. Temperature scaling (Guo et al., ICML 2017) fits one number ``T`` on held-out rows and replaces the
probabilities ``p`` by ``p ** (1 / T)``, renormalised: ``T > 1`` softens an over-confident model, ``T < 1``
sharpens an under-confident one, and the order of the classes of one model is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_BINS",
    "apply_temperature",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_curve",
]

#: Bins of the expected calibration error (equal-width bins of the top-1 confidence).
DEFAULT_BINS = 15

_TINY = 1e-12


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    """``p ** (1 / T)`` renormalised over the last axis (rows summing to 0 stay 0).

    Parameters
    ----------
    p
        Probabilities ``(..., k)``.
    temperature
        ``T > 0``; 1 returns ``p`` unchanged.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p = np.asarray(p, dtype=np.float64)
    if temperature == 1.0 or p.shape[-1] == 0:
        return p
    logp = np.log(np.maximum(p, _TINY)) / temperature
    logp -= logp.max(axis=-1, keepdims=True)
    out = np.exp(logp) * (p > 0)
    total = out.sum(axis=-1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)


def _nll(p: np.ndarray, y: np.ndarray, temperature: float) -> float:
    q = apply_temperature(p, temperature)
    return float(-np.log(np.maximum(q[np.arange(len(y)), y], _TINY)).mean())


def fit_temperature(
    p: np.ndarray, y: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0), tol: float = 1e-4
) -> float:
    """The temperature minimising the negative log-likelihood of ``y`` under ``p ** (1 / T)``.

    The likelihood is unimodal in ``log T``; a golden-section search over ``bounds`` finds its minimum.

    Parameters
    ----------
    p
        Held-out probabilities ``(n, k)``.
    y
        True class indices ``(n,)`` (rows with ``y < 0`` are ignored).
    bounds
        Search interval of ``T``.
    tol
        Tolerance on ``log T``.

    Returns
    -------
    float
        The fitted temperature (1.0 when there are no rows).
    """
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    keep = y >= 0
    p, y = p[keep], y[keep]
    if not len(y):
        return 1.0
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    golden = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = _nll(p, y, float(np.exp(a))), _nll(p, y, float(np.exp(b)))
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = _nll(p, y, float(np.exp(a)))
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = _nll(p, y, float(np.exp(b)))
    return float(np.exp((lo + hi) / 2.0))


def reliability_curve(
    confidence: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    *,
    bins: int = DEFAULT_BINS,
) -> dict[str, list[float]]:
    """Per equal-width confidence bin: mean confidence, accuracy and row count (empty bins left out).

    Parameters
    ----------
    confidence
        Top-1 confidence of each prediction, in [0, 1].
    correct
        Whether each top-1 prediction was right.
    bins
        Number of bins over [0, 1].
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    which = np.clip((conf * bins).astype(np.int64), 0, bins - 1)
    out: dict[str, list[float]] = {"confidence": [], "accuracy": [], "count": []}
    for b in range(bins):
        rows = which == b
        if rows.any():
            out["confidence"].append(float(conf[rows].mean()))
            out["accuracy"].append(float(ok[rows].mean()))
            out["count"].append(float(rows.sum()))
    return out


def expected_calibration_error(p: np.ndarray, y: np.ndarray, *, bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error of the top-1 prediction: ``sum_b n_b / n * |accuracy_b - confidence_b|``.

    Parameters
    ----------
    p
        Probabilities ``(n, k)``.
    y
        True class indices ``(n,)``; a row whose class is not among the columns (``y < 0``) counts as wrong.
    bins
        Equal-width bins of the top-1 confidence.
    """
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if not len(y):
        return float("nan")
    top = p.argmax(axis=1)
    curve = reliability_curve(p.max(axis=1), top == y, bins=bins)
    n = float(len(y))
    return float(
        sum(
            c / n * abs(a - m)
            for c, a, m in zip(curve["count"], curve["accuracy"], curve["confidence"], strict=True)
        )
    )
