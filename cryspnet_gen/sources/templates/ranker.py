"""Features of template options for the learned ranker, and re-ranking options with it (issue 18).

The hand-weighted score (:class:`~cryspnet_gen.sources.templates.scoring.TemplateScoring`) orders a formula's
options; the first ``depth`` of them are re-scored by a :class:`~cryspnet_gen.rankermodel.TemplateRankerModel`
from the features below, in the spirit of CSPML (Kusaba et al. 2022: which known compound is structurally closest
to the query), and sorted by the calibrated P(match); the options beyond ``depth`` follow in their old order.
Each option's ``score`` becomes log P(match), the scale a CRYSPNet candidate is put on by
:meth:`~cryspnet_gen.rankermodel.TemplateRankerModel.cryspnet_score`.

Features (:data:`FEATURES`), per (template, element mapping):

- symmetry model: log P(lattice, group) of the template's group, log P(lattice), log P(group | lattice), the
  pair's rank in the prediction, log P(pair) minus the best of the formula's options;
- substitution: mean and lowest log substitution probability over the mapped sites, minus the formula's best
  mean; the fraction of atoms whose element is unchanged;
- chemistry after the mapping (amount-weighted mean and largest absolute difference between the template's and
  the query's element on each site): Pauling electronegativity, atomic radius (relative), Mendeleev number,
  period and group; oxidation-state agreement (same sign of the most common oxidation state) and difference;
- the template: energy above hull, experimentally known, sites, entries of its anonymous formula and group,
  entries of its structure type among the options, predicted volume per atom against the template's;
- the hand-weighted score, its gap to the formula's best, the option's rank by it, the options and elements.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cryspnet_gen.sources.templates.scoring import TemplateOption, TemplateScoring
from cryspnet_gen.sources.templates.substitution import substitution_matrix

if TYPE_CHECKING:
    from cryspnet_gen.options import GenerateOptions
    from cryspnet_gen.rankermodel import TemplateRankerModel
    from cryspnet_gen.records import Prediction
    from cryspnet_gen.sources.templates.store import TemplateStore

__all__ = [
    "FEATURES",
    "FEATURE_GROUPS",
    "active_ranker",
    "features_without",
    "option_features",
    "rerank_options",
]


#: The features by what they describe: name -> (description, features). ``train-ranker --without NAME``
#: trains without a group; ``bench/template_ranker.py`` ablates each.
FEATURE_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "symmetry": (
        "symmetry model (P(pair), P(lattice), P(group), pair rank)",
        ("log_p_pair", "log_p_lattice", "log_p_group", "pair_rank", "log_p_pair_gap"),
    ),
    "substitution": (
        "substitution likelihood",
        ("sub_mean", "sub_min", "sub_gap", "same_element_fraction"),
    ),
    "chemistry": (
        "chemistry after the mapping (element-property differences, oxidation states)",
        (
            "d_electronegativity_mean",
            "d_electronegativity_max",
            "d_radius_mean",
            "d_radius_max",
            "d_mendeleev_mean",
            "d_mendeleev_max",
            "d_period_mean",
            "d_group_mean",
            "oxidation_sign_agree",
            "d_oxidation_mean",
        ),
    ),
    "template": (
        "template (energy above hull, experimental, sites, prevalence)",
        ("template_e_above_hull", "template_experimental", "template_sites", "log_prevalence", "type_count"),
    ),
    "volume": ("volume (predicted vs template)", ("log_volume_ratio", "abs_log_volume_ratio")),
    "hand": ("hand-weighted score and rank", ("hand_score", "hand_score_gap", "hand_rank")),
}

#: Every feature, in the booster's column order: the groups' features in order, then two about the query.
FEATURES: tuple[str, ...] = (
    *(f for _, cols in FEATURE_GROUPS.values() for f in cols),
    "n_options",
    "n_elements",
)


def features_without(names: Iterable[str]) -> tuple[str, ...]:
    """:data:`FEATURES` less the named groups (:data:`FEATURE_GROUPS`) or single features.

    Raises
    ------
    ValueError
        For a name that is neither.
    """
    drop: set[str] = set()
    for name in names:
        if name in FEATURE_GROUPS:
            drop.update(FEATURE_GROUPS[name][1])
        elif name in FEATURES:
            drop.add(name)
        else:
            raise ValueError(
                f"unknown ranker feature or group {name!r}; choose a group ({', '.join(FEATURE_GROUPS)}) or a "
                f"feature ({', '.join(FEATURES)})"
            )
    return tuple(f for f in FEATURES if f not in drop)


_P_FLOOR = 1e-6


@functools.lru_cache(maxsize=1)
def element_properties() -> np.ndarray:
    """``(MAX_Z + 1) x 6`` table by atomic number: electronegativity, atomic radius, Mendeleev number, period,
    group, most common oxidation state (NaN where pymatgen has none)."""
    import warnings

    from pymatgen.core import Element

    n = substitution_matrix().shape[0]
    table = np.full((n, 6), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for z in range(1, n):
            try:
                el = Element.from_Z(z)
            except ValueError:
                continue
            oxi = el.common_oxidation_states or el.oxidation_states or (0,)
            values = (el.X, el.atomic_radius, el.mendeleev_no, el.row, el.group, oxi[0])
            table[z] = [np.nan if v is None else float(v) for v in values]
    return table


def _weighted(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over the last axis ignoring NaN (NaN when all are NaN)."""
    ok = ~np.isnan(values)
    w = np.where(ok, weights, 0.0)
    total = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.nansum(values * w, axis=-1) / total, np.nan)


def _nanmax(values: np.ndarray) -> np.ndarray:
    filled = np.where(np.isnan(values), -np.inf, values)
    best = filled.max(axis=-1)
    return np.where(np.isfinite(best), best, np.nan)


def option_features(
    store: TemplateStore,
    target: dict[int, int],
    options: Sequence[TemplateOption],
    prediction: Prediction | None,
    scoring: TemplateScoring | None = None,
) -> np.ndarray:
    """The :data:`FEATURES` of ``options`` (one row each, in order) for the target composition.

    ``target``: atomic number -> amount in the reduced integer formula; ``options``: as :func:`rank_options`
    returns them (hand-score order), all of the target's anonymous formula.
    """
    n = len(options)
    out = np.full((n, len(FEATURES)), np.nan)
    if n == 0:
        return out
    scoring = scoring or TemplateScoring()
    frame = store.frame
    rows = np.asarray([o.row for o in options], dtype=np.int64)
    template_elements = np.stack([np.asarray(e, dtype=np.int64) for e in frame["elements"].to_numpy()[rows]])
    mapped = np.asarray([o.mapping for o in options], dtype=np.int64)
    amounts = np.asarray([[target[int(z)] for z in m] for m in mapped], dtype=np.float64)
    # substitution per site
    matrix = substitution_matrix()
    sub_sites = matrix[mapped, template_elements]
    sub_mean = np.asarray([o.substitution for o in options])
    # chemistry after the mapping
    props = element_properties()
    pt, pq = props[template_elements], props[mapped]  # [n, m, 6]
    diff = np.abs(pq - pt)
    radius_rel = diff[..., 1] / np.where(pt[..., 1] > 0, pt[..., 1], np.nan)
    same = (mapped == template_elements).astype(np.float64)
    sign_agree = (np.sign(pq[..., 5]) == np.sign(pt[..., 5])).astype(np.float64)
    sign_agree[np.isnan(pq[..., 5]) | np.isnan(pt[..., 5])] = np.nan
    # symmetry model
    groups = store.space_groups[rows]
    p_pair = np.asarray([o.p_pair for o in options])
    p_lat = np.full(n, np.nan)
    p_grp = np.full(n, np.nan)
    pair_rank = np.full(n, np.nan)
    if prediction is not None and prediction.error is None:
        ranked: dict[int, tuple[int, Any]] = {}
        for i, g in enumerate(prediction.ranked_groups(), start=1):
            ranked.setdefault(int(g.space_group), (i, g))
        for i, sg in enumerate(groups):
            hit = ranked.get(int(sg))
            if hit is not None:
                pair_rank[i] = math.log(hit[0])
                p_lat[i] = math.log(max(float(hit[1].bravais_probability), _P_FLOOR))
                p_grp[i] = math.log(max(float(hit[1].space_group_probability), _P_FLOOR))
    log_p = np.log(np.maximum(p_pair, _P_FLOOR))
    # the template
    ehull = frame["e_above_hull"].to_numpy(dtype=np.float64)[rows]
    experimental = (
        frame["experimental"].to_numpy().astype(np.float64)[rows]
        if "experimental" in frame.columns
        else np.full(n, np.nan)
    )
    sites = frame["nsites"].to_numpy(dtype=np.float64)[rows]
    template_vpa = frame["volume_per_atom"].to_numpy(dtype=np.float64)[rows]
    vpa = None if prediction is None else prediction.volume_per_atom
    with np.errstate(invalid="ignore", divide="ignore"):
        log_vol = np.log(float(vpa) / template_vpa) if vpa is not None and vpa > 0 else np.full(n, np.nan)
    types = [o.key for o in options]
    type_counts: dict[Any, int] = {}
    for key in types:
        type_counts[key[0], key[1]] = type_counts.get((key[0], key[1]), 0) + 1
    hand = np.asarray([o.score for o in options])
    columns = {
        "log_p_pair": log_p,
        "log_p_lattice": p_lat,
        "log_p_group": p_grp,
        "pair_rank": pair_rank,
        "log_p_pair_gap": log_p.max() - log_p,
        "sub_mean": sub_mean,
        "sub_min": sub_sites.min(axis=1),
        "sub_gap": sub_mean.max() - sub_mean,
        "same_element_fraction": _weighted(same, amounts),
        "d_electronegativity_mean": _weighted(diff[..., 0], amounts),
        "d_electronegativity_max": _nanmax(diff[..., 0]),
        "d_radius_mean": _weighted(radius_rel, amounts),
        "d_radius_max": _nanmax(radius_rel),
        "d_mendeleev_mean": _weighted(diff[..., 2], amounts),
        "d_mendeleev_max": _nanmax(diff[..., 2]),
        "d_period_mean": _weighted(diff[..., 3], amounts),
        "d_group_mean": _weighted(diff[..., 4], amounts),
        "oxidation_sign_agree": _weighted(sign_agree, amounts),
        "d_oxidation_mean": _weighted(diff[..., 5], amounts),
        "template_e_above_hull": ehull,
        "template_experimental": experimental,
        "template_sites": sites,
        "log_prevalence": np.log(np.asarray([max(o.prevalence, 1) for o in options], dtype=np.float64)),
        "type_count": np.asarray([type_counts[k[0], k[1]] for k in types], dtype=np.float64),
        "log_volume_ratio": log_vol,
        "abs_log_volume_ratio": np.abs(log_vol),
        "hand_score": hand,
        "hand_score_gap": hand.max() - hand,
        "hand_rank": np.arange(n, dtype=np.float64),
        "n_options": np.full(n, math.log(n)),
        "n_elements": np.full(n, float(len(target))),
    }
    for j, name in enumerate(FEATURES):
        out[:, j] = columns[name]
    return out


def rerank_options(
    store: TemplateStore,
    target: dict[int, int],
    options: Sequence[TemplateOption],
    prediction: Prediction | None,
    model: TemplateRankerModel,
    scoring: TemplateScoring | None = None,
) -> list[TemplateOption]:
    """``options`` (hand-score order) with the first ``model.depth`` re-scored by the ranker and sorted by
    P(match); each re-scored option's ``score`` is log P(match); the rest follow in their order, scored below.
    """
    import dataclasses

    if not options:
        return []
    if tuple(model.features) != FEATURES:
        from cryspnet_gen.rankermodel import RankerModelError

        raise RankerModelError(
            "the template ranker was trained on other features than this cryspnet-gen computes; retrain it with "
            "`cryspnet-gen templates train-ranker`"
        )
    head = list(options[: model.depth])
    X = option_features(store, target, head, prediction, scoring)
    p = model.match_probability(X)
    scores = np.log(np.maximum(p, 1e-12))
    order = np.argsort(-scores, kind="stable")
    out = [dataclasses.replace(head[i], score=float(scores[i]), p_match=float(p[i])) for i in order]
    floor = float(scores.min()) if len(scores) else 0.0
    for i, opt in enumerate(options[model.depth :], start=1):
        out.append(dataclasses.replace(opt, score=floor - 1.0 - 1e-3 * i))
    return out


def active_ranker(opts: GenerateOptions, predictor: Any = None) -> TemplateRankerModel | None:
    """The learned ranker a call uses: ``opts.template_ranker``, else the predictor's, unless
    ``template_ranking="score"``; None means the hand-weighted score.

    Raises
    ------
    ValueError
        When ``template_ranking="learned"`` and there is no ranker.
    """
    if opts.template_ranking == "score":
        return None
    ranker = opts.template_ranker
    if ranker is None and predictor is not None:
        ranker = getattr(predictor, "template_ranker", None)
    if ranker is None and opts.template_ranking == "learned":
        raise ValueError(
            "template_ranking='learned' needs a bundle with a template ranker (train one with `cryspnet-gen "
            "templates train-ranker`) or use template_ranking='score'"
        )
    return ranker
