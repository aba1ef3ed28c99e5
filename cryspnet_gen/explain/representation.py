"""The space in which compounds are compared: which known materials a prediction leans on.

Representations of a composition, all computed from a bundle alone (no data folder):

- ``"features"``: the 243 features standardized with the bundle's training mean and standard deviation
  (:meth:`~cryspnet_gen.predict.Predictor.feature_statistics`);
- ``"weighted"``: the same, each column scaled by the square root of its share of the bundle's permutation
  importance for the Bravais and space-group models (:mod:`cryspnet_gen.explain.importance`), so the distance
  counts what the classifiers use (stored in the manifest under ``"feature_weights"`` by
  ``cryspnet-gen interpret --save-weights``; a bundle without them uses plain ``"features"``);
- ``"hidden"``: the volume networks' last hidden layer (:meth:`~cryspnet_gen.predict.Predictor.hidden_representation`),
  the one learned layer every bundle has (its classifiers may be trees, which have none);
- ``"predictions"``: the model's prediction space, square roots of the joint probabilities P(lattice) x
  P(group | lattice) over the 230 space groups (Euclidean distance between them is the Hellinger distance);
- ``"combined"`` (the default): ``"weighted"`` and ``"predictions"`` side by side, each block divided by its
  root total variance over the known compounds (:meth:`Representation.fit_embed`), the prediction block
  multiplied by ``alpha`` (1): chemistry and what the model makes of it count alike.

``bench/similar_representation.py`` measures which one puts compounds of the same structure type next to each
other most often, on validation formulas; docs/interpretability.md has the figures and the choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from cryspnet_gen.explain.families import require_feature_classifiers

__all__ = ["Representation", "RepresentationKind", "importance_weights", "prediction_space"]

RepresentationKind = Literal["combined", "weighted", "features", "hidden", "predictions"]


def importance_weights(importance: dict[str, float], labels: list[str]) -> np.ndarray:
    """Column weights from feature -> importance (negative and missing values count 0), summing to 1.

    Raises
    ------
    ValueError
        If no feature has a positive importance.
    """
    w = np.asarray([max(float(importance.get(label, 0.0)), 0.0) for label in labels])
    if not w.sum() > 0:
        raise ValueError("no feature has a positive importance: cannot weight the representation")
    return w / w.sum()


def prediction_space(predictor: Any, X: np.ndarray) -> np.ndarray:
    """Square roots of the joint P(lattice) x P(group | lattice), ``(n, 230)``; column ``g - 1`` is group ``g``."""
    from cryspnet_gen.evaluate import joint_space_group_proba
    from cryspnet_gen.symmetry import BRAVAIS_LATTICES

    require_feature_classifiers(predictor)
    p_lattice, _ = predictor.bravais_probabilities(X)
    conditional = {}
    for bravais in BRAVAIS_LATTICES:
        groups, proba, _ = predictor.space_group_probabilities(X, bravais)
        conditional[bravais] = (groups, proba)
    return np.sqrt(np.clip(joint_space_group_proba(p_lattice, conditional), 0.0, None))


def _root_total_variance(block: np.ndarray) -> float:
    scale = float(np.sqrt(np.asarray(block, dtype=np.float64).var(axis=0).sum()))
    return scale if scale > 0 else 1.0


@dataclass
class Representation:
    """How a feature matrix becomes points to compare (Euclidean distance between rows of :meth:`embed`)."""

    kind: RepresentationKind
    predictor: Any
    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray | None = None
    alpha: float = 1.0
    scales: tuple[float, float] | None = None
    """``combined`` only: the root total variance of each block over the known compounds (:meth:`fit_embed`)"""

    @classmethod
    def of(
        cls, predictor: Any, kind: RepresentationKind = "combined", *, alpha: float = 1.0
    ) -> Representation:
        """The representation ``kind`` of a :class:`~cryspnet_gen.predict.Predictor`.

        ``"weighted"`` uses the manifest's ``feature_weights`` and falls back to ``"features"`` without them;
        ``"combined"`` then combines plain features with the predictions.
        """
        if kind not in get_args(RepresentationKind):
            raise ValueError(f"Unknown representation {kind!r}; choose from {get_args(RepresentationKind)}")
        mean, std = predictor.feature_statistics()
        weights = None
        if kind in ("weighted", "combined"):
            stored = (predictor.manifest.get("feature_weights") or {}).get("weights")
            if stored is not None:
                weights = importance_weights(stored, list(predictor.feature_labels))
            elif kind == "weighted":
                kind = "features"
        return cls(kind, predictor, mean, std, weights, float(alpha))

    def with_weights(self, weights: np.ndarray) -> Representation:
        """A ``weighted`` (or ``combined``) copy using ``weights`` instead of the stored ones."""
        kind: RepresentationKind = "combined" if self.kind == "combined" else "weighted"
        return Representation(kind, self.predictor, self.mean, self.std, np.asarray(weights), self.alpha)

    def chemistry(self, X: np.ndarray) -> np.ndarray:
        """The feature block: standardized features, importance-weighted when the representation has weights."""
        X = np.asarray(X, dtype=np.float64)
        z = np.nan_to_num((X - self.mean) / self.std, nan=0.0, posinf=0.0, neginf=0.0)
        return z * np.sqrt(self.weights) if self.weights is not None else z

    def _blocks(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.chemistry(X), prediction_space(self.predictor, X)

    def fit_embed(self, X: np.ndarray) -> np.ndarray:
        """:meth:`embed` of the known compounds; ``combined`` first sets its block scales from them."""
        X = np.asarray(X, dtype=np.float64)
        if self.kind != "combined":
            return self.embed(X)
        return self.join(*self._blocks(X), fit=True)

    def join(self, chem: np.ndarray, pred: np.ndarray, *, fit: bool = False) -> np.ndarray:
        """``combined`` points from its two blocks (:meth:`chemistry`, :func:`prediction_space`); ``fit`` sets
        the block scales from these rows first."""
        if fit:
            self.scales = (_root_total_variance(chem), _root_total_variance(pred))
        if self.scales is None:
            raise ValueError("a combined representation needs fit_embed() on the known compounds first")
        return np.hstack([chem / self.scales[0], self.alpha * pred / self.scales[1]]).astype(np.float32)

    def embed(self, X: np.ndarray) -> np.ndarray:
        """Points ``(n, m)`` (float32) for a feature matrix ``(n, 243)``; NaN features count as the mean."""
        X = np.asarray(X, dtype=np.float64)
        if self.kind == "hidden":
            return np.asarray(self.predictor.hidden_representation(X), dtype=np.float32)
        if self.kind == "predictions":
            return prediction_space(self.predictor, X).astype(np.float32)
        if self.kind == "combined":
            return self.join(*self._blocks(X))
        return self.chemistry(X).astype(np.float32)

    def describe(self) -> str:
        """One line for reports and ``--json`` output."""
        return {
            "features": "standardized composition features (bundle training mean/std)",
            "weighted": "standardized features scaled by sqrt(permutation importance share)",
            "hidden": "last hidden layer of the volume networks",
            "predictions": "prediction space: sqrt of the joint space-group probabilities",
            "combined": f"importance-weighted features + {self.alpha:g} x prediction space, blocks of equal variance",
        }[self.kind]
