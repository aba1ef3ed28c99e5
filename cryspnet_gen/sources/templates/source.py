"""The template candidate source: a formula's templates, substituted, scaled, checked and de-duplicated."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cryspnet_gen.formula import FormulaUnit, element_symbol, formula_unit
from cryspnet_gen.options import GenerateOptions
from cryspnet_gen.predict import Predictor, predict_all_pairs
from cryspnet_gen.records import Candidate, CandidateList, Prediction, prediction_fields
from cryspnet_gen.sources.templates.locate import resolve_store
from cryspnet_gen.sources.templates.ranker import active_ranker, rerank_options
from cryspnet_gen.sources.templates.scoring import (
    TemplateOption,
    TemplateScoring,
    build_option,
    pair_probabilities,
    rank_options,
)
from cryspnet_gen.sources.templates.store import ENV_VAR, TemplateStore, TemplateStoreError
from cryspnet_gen.symmetry import SYMPREC, bravais_of, space_group_symbol

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["KNOWN_SCORE", "KNOWN_SOURCE", "SOURCE", "template_candidates"]

logger = logging.getLogger(__name__)

SOURCE = "template"
#: ``Candidate.source`` of a known compound's own structure.
KNOWN_SOURCE = "known"
#: Score of the first known structure (the next ones 1 lower each): above any template or CRYSPNet score.
KNOWN_SCORE = 1000.0


def template_candidates(
    formula: str | FormulaUnit,
    k: int | None = None,
    *,
    templates: TemplateStore | str | os.PathLike[str] | None = None,
    prediction: Prediction | None = None,
    predictor: Predictor | None = None,
    options: GenerateOptions | None = None,
    scoring: TemplateScoring | None = None,
    exclude_formulas: Iterable[str] = (),
    max_built: int | None = None,
    **overrides: Any,
) -> CandidateList:
    """Up to ``k`` candidates of ``formula`` from the template store, best score first.

    The generation options that apply here come from ``options`` (:class:`~cryspnet_gen.options.GenerateOptions`)
    and keyword ``overrides`` of its fields: ``model``, ``max_atoms`` (largest cell returned), ``space_groups``
    and ``bravais`` (use only templates in these groups / lattices) and ``known`` (when the formula itself is in
    the store, its own structures come first, lowest energy above hull first, marked ``source="known"`` with the
    store's id; ``False`` leaves them out, for benchmarks).

    Parameters
    ----------
    formula
        The formula or its parsed formula unit (a fractional formula's smallest integer multiple is used).
    templates
        A store or library, its folder, or ``None`` for ``$CRYSPNET_GEN_TEMPLATES`` / the shipped library.
    prediction, predictor
        CRYSPNet's prediction for the formula (with every lattice and group), or the predictor that makes it
        (``None``: the shipped default).
    scoring
        Weights of the hand-weighted score (default :class:`TemplateScoring`); with ``template_ranking``
        ``"auto"`` (the default) and a bundle that has a learned ranker (``options.template_ranker`` or the
        predictor's), the first options by that score are re-ranked by the ranker and scored log P(match)
        (:mod:`cryspnet_gen.sources.templates.ranker`); ``"score"`` keeps the hand-weighted order.
    exclude_formulas
        Reduced formulas whose templates are not used (e.g. the formula itself, to evaluate leave-one-out).
    max_built
        Most template options built and checked (default ``10 * k + 20``).

    Returns
    -------
    CandidateList
        Candidates with ``source=SOURCE`` (or ``KNOWN_SOURCE``) and ``template_id`` set; an empty list (with
        ``stop_reason``) when the store has no template of this anonymous formula.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    opts = GenerateOptions.from_keywords(options, k=k, **overrides)
    k, max_atoms = opts.k, opts.max_atoms
    store = resolve_store(templates)
    if store is None:
        raise TemplateStoreError(
            f"no template store: pass templates=STORE or set {ENV_VAR} "
            "(build one with 'cryspnet-gen templates build --from ../shared/data --out STORE')"
        )
    scoring = scoring or TemplateScoring()
    fu = formula if isinstance(formula, FormulaUnit) else formula_unit(formula, max_atoms)
    formula = fu.formula
    if prediction is None:
        if predictor is None:
            from cryspnet_gen.predict import load_predictor

            predictor = load_predictor()
        (prediction,) = predict_all_pairs(predictor, [fu.formula], opts.model)
    ranker = active_ranker(opts, predictor)
    probs, ranked, ranks = pair_probabilities(prediction)
    allowed: set[int] | None = None
    if opts.space_groups is not None or opts.bravais is not None:
        allowed = set(range(1, 231)) if opts.space_groups is None else set(opts.space_groups)
        if opts.bravais is not None:
            allowed = {g for g in allowed if bravais_of(g) in set(opts.bravais)}
    options_ranked = rank_options(
        store, fu.amounts, probs, scoring, exclude_formulas=exclude_formulas, space_groups=allowed
    )
    if ranker is not None:
        options_ranked = rerank_options(store, fu.amounts, options_ranked, prediction, ranker, scoring)
    known = opts.known
    anon = fu.anonymous
    matcher = StructureMatcher()
    found: list[Candidate] = []
    if known:
        found = _known_candidates(
            store, fu, k, prediction, allowed, max_atoms, ranked, ranks, exclude_formulas
        )
    if not options_ranked and not found:
        return CandidateList(
            [], formula=formula, stop_reason=f"no template with the anonymous formula {anon} in the store"
        )
    vpa = None if prediction is None else prediction.volume_per_atom
    limit = max_built if max_built is not None else 10 * k + 20
    tried = 0
    for opt in options_ranked:
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
    note = (
        f"template {row['template_id']} ({row['formula']}, {space_group_symbol(template_sg)}), "
        + (f"substituted {', '.join(swaps)}" if swaps else "same elements")
        + ("" if has_volume else "; template volume kept (no volume prediction)")
        + ("" if opt.p_match is None else f"; learned ranker P(match) {opt.p_match:.2f}")
    )
    return _make_candidate(
        fu,
        rank,
        structure,
        sg,
        prediction,
        group,
        ranks,
        SOURCE,
        str(row["template_id"]),
        opt.score,
        note,
        opt.p_pair,
    )


def _make_candidate(
    fu: FormulaUnit,
    rank: int,
    structure: Structure,
    sg: int,
    prediction: Prediction | None,
    group: Any,
    ranks: dict[int, int],
    source: str,
    template_id: str,
    score: float,
    note: str,
    probability: float | None = None,
) -> Candidate:
    """A candidate of this source (``group``: the prediction's ranked group of ``sg``, if any)."""
    if probability is None:
        probability = float(group.probability) if group is not None else 0.0
    return Candidate(
        formula=fu.formula,
        rank=rank,
        bravais=bravais_of(sg),
        space_group=sg,
        space_group_symbol=space_group_symbol(sg),
        probability=probability,
        bravais_probability=float(group.bravais_probability) if group is not None else 0.0,
        space_group_probability=float(group.space_group_probability) if group is not None else 0.0,
        structure=structure,
        z=round(len(structure) / fu.n_atoms),
        formula_unit=fu.text,
        cell=[float(x) for x in structure.lattice.parameters],
        **prediction_fields(prediction, bravais_of(sg)),
        pair_rank=ranks.get(sg, 0),
        source=source,
        template_id=template_id,
        score=score,
        notes=[note],
    )


def _known_candidates(
    store: TemplateStore,
    fu: FormulaUnit,
    k: int,
    prediction: Prediction | None,
    allowed: set[int] | None,
    max_atoms: int,
    ranked: dict[int, Any],
    ranks: dict[int, int],
    exclude_formulas: Iterable[str],
) -> list[Candidate]:
    """The store's own structures of the formula (a known compound), lowest energy above hull first."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Lattice, Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    if fu.reduced_formula in set(exclude_formulas):
        return []
    matcher = StructureMatcher()
    found: list[Candidate] = []
    for _, row in store.known(fu.reduced_formula).iterrows():
        if len(found) >= k:
            break
        sg = int(row["space_group"])
        if allowed is not None and sg not in allowed:
            continue
        lattice, numbers, frac = store.row_cell(row)
        species: list[Any] = [int(z) for z in numbers]
        structure = Structure(Lattice(lattice), species, frac)
        with contextlib.suppress(ValueError):
            structure = SpacegroupAnalyzer(structure, symprec=SYMPREC).get_conventional_standard_structure()
        if len(structure) > max_atoms or any(
            c.space_group == sg and len(c.structure) == len(structure) and matcher.fit(c.structure, structure)
            for c in found
        ):
            continue
        ehull = float(row["e_above_hull"])
        flag = ", experimentally known" if bool(row.get("experimental", False)) else ""
        note = (
            f"known compound {row['template_id']} ({row['formula']}, {space_group_symbol(sg)}): "
            + ("energy above hull unknown" if ehull != ehull else f"{ehull:.3f} eV/atom above the hull")
            + flag
        )
        found.append(
            _make_candidate(
                fu,
                len(found) + 1,
                structure,
                sg,
                prediction,
                ranked.get(sg),
                ranks,
                KNOWN_SOURCE,
                str(row["template_id"]),
                KNOWN_SCORE - len(found),
                note,
            )
        )
    return found
