"""Per-formula evaluation: a formula's candidates, made by the public API, compared with its reference.

:class:`CspEvaluator` predicts every formula of a run in one batch, asks
:func:`cryspnet_gen.generate.candidates_for` for the candidates (the one place where sources are chosen, run
and merged), optionally relaxes the first few with CHGNet, and compares each with the reference
(:func:`~cryspnet_gen.csp.matching.compare_structure`). What it keeps for the results beyond the candidates
(the time of each source, the CRYSPNet source's skipped pairs) it records through the ``cryspnet=`` hook of
``candidates_for``, which also lets a ``"both"`` run reuse the CRYSPNet candidates of an earlier run.
:class:`FormulaResult` is one line of the results file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryspnet_gen.csp.matching import (
    CandidateMatch,
    ReferenceFacts,
    ReferenceInfo,
    compare_structure,
    describe_reference,
    make_matcher,
    reduced_cell,
)
from cryspnet_gen.formula import FormulaUnit, formula_unit
from cryspnet_gen.generate import (
    Candidate,
    CandidateList,
    GenerateOptions,
    GenerationError,
    SkippedPair,
    candidates_for,
    options_with_priors,
    resolve_source,
)
from cryspnet_gen.predict import predict_all_pairs
from cryspnet_gen.relax import load_chgnet_optimizer, relax_structure, space_group_of
from cryspnet_gen.runtime import torch_threads
from cryspnet_gen.sources.cryspnet import cryspnet_candidates
from cryspnet_gen.symmetry import SYMPREC

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from cryspnet_gen.csp.references import Reference
    from cryspnet_gen.predict import Predictor
    from cryspnet_gen.records import Prediction

__all__ = ["CspEvaluator", "CspSettings", "FormulaResult"]

logger = logging.getLogger(__name__)


@dataclass
class FormulaResult(ReferenceFacts):
    """Everything recorded for one test formula (one line of the results JSONL file).

    ``candidates`` are the generated candidates, most likely first; ``relaxed`` the first ``relax_top`` of
    them after relaxation, in the same (predicted) order; ``seconds`` has ``predict`` (this formula's share
    of the batched prediction), ``templates`` (template candidates and the merge), ``generate`` (CRYSPNet
    candidates, or the recorded time of saved ones), ``match``, ``relax`` and ``total``.
    """

    true_pair_rank: int | None
    true_pair_probability: float | None
    true_group_skip: str | None
    n_skipped: int
    stop_reason: str | None
    error: str | None
    candidates: list[CandidateMatch]
    relaxed: list[CandidateMatch] | None
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FormulaResult:
        """Inverse of :meth:`to_dict`; keys that are not fields (e.g. a run's bookkeeping) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        d = {key: value for key, value in d.items() if key in known}
        d["candidates"] = [CandidateMatch(**c) for c in d["candidates"]]
        if d.get("relaxed") is not None:
            d["relaxed"] = [CandidateMatch(**c) for c in d["relaxed"]]
        return cls(**d)


@dataclass
class CspSettings:
    """Options of one benchmark run (recorded with its results).

    Attributes
    ----------
    k
        Candidates generated per formula.
    seed
        ``generate_candidates(seed=...)``.
    model
        Bravais model (``"master"``).
    max_atoms
        Largest conventional cell built.
    timeout, timeout_per_group
        ``generate_candidates`` time limits per formula and per (lattice, group) pair (s).
    relax_top
        Relax the first this many candidates with CHGNet (0: none).
    relax_steps, relax_fmax
        CHGNet step cap and force criterion (eV/Å); the cell is relaxed too.
    source
        ``"cryspnet"``, ``"templates"`` (template candidates only, no fall-back: a formula without a template
        has no candidate) or ``"both"`` (the two merged, as ``generate_candidates(source="both")`` does).
    templates
        The template store folder (for ``"templates"`` and ``"both"``).
    z_rule
        ``GenerateOptions.z_rule``: which Z CRYSPNet candidates try first (``"smallest"`` or ``"prior"``).
    wyckoff
        ``GenerateOptions.wyckoff``: ``"auto"`` (the bundle's Wyckoff prior when it has one), ``"random"`` or
        ``"prior"``.
    template_ranking
        ``GenerateOptions.template_ranking``: ``"auto"`` (the bundle's learned ranker when it has one),
        ``"learned"`` or ``"score"`` (the hand-weighted score).
    prerelax, prerelax_pool, prerelax_steps, prerelax_timeout
        ``GenerateOptions.prerelax`` and its settings: CRYSPNet structures of a larger pool pre-relaxed with
        CHGNet (symmetry kept) and the ``k`` of lowest energy kept.
    """

    k: int = 20
    seed: int = 0
    model: str = "master"
    max_atoms: int = 200
    timeout: float = 20.0
    timeout_per_group: float = 5.0
    relax_top: int = 0
    relax_steps: int = 200
    relax_fmax: float = 0.1
    source: str = "cryspnet"
    templates: str | None = None
    z_rule: str = "smallest"
    wyckoff: str = "auto"
    template_ranking: str = "auto"
    prerelax: str | None = None
    prerelax_pool: int | None = None
    prerelax_steps: int = 50
    prerelax_timeout: float | None = 60.0

    def generate_options(self) -> GenerateOptions:
        """The :class:`~cryspnet_gen.options.GenerateOptions` these settings generate with (validated)."""
        return GenerateOptions(
            k=self.k,
            seed=self.seed,
            model=self.model,  # type: ignore[arg-type]
            max_atoms=self.max_atoms,
            timeout=self.timeout,
            timeout_per_group=self.timeout_per_group,
            source=self.source,  # type: ignore[arg-type]
            templates=self.templates,
            z_rule=self.z_rule,  # type: ignore[arg-type]
            wyckoff=self.wyckoff,  # type: ignore[arg-type]
            template_ranking=self.template_ranking,  # type: ignore[arg-type]
            prerelax=self.prerelax,  # type: ignore[arg-type]
            prerelax_pool=self.prerelax_pool,
            prerelax_steps=self.prerelax_steps,
            prerelax_timeout=self.prerelax_timeout,
            known=False,  # a benchmark formula's own structure must never be looked up
        )


class _CryspnetSource:
    """The CRYSPNet source as ``candidates_for(cryspnet=...)`` calls it, recording what the results keep.

    ``saved``: candidates generated earlier with the same settings and the seconds that took; the first
    ``opts.k`` of them are answered instead of generating again (copies: ``candidates_for`` may add notes to
    them).
    """

    def __init__(self, saved: tuple[Sequence[Candidate], float] | None) -> None:
        self.saved = saved
        self.seconds = 0.0  # wall time spent in this source
        self.saved_seconds = 0.0  # the recorded generation time of the saved candidates used
        self.skipped: list[SkippedPair] = []
        self.stop_reason: str | None = None

    def __call__(self, fu: FormulaUnit, pred: Prediction, opts: GenerateOptions) -> CandidateList:
        start = time.perf_counter()
        try:
            if self.saved is not None:
                cands, self.saved_seconds = self.saved
                found = CandidateList(
                    [dataclasses.replace(c, notes=list(c.notes)) for c in cands[: opts.k]], formula=fu.formula
                )
            else:
                found = cryspnet_candidates(fu, pred, opts)
        except GenerationError as exc:
            self.skipped = list(exc.skipped)
            raise
        finally:
            self.seconds += time.perf_counter() - start
        self.skipped, self.stop_reason = list(found.skipped), found.stop_reason
        return found


def _shorten(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else f"{text[: limit // 2]} ... {text[-limit // 2 :]}"


def _true_pair(pred: Prediction, ref: ReferenceInfo) -> tuple[int | None, float | None]:
    """The model's rank (from 1) and probability of the reference's (lattice, group) pair, or ``None``."""
    for i, g in enumerate(pred.ranked_groups(), start=1):
        if g.space_group == ref.space_group and g.bravais == ref.bravais:
            return i, float(g.probability)
    return None, None


class CspEvaluator:
    """Generates candidates for test formulas and compares them with the reference structures.

    Parameters
    ----------
    predictor
        The model bundle, e.g. ``load_predictor("cryspnet-bench")``.
    settings
        Run options.
    saved
        CRYSPNet candidates already generated (with the same settings) and the seconds that took, by formula;
        used instead of generating them again (the seconds are counted as generation time).
    """

    def __init__(
        self,
        predictor: Predictor,
        settings: CspSettings | None = None,
        *,
        saved: dict[str, tuple[list[Candidate], float]] | None = None,
    ) -> None:
        self.settings = settings or CspSettings()
        self.saved = saved or {}
        if self.settings.source != "cryspnet" and not self.settings.templates:
            raise ValueError(f"source={self.settings.source!r} needs CspSettings.templates (a store folder)")
        self.options, _ = options_with_priors(self.settings.generate_options(), predictor)
        self._source, self._store = resolve_source(self.options)
        self.predictor = predictor
        self._predictions: dict[str, Prediction] = {}
        self._matcher = make_matcher()
        self._optimizer: Any = None
        self._predict_share = 0.0
        #: The candidates built by the last :meth:`evaluate` call (for saving them beside the results).
        self.last_candidates: list[Candidate] = []

    def prepare(self, formulas: Sequence[str]) -> float:
        """Predict all ``formulas`` in one batch (much faster than one by one); returns the seconds taken."""
        start = time.perf_counter()
        todo = [f for f in dict.fromkeys(formulas) if f not in self._predictions]
        if todo:
            preds = predict_all_pairs(self.predictor, todo, self.options.model)
            self._predictions.update(zip(todo, preds, strict=True))
        seconds = time.perf_counter() - start
        if formulas:
            self._predict_share = seconds / len(formulas)
        return seconds

    def _prediction(self, formula: str) -> Prediction:
        if formula not in self._predictions:
            (self._predictions[formula],) = predict_all_pairs(self.predictor, [formula], self.options.model)
        return self._predictions[formula]

    def evaluate(self, reference: Reference) -> FormulaResult:
        """Generate ``k`` candidates for the reference's formula (and relax some) and compare each with it."""
        opts = self.settings
        ref = describe_reference(reference)
        seconds = {"predict": 0.0, "templates": 0.0, "generate": 0.0, "match": 0.0, "relax": 0.0}
        t0 = time.perf_counter()
        pred = self._prediction(reference.formula)
        seconds["predict"] = time.perf_counter() - t0 + self._predict_share
        true_rank, true_p = _true_pair(pred, ref)

        found, cryspnet, error = self._candidates(reference.formula, pred, seconds)
        self.last_candidates = list(found)
        skipped = cryspnet.skipped
        stop_reason = found.stop_reason if opts.source == "templates" else cryspnet.stop_reason
        true_skip = next(
            (s.reason for s in skipped if s.space_group == ref.space_group and s.bravais == ref.bravais), None
        )

        t0 = time.perf_counter()
        cands = [self._compare(c, c.structure, c.space_group, ref, reference.structure) for c in found]
        seconds["match"] = time.perf_counter() - t0

        relaxed = None
        if opts.relax_top > 0:
            t0 = time.perf_counter()
            relaxed = self._relax_and_compare(list(found)[: opts.relax_top], ref, reference.structure)
            seconds["relax"] = time.perf_counter() - t0
        seconds["total"] = sum(seconds.values())
        return FormulaResult(
            **ref.facts(),
            true_pair_rank=true_rank,
            true_pair_probability=true_p,
            true_group_skip=None if true_skip is None else _shorten(true_skip),
            n_skipped=len(skipped),
            stop_reason=stop_reason,
            error=None if error is None else error[:500],
            candidates=cands,
            relaxed=relaxed,
            seconds={k: round(v, 4) for k, v in seconds.items()},
        )

    def _candidates(
        self, formula: str, pred: Prediction, seconds: dict[str, float]
    ) -> tuple[CandidateList, _CryspnetSource, str | None]:
        """The candidates of ``formula`` from :func:`~cryspnet_gen.generate.candidates_for`, the CRYSPNet
        source's record, and the error that left none (``GenerationError`` or ``ValueError``, as text).

        ``seconds["generate"]`` gets the CRYSPNet source's time (all of it for ``source="cryspnet"``),
        ``seconds["templates"]`` the rest (template candidates and the merge).
        """
        cryspnet = _CryspnetSource(self.saved.get(formula))
        found = CandidateList([], formula=formula)
        error = None
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fu = formula_unit(formula, self.options.max_atoms)
                found, _ = candidates_for(
                    fu, pred, self.options, self._source, self._store, cryspnet=cryspnet, fallback=False
                )
            except GenerationError as exc:
                error = f"GenerationError: {exc}"
            except ValueError as exc:
                error = f"ValueError: {exc}"
        elapsed = time.perf_counter() - t0
        if self._source == "cryspnet":
            seconds["generate"] = elapsed + cryspnet.saved_seconds
        else:
            seconds["templates"] = elapsed - cryspnet.seconds
            seconds["generate"] = cryspnet.seconds + cryspnet.saved_seconds
        return found, cryspnet, error

    def _compare(
        self,
        c: Candidate,
        structure: Structure,
        space_group: int | None,
        ref: ReferenceInfo,
        reference: Structure,
    ) -> CandidateMatch:
        """Candidate ``c`` as ``structure`` (in ``space_group``: as built, or after relaxation) compared with
        the reference."""
        return compare_structure(
            structure,
            ref,
            self._matcher,
            rank=c.rank,
            space_group=space_group,
            generated_space_group=c.space_group,
            pair_rank=c.pair_rank,
            reference=reference,
            source=c.source,
            template_id=c.template_id,
        )

    def _relax_and_compare(
        self, cands: Sequence[Candidate], ref: ReferenceInfo, reference: Structure
    ) -> list[CandidateMatch]:
        opts = self.settings
        out: list[CandidateMatch] = []
        with torch_threads(1, blas=True):  # CHGNet is many times faster with one thread on a busy machine
            if self._optimizer is None:
                self._optimizer = load_chgnet_optimizer()
            for c in cands:
                # Relaxing the reduced primitive cell gives the same structure for fewer atoms; matching
                # reduces to it anyway.
                start = reduced_cell(c.structure)
                try:
                    res = relax_structure(
                        start, optimizer=self._optimizer, steps=opts.relax_steps, fmax=opts.relax_fmax
                    )
                except Exception as exc:  # one failed relaxation must not stop the run
                    logger.warning("relaxation of %s #%d failed: %s", c.formula, c.rank, exc)
                    out.append(_failed_relaxation(c, len(start), exc))
                    continue
                sg, _ = space_group_of(res.structure, SYMPREC)
                m = self._compare(c, res.structure, sg, ref, reference)
                m.energy_per_atom = float(res.energy_per_atom)
                m.n_steps = int(res.n_steps)
                m.converged = bool(res.converged)
                if not math.isfinite(res.energy_per_atom):
                    m.error = f"non-finite energy {res.energy_per_atom}"
                out.append(m)
        return out


def _failed_relaxation(c: Candidate, nsites: int, exc: Exception) -> CandidateMatch:
    """The record of a candidate whose relaxation raised ``exc`` (``nsites``: its reduced cell's size)."""
    return CandidateMatch(
        rank=c.rank,
        space_group=None,
        bravais=None,
        generated_space_group=c.space_group,
        pair_rank=c.pair_rank,
        nsites=nsites,
        prim_nsites=nsites,
        valid=False,
        rms=None,
        error=f"{type(exc).__name__}: {exc}"[:300],
    )
