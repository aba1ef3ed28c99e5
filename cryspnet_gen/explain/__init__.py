"""Why a prediction: feature importance, per-formula attribution, similar known compounds, a material map.

The CRYSPNet paper's section E, for any bundle arch (networks, boosters, stacks):

- :mod:`~.families`: the 243 features grouped by property family (electronegativity, radius, ...);
- :mod:`~.importance`: permutation importance per output (Bravais, space group per lattice, volume);
- :mod:`~.representation` and :mod:`~.neighbours`: the space compounds are compared in, and the nearest known
  compounds of a formula (:func:`similar_materials`);
- :mod:`~.attribution`: which features moved one formula's prediction (:func:`explain_formula`);
- :mod:`~.materialmap`: t-SNE map and HDBSCAN clusters of known compounds;
- :mod:`~.report` and :mod:`~.render`: the interpretability report (``cryspnet-gen interpret``).
"""

from __future__ import annotations

from cryspnet_gen.explain.attribution import Explanation, explain_features
from cryspnet_gen.explain.families import FAMILIES, family_groups, feature_family
from cryspnet_gen.explain.importance import ImportanceReport, model_importance, permutation_importance
from cryspnet_gen.explain.neighbours import KnownCompoundIndex, ground_states, nearest
from cryspnet_gen.explain.representation import Representation
from cryspnet_gen.explain.similar import explain_formula, known_compound_index, similar_materials

__all__ = [
    "FAMILIES",
    "Explanation",
    "ImportanceReport",
    "KnownCompoundIndex",
    "Representation",
    "explain_features",
    "explain_formula",
    "family_groups",
    "feature_family",
    "ground_states",
    "known_compound_index",
    "model_importance",
    "nearest",
    "permutation_importance",
    "similar_materials",
]
