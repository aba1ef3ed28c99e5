"""Metrics and baselines on plain arrays, shared by the evaluation report and the benchmarks.

Baselines follow the CRYSPNet paper's Tables 2 and 3: *random* guesses classes with the training set's empirical
frequencies (its expected top-k accuracy is computed exactly for k=1 and by a seeded Monte-Carlo draw without
replacement for k>1), *mode* always ranks the classes by training frequency.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def topk_accuracy(proba: np.ndarray, y: np.ndarray, k: int) -> float:
    """Fraction of rows whose true class index ``y`` is among the ``k`` largest entries of ``proba``.

    Rows with ``y < 0`` (true class outside the model's classes) count as misses. Ties are broken by index.
    """
    proba = np.asarray(proba)
    y = np.asarray(y)
    if len(y) == 0:
        return float("nan")
    k = min(k, proba.shape[1])
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    hit = (top == y[:, None]).any(axis=1) & (y >= 0)
    return float(hit.mean())


def class_frequencies(labels: Sequence[object], classes: Sequence[object]) -> np.ndarray:
    """Empirical frequency of each class (in ``classes`` order) among ``labels``."""
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros(len(classes))
    for label in labels:
        if label in index:
            counts[index[label]] += 1
    total = counts.sum()
    return counts / total if total else counts


def mode_topk(train_freq: np.ndarray, y: np.ndarray, k: int) -> float:
    """Accuracy of always predicting the ``k`` most frequent training classes."""
    if len(y) == 0:
        return float("nan")
    top = np.argsort(-train_freq, kind="stable")[:k]
    return float(np.isin(y, top).mean())


def random_topk(train_freq: np.ndarray, y: np.ndarray, k: int, *, draws: int = 200, seed: int = 0) -> float:
    """Expected accuracy of guessing ``k`` distinct classes drawn with the training frequencies."""
    y = np.asarray(y)
    if len(y) == 0:
        return float("nan")
    p = np.asarray(train_freq, dtype=float)
    if k == 1:
        return float(np.mean(np.where(y >= 0, p[np.clip(y, 0, None)], 0.0)))
    k = min(k, int((p > 0).sum()))
    rng = np.random.default_rng(seed)
    # Gumbel top-k draws sample k classes without replacement proportionally to p
    logp = np.log(np.where(p > 0, p, 1e-300))
    hits = 0.0
    for _ in range(draws):
        keys = logp + rng.gumbel(size=len(p))
        top = np.argsort(-keys)[:k]
        hits += np.isin(y, top).mean()
    return float(hits / draws)


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination (NaN for fewer than two rows or constant targets)."""
    y = np.asarray(y, dtype=float)
    pred = np.asarray(pred, dtype=float)
    if len(y) < 2:
        return float("nan")
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot == 0:
        return float("nan")
    return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot


def log_mse(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean squared error of the logarithms (the paper's regression loss)."""
    y = np.asarray(y, dtype=float)
    pred = np.asarray(pred, dtype=float)
    if len(y) == 0:
        return float("nan")
    return float(np.mean((np.log(pred) - np.log(y)) ** 2))


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` for class indices in ``range(n_classes)``."""
    out = np.zeros((n_classes, n_classes), dtype=int)
    ok = (np.asarray(y) >= 0) & (np.asarray(pred) >= 0)
    np.add.at(out, (np.asarray(y)[ok], np.asarray(pred)[ok]), 1)
    return out
