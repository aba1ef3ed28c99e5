"""Which features moved one formula's prediction, and which way (occlusion, model-agnostic).

For a formula, each feature (and each property family, all its columns at once) is replaced by its mean over
the bundle's training rows (:meth:`~cryspnet_gen.predict.Predictor.feature_statistics`), and the prediction is
made again. The signed effect of a feature on an output is ``log p(original) - log p(occluded)`` for the top
lattice's probability, the top space group's joint probability P(lattice) x P(group | lattice) and the
predicted volume per atom: **positive means the formula's value of that feature supports the prediction**
(taking it away lowers the probability or the volume), negative means it argues against it. Every occluded
copy goes through the model in one batch (about 260 rows), so one explanation costs about one prediction of a
few hundred formulas, whatever the arch. Occlusion asks the model about a compound that differs from the real
one in one property only, which can fall outside the training distribution; the family view (all statistics
of one property replaced together) is the more robust of the two, and the per-feature view shows the details.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryspnet_gen.explain.families import (
    family_groups,
    feature_family,
    require_feature_classifiers,
    short_label,
)
from cryspnet_gen.symmetry import BRAVAIS_LATTICES, space_group_symbol

__all__ = ["Explanation", "explain_features"]

_EPS = 1e-12
_OUTPUTS = ("lattice", "space_group", "volume")


@dataclass
class Explanation:
    """One formula's prediction and the signed effects of its features (see the module docstring)."""

    formula: str
    bravais: str
    bravais_probability: float
    space_group: int
    space_group_probability: float
    volume_per_atom: float
    families: list[dict[str, Any]]
    """per family: ``family``, ``lattice``, ``space_group``, ``volume`` effects, largest |space_group| first"""
    features: list[dict[str, Any]]
    """per feature: ``feature``, ``label``, ``family``, ``value``, ``baseline`` and the three effects"""
    bundle: str = ""
    method: str = field(default="occlusion by the training mean")

    def to_dict(self) -> dict[str, Any]:
        return {
            "formula": self.formula,
            "bundle": self.bundle,
            "method": self.method,
            "prediction": {
                "bravais": self.bravais,
                "bravais_probability": self.bravais_probability,
                "space_group": self.space_group,
                "space_group_symbol": space_group_symbol(self.space_group),
                "space_group_probability": self.space_group_probability,
                "volume_per_atom": self.volume_per_atom,
            },
            "families": self.families,
            "features": self.features,
        }

    def format(self, top: int = 10) -> str:
        """Plain text: the prediction, the families, the ``top`` features by |effect on the space group|."""
        lines = [
            f"{self.formula}: {self.bravais} (p={self.bravais_probability:.2f}), space group "
            f"{space_group_symbol(self.space_group)} ({self.space_group}, p={self.space_group_probability:.2f}), "
            f"{self.volume_per_atom:.1f} Å^3/atom   [{self.bundle}]",
            "effect = log p(prediction) - log p(feature replaced by the training mean); "
            "+ supports the prediction, - argues against it",
            "",
            f"{'property family':<28}{'lattice':>9}{'group':>9}{'volume':>9}",
        ]
        for row in self.families:
            lines.append(
                f"{row['family']:<28}{row['lattice']:>+9.3f}{row['space_group']:>+9.3f}{row['volume']:>+9.3f}"
            )
        lines += ["", f"{'feature':<40}{'value':>10}{'mean':>10}{'lattice':>9}{'group':>9}{'volume':>9}"]
        for row in self.features[:top]:
            lines.append(
                f"{row['label'][:39]:<40}{row['value']:>10.3g}{row['baseline']:>10.3g}"
                f"{row['lattice']:>+9.3f}{row['space_group']:>+9.3f}{row['volume']:>+9.3f}"
            )
        return "\n".join(lines)


def _outputs(predictor: Any, X: np.ndarray, lattice: int, space_group: int) -> np.ndarray:
    """``(n, 3)`` logs of P(lattice), the joint P(lattice, group) and the volume per atom, for every row."""
    bravais = BRAVAIS_LATTICES[lattice]
    p_lat, _ = predictor.bravais_probabilities(X)
    groups, p_sg, _ = predictor.space_group_probabilities(X, bravais)
    col = groups.index(space_group)
    vpa, _ = predictor.volume_per_atom(X)
    return np.log(
        np.clip(np.stack([p_lat[:, lattice], p_lat[:, lattice] * p_sg[:, col], vpa], axis=1), _EPS, None)
    )


def explain_features(predictor: Any, formula: str, x: np.ndarray) -> Explanation:
    """Occlusion attribution of one formula's features ``x`` (``(243,)``) under a bundle's predictor."""
    from cryspnet_gen.evaluate import predictor_outputs

    require_feature_classifiers(predictor)
    labels = list(predictor.feature_labels)
    x = np.asarray(x, dtype=np.float64).reshape(1, -1)
    mean, _ = predictor.feature_statistics()
    out = predictor_outputs(predictor, x)
    joint = out.joint[0]
    lattice = int(np.argmax(out.p_lattice[0]))
    # the top space group within the top lattice (the prediction a user sees first)
    groups, p_sg = out.conditional[BRAVAIS_LATTICES[lattice]]
    space_group = int(groups[int(np.argmax(p_sg[0]))])
    families = family_groups(labels)
    rows = [x[0]]
    for i in range(len(labels)):
        row = x[0].copy()
        row[i] = mean[i]
        rows.append(row)
    for cols in families.values():
        row = x[0].copy()
        row[cols] = mean[cols]
        rows.append(row)
    logs = _outputs(predictor, np.asarray(rows), lattice, space_group)
    effects = logs[0][None, :] - logs[1:]
    feature_rows = [
        {
            "feature": label,
            "label": short_label(label),
            "family": feature_family(label),
            "value": float(x[0, i]),
            "baseline": float(mean[i]),
            **dict(zip(_OUTPUTS, (float(e) for e in effects[i]), strict=True)),
        }
        for i, label in enumerate(labels)
        if x[0, i] != mean[i]
    ]
    feature_rows.sort(key=lambda r: (-abs(r["space_group"]), r["feature"]))
    family_rows: list[dict[str, Any]] = [
        {"family": name, **dict(zip(_OUTPUTS, (float(e) for e in effects[len(labels) + k]), strict=True))}
        for k, name in enumerate(families)
    ]
    family_rows.sort(key=lambda r: (-abs(r["space_group"]), r["family"]))
    return Explanation(
        formula=formula,
        bravais=BRAVAIS_LATTICES[lattice],
        bravais_probability=float(out.p_lattice[0, lattice]),
        space_group=space_group,
        space_group_probability=float(joint[space_group - 1]),
        volume_per_atom=float(out.volume_per_atom[0]) if out.volume_per_atom is not None else float("nan"),
        families=family_rows,
        features=feature_rows,
        bundle=f"{predictor.name} v{predictor.version}",
    )
