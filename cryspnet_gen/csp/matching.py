"""Comparing a candidate with a reference structure: DiffCSP's matcher and validity, and why it missed.

:func:`match_rms` and :func:`is_valid_structure` are DiffCSP's metric (``StructureMatcher(stol=0.5,
angle_tol=10, ltol=0.3)``; every distance at least 0.5 Å, volume at least 0.1 Å^3). :func:`compare_structure`
adds the diagnostics of a miss: for a candidate in the reference's group with the reference's primitive size,
whether its lattice maps onto the reference lattice within ``ltol`` / ``angle_tol`` and whether its Wyckoff
multiplicities per element equal the reference's (spglib at :data:`~cryspnet_gen.symmetry.SYMPREC`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from cryspnet_gen.csp.references import Reference
from cryspnet_gen.symmetry import SYMPREC, analyze_structure, bravais_of

if TYPE_CHECKING:
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

__all__ = [
    "MATCHER_SETTINGS",
    "MIN_DISTANCE",
    "MIN_VOLUME",
    "CandidateMatch",
    "ReferenceFacts",
    "ReferenceInfo",
    "compare_structure",
    "describe_reference",
    "is_valid_structure",
    "lattice_maps",
    "make_matcher",
    "match_rms",
    "reduced_cell",
    "wyckoff_multiplicities",
]

logger = logging.getLogger(__name__)

#: DiffCSP's StructureMatcher settings (pymatgen defaults otherwise: primitive_cell=True, scale=True).
MATCHER_SETTINGS: dict[str, float] = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}
#: DiffCSP's structure validity: shortest interatomic distance (Å) and smallest volume (Å^3).
MIN_DISTANCE = 0.5
MIN_VOLUME = 0.1


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


def wyckoff_multiplicities(structure: Structure) -> list[list[Any]] | None:
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


def lattice_maps(candidate: Structure, reference: Structure) -> bool:
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
class ReferenceFacts:
    """What is recorded about a reference structure with every evaluated formula."""

    formula: str
    material_id: str
    space_group: int
    bravais: str
    nsites: int
    prim_nsites: int
    fu_atoms: int
    wyckoff: list[list[Any]] | None

    def facts(self) -> dict[str, Any]:
        """The fields of :class:`ReferenceFacts` (not those a subclass adds) as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(ReferenceFacts)}


@dataclass
class ReferenceInfo(ReferenceFacts):
    """What the evaluation needs to know about a reference structure."""

    reduced: Structure = field(repr=False)

    @property
    def z_prim(self) -> float:
        """Formula units in the primitive cell."""
        return self.prim_nsites / self.fu_atoms


def describe_reference(reference: Reference) -> ReferenceInfo:
    """Space group (spglib, symprec 0.1), Bravais lattice, primitive size and Wyckoff multiplicities."""
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
        wyckoff=wyckoff_multiplicities(s),
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
    reduced = reduced_cell(structure)
    target = reference if reference is not None else ref.reduced
    rms = match_rms(structure, target, matcher, reduced=(reduced, ref.reduced))
    lattice_ok = wyckoff_same = None
    if space_group == ref.space_group and len(reduced) == ref.prim_nsites:
        lattice_ok = lattice_maps(reduced, ref.reduced)
        wyckoff = wyckoff_multiplicities(structure)
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
