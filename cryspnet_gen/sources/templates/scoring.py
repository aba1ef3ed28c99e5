"""Scoring template options: (template, element mapping) pairs ranked by CRYSPNet's group probability and the
substitution likelihood (:class:`TemplateScoring`), and building the substituted, scaled structure of one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cryspnet_gen.formula import anonymous_of
from cryspnet_gen.sources.templates.substitution import assignments, substitution_matrix
from cryspnet_gen.symmetry import SYMPREC

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from cryspnet_gen.records import Prediction
    from cryspnet_gen.sources.templates.store import TemplateStore

__all__ = ["TemplateOption", "TemplateScoring", "build_option", "pair_probabilities", "rank_options"]


@dataclass(frozen=True)
class TemplateScoring:
    """Weights of the template score (log scale); see the module docstring.

    The defaults were tuned with ``bench/tune_templates.py`` on validation formulas only (none of them in a test
    set; each formula's own templates left out), maximising the mean of match@1 and match@20; only the ratio
    ``w_substitution / w_model`` matters. With the version-1 networks (300 MP-20 + 200 MPTS-52 formulas) 8 was
    best; with the calibrated version-2 models (``cryspnet-bench`` 2; 200 + 100 formulas, ``--grid
    model-weight``) 2 is best (objective 66.2 against 65.1 for 8): the better symmetry probabilities earn four
    times the weight. Of the equivalent settings, 0.5 / 1 keeps template scores on the scale the CRYSPNet offset
    was tuned on (with 1 / 2, poor templates fell below the best CRYSPNet score). How common a structure type is
    adds nothing (``w_prevalence`` 0), and CRYSPNet's own candidates rank best after the templates
    (``cryspnet_offset`` -8; from -4 up they displaced better template candidates). Tables in
    ``docs/benchmarks.md``.
    """

    w_model: float = 0.5
    w_substitution: float = 1.0
    w_prevalence: float = 0.0
    p_floor: float = 1e-3
    cryspnet_offset: float = -8.0

    def template_score(
        self, p_pair: np.ndarray, substitution: np.ndarray, prevalence: np.ndarray
    ) -> np.ndarray:
        return (
            self.w_model * np.log(np.maximum(p_pair, self.p_floor))
            + self.w_substitution * substitution
            + self.w_prevalence * np.log(prevalence)
        )

    def cryspnet_score(self, probability: float) -> float:
        return self.w_model * math.log(max(probability, 1e-12)) + self.cryspnet_offset


@dataclass
class TemplateOption:
    """One (template, element mapping) before it is built: its score and the parts of it."""

    row: int
    mapping: tuple[int, ...]  # target atomic number per canonical template position
    score: float
    p_pair: float
    substitution: float
    prevalence: int
    key: tuple[Any, ...]
    p_match: float | None = None  # the learned ranker's P(match), for the options it scored


def rank_options(
    store: TemplateStore,
    target: dict[int, int],
    pair_probability: dict[int, float],
    scoring: TemplateScoring,
    *,
    exclude_formulas: Iterable[str] = (),
    space_groups: Iterable[int] | None = None,
    limit: int | None = None,
) -> list[TemplateOption]:
    """Every (template, mapping) for a target composition, best score first, one per de-duplication key.

    ``target``: atomic number -> amount in the reduced integer formula. ``pair_probability``: space group ->
    CRYSPNet's P(lattice) x P(group | lattice). ``space_groups``: use only templates in these groups.
    """
    anon = anonymous_of(target.values())
    grp = store.group(anon)
    if grp is None:
        return []
    keep = np.ones(len(grp.rows), dtype=bool)
    banned = set(exclude_formulas)
    if banned:
        keep &= ~np.isin(store.formulas[grp.rows], list(banned))
    if space_groups is not None:
        keep &= np.isin(grp.space_groups, list({int(g) for g in space_groups}))
    sel = np.flatnonzero(keep)
    if len(sel) == 0:
        return []
    elements = grp.elements[sel]
    groups = grp.space_groups[sel]
    assign = assignments(target)  # [n_a, m]
    n_a = assign.shape[0]
    matrix = substitution_matrix()
    sub = matrix[assign[None, :, :], elements[:, None, :]].mean(axis=2)  # [n_t, n_a]
    p_pair = np.asarray([pair_probability.get(int(g), 0.0) for g in groups])
    prevalence = grp.prevalence[sel]
    score = scoring.template_score(p_pair[:, None], sub, prevalence[:, None])
    # best option per (prototype, mapping) first: options of one prototype and mapping are the same structure
    order = np.argsort(-score, axis=None, kind="stable")
    codes = (grp.prototype[sel][:, None] * n_a + np.arange(n_a)[None, :]).ravel()[order]
    _, first = np.unique(codes, return_index=True)
    order = order[np.sort(first)]
    out: list[TemplateOption] = []
    seen: set[tuple[Any, ...]] = set()
    for flat in order:
        t, a = divmod(int(flat), n_a)
        mapping = tuple(int(z) for z in assign[a])
        wyck = grp.wyckoff[sel[t]]
        key = (int(groups[t]), tuple(sorted(zip(mapping, wyck, strict=True))))
        if key in seen:
            continue
        seen.add(key)
        out.append(
            TemplateOption(
                row=int(grp.rows[sel[t]]),
                mapping=mapping,
                score=float(score[t, a]),
                p_pair=float(p_pair[t]),
                substitution=float(sub[t, a]),
                prevalence=int(prevalence[t]),
                key=key,
            )
        )
        if limit is not None and len(out) >= limit:
            break
    return out


def build_option(
    store: TemplateStore, option: TemplateOption, volume_per_atom: float | None
) -> tuple[Structure, int | None]:
    """The substituted, scaled template of an option (conventional standard cell) and its space group."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    row = store.frame.iloc[option.row]
    mapping = dict(zip((int(z) for z in row["elements"]), option.mapping, strict=True))
    lattice, stored, frac = store.cell_arrays(option.row)
    numbers: list[Any] = [mapping[int(z)] for z in stored]
    if volume_per_atom is not None and volume_per_atom > 0:
        volume = abs(float(np.linalg.det(lattice)))
        lattice = lattice * (volume_per_atom * len(numbers) / volume) ** (1.0 / 3.0)
    structure = Structure(Lattice(lattice), numbers, frac)
    try:
        sga = SpacegroupAnalyzer(structure, symprec=SYMPREC)
        conventional = sga.get_conventional_standard_structure()
        return conventional, int(sga.get_space_group_number())
    except ValueError:
        return structure, None


def pair_probabilities(pred: Prediction | None) -> tuple[dict[int, float], dict[int, Any], dict[int, int]]:
    """Space group -> joint probability, ranked group and rank in the prediction."""
    if pred is None or pred.error is not None:
        return {}, {}, {}
    probs: dict[int, float] = {}
    ranked: dict[int, Any] = {}
    ranks: dict[int, int] = {}
    for i, g in enumerate(pred.ranked_groups(), start=1):
        sg = int(g.space_group)
        if sg not in probs:
            probs[sg], ranked[sg], ranks[sg] = float(g.probability), g, i
    return probs, ranked, ranks
