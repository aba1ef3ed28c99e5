"""Formula -> candidate crystal structures: the orchestration of the candidate sources.

:func:`generate_candidates` turns a formula into the ``k`` most likely concrete structures::

    cands = generate_candidates("Li7La3Zr2O12", k=3, seed=0)
    cands[0].structure            # pymatgen Structure, conventional cell

It parses the formula once (:func:`cryspnet_gen.formula.formula_unit`), predicts once
(:func:`cryspnet_gen.predict.predict_all_pairs`), asks the candidate sources (:mod:`cryspnet_gen.sources.cryspnet`,
:mod:`cryspnet_gen.sources.templates`), merges them (:mod:`cryspnet_gen.ranking`) and optionally relaxes them
(:mod:`cryspnet_gen.relax`). Options are one :class:`~cryspnet_gen.options.GenerateOptions`; keywords given to
the functions here override its fields. Files: :mod:`cryspnet_gen.files`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from cryspnet_gen.files import FileFormat, read_candidates, write_candidates
from cryspnet_gen.formula import INTEGER_RTOL, FormulaUnit, formula_unit
from cryspnet_gen.options import (
    DEFAULT_MAX_ATOMS,
    DEFAULT_MIN_DISTANCE_FACTOR,
    DEFAULT_TIMEOUT,
    DEFAULT_TIMEOUT_PER_GROUP,
    BravaisModel,
    GenerateOptions,
    Isolation,
    Relax,
    Source,
)
from cryspnet_gen.predict import predict_all_pairs
from cryspnet_gen.ranking import cryspnet_needed, merge_candidates
from cryspnet_gen.records import (
    Candidate,
    CandidateList,
    CandidateWarning,
    GenerationError,
    GenerationResult,
    Prediction,
    SkippedPair,
)
from cryspnet_gen.relax import prerelax_pool, relax_and_rerank
from cryspnet_gen.sources.cryspnet import cryspnet_candidates, failure_message
from cryspnet_gen.sources.templates import ENV_VAR, TemplateStore, resolve_store, template_candidates
from cryspnet_gen.sources.templates.ranker import active_ranker
from cryspnet_gen.symmetry import SYMPREC
from cryspnet_gen.validity import check_candidates

if TYPE_CHECKING:
    from cryspnet_gen.predict import Predictor

__all__ = [
    "DEFAULT_MAX_ATOMS",
    "DEFAULT_MIN_DISTANCE_FACTOR",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TIMEOUT_PER_GROUP",
    "INTEGER_RTOL",
    "SYMPREC",
    "BravaisModel",
    "Candidate",
    "CandidateList",
    "CandidateWarning",
    "FileFormat",
    "GenerateOptions",
    "GenerationError",
    "GenerationResult",
    "Isolation",
    "Relax",
    "SkippedPair",
    "Source",
    "SourceFunction",
    "candidates_for",
    "generate_candidates",
    "generate_many",
    "read_candidates",
    "relax_and_rerank",
    "resolve_source",
    "write_candidates",
]

logger = logging.getLogger(__name__)

#: A CRYSPNet candidate source as :func:`candidates_for` calls it: ``(formula unit, prediction, options) ->
#: CandidateList``, raising :class:`GenerationError` when it builds nothing.
SourceFunction = Callable[[FormulaUnit, Prediction, GenerateOptions], CandidateList]


def generate_candidates(
    formula: str,
    k: int | None = None,
    *,
    options: GenerateOptions | None = None,
    predictor: Predictor | None = None,
    **overrides: Any,
) -> CandidateList:
    """The ``k`` most likely candidate structures of a formula, most likely first.

    Parameters
    ----------
    formula
        A chemical formula; non-integer amounts are allowed (their smallest integer multiple is built).
    k
        Number of candidates wanted (default 3, or ``options.k``).
    options
        A :class:`~cryspnet_gen.options.GenerateOptions`; ``None`` for the defaults.
    predictor
        A :class:`~cryspnet_gen.predict.Predictor`; ``None`` loads the shipped default (``load_predictor()``).
    **overrides
        Any field of :class:`~cryspnet_gen.options.GenerateOptions` (``seed``, ``model``, ``per_group``,
        ``max_atoms``, ``space_groups``, ``bravais``, ``timeout``, ``timeout_per_group``,
        ``min_distance_factor``, ``isolation``, ``relax``, ``relax_steps``, ``source``, ``templates``), applied on
        top of ``options``.

    Returns
    -------
    CandidateList
        A list of :class:`~cryspnet_gen.records.Candidate` (``len <= k``) with ``.skipped`` (pairs that gave
        none, with reasons) and ``.stop_reason``. With fewer than ``k`` candidates a :class:`CandidateWarning`
        is issued.

    Raises
    ------
    ValueError
        For a formula that cannot be parsed, has an unknown element, has no integer formula unit within
        ``max_atoms``, or cannot be featurized; and for bad options.
    GenerationError
        When no source gave a structure; ``.skipped`` lists each pair tried and why it failed.
    """
    opts = GenerateOptions.from_keywords(options, k=k, **overrides)
    opts, predictor = options_with_priors(opts, predictor)
    source, store = resolve_source(opts)
    fu = formula_unit(formula, opts.max_atoms)
    (pred,) = predict_all_pairs(predictor, [formula], opts.model)
    found, message = candidates_for(fu, pred, opts, source, store)
    if message is not None:
        warnings.warn(message, CandidateWarning, stacklevel=2)
    if opts.relax is not None:
        found = relax_and_rerank(
            found, opts.relax, steps=opts.relax_steps, progress=True, threads=opts.threads
        )
    return found


def generate_many(
    formulas: Iterable[str],
    k: int | None = None,
    *,
    options: GenerateOptions | None = None,
    predictor: Predictor | None = None,
    progress: bool = True,
    **overrides: Any,
) -> list[GenerationResult]:
    """:func:`generate_candidates` for many formulas: one :class:`GenerationResult` per input, in order.

    The predictions are made in one batch and a template store is loaded once. A bad formula or one without any
    structure gives a result with ``error`` set instead of stopping the batch; fewer than ``k`` candidates sets
    ``warning`` (no Python warning is issued). ``timeout`` applies to each formula. ``progress`` shows a
    progress bar on stderr.

    Raises
    ------
    ValueError
        For bad options (not for bad formulas).
    """
    opts = GenerateOptions.from_keywords(options, k=k, **overrides)
    opts, predictor = options_with_priors(opts, predictor)
    source, store = resolve_source(opts)
    items = [str(f) for f in formulas]
    results: list[GenerationResult | None] = [None] * len(items)
    units: dict[int, FormulaUnit] = {}
    for i, f in enumerate(items):
        try:
            units[i] = formula_unit(f, opts.max_atoms)
        except ValueError as exc:
            results[i] = GenerationResult(formula=f, error=str(exc), error_type="ValueError")
    good = sorted(units)
    preds = predict_all_pairs(predictor, [items[i] for i in good], opts.model) if good else []
    iterator: Iterable[tuple[int, Prediction]] = zip(good, preds, strict=True)
    if progress and good:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(good), desc="generate", unit="formula")
    for i, pred in iterator:
        try:
            found, message = candidates_for(units[i], pred, opts, source, store)
        except (ValueError, GenerationError) as exc:
            skipped = exc.skipped if isinstance(exc, GenerationError) else []
            results[i] = GenerationResult(
                formula=items[i], skipped=skipped, error=str(exc), error_type=type(exc).__name__
            )
            logger.warning("%s", exc)
            continue
        if opts.relax is not None:
            found = relax_and_rerank(found, opts.relax, steps=opts.relax_steps, threads=opts.threads)
        results[i] = GenerationResult(
            formula=items[i], candidates=list(found), skipped=found.skipped, warning=message
        )
    return [r for r in results if r is not None]


def resolve_source(opts: GenerateOptions) -> tuple[str, TemplateStore | None]:
    """The source a call uses and its template store.

    ``source=None`` means "both": templates from the given store, ``$CRYSPNET_GEN_TEMPLATES`` or the prototype
    library shipped in the package, then CRYSPNet structures; "cryspnet" when no store can be found (a package
    installed without its library). ``source="cryspnet"`` turns templates off.
    """
    source = opts.source
    store = resolve_store(opts.templates) if source != "cryspnet" else None
    if source is None:
        if store is None:
            logger.info(
                "no template store (none given, %s not set, no shipped library): CRYSPNet only", ENV_VAR
            )
        source = "both" if store is not None else "cryspnet"
    if source != "cryspnet" and store is None:
        raise ValueError(
            f"source={source!r} needs a template store: pass templates=STORE (--templates) or set {ENV_VAR}; "
            "build one with 'cryspnet-gen templates build --from ../shared/data --out STORE'"
        )
    return source, store


def options_with_priors(
    opts: GenerateOptions, predictor: Predictor | None
) -> tuple[GenerateOptions, Predictor | None]:
    """``opts`` with the bundle's Wyckoff prior (``wyckoff`` ``"prior"`` or ``"auto"``) and learned template ranker
    (``template_ranking`` ``"learned"`` or ``"auto"``) filled in; the predictor is loaded then if it was None.

    Raises
    ------
    ValueError
        When ``wyckoff="prior"`` or ``template_ranking="learned"`` and the bundle lacks that part (``"auto"``
        then uses random orbits / the hand-weighted score).
    """
    want_prior = opts.wyckoff != "random" and opts.wyckoff_prior is None
    want_ranker = opts.template_ranking != "score" and opts.template_ranker is None
    if not (want_prior or want_ranker):
        return opts, predictor
    from cryspnet_gen.predict import load_predictor

    predictor = predictor if predictor is not None else load_predictor()
    changes: dict[str, object] = {}
    if want_prior:
        if predictor.wyckoff_prior is not None:
            changes["wyckoff_prior"] = predictor.wyckoff_prior
        elif opts.wyckoff == "prior":
            raise ValueError(
                f"wyckoff='prior' needs a bundle with a Wyckoff prior; {predictor.name!r} has none (add one with "
                "`cryspnet-gen data z-prior --model DIR`)"
            )
    if want_ranker:
        if predictor.template_ranker is not None:
            changes["template_ranker"] = predictor.template_ranker
        elif opts.template_ranking == "learned":
            raise ValueError(
                f"template_ranking='learned' needs a bundle with a template ranker; {predictor.name!r} has none "
                "(train one with `cryspnet-gen templates train-ranker`) or use template_ranking='score'"
            )
    return (opts.replace(**changes) if changes else opts), predictor


def candidates_for(
    fu: FormulaUnit,
    pred: Prediction,
    opts: GenerateOptions,
    source: str,
    store: TemplateStore | None,
    *,
    cryspnet: SourceFunction | None = None,
    fallback: bool = True,
) -> tuple[CandidateList, str | None]:
    """Candidates of one parsed formula from the chosen source(s), and the warning to give (or ``None``).

    Hooks for callers that record what each source did (the CSP benchmark, :mod:`cryspnet_gen.csp`):
    ``cryspnet`` replaces the CRYSPNet source (default
    :func:`~cryspnet_gen.sources.cryspnet.cryspnet_candidates`), e.g. to time it or to answer with candidates
    saved earlier; it is called only where the dispatch below needs CRYSPNet candidates. Every source's
    candidates pass the validity gate (:func:`~cryspnet_gen.validity.check_candidates`, at
    ``opts.min_distance_factor``) before they are merged: atoms too close are stretched apart or the candidate is
    dropped, with the reason in ``.skipped``. ``fallback=False``:
    ``source="templates"`` gives the (possibly empty) template list even when no template fits, instead of
    falling back to CRYSPNet candidates.
    """
    build = _checked(cryspnet if cryspnet is not None else cryspnet_candidates)
    if opts.prerelax is not None:
        build = _prerelaxed(build)
    if source == "cryspnet":
        found = build(fu, pred, opts)
        return found, (failure_message(fu.formula, found, opts.k) if len(found) < opts.k else None)
    if pred.error is not None:
        raise ValueError(f"formula {fu.formula!r} cannot be predicted: {pred.error}")
    from_templates = check_candidates(
        template_candidates(fu, templates=store, prediction=pred, options=opts),
        factor=opts.min_distance_factor,
    )
    if source == "templates" and (from_templates or not fallback):
        message = None
        if len(from_templates) < opts.k:
            message = (
                f"{fu.formula}: only {len(from_templates)} of {opts.k} candidates from templates "
                f"({from_templates.stop_reason})"
            )
        return from_templates, message
    scoring = active_ranker(opts)
    if source == "both" and not cryspnet_needed(from_templates, opts.k, scoring):
        # every template candidate outscores any CRYSPNet structure: building those would change nothing
        return merge_candidates([from_templates], opts.k, scoring=scoring, formula=fu.formula), None
    return _with_cryspnet(fu, pred, opts, source, from_templates, build)


def _checked(build: SourceFunction) -> SourceFunction:
    """``build`` with every candidate it returns passed through the validity gate
    (:func:`cryspnet_gen.validity.check_candidates`: atoms too close are stretched apart or dropped)."""

    def checked(fu: FormulaUnit, pred: Prediction, opts: GenerateOptions) -> CandidateList:
        found = check_candidates(build(fu, pred, opts), factor=opts.min_distance_factor)
        if not found:
            raise GenerationError(
                failure_message(fu.formula, found, opts.k), formula=fu.formula, skipped=found.skipped
            )
        return found

    return checked


def _prerelaxed(build: SourceFunction) -> SourceFunction:
    """``build`` making ``opts.pool_size`` structures, pre-relaxed with their symmetry kept, of which the ``k`` of
    lowest energy per atom are kept (:func:`cryspnet_gen.relax.prerelax_pool`) and checked again."""

    def prerelaxed(fu: FormulaUnit, pred: Prediction, opts: GenerateOptions) -> CandidateList:
        pool = build(fu, pred, opts.replace(k=opts.pool_size))
        kept = prerelax_pool(
            pool,
            opts.k,
            steps=opts.prerelax_steps,
            timeout=opts.prerelax_timeout,
            threads=opts.threads,
        )
        return check_candidates(kept, factor=opts.min_distance_factor)

    return prerelaxed


def _with_cryspnet(
    fu: FormulaUnit,
    pred: Prediction,
    opts: GenerateOptions,
    source: str,
    from_templates: CandidateList,
    build: SourceFunction,
) -> tuple[CandidateList, str | None]:
    fallback = None
    if not from_templates:
        fallback = f"{fu.formula}: {from_templates.stop_reason}; " + (
            "falling back to CRYSPNet candidates" if source == "templates" else "CRYSPNet candidates only"
        )
        logger.info("%s", fallback)
    try:
        built = build(fu, pred, opts)
    except GenerationError:
        if not from_templates:
            raise
        built = CandidateList([], formula=fu.formula)
    if not from_templates:
        for c in built:
            c.notes.append(fallback or "")
        message = fallback if source == "templates" else None
        if len(built) < opts.k:
            message = "; ".join(m for m in (message, failure_message(fu.formula, built, opts.k)) if m)
        built.stop_reason = built.stop_reason or (fallback if source == "templates" else None)
        return built, message
    merged = merge_candidates(
        [from_templates, built], opts.k, scoring=active_ranker(opts), formula=fu.formula
    )
    message = None
    if len(merged) < opts.k:
        message = failure_message(fu.formula, merged, opts.k)
    return merged, message
