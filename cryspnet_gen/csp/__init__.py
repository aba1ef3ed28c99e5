"""Crystal structure prediction (CSP) benchmark: is the true structure among a formula's ``k`` candidates?

The metric is the one of DiffCSP (Jiao et al., NeurIPS 2023, ``scripts/compute_metrics.py``), which CDVAE,
DiffCSP and FlowMM report on MP-20 and MPTS-52:

- a formula is *matched* when any of its first ``k`` candidates matches the reference structure under
  ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)`` (pymatgen's other defaults: ``primitive_cell=True``,
  ``scale=True``, ``attempt_supercell=False``), i.e. ``get_rms_dist(candidate, reference)`` is not ``None``;
- its RMSE is the smallest ``get_rms_dist(...)[0]`` over the matching candidates (normalised by
  ``(V / N) ** (1 / 3)``); the reported RMSE is the mean over matched formulas;
- the match rate is matched formulas / all formulas (a formula without any candidate counts as unmatched);
- as in DiffCSP, a candidate only counts when it is a valid structure: every interatomic distance at least
  0.5 Å and a volume of at least 0.1 Å^3 (DiffCSP's ``structure_validity``). DiffCSP also requires the
  composition to pass SMACT's charge-balance screen; that screen is not applied here (SMACT is not a
  dependency), so a formula that fails it can count as matched here and not there.

Unlike the published methods, which are given the number of atoms in the cell, ``generate_candidates`` works
from the formula alone and chooses the number of formula units Z itself.

Candidates come from one of three sources (:class:`CspSettings` ``source``): ``"cryspnet"`` (built in the
predicted groups), ``"templates"`` (substituted known structures from a template store, see
:mod:`cryspnet_gen.sources.templates`; no fall-back, so a formula without a template counts as a miss) or
``"both"`` (the two merged as ``generate_candidates(source="both")`` does, optionally from saved CRYSPNet
candidates). All three are made by :func:`cryspnet_gen.generate.candidates_for`.

Beyond the match rate, each formula records why it was not matched (see :data:`FAILURE_REASONS` and
:func:`classify`): the model's rank of the true (lattice, group) pair, whether the true group was built, the
candidates' Z in the primitive cell, and for candidates in the true group with the true Z whether their
lattice maps onto the reference lattice within ``ltol`` / ``angle_tol`` and whether their Wyckoff
multiplicities per element equal the reference's.

Typical use (``bench/csp.py`` is the command-line front end)::

    refs = sample_references(load_test_set("mp20"), 1000, seed=0)
    evaluator = CspEvaluator(load_predictor("cryspnet-bench"), CspSettings(k=20))
    evaluator.prepare([r.formula for r in refs])          # one batched prediction
    results = [evaluator.evaluate(r) for r in refs]
    summary = summarize(results, k=1), summarize(results, k=20)

Modules: :mod:`~cryspnet_gen.csp.references` (test sets, loading and sampling),
:mod:`~cryspnet_gen.csp.matching` (matcher, validity, per-candidate diagnostics),
:mod:`~cryspnet_gen.csp.evaluator` (candidates through the public API of :mod:`cryspnet_gen.generate`,
compared with the reference) and :mod:`~cryspnet_gen.csp.report` (classification, summaries, tables).
"""

from cryspnet_gen.csp.evaluator import CspEvaluator, CspSettings, FormulaResult
from cryspnet_gen.csp.matching import (
    MATCHER_SETTINGS,
    MIN_DISTANCE,
    MIN_VOLUME,
    CandidateMatch,
    ReferenceInfo,
    compare_structure,
    describe_reference,
    is_valid_structure,
    lattice_maps,
    make_matcher,
    match_rms,
    reduced_cell,
    wyckoff_multiplicities,
)
from cryspnet_gen.csp.references import (
    TEST_SETS,
    Reference,
    SetName,
    TestSet,
    load_test_set,
    sample_references,
)
from cryspnet_gen.csp.report import (
    FAILURE_REASONS,
    PUBLISHED,
    classify,
    markdown_table,
    skip_kind,
    summarize,
    template_coverage,
)
from cryspnet_gen.symmetry import SYMPREC

__all__ = [
    "FAILURE_REASONS",
    "MATCHER_SETTINGS",
    "MIN_DISTANCE",
    "MIN_VOLUME",
    "PUBLISHED",
    "SYMPREC",
    "TEST_SETS",
    "CandidateMatch",
    "CspEvaluator",
    "CspSettings",
    "FormulaResult",
    "Reference",
    "ReferenceInfo",
    "SetName",
    "TestSet",
    "classify",
    "compare_structure",
    "describe_reference",
    "is_valid_structure",
    "lattice_maps",
    "load_test_set",
    "make_matcher",
    "markdown_table",
    "match_rms",
    "reduced_cell",
    "sample_references",
    "skip_kind",
    "summarize",
    "template_coverage",
    "wyckoff_multiplicities",
]
