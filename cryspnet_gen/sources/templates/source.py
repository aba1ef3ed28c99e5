"""The template candidate source: a formula's templates, substituted, scaled, checked and de-duplicated."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from cryspnet_gen.formula import BravaisModel, FormulaUnit, element_symbol, formula_unit
from cryspnet_gen.options import DEFAULT_MAX_ATOMS
from cryspnet_gen.predict import Predictor, predict_all_pairs
from cryspnet_gen.records import Candidate, CandidateList, Prediction, prediction_fields
from cryspnet_gen.sources.templates.scoring import (
    TemplateOption,
    TemplateScoring,
    build_option,
    pair_probabilities,
    rank_options,
)
from cryspnet_gen.sources.templates.store import ENV_VAR, TemplateStore, TemplateStoreError, resolve_store
from cryspnet_gen.symmetry import bravais_of, space_group_symbol

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["SOURCE", "template_candidates"]

logger = logging.getLogger(__name__)

SOURCE = "template"


def template_candidates(
    formula: str | FormulaUnit,
    k: int = 3,
    *,
    templates: TemplateStore | str | os.PathLike[str] | None = None,
    prediction: Prediction | None = None,
    predictor: Predictor | None = None,
    model: BravaisModel = "master",
    max_atoms: int = DEFAULT_MAX_ATOMS,
    scoring: TemplateScoring | None = None,
    exclude_formulas: Iterable[str] = (),
    space_groups: Sequence[int] | None = None,
    bravais: Sequence[str] | None = None,
    max_built: int | None = None,
) -> CandidateList:
    """Up to ``k`` candidates of ``formula`` from the template store, best score first.

    Parameters
    ----------
    formula
        The formula (its smallest integer multiple is used for fractional amounts).
    templates
        A store, its folder, or ``None`` for ``$CRYSPNET_GEN_TEMPLATES``.
    prediction, predictor, model
        CRYSPNet's prediction for the formula (with every lattice and group), or the predictor that makes it
        (``None``: the shipped default).
    max_atoms
        Largest conventional cell returned.
    scoring
        Score weights (default :class:`TemplateScoring`).
    exclude_formulas
        Reduced formulas whose templates are not used (e.g. the formula itself, to evaluate leave-one-out).
    space_groups, bravais
        Use only templates in these groups / lattices.
    max_built
        Most template options built and checked (default ``10 * k + 20``).

    Returns
    -------
    CandidateList
        Candidates with ``source=SOURCE`` and ``template_id`` set; an empty list (with ``stop_reason``) when
        the store has no template of this anonymous formula.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    store = resolve_store(templates)
    if store is None:
        raise TemplateStoreError(
            f"no template store: pass templates=STORE or set {ENV_VAR} "
            "(build one with 'cryspnet-gen templates build --from ../shared/data --out STORE')"
        )
    scoring = scoring or TemplateScoring()
    fu = formula if isinstance(formula, FormulaUnit) else formula_unit(formula, max_atoms)
    formula = fu.formula
    target = fu.amounts
    if prediction is None:
        (prediction,) = predict_all_pairs(predictor, [fu.formula], model)
    probs, ranked, ranks = pair_probabilities(prediction)
    allowed: set[int] | None = None
    if space_groups is not None or bravais is not None:
        allowed = set(range(1, 231)) if space_groups is None else {int(g) for g in space_groups}
        if bravais is not None:
            allowed = {g for g in allowed if bravais_of(g) in set(bravais)}
    options = rank_options(
        store, target, probs, scoring, exclude_formulas=exclude_formulas, space_groups=allowed
    )
    anon = fu.anonymous
    if not options:
        return CandidateList(
            [], formula=formula, stop_reason=f"no template with the anonymous formula {anon} in the store"
        )
    vpa = None if prediction is None else prediction.volume_per_atom
    matcher = StructureMatcher()
    found: list[Candidate] = []
    limit = max_built if max_built is not None else 10 * k + 20
    tried = 0
    for opt in options:
        if len(found) >= k or tried >= limit:
            break
        tried += 1
        structure, sg = build_option(store, opt, vpa)
        row = store.frame.iloc[opt.row]
        template_sg = int(row["space_group"])
        if sg != template_sg:
            logger.info(
                "%s from %s: space group %s after substitution, not %d",
                formula,
                row["template_id"],
                sg,
                template_sg,
            )
            continue
        if len(structure) > max_atoms:
            continue
        if any(
            c.space_group == sg and len(c.structure) == len(structure) and matcher.fit(c.structure, structure)
            for c in found
        ):
            continue
        found.append(
            _candidate(fu, len(found) + 1, structure, sg, opt, row, prediction, ranked.get(sg), ranks)
        )
    stop = None if len(found) >= k else f"{len(found)} distinct template structures for {anon}"
    return CandidateList(found, formula=formula, stop_reason=stop)


def _candidate(
    fu: FormulaUnit,
    rank: int,
    structure: Structure,
    sg: int,
    opt: TemplateOption,
    row: Any,
    prediction: Prediction | None,
    group: Any,
    ranks: dict[int, int],
) -> Candidate:
    """The candidate of one built template option (``group``: the prediction's ranked group, if any)."""
    template_sg = int(row["space_group"])
    swaps = [
        f"{element_symbol(s)}->{element_symbol(t)}"
        for s, t in zip((int(z) for z in row["elements"]), opt.mapping, strict=True)
        if s != t
    ]
    has_volume = prediction is not None and prediction.volume_per_atom
    return Candidate(
        formula=fu.formula,
        rank=rank,
        bravais=bravais_of(sg),
        space_group=sg,
        space_group_symbol=space_group_symbol(sg),
        probability=opt.p_pair,
        bravais_probability=float(group.bravais_probability) if group is not None else 0.0,
        space_group_probability=float(group.space_group_probability) if group is not None else 0.0,
        structure=structure,
        z=round(len(structure) / fu.n_atoms),
        formula_unit=fu.text,
        cell=[float(x) for x in structure.lattice.parameters],
        **prediction_fields(prediction, bravais_of(sg)),
        pair_rank=ranks.get(sg, 0),
        source=SOURCE,
        template_id=str(row["template_id"]),
        score=opt.score,
        notes=[
            f"template {row['template_id']} ({row['formula']}, {space_group_symbol(template_sg)}), "
            + (f"substituted {', '.join(swaps)}" if swaps else "same elements")
            + ("" if has_volume else "; template volume kept (no volume prediction)")
        ],
    )
