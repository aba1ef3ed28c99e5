"""Permutation feature importance of any bundle, per output (the CRYSPNet paper's Fig. 5).

The importance of a feature (or of a family of features, permuted together) is how much a score drops when its
column is shuffled across the rows, breaking its link with the target while keeping its distribution
(Breiman 2001; model-agnostic, so it treats networks, boosters and stacks alike). The score is the mean
log-likelihood of the true class (nats per compound) for the classifiers and the negative mean squared error
of log volume for the volume model: both are smooth, so a 1,000-row sample resolves small effects that top-1
accuracy would hide in its granularity. Each column is shuffled ``n_repeats`` times with a seeded generator; the
spread over repeats is reported with the mean.

:func:`permutation_importance` is the generic routine (a score function and a matrix);
:func:`model_importance` applies it to a :class:`~cryspnet_gen.predict.Predictor` on labelled rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cryspnet_gen.explain.families import (
    family_groups,
    feature_family,
    require_feature_classifiers,
    short_label,
)
from cryspnet_gen.symmetry import BRAVAIS_LATTICES

__all__ = ["ImportanceReport", "model_importance", "permutation_importance"]

logger = logging.getLogger(__name__)

# Rows scored in one call: many shuffled copies of a small sample go through the model together.
_BATCH_ROWS = 65536
_EPS = 1e-12


def permutation_importance(
    score: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    *,
    groups: Mapping[str, Sequence[int]],
    n_repeats: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """Drop of a score when each group of columns is shuffled.

    Parameters
    ----------
    score
        Per-row score (higher is better), ``(n,) -> (n,)`` for a feature matrix of ``n`` rows; it is called on
        stacks of shuffled copies, so it must treat rows independently.
    X
        The rows (``n, d``).
    groups
        Name -> column indices shuffled together (one column per name for single-feature importance). The same
        row permutation is applied to every column of a group.
    n_repeats
        Shuffles per group.
    seed
        Seed of the shuffles.

    Returns
    -------
    pandas.DataFrame
        Indexed by group name, columns ``importance`` (mean drop of the mean score), ``std`` (spread over
        repeats), sorted by ``importance``, largest first. Columns that do not vary over the rows get exactly 0
        without being scored.
    """
    X = np.asarray(X)
    if X.ndim != 2 or not len(X):
        raise ValueError(f"permutation importance needs a non-empty 2-D matrix, got shape {X.shape}")
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    n = len(X)
    base = float(np.mean(score(X)))
    rng = np.random.default_rng(seed)
    varying = {
        name: [int(c) for c in cols]
        for name, cols in groups.items()
        if np.ptp(np.nan_to_num(X[:, list(cols)]), axis=0).max(initial=0.0) > 0
    }
    jobs = [(name, r) for name in varying for r in range(n_repeats)]
    # Draw every permutation up front, in job order, so the result does not depend on the batching.
    perms = [rng.permutation(n) for _ in jobs]
    drops: dict[str, list[float]] = {name: [] for name in varying}
    per_batch = max(1, _BATCH_ROWS // n)
    for start in range(0, len(jobs), per_batch):
        chunk = jobs[start : start + per_batch]
        stack = np.repeat(X[None], len(chunk), axis=0)
        for k, (name, _) in enumerate(chunk):
            cols = varying[name]
            stack[k][:, cols] = X[perms[start + k]][:, cols]
        scores = np.asarray(score(stack.reshape(-1, X.shape[1]))).reshape(len(chunk), n).mean(axis=1)
        for (name, _), s in zip(chunk, scores, strict=True):
            drops[name].append(base - float(s))
    rows = {
        name: (float(np.mean(drops[name])) if name in drops else 0.0, float(np.std(drops.get(name, [0.0]))))
        for name in groups
    }
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["importance", "std"])
    out.index.name = "feature"
    return out.sort_values("importance", ascending=False, kind="stable")


def _log_likelihood(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.log(np.clip(proba[np.arange(len(y)), y], _EPS, 1.0))


@dataclass
class ImportanceReport:
    """Permutation importance of one bundle, per output, per feature and per family."""

    features: dict[str, pd.DataFrame]
    """output -> per-feature table (``importance``, ``std``, ``family``, ``label``)"""
    families: dict[str, pd.DataFrame]
    """output -> per-family table (``importance``, ``std``)"""
    rows: dict[str, int]
    """output -> rows scored"""
    baseline: dict[str, float]
    """output -> score before shuffling (mean log-likelihood; negative MSE of log volume)"""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        """JSON-serialisable summary: the ``top`` features and every family, per output."""
        out: dict[str, Any] = {"settings": self.settings, "outputs": {}}
        for output, table in self.features.items():
            out["outputs"][output] = {
                "rows": self.rows[output],
                "baseline": self.baseline[output],
                "features": [
                    {"feature": name, **{k: _plain(v) for k, v in row.items()}}
                    for name, row in table.head(top).iterrows()
                ],
                "families": [
                    {"family": name, **{k: _plain(v) for k, v in row.items()}}
                    for name, row in self.families[output].iterrows()
                ],
            }
        return out


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, (np.floating, float)) else value


def model_importance(
    predictor: Any,
    X: np.ndarray,
    bravais: Sequence[str],
    space_group: Sequence[int],
    volume_per_atom: Sequence[float] | None = None,
    *,
    n_rows: int = 1000,
    n_repeats: int = 3,
    seed: int = 0,
    outputs: Sequence[str] = ("bravais", "space_group", "volume"),
) -> ImportanceReport:
    """Permutation importance of a bundle's Bravais model, its space-group models and its volume model.

    Parameters
    ----------
    predictor
        A :class:`~cryspnet_gen.predict.Predictor`.
    X, bravais, space_group, volume_per_atom
        Labelled rows the bundle did not train on (its validation rows): features, true lattice, true group,
        true volume per atom (NaN where unknown).
    n_rows
        Rows sampled (seeded) from those given.
    n_repeats, seed
        Shuffles per feature, and their seed.
    outputs
        Which of ``"bravais"``, ``"space_group"`` (P(group | true lattice), every lattice's model on its own
        rows, pooled) and ``"volume"`` to explain.
    """
    require_feature_classifiers(predictor)
    labels = list(predictor.feature_labels)
    X = np.asarray(X, dtype=np.float32)
    lattice = np.asarray([BRAVAIS_LATTICES.index(b) for b in bravais])
    groups_y = np.asarray(space_group, dtype=int)
    vpa = np.full(len(X), np.nan) if volume_per_atom is None else np.asarray(volume_per_atom, dtype=float)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(X))[: min(n_rows, len(X))])
    X, lattice, groups_y, vpa = X[keep], lattice[keep], groups_y[keep], vpa[keep]
    single = {label: [i] for i, label in enumerate(labels)}
    families = family_groups(labels)
    report = ImportanceReport(
        {}, {}, {}, {}, settings={"n_rows": len(X), "n_repeats": n_repeats, "seed": seed}
    )
    for output in outputs:
        start = time.perf_counter()
        score, rows = _scorer(predictor, output, lattice, groups_y, vpa)
        if not rows.any():
            logger.warning("no rows to explain the %s model on", output)
            continue
        Xo = X[rows]
        feats = permutation_importance(score, Xo, groups=single, n_repeats=n_repeats, seed=seed)
        feats["family"] = [feature_family(f) for f in feats.index]
        feats["label"] = [short_label(f) for f in feats.index]
        report.features[output] = feats
        report.families[output] = permutation_importance(
            score, Xo, groups=families, n_repeats=n_repeats, seed=seed
        )
        report.rows[output] = int(rows.sum())
        report.baseline[output] = float(np.mean(score(Xo)))
        logger.info("permutation importance of the %s model: %.0f s", output, time.perf_counter() - start)
    return report


def _scorer(
    predictor: Any, output: str, lattice: np.ndarray, groups_y: np.ndarray, vpa: np.ndarray
) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
    """The per-row score of one output, and the rows it applies to."""
    if output == "bravais":

        def bravais_score(Xs: np.ndarray) -> np.ndarray:
            p, _ = predictor.bravais_probabilities(Xs)
            return _log_likelihood(p, np.tile(lattice, len(Xs) // len(lattice)))

        return bravais_score, np.ones(len(lattice), dtype=bool)
    if output == "space_group":
        return _space_group_scorer(predictor, lattice, groups_y)
    if output == "volume":
        rows = np.isfinite(vpa) & (vpa > 0)
        target = np.log(vpa[rows])

        def volume_score(Xs: np.ndarray) -> np.ndarray:
            pred, _ = predictor.volume_per_atom(Xs)
            return -((np.log(np.clip(pred, _EPS, None)) - np.tile(target, len(Xs) // len(target))) ** 2)

        return volume_score, rows
    raise ValueError(f"Unknown output {output!r}; choose from ('bravais', 'space_group', 'volume')")


def _space_group_scorer(
    predictor: Any, lattice: np.ndarray, groups_y: np.ndarray
) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
    """Log P(true group | true lattice), each lattice's model on its own rows (groups it models)."""
    rows = np.zeros(len(lattice), dtype=bool)
    columns: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for j, bravais in enumerate(BRAVAIS_LATTICES):
        groups = predictor.space_group_classes(bravais)
        index = {g: c for c, g in enumerate(groups)}
        mine = np.flatnonzero((lattice == j) & np.isin(groups_y, groups))
        if len(mine):
            rows[mine] = True
            columns[j] = (mine, np.asarray([index[int(g)] for g in groups_y[mine]]))
    order = np.flatnonzero(rows)
    position = np.full(len(lattice), -1)
    position[order] = np.arange(len(order))

    def space_group_score(Xs: np.ndarray) -> np.ndarray:
        copies = len(Xs) // len(order)
        out = np.empty(len(Xs))
        for j, (mine, cols) in columns.items():
            idx = (position[mine][None, :] + len(order) * np.arange(copies)[:, None]).ravel()
            _, p, _ = predictor.space_group_probabilities(Xs[idx], BRAVAIS_LATTICES[j])
            out[idx] = _log_likelihood(p, np.tile(cols, copies))
        return out

    return space_group_score, rows
