"""The 243 composition features grouped by property family, as in the CRYSPNet paper's Fig. 5.

A family gathers every statistic (minimum, maximum, range, mean, average deviation) of one or several related
element properties, or one of the featurizers whose columns only make sense together (stoichiometry norms,
valence-orbital fractions, ion properties, element fractions). Attribution and importance by family answer
"does the model lean on electronegativity or on atomic size?" without 243 separate numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["FAMILIES", "family_groups", "feature_family", "require_feature_classifiers", "short_label"]

# Magpie property -> family
_MAGPIE_FAMILY = {
    "Number": "position in the table",
    "MendeleevNumber": "position in the table",
    "AtomicWeight": "position in the table",
    "Column": "position in the table",
    "Row": "position in the table",
    "Electronegativity": "electronegativity",
    "CovalentRadius": "atomic radius",
    "GSvolume_pa": "atomic radius",
    "MeltingT": "melting point",
    "NsValence": "valence electrons",
    "NpValence": "valence electrons",
    "NdValence": "valence electrons",
    "NfValence": "valence electrons",
    "NValence": "valence electrons",
    "NsUnfilled": "unfilled orbitals",
    "NpUnfilled": "unfilled orbitals",
    "NdUnfilled": "unfilled orbitals",
    "NfUnfilled": "unfilled orbitals",
    "NUnfilled": "unfilled orbitals",
    "GSbandgap": "elemental ground state",
    "GSmagmom": "elemental ground state",
    "SpaceGroupNumber": "elemental ground state",
}
_OTHER_FAMILY = {
    "frac s valence electrons": "valence-orbital fractions",
    "frac p valence electrons": "valence-orbital fractions",
    "frac d valence electrons": "valence-orbital fractions",
    "frac f valence electrons": "valence-orbital fractions",
    "compound possible": "ionic character",
    "max ionic char": "ionic character",
    "avg ionic char": "ionic character",
    "band center": "band center",
    "NElements": "stoichiometry",
}

FAMILIES: tuple[str, ...] = (
    "position in the table",
    "electronegativity",
    "atomic radius",
    "melting point",
    "valence electrons",
    "unfilled orbitals",
    "elemental ground state",
    "stoichiometry",
    "valence-orbital fractions",
    "ionic character",
    "band center",
    "element fractions",
)
"""Every family, in a fixed order (the order of the legend in the figures)."""


def feature_family(label: str) -> str:
    """The family of one feature label (matminer's label, e.g. ``"MagpieData mean Electronegativity"``)."""
    if label.startswith("MagpieData "):
        prop = label.rsplit(" ", 1)[-1]
        if prop in _MAGPIE_FAMILY:
            return _MAGPIE_FAMILY[prop]
        raise ValueError(f"unknown Magpie property in feature label {label!r}")
    if label in _OTHER_FAMILY:
        return _OTHER_FAMILY[label]
    if label.endswith("-norm"):
        return "stoichiometry"
    if label[:1].isupper() and len(label) <= 2 and label.isalpha():
        return "element fractions"
    raise ValueError(f"feature label {label!r} belongs to no known family")


def family_groups(labels: Sequence[str]) -> dict[str, list[int]]:
    """Family -> column indices of ``labels``, in :data:`FAMILIES` order (families without a column omitted)."""
    groups: dict[str, list[int]] = {name: [] for name in FAMILIES}
    for i, label in enumerate(labels):
        groups[feature_family(label)].append(i)
    return {name: cols for name, cols in groups.items() if cols}


def short_label(label: str) -> str:
    """A feature label for figures and tables: ``"mean Electronegativity"``, ``"fraction of O"``."""
    if label.startswith("MagpieData "):
        return label[len("MagpieData ") :]
    if feature_family(label) == "element fractions":
        return f"fraction of {label}"
    return label


def require_feature_classifiers(predictor: Any) -> None:
    """Refuse a bundle whose classifiers do not read the composition features (element attention).

    Attribution, importance and the prediction-space maps perturb or compare those features; an element-attention
    classifier reads the weighted set of elements instead, so they would say nothing about it.

    Raises
    ------
    ValueError
        For such a bundle, naming it and what to use instead.
    """
    if getattr(predictor, "element_slots", 0):
        raise ValueError(
            f"bundle {predictor.name!r} classifies with element-attention networks, which read the formula's "
            f"elements rather than the composition features that explanations work on: use a bundle of another "
            f"arch (e.g. the default)"
        )
