"""What a model says about a set of rows, as arrays: Bravais probabilities, P(group | lattice), parameters."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryspnet_gen.symmetry import BRAVAIS_LATTICES

__all__ = ["ModelOutputs", "joint_space_group_proba", "predictor_outputs"]


def joint_space_group_proba(
    p_lattice: np.ndarray, conditional: Mapping[str, tuple[Sequence[int], np.ndarray]]
) -> np.ndarray:
    """``(n, 230)`` joint P(lattice) x P(group | lattice); column ``g - 1`` is space group ``g``."""
    out = np.zeros((len(p_lattice), 230))
    for j, bravais in enumerate(BRAVAIS_LATTICES):
        groups, proba = conditional[bravais]
        out[:, np.asarray(groups) - 1] += p_lattice[:, j : j + 1] * proba
    return out


@dataclass
class ModelOutputs:
    """What a model says about a set of rows, as arrays."""

    p_lattice: np.ndarray
    """(n, 14) in BRAVAIS_LATTICES order"""
    conditional: dict[str, tuple[list[int], np.ndarray]]
    """bravais -> (groups, (n, len(groups)) P(group | bravais))"""
    params: dict[str, np.ndarray] = field(default_factory=dict)
    """bravais -> (n, k) predicted parameters (ensemble mean)"""
    volume_per_atom: np.ndarray | None = None

    @property
    def joint(self) -> np.ndarray:
        return joint_space_group_proba(self.p_lattice, self.conditional)


def predictor_outputs(
    predictor: Any, X: np.ndarray, *, model: str = "master", formulas: Sequence[str] | None = None
) -> ModelOutputs:
    """Run every network of a :class:`~cryspnet_gen.predict.Predictor` on a feature matrix (and, for a bundle
    with an element-attention model, on the ``formulas`` of its rows)."""
    if formulas is not None:
        X = predictor.model_inputs(X, list(formulas))
    p_lattice, _ = predictor.bravais_probabilities(X, model=model)
    conditional, params = {}, {}
    for bravais in BRAVAIS_LATTICES:
        groups, proba, _ = predictor.space_group_probabilities(X, bravais)
        conditional[bravais] = (groups, proba)
        members = predictor.lattice_parameter_members(X, bravais)
        with warnings.catch_warnings():  # a lattice without a regressor is all NaN: that is expected
            warnings.simplefilter("ignore", RuntimeWarning)
            params[bravais] = np.nanmean(members, axis=0)
    vpa, _ = predictor.volume_per_atom(X)
    return ModelOutputs(p_lattice, conditional, params, vpa)
