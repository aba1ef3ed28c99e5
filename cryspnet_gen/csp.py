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
:mod:`cryspnet_gen.templates`; no fall-back, so a formula without a template counts as a miss) or ``"both"``
(the two merged as ``generate_candidates(source="both")`` does, optionally from saved CRYSPNet candidates).

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
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

    from cryspnet_gen.generate import Candidate
    from cryspnet_gen.predict import Prediction, Predictor

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
    "TestSet",
    "classify",
    "compare_structure",
    "describe_reference",
    "is_valid_structure",
    "load_test_set",
    "make_matcher",
    "markdown_table",
    "match_rms",
    "reduced_cell",
    "sample_references",
    "skip_kind",
    "summarize",
    "template_coverage",
]

logger = logging.getLogger(__name__)

#: DiffCSP's StructureMatcher settings (pymatgen defaults otherwise: primitive_cell=True, scale=True).
MATCHER_SETTINGS: dict[str, float] = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}
#: DiffCSP's structure validity: shortest interatomic distance (Å) and smallest volume (Å^3).
MIN_DISTANCE = 0.5
MIN_VOLUME = 0.1
#: Symmetry tolerance (Å) for the reference's space group and for Wyckoff multiplicities.
SYMPREC = 0.1

#: Why a formula was not matched, in the order :func:`classify` checks them.
FAILURE_REASONS: tuple[str, ...] = (
    "no candidate built",
    "relaxation failed",
    "true group tried, not built",
    "wrong Bravais lattice",
    "wrong space group",
    "wrong Z",
    "lattice off",
    "Wyckoff arrangement differs",
    "positions off",
    "matched but invalid",
)

#: Published match rates (%) at k=1 and k=20: DiffCSP (Jiao et al., NeurIPS 2023), Table 1.
PUBLISHED: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "mp20": {
        "Random search": (8.73, None),
        "CDVAE": (33.90, 66.95),
        "DiffCSP": (51.49, 77.93),
    },
    "mpts52": {
        "CDVAE": (5.34, 20.79),
        "DiffCSP": (12.19, 34.02),
    },
}

SetName = Literal["mp20", "mpts52"]


@dataclass(frozen=True)
class TestSet:
    """One benchmark test file: where it is and what it is called in tables."""

    name: str
    source: str  # key of cryspnet_gen.data.BENCHMARK_FILES
    e_hull_column: str
    label: str
    max_sites: int  # largest reference cell in the set (atoms)


TEST_SETS: dict[str, TestSet] = {
    "mp20": TestSet(
        "mp20",
        "mp20_test",
        "e_above_hull",
        "MP-20 test, binary + ternary only (published numbers are on the full test set)",
        20,
    ),
    "mpts52": TestSet("mpts52", "mpts52_test", "energy_above_hull", "MPTS-52 test", 52),
    # validation files, for tuning (never for reported numbers)
    "mp20_val": TestSet(
        "mp20_val", "mp20_val", "e_above_hull", "MP-20 validation, binary + ternary only", 20
    ),
    "mpts52_val": TestSet("mpts52_val", "mpts52_val", "energy_above_hull", "MPTS-52 validation", 52),
}


# ---------------------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One test structure: the lowest-``e_above_hull`` entry of its reduced formula."""

    material_id: str
    formula: str
    structure: Structure
    e_above_hull: float


def _structure_from_cif(cif: str) -> Structure:
    from pymatgen.core import Lattice, Structure

    from cryspnet_gen.data import read_cif_cell

    lattice, frac, numbers = read_cif_cell(cif)
    species: list[Any] = [int(z) for z in numbers]
    return Structure(Lattice(lattice), species, frac)


def load_test_set(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Reference]:
    """The test structures of ``name`` (``"mp20"`` or ``"mpts52"``), one per reduced formula, by formula.

    Rows are deduplicated by the reduced formula of their CIF's atoms, keeping the lowest energy above hull
    (ties: the smaller material id). Unreadable CIFs are skipped with a warning.
    """
    import pandas as pd

    from cryspnet_gen.config import resolve_data_dir
    from cryspnet_gen.data import BENCHMARK_FILES

    if name not in TEST_SETS:
        raise ValueError(f"Unknown {name=}; choose from {tuple(TEST_SETS)}")
    spec = TEST_SETS[name]
    path = resolve_data_dir(data_dir) / BENCHMARK_FILES[spec.source]
    frame = pd.read_csv(path)
    missing = [c for c in ("material_id", "cif", spec.e_hull_column) if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}")
    best: dict[str, tuple[float, str, Structure]] = {}
    for mid, cif, ehull in zip(frame["material_id"], frame["cif"], frame[spec.e_hull_column], strict=True):
        try:
            structure = _structure_from_cif(cif)
        except ValueError as exc:
            logger.warning("%s %s: unreadable CIF (%s)", name, mid, exc)
            continue
        formula = structure.composition.reduced_formula
        e = float(ehull) if ehull == ehull else math.inf  # NaN last
        key = (e, str(mid))
        if formula not in best or key < best[formula][:2]:
            best[formula] = (e, str(mid), structure)
    return [
        Reference(material_id=mid, formula=f, structure=s, e_above_hull=e)
        for f, (e, mid, s) in sorted(best.items())
    ]


def sample_references(references: Sequence[Reference], n: int | None, seed: int) -> list[Reference]:
    """A seeded random order of ``references``, first ``n`` (all when ``None``).

    Smaller ``n`` give prefixes of larger ones (same seed), so a run stopped early is a random sample too.
    """
    ordered = sorted(references, key=lambda r: r.formula)
    order = np.random.default_rng(seed).permutation(len(ordered))
    out = [ordered[int(i)] for i in order]
    return out if n is None else out[:n]


# ---------------------------------------------------------------------------------------------------------
# matching
# ---------------------------------------------------------------------------------------------------------


def make_matcher() -> StructureMatcher:
    """``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)``, as DiffCSP evaluates CSP."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(**MATCHER_SETTINGS)  # type: ignore[arg-type]


def is_valid_structure(structure: Structure) -> bool:
    """DiffCSP's ``structure_validity``: all distances >= 0.5 Å and volume >= 0.1 Å^3."""
    if structure.volume < MIN_VOLUME:
        return False
    if len(structure) < 2:
        return True
    dist = np.array(structure.distance_matrix, dtype=float)
    np.fill_diagonal(dist, np.inf)
    return bool(dist.min() >= MIN_DISTANCE)


def reduced_cell(structure: Structure) -> Structure:
    """The Niggli-reduced primitive cell, as ``StructureMatcher`` reduces its inputs."""
    return structure.get_reduced_structure(reduction_algo="niggli").get_primitive_structure()


def match_rms(
    candidate: Structure,
    reference: Structure,
    matcher: StructureMatcher | None = None,
    *,
    reduced: tuple[Structure, Structure] | None = None,
) -> float | None:
    """Normalised RMS distance of a match (``get_rms_dist(candidate, reference)[0]``), ``None`` for no match.

    ``reduced``: the two structures' :func:`reduced_cell`, when already known; then a pair whose primitive
    cells hold different numbers of sites is answered ``None`` without calling the matcher (which would find
    no mapping for it, as ``attempt_supercell=False``). A matcher error counts as no match, as in DiffCSP.
    """
    if reduced is not None and len(reduced[0]) != len(reduced[1]):
        return None
    matcher = matcher if matcher is not None else make_matcher()
    try:
        rms = matcher.get_rms_dist(candidate, reference)
    except Exception as exc:  # DiffCSP counts any matcher error as no match
        logger.warning("StructureMatcher failed (%s: %s); counted as no match", type(exc).__name__, exc)
        return None
    return None if rms is None else float(rms[0])


def _wyckoff_multiplicities(structure: Structure) -> list[list[Any]] | None:
    """Sorted ``[element, multiplicity]`` of each Wyckoff orbit, in the conventional cell (symprec 0.1).

    Counted from spglib's orbits of the given cell and scaled to the standard conventional cell, so that the
    answer does not depend on the cell the structure is given in (a primitive rhombohedral cell gives the
    hexagonal-axes multiplicities).
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        dataset = SpacegroupAnalyzer(structure, symprec=SYMPREC).get_symmetry_dataset()
    except Exception as exc:  # spglib failures surface as several types
        logger.info("no Wyckoff positions (%s)", exc)
        return None
    if dataset is None:
        return None

    # spglib < 2.5 returns a dict, later versions a dataclass
    def value(key: str) -> Any:
        return dataset[key] if isinstance(dataset, dict) else getattr(dataset, key)

    equivalent = np.asarray(value("equivalent_atoms"))
    std_types = value("std_types")
    factor = len(std_types) / len(structure)
    orbits = Counter(int(i) for i in equivalent)
    return sorted([structure[i].species_string, round(n * factor)] for i, n in orbits.items())


def _lattice_maps(candidate: Structure, reference: Structure) -> bool:
    """Whether the lattices of two reduced cells map onto each other within ``ltol`` / ``angle_tol``.

    The candidate is scaled to the reference's volume first, as ``StructureMatcher(scale=True)`` does.
    """
    from pymatgen.core import Lattice

    ratio = (reference.volume / candidate.volume) ** (1.0 / 3.0)
    lattice = Lattice(candidate.lattice.matrix * ratio)
    for _, _, scale_m in lattice.find_all_mappings(
        reference.lattice,
        ltol=MATCHER_SETTINGS["ltol"],
        atol=MATCHER_SETTINGS["angle_tol"],
        skip_rotation_matrix=True,
    ):
        if math.isclose(abs(float(np.linalg.det(scale_m))), 1.0, abs_tol=0.5):
            return True
    return False


@dataclass
class ReferenceInfo:
    """What the evaluation needs to know about a reference structure."""

    formula: str
    material_id: str
    space_group: int
    bravais: str
    nsites: int
    prim_nsites: int
    fu_atoms: int
    wyckoff: list[list[Any]] | None
    reduced: Structure = field(repr=False)

    @property
    def z_prim(self) -> float:
        """Formula units in the primitive cell."""
        return self.prim_nsites / self.fu_atoms


def describe_reference(reference: Reference) -> ReferenceInfo:
    """Space group (spglib, symprec 0.1), Bravais lattice, primitive size and Wyckoff multiplicities."""
    from cryspnet_gen.symmetry import analyze_structure

    s = reference.structure
    sym = analyze_structure(s, symprec=SYMPREC)
    reduced = reduced_cell(s)
    fu_atoms = round(s.composition.get_reduced_composition_and_factor()[0].num_atoms)
    return ReferenceInfo(
        formula=reference.formula,
        material_id=reference.material_id,
        space_group=sym.space_group,
        bravais=sym.bravais,
        nsites=len(s),
        prim_nsites=len(reduced),
        fu_atoms=fu_atoms,
        wyckoff=_wyckoff_multiplicities(s),
        reduced=reduced,
    )


@dataclass
class CandidateMatch:
    """One candidate compared with the reference.

    Attributes
    ----------
    rank
        The candidate's rank from ``generate_candidates`` (1 = most likely).
    space_group, bravais
        The candidate's group and lattice (after relaxation: the relaxed structure's group at symprec 0.1,
        ``None`` when spglib finds none).
    generated_space_group
        The group it was built in.
    pair_rank
        Rank of its (lattice, group) pair in the model's ranking.
    nsites, prim_nsites
        Atoms in the structure and in its reduced primitive cell.
    valid
        DiffCSP's structure validity (:func:`is_valid_structure`).
    rms
        Normalised RMS distance of the match, ``None`` for no match.
    lattice_ok, wyckoff_same
        For a candidate in the reference's group with the reference's primitive size: whether its reduced
        lattice maps onto the reference's within ltol 0.3 / 10 degrees after volume scaling, and whether its
        (element, Wyckoff multiplicity) list equals the reference's. ``None`` for other candidates.
    energy_per_atom, n_steps, converged, error
        Relaxation results (``None`` for unrelaxed candidates); ``error`` says why a relaxation failed.
    source, template_id
        Where the candidate came from (``"cryspnet"`` or ``"template"``) and its template.
    """

    rank: int
    space_group: int | None
    bravais: str | None
    generated_space_group: int
    pair_rank: int
    nsites: int
    prim_nsites: int
    valid: bool
    rms: float | None
    lattice_ok: bool | None = None
    wyckoff_same: bool | None = None
    energy_per_atom: float | None = None
    n_steps: int | None = None
    converged: bool | None = None
    error: str | None = None
    source: str = "cryspnet"
    template_id: str | None = None

    @property
    def matched(self) -> bool:
        """A valid structure that matches the reference."""
        return self.valid and self.rms is not None


def compare_structure(
    structure: Structure,
    ref: ReferenceInfo,
    matcher: StructureMatcher,
    *,
    rank: int,
    space_group: int | None,
    generated_space_group: int,
    pair_rank: int = 0,
    reference: Structure | None = None,
    source: str = "cryspnet",
    template_id: str | None = None,
) -> CandidateMatch:
    """Compare one candidate structure with a reference: match, RMS, validity and diagnostics.

    ``reference``: the reference structure as given (the matcher is called on it, as DiffCSP does); its
    reduced cell ``ref.reduced`` is used when omitted.
    """
    from cryspnet_gen.symmetry import bravais_of

    reduced = reduced_cell(structure)
    target = reference if reference is not None else ref.reduced
    rms = match_rms(structure, target, matcher, reduced=(reduced, ref.reduced))
    lattice_ok = wyckoff_same = None
    if space_group == ref.space_group and len(reduced) == ref.prim_nsites:
        lattice_ok = _lattice_maps(reduced, ref.reduced)
        wyckoff = _wyckoff_multiplicities(structure)
        wyckoff_same = wyckoff is not None and wyckoff == ref.wyckoff
    return CandidateMatch(
        rank=rank,
        space_group=space_group,
        bravais=None if space_group is None else bravais_of(space_group),
        generated_space_group=generated_space_group,
        pair_rank=pair_rank,
        nsites=len(structure),
        prim_nsites=len(reduced),
        valid=is_valid_structure(structure),
        rms=rms,
        lattice_ok=lattice_ok,
        wyckoff_same=wyckoff_same,
        source=source,
        template_id=template_id,
    )


# ---------------------------------------------------------------------------------------------------------
# per-formula evaluation
# ---------------------------------------------------------------------------------------------------------


@dataclass
class FormulaResult:
    """Everything recorded for one test formula (one line of the results JSONL file).

    ``candidates`` are the generated candidates, most likely first; ``relaxed`` the first ``relax_top`` of
    them after relaxation, in the same (predicted) order; ``seconds`` has ``predict`` (this formula's share
    of the batched prediction), ``generate``, ``match``, ``relax`` and ``total``.
    """

    formula: str
    material_id: str
    space_group: int
    bravais: str
    nsites: int
    prim_nsites: int
    fu_atoms: int
    wyckoff: list[list[Any]] | None
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
        has no candidate) or ``"both"`` (:func:`cryspnet_gen.templates.merge_candidates` of the two lists).
    templates
        The template store folder (for ``"templates"`` and ``"both"``).
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


class _PrecomputedPredictor:
    """Answers ``predict`` from predictions made in one batch (generate_candidates asks one formula at a time).

    Anything not precomputed (another formula or other options) goes to the wrapped predictor.
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.cache: dict[tuple[str, int, int, str], Prediction] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.predictor, name)

    def prepare(
        self, formulas: Sequence[str], *, top_bravais: int, top_space_groups: int, model: str
    ) -> None:
        todo = [
            f for f in dict.fromkeys(formulas) if (f, top_bravais, top_space_groups, model) not in self.cache
        ]
        if not todo:
            return
        preds = self.predictor.predict(
            todo,
            top_bravais=top_bravais,
            top_space_groups=top_space_groups,
            model=model,  # type: ignore[arg-type]
        )
        for f, p in zip(todo, preds, strict=True):
            self.cache[(f, top_bravais, top_space_groups, model)] = p

    def predict(
        self,
        formulas: str | Iterable[str],
        *,
        top_bravais: int = 2,
        top_space_groups: int = 3,
        model: str = "master",
    ) -> list[Prediction]:
        items = [formulas] if isinstance(formulas, str) else list(formulas)
        keys = [(f, top_bravais, top_space_groups, model) for f in items]
        if all(key in self.cache for key in keys):
            return [self.cache[key] for key in keys]
        return self.predictor.predict(
            items,
            top_bravais=top_bravais,
            top_space_groups=top_space_groups,
            model=model,  # type: ignore[arg-type]
        )


# generate_candidates asks for every lattice and every modelled group (generate._predict).
_TOP_BRAVAIS = 14
_TOP_SPACE_GROUPS = 230


class CspEvaluator:
    """Generates candidates for test formulas and compares them with the reference structures.

    Parameters
    ----------
    predictor
        The model bundle, e.g. ``load_predictor("cryspnet-bench")``.
    settings
        Run options.
    """

    def __init__(
        self,
        predictor: Predictor,
        settings: CspSettings | None = None,
        *,
        saved: dict[str, tuple[list[Candidate], float]] | None = None,
    ) -> None:
        self.settings = settings or CspSettings()
        #: CRYSPNet candidates already generated (with the same settings) and the seconds that took, by
        #: formula; used instead of generating them again when ``source`` is ``"both"`` (the seconds are
        #: counted as generation time).
        self.saved = saved or {}
        self._store: Any = None
        if self.settings.source != "cryspnet":
            from cryspnet_gen.templates import load_store

            if not self.settings.templates:
                raise ValueError(
                    f"source={self.settings.source!r} needs CspSettings.templates (a store folder)"
                )
            self._store = load_store(self.settings.templates)
        self._predictor = _PrecomputedPredictor(predictor)
        self._matcher = make_matcher()
        self._optimizer: Any = None
        self._predict_share = 0.0
        #: The candidates built by the last :meth:`evaluate` call (for saving them beside the results).
        self.last_candidates: list[Candidate] = []

    def prepare(self, formulas: Sequence[str]) -> float:
        """Predict all ``formulas`` in one batch (much faster than one by one); returns the seconds taken."""
        start = time.perf_counter()
        self._predictor.prepare(
            formulas,
            top_bravais=_TOP_BRAVAIS,
            top_space_groups=_TOP_SPACE_GROUPS,
            model=self.settings.model,
        )
        seconds = time.perf_counter() - start
        if formulas:
            self._predict_share = seconds / len(formulas)
        return seconds

    def _prediction(self, formula: str) -> Prediction:
        (pred,) = self._predictor.predict(
            [formula], top_bravais=_TOP_BRAVAIS, top_space_groups=_TOP_SPACE_GROUPS, model=self.settings.model
        )
        return pred

    def evaluate(self, reference: Reference) -> FormulaResult:
        """Generate ``k`` candidates for the reference's formula (and relax some) and compare each with it."""
        from cryspnet_gen.generate import CandidateList, GenerationError, generate_candidates

        opts = self.settings
        ref = describe_reference(reference)
        seconds = {"predict": 0.0, "templates": 0.0, "generate": 0.0, "match": 0.0, "relax": 0.0}
        t0 = time.perf_counter()
        pred = self._prediction(reference.formula)
        seconds["predict"] = time.perf_counter() - t0 + self._predict_share
        true_rank, true_p = None, None
        for i, g in enumerate(pred.ranked_groups(), start=1):
            if g.space_group == ref.space_group and g.bravais == ref.bravais:
                true_rank, true_p = i, float(g.probability)
                break

        error: str | None = None
        found: CandidateList | list[Candidate] = []
        skipped: list[Any] = []
        stop_reason = None
        t0 = time.perf_counter()
        from_templates: list[Candidate] | None = None
        saved_seconds = 0.0
        if opts.source != "cryspnet":
            from cryspnet_gen.templates import template_candidates

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from_templates = template_candidates(
                    reference.formula,
                    opts.k,
                    templates=self._store,
                    prediction=pred,
                    max_atoms=opts.max_atoms,
                )
            seconds["templates"] = time.perf_counter() - t0
            t0 = time.perf_counter()
        from cryspnet_gen.templates import cryspnet_needed

        if opts.source == "templates":
            found = from_templates or []
            stop_reason = getattr(from_templates, "stop_reason", None)
        elif opts.source == "both" and not cryspnet_needed(from_templates or [], opts.k):
            found = []  # generate_candidates(source="both") skips CRYSPNet here too
        elif reference.formula in self.saved:
            found, saved_seconds = self.saved[reference.formula]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    found = generate_candidates(
                        reference.formula,
                        k=opts.k,
                        seed=opts.seed,
                        predictor=self._predictor,  # type: ignore[arg-type]
                        model=opts.model,  # type: ignore[arg-type]
                        max_atoms=opts.max_atoms,
                        timeout=opts.timeout,
                        timeout_per_group=opts.timeout_per_group,
                        source="cryspnet",
                    )
                    skipped, stop_reason = found.skipped, found.stop_reason
                except GenerationError as exc:
                    error, skipped = f"GenerationError: {exc}", exc.skipped
                except ValueError as exc:
                    error = f"ValueError: {exc}"
        seconds["generate"] = time.perf_counter() - t0 + saved_seconds
        if opts.source == "both":
            from cryspnet_gen.templates import merge_candidates

            t0 = time.perf_counter()
            found = merge_candidates([from_templates or [], list(found)], opts.k, formula=reference.formula)
            seconds["templates"] += time.perf_counter() - t0  # the merge (StructureMatcher de-duplication)
            if error is not None and found:
                error = None
        self.last_candidates = list(found)
        true_skip = next(
            (s.reason for s in skipped if s.space_group == ref.space_group and s.bravais == ref.bravais), None
        )

        t0 = time.perf_counter()
        cands = [
            compare_structure(
                c.structure,
                ref,
                self._matcher,
                rank=c.rank,
                space_group=c.space_group,
                generated_space_group=c.space_group,
                pair_rank=c.pair_rank,
                reference=reference.structure,
                source=c.source,
                template_id=c.template_id,
            )
            for c in found
        ]
        seconds["match"] = time.perf_counter() - t0

        relaxed = None
        if opts.relax_top > 0:
            t0 = time.perf_counter()
            relaxed = self._relax_and_compare(list(found)[: opts.relax_top], ref, reference.structure)
            seconds["relax"] = time.perf_counter() - t0
        seconds["total"] = sum(seconds.values())
        return FormulaResult(
            formula=reference.formula,
            material_id=reference.material_id,
            space_group=ref.space_group,
            bravais=ref.bravais,
            nsites=ref.nsites,
            prim_nsites=ref.prim_nsites,
            fu_atoms=ref.fu_atoms,
            wyckoff=ref.wyckoff,
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

    def _relax_and_compare(
        self, cands: Sequence[Candidate], ref: ReferenceInfo, reference: Structure
    ) -> list[CandidateMatch]:
        from cryspnet_gen.workflows.relax import (
            load_chgnet_optimizer,
            relax_structure,
            space_group_of,
            torch_threads,
        )

        opts = self.settings
        out: list[CandidateMatch] = []
        with torch_threads(1):  # CHGNet is many times faster with one thread on a busy machine
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
                    out.append(
                        CandidateMatch(
                            rank=c.rank,
                            space_group=None,
                            bravais=None,
                            generated_space_group=c.space_group,
                            pair_rank=c.pair_rank,
                            nsites=len(start),
                            prim_nsites=len(start),
                            valid=False,
                            rms=None,
                            error=f"{type(exc).__name__}: {exc}"[:300],
                        )
                    )
                    continue
                sg, _ = space_group_of(res.structure, SYMPREC)
                m = compare_structure(
                    res.structure,
                    ref,
                    self._matcher,
                    rank=c.rank,
                    space_group=sg,
                    generated_space_group=c.space_group,
                    pair_rank=c.pair_rank,
                    reference=reference,
                    source=c.source,
                    template_id=c.template_id,
                )
                m.energy_per_atom = float(res.energy_per_atom)
                m.n_steps = int(res.n_steps)
                m.converged = bool(res.converged)
                if not math.isfinite(res.energy_per_atom):
                    m.error = f"non-finite energy {res.energy_per_atom}"
                out.append(m)
        return out


# ---------------------------------------------------------------------------------------------------------
# classification and aggregation
# ---------------------------------------------------------------------------------------------------------


def _shorten(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else f"{text[: limit // 2]} ... {text[-limit // 2 :]}"


def skip_kind(reason: str) -> str:
    """A short name for why ``generate_candidates`` skipped a pair (from its ``SkippedPair.reason``)."""
    if reason.startswith("composition"):
        return "composition does not fit the Wyckoff positions (Z <= max_atoms)"
    if "time limit" in reason:
        return "time limit"
    if "symmetry check found" in reason:
        return "pyxtal built another group"
    if "atoms too close" in reason:
        return "distance check"
    if "cell too" in reason:
        return "cell too small or thin"
    if "pyxtal failed" in reason:
        return "pyxtal failed"
    return "other"


def _true_group_tried(result: FormulaResult, k: int) -> bool:
    """Whether the walk that made the first ``k`` candidates tried the true group and built nothing in it."""
    if result.true_group_skip is None or result.true_pair_rank is None:
        return False
    if len(result.candidates) < k:
        return True
    return result.true_pair_rank < result.candidates[k - 1].pair_rank


def classify(result: FormulaResult, k: int, *, relaxed: bool = False) -> str:
    """``"matched"`` or the first reason of :data:`FAILURE_REASONS` that explains the miss at ``k``.

    With ``relaxed``, the relaxed candidates are judged (by their relaxed space group) instead of the
    generated ones.
    """
    if relaxed:
        if result.relaxed is None:
            raise ValueError(f"{result.formula}: no relaxed candidates recorded")
        cands = result.relaxed[:k]
        if not cands:
            return "no candidate built"
        if all(c.error is not None for c in cands):
            return "relaxation failed"
    else:
        cands = result.candidates[:k]
        if not cands:
            return "no candidate built"
    if any(c.matched for c in cands):
        return "matched"
    if any(c.rms is not None for c in cands):
        return "matched but invalid"
    right = [c for c in cands if c.space_group == result.space_group]
    if not right:
        if not relaxed and _true_group_tried(result, k):
            return "true group tried, not built"
        if result.bravais not in {c.bravais for c in cands}:
            return "wrong Bravais lattice"
        return "wrong space group"
    right_z = [c for c in right if c.prim_nsites == result.prim_nsites]
    if not right_z:
        return "wrong Z"
    if not any(c.lattice_ok for c in right_z):
        return "lattice off"
    if not any(c.lattice_ok and c.wyckoff_same for c in right_z):
        return "Wyckoff arrangement differs"
    return "positions off"


def _best_rms(cands: Iterable[CandidateMatch]) -> float | None:
    values = [c.rms for c in cands if c.matched and c.rms is not None]
    return min(values) if values else None


def _lowest_energy_matched(cands: Sequence[CandidateMatch]) -> bool:
    """Whether the lowest-energy relaxed candidate matches (k=1 after re-ranking by CHGNet energy)."""
    ok = [c for c in cands if c.error is None and c.energy_per_atom is not None]
    return bool(ok) and min(ok, key=lambda c: c.energy_per_atom or 0.0).matched


def _rank_bucket(rank: int | None) -> str:
    if rank is None:
        return "not modelled"
    if rank == 1:
        return "1"
    if rank <= 5:
        return "2-5"
    if rank <= 20:
        return "6-20"
    return ">20"


def summarize(results: Sequence[FormulaResult], k: int, *, relaxed: bool = False) -> dict[str, Any]:
    """Match rate, mean RMSE, hit rates, failure counts and timing over ``results`` at ``k``.

    Rates are fractions of all formulas (a formula with no candidate counts as a miss). ``rmse`` is the mean
    over matched formulas of the best matching candidate's normalised RMS distance.
    """
    n = len(results)
    outcomes = [classify(r, k, relaxed=relaxed) for r in results]
    rms = [_best_rms((r.relaxed if relaxed else r.candidates)[:k]) for r in results]  # type: ignore[index]
    matched = [x for x in rms if x is not None]
    sg_hit = bravais_hit = 0
    for r in results:
        cands = (r.relaxed if relaxed else r.candidates) or []
        groups = {c.space_group for c in cands[:k]}
        lattices = {c.bravais for c in cands[:k]}
        sg_hit += r.space_group in groups
        bravais_hit += r.bravais in lattices
    failures = Counter(o for o in outcomes if o != "matched")
    by_rank: dict[str, Counter[str]] = {}
    for r, o in zip(results, outcomes, strict=True):
        by_rank.setdefault(_rank_bucket(r.true_pair_rank), Counter())[o] += 1
    skip_kinds = Counter(
        skip_kind(r.true_group_skip or "")
        for r, o in zip(results, outcomes, strict=True)
        if o == "true group tried, not built"
    )
    wrong_z: Counter[str] = Counter()
    for r, o in zip(results, outcomes, strict=True):
        if o == "wrong Z":
            cands = (r.relaxed if relaxed else r.candidates) or []
            sizes = {c.prim_nsites for c in cands[:k] if c.space_group == r.space_group}
            wrong_z["candidate Z smaller" if max(sizes) < r.prim_nsites else "candidate Z larger"] += 1
    seconds = [r.seconds.get("total", 0.0) for r in results]
    parts = ("predict", "templates", "generate", "match", "relax")
    out: dict[str, Any] = {
        "k": k,
        "relaxed": relaxed,
        "n": n,
        "matched": len(matched),
        "match_rate": len(matched) / n if n else math.nan,
        "rmse": float(np.mean(matched)) if matched else math.nan,
        "space_group_hit_rate": sg_hit / n if n else math.nan,
        "bravais_hit_rate": bravais_hit / n if n else math.nan,
        "failures": {reason: failures[reason] for reason in FAILURE_REASONS if failures[reason]},
        "true_group_not_built_because": dict(skip_kinds),
        "wrong_z_direction": dict(wrong_z),
        "outcome_by_true_pair_rank": {
            b: dict(by_rank[b]) for b in ("1", "2-5", "6-20", ">20", "not modelled") if b in by_rank
        },
        "seconds_per_formula": float(np.mean(seconds)) if seconds else math.nan,
        "seconds_median": float(np.median(seconds)) if seconds else math.nan,
        "seconds_by_part": {
            p: float(np.mean([r.seconds.get(p, 0.0) for r in results])) if results else math.nan
            for p in parts
        },
        "candidates_per_formula": float(np.mean([len(r.candidates) for r in results]))
        if results
        else math.nan,
    }
    if relaxed:
        before = [classify(r, k) == "matched" for r in results]
        after = [o == "matched" for o in outcomes]
        rel = [c for r in results for c in (r.relaxed or [])[:k]]
        ok = [c for c in rel if c.error is None]
        out["relaxation"] = {
            "matched_before_and_after": sum(b and a for b, a in zip(before, after, strict=True)),
            "gained": sum(a and not b for b, a in zip(before, after, strict=True)),
            "lost": sum(b and not a for b, a in zip(before, after, strict=True)),
            "structures": len(rel),
            "failed": len(rel) - len(ok),
            "space_group_changed": sum(c.space_group != c.generated_space_group for c in ok),
            "converged": sum(bool(c.converged) for c in ok),
            "mean_steps": float(np.mean([c.n_steps or 0 for c in ok])) if ok else math.nan,
            "lowest_energy_matched": sum(_lowest_energy_matched((r.relaxed or [])[:k]) for r in results),
        }
    return out


def template_coverage(results: Sequence[FormulaResult], store: Any, k: int) -> dict[str, int]:
    """Why template candidates missed: counts over the formulas not matched at ``k``.

    ``no template``: the store has no entry with the formula's anonymous formula; ``no template in the true
    group``: it has some, none in the reference's space group; ``true group ranked below k``: a template in the
    true group exists but no candidate in it is among the first ``k``; ``true group, no match``: a candidate in
    the true group is there and does not match (another structure type of that group, or Z).
    """
    out: Counter[str] = Counter()
    for r in results:
        if any(c.matched for c in r.candidates[:k]):
            out["matched"] += 1
            continue
        rows = store.lookup(r.formula)
        if rows.empty:
            out["no template"] += 1
        elif not (rows["space_group"] == r.space_group).any():
            out["no template in the true group"] += 1
        elif not any(c.space_group == r.space_group for c in r.candidates[:k]):
            out["true group ranked below k"] += 1
        else:
            out["true group, no match"] += 1
    return dict(out)


def _pct(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def markdown_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """A Markdown table of labelled :func:`summarize` outputs (rates in %)."""
    lines = [
        "| run | n | k | match rate (%) | RMSE | space group hit (%) | Bravais hit (%) | s / formula |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, s in rows:
        rmse = "-" if not math.isfinite(s["rmse"]) else f"{s['rmse']:.4f}"
        lines.append(
            f"| {label} | {s['n']} | {s['k']} | {_pct(s['match_rate'])} | {rmse} | "
            f"{_pct(s['space_group_hit_rate'])} | {_pct(s['bravais_hit_rate'])} | "
            f"{s['seconds_per_formula']:.1f} |"
        )
    return "\n".join(lines)
