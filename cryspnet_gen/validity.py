"""Physical validity of candidate structures: no atoms too close, and whether the formula is charge-balanced.

Every source's candidates pass :func:`check_candidates` before they are returned (the one gate, called by
:func:`cryspnet_gen.generate.candidates_for`); the CRYSPNet source also uses :func:`repair_contacts` on each
pyxtal attempt, so that a cramped attempt is repaired or re-sampled instead of being dropped at the end.

The rules, measured on Materials Project structures (``python bench/validity.py``, docs/benchmarks.md):

- **Covalent contacts.** No two atoms (periodic images included) closer than :data:`MIN_CONTACT_FACTOR` = 0.7 x
  the sum of their covalent radii (Cordero et al. 2008, pyxtal's table). 1.3 % of MP structures have a contact
  below 0.7, 0.3 % below 0.64, none below 0.54; 83 % of the random Wyckoff placements pyxtal returned (at its
  own tolerance, 0.5) fell below 0.7.
- **Anion contacts.** Where oxidation states can be guessed (pymatgen's ``oxi_state_guesses``), no two anions
  of one element closer than :data:`MIN_ANION_FACTOR` = 0.5 x the sum of their ionic radii (Shannon): O-O at
  1.06 Å passes the covalent rule (0.76 x the covalent sum) but no oxide has it. About 1 % of MP structures with
  such pairs fall below 0.5 (azide N-N, O2 units: real bonds between atoms the guess calls anions); pairs of
  different elements are left out because the guesses often call a sulfate's S or a nitro group's N an anion.
- **Repair** (:func:`repair_contacts`). Atoms too close are pushed apart inside the cell, symmetry kept
  (:func:`push_apart`: equivalent atoms move alike, special positions stay special); when that fails (an atom
  too close to its own periodic image, say) the cell is stretched isotropically by at most :data:`MAX_STRETCH`
  in length; a structure that needs more is rejected (the CRYSPNet source then tries another attempt; the gate
  drops it and records why in ``CandidateList.skipped``).
- **Charge balance** (:func:`charge_balanced`): ``True`` / ``False`` where oxidation states apply, ``None`` for
  an all-metal formula (intermetallics have no meaningful oxidation states) or one too complex to guess in
  about a second (:data:`MAX_GUESS_COMBINATIONS`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cryspnet_gen.records import Candidate, CandidateList, SkippedPair

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "MAX_GUESS_COMBINATIONS",
    "MAX_STRETCH",
    "MIN_ANION_FACTOR",
    "MIN_CONTACT_FACTOR",
    "Contact",
    "charge_balanced",
    "check_candidates",
    "contact_problem",
    "contacts",
    "covalent_radius",
    "oxidation_states",
    "push_apart",
    "repair_contacts",
    "shortest_contact",
]

logger = logging.getLogger(__name__)

#: Smallest allowed distance between two atoms as a fraction of their covalent-radius sum.
MIN_CONTACT_FACTOR = 0.7
#: Smallest allowed distance between two anions of one element as a fraction of their ionic-radius sum.
MIN_ANION_FACTOR = 0.5
#: Largest isotropic stretch (ratio of lengths) a repair applies; 1.15 is 52 % more volume.
MAX_STRETCH = 1.15
#: Steps of :func:`push_apart`.
PUSH_STEPS = 40
# push_apart moves atoms this much beyond the limit, so that rounding does not leave them on it.
_PUSH_MARGIN = 1.02
#: Largest number of oxidation-state combinations :func:`oxidation_states` lets pymatgen score (about 1 s).
MAX_GUESS_COMBINATIONS = 20_000
# Covalent radius for elements pyxtal's table lacks.
_DEFAULT_RADIUS = 1.5


def covalent_radius(symbol: str) -> float:
    """pyxtal's covalent radius (Å; Cordero et al. 2008), the table its own distance tolerances use."""
    return _covalent_radii().get(symbol, _DEFAULT_RADIUS)


@functools.cache
def _covalent_radii() -> dict[str, float]:
    # read from the cache folder: importing pyxtal's element table costs 0.4 s of every cold start
    from cryspnet_gen.config import cached_json, package_version

    return cached_json(f"covalent-radii-pyxtal-{package_version('pyxtal')}", _pyxtal_covalent_radii)


def _pyxtal_covalent_radii() -> dict[str, float]:
    import contextlib
    import io

    from pymatgen.core.periodic_table import Element as PymatgenElement
    from pyxtal.database.element import Element

    out = {}
    with contextlib.redirect_stdout(io.StringIO()):  # pyxtal prints for symbols it lacks
        for z in range(1, 119):
            symbol = PymatgenElement.from_Z(z).symbol
            try:
                radius = Element(symbol).covalent_radius
            except Exception:  # pyxtal's table ends before pymatgen's
                continue
            if radius:
                out[symbol] = float(radius)
    return out


def _guess_cost(reduced_formula: str) -> tuple[int, int]:
    """pymatgen's ``oxi_state_guesses`` work for a formula: ``(oxidation-state combinations scored, sums
    crossed)``; it takes about 1 s per 20,000 combinations (Li8Ti7Fe9(PO4)24: 2.9 million, 155 s)."""
    from pymatgen.core import Composition, Element

    combos, crossed = 0, 1
    for el, amount in Composition(reduced_formula).get_el_amt_dict().items():
        states = Element(el).icsd_oxidation_states or Element(el).common_oxidation_states
        n = int(amount)
        combos += math.comb(n + max(len(states), 1) - 1, n) * n
        crossed *= n * (max(states) - min(states)) + 1 if states else 1
    return combos, crossed


@functools.cache
def oxidation_states(reduced_formula: str) -> tuple[tuple[str, float], ...] | None:
    """The most likely oxidation state of each element (pymatgen's ``oxi_state_guesses``), ``None`` when there is
    no charge-balanced assignment or the guess would take more than about a second
    (:data:`MAX_GUESS_COMBINATIONS`)."""
    from pymatgen.core import Composition

    combos, crossed = _guess_cost(reduced_formula)
    if combos > MAX_GUESS_COMBINATIONS or crossed > MAX_GUESS_COMBINATIONS * 100:
        logger.info("%s: oxidation states not guessed (%d combinations)", reduced_formula, combos)
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guesses = Composition(reduced_formula).oxi_state_guesses(max_sites=-1)
    if not guesses:
        return None
    return tuple((str(el), float(ox)) for el, ox in guesses[0].items())


def charge_balanced(reduced_formula: str) -> bool | None:
    """Whether common oxidation states balance the formula; ``None`` for an all-metal formula (not applicable)
    or one too complex to guess quickly."""
    from pymatgen.core import Composition

    comp = Composition(reduced_formula)
    if len(comp) < 2 or all(el.is_metal for el in comp.elements):
        return None
    formula = comp.reduced_formula
    if oxidation_states(formula) is not None:
        return True
    combos, crossed = _guess_cost(formula)
    return None if combos > MAX_GUESS_COMBINATIONS or crossed > MAX_GUESS_COMBINATIONS * 100 else False


@functools.cache
def _anion_radii(reduced_formula: str) -> dict[str, float]:
    """Ionic radii of the anions of a formula whose oxidation states can be guessed (empty otherwise)."""
    from pymatgen.core import Species

    states = oxidation_states(reduced_formula)
    out: dict[str, float] = {}
    for symbol, ox in states or ():
        if ox >= 0 or not float(ox).is_integer():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            radius = Species(symbol, int(ox)).ionic_radius
        if radius:
            out[symbol] = float(radius)
    return out


@dataclass(frozen=True)
class Contact:
    """The shortest contact of a structure relative to a rule: ``ratio`` = distance / allowed-radius sum."""

    ratio: float
    distance: float
    a: str
    b: str
    rule: str = "covalent"

    def __str__(self) -> str:
        return f"{self.a}-{self.b} {self.distance:.2f} Å is {self.ratio:.2f} x their {self.rule}-radius sum"


def _shortest(structure: Structure, radii: np.ndarray, mask: np.ndarray | None, rule: str) -> Contact | None:
    """The contact with the smallest distance / (r_i + r_j): among all atoms (``mask`` None), or between two atoms
    of the same element with ``mask`` True."""
    if mask is not None and mask.sum() < 1:
        return None
    r_max = float(radii[mask].max() if mask is not None else radii.max())
    # Any contact below a ratio of 1 is within 2 x the largest radius.
    centres, neighbours, _, distances = structure.get_neighbor_list(2.0 * r_max)
    if mask is not None:  # pairs of one masked element (two O, two Cl...)
        numbers = np.array([site.specie.Z for site in structure])
        keep = mask[centres] & (numbers[centres] == numbers[neighbours])
        centres, neighbours, distances = centres[keep], neighbours[keep], distances[keep]
    if not len(distances):
        return None
    ratio = distances / (radii[centres] + radii[neighbours])
    i = int(np.argmin(ratio))
    return Contact(
        ratio=float(ratio[i]),
        distance=float(distances[i]),
        a=structure[int(centres[i])].specie.symbol,
        b=structure[int(neighbours[i])].specie.symbol,
        rule=rule,
    )


def contacts(structure: Structure) -> tuple[Contact | None, Contact | None]:
    """The shortest covalent contact of ``structure`` and its shortest contact between two anions of one element
    (ionic radii; ``None``: no such pair within reach, or no oxidation states to tell anions)."""
    symbols = [site.specie.symbol for site in structure]
    covalent = _shortest(structure, np.array([covalent_radius(s) for s in symbols]), None, "covalent")
    ionic = _anion_radii(structure.composition.reduced_formula)
    anion = None
    if ionic:
        radii = np.array([ionic.get(s, 0.0) for s in symbols])
        anion = _shortest(structure, radii, radii > 0, "ionic")
    return covalent, anion


def shortest_contact(structure: Structure) -> Contact | None:
    """The worst contact of ``structure``: of its shortest covalent and anion-anion contacts, the one furthest
    below its rule (``None`` when no two atoms are within reach)."""
    covalent, anion = contacts(structure)
    if anion is not None and (
        covalent is None or anion.ratio / MIN_ANION_FACTOR < covalent.ratio / MIN_CONTACT_FACTOR
    ):
        return anion
    return covalent


def _needed_stretch(contact: Contact | None, factor: float) -> float:
    """The isotropic stretch that brings ``contact`` up to its rule (1.0 when it already passes)."""
    if contact is None:
        return 1.0
    limit = factor if contact.rule == "covalent" else MIN_ANION_FACTOR * factor / MIN_CONTACT_FACTOR
    if contact.ratio <= 0:  # two atoms on one spot: no stretch separates them
        return math.inf
    return max(1.0, limit / contact.ratio)


def contact_problem(structure: Structure, factor: float = MIN_CONTACT_FACTOR) -> str | None:
    """Why ``structure`` has atoms too close (``None`` when it passes); ``factor`` scales both rules."""
    contact = shortest_contact(structure)
    if _needed_stretch(contact, factor) > 1.0:
        return f"atoms too close: {contact} (< {factor:g})"
    return None


def _pair_targets(structure: Structure, factor: float) -> tuple[float, Any]:
    """The neighbour cut-off and a function ``(centres, neighbours) -> smallest allowed distances`` of both
    rules for ``structure``."""
    symbols = [site.specie.symbol for site in structure]
    cov = np.array([covalent_radius(s) for s in symbols])
    ionic = _anion_radii(structure.composition.reduced_formula)
    ion = np.array([ionic.get(s, 0.0) for s in symbols])
    numbers = np.array([site.specie.Z for site in structure])
    anion_scale = MIN_ANION_FACTOR * factor / MIN_CONTACT_FACTOR

    def targets(c: np.ndarray, n: np.ndarray) -> np.ndarray:
        out = factor * (cov[c] + cov[n])
        both = (ion[c] > 0) & (numbers[c] == numbers[n])
        out[both] = np.maximum(out[both], anion_scale * (ion[c] + ion[n])[both])
        return out

    cutoff = 2.0 * max(factor * float(cov.max()), anion_scale * float(ion.max())) * _PUSH_MARGIN
    return cutoff, targets


def _symmetry_maps(structure: Structure, symprec: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(rotation, permutation)`` of each symmetry operation of ``structure`` (fractional coordinates):
    operation ``k`` takes atom ``i`` onto atom ``permutation[i]``."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    data = SpacegroupAnalyzer(structure, symprec=symprec).get_symmetry_dataset()
    frac = structure.frac_coords
    numbers = np.array([site.specie.Z for site in structure])
    matrix = structure.lattice.matrix
    maps = []
    for rot, trans in zip(data.rotations, data.translations, strict=True):
        moved = frac @ np.asarray(rot, dtype=float).T + trans
        diff = moved[:, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        dist = np.linalg.norm(diff @ matrix, axis=2)
        dist[numbers[:, None] != numbers[None, :]] = np.inf
        maps.append((np.asarray(rot, dtype=float), np.argmin(dist, axis=1)))
    return maps


def push_apart(
    structure: Structure,
    factor: float = MIN_CONTACT_FACTOR,
    *,
    symprec: float = 0.1,
    steps: int = PUSH_STEPS,
) -> Structure | None:
    """Move atoms that are too close apart, keeping the cell and the space group: each step moves both atoms of
    every short contact half the missing distance apart (2 % beyond), averaged over the symmetry operations so
    that equivalent atoms move alike and special positions stay special. ``None`` when ``steps`` do not
    resolve every contact (e.g. an atom too close to its own periodic image)."""
    from pymatgen.core import Structure

    cutoff, targets = _pair_targets(structure, factor)
    try:
        maps = _symmetry_maps(structure, symprec)
    except Exception:  # spglib failures surface as several types; without symmetry there is nothing to keep
        return None
    matrix = structure.lattice.matrix
    inverse = np.linalg.inv(matrix)
    frac = structure.frac_coords.copy()
    species = structure.species
    for _ in range(steps + 1):
        current = Structure(structure.lattice, species, frac)
        c, n, images, d = current.get_neighbor_list(cutoff)
        want = targets(c, n) * _PUSH_MARGIN
        short = d < want / _PUSH_MARGIN
        if not short.any():
            return current
        close = d < want
        c, n, images, d, want = c[close], n[close], images[close], d[close], want[close]
        cart = current.cart_coords
        unit = (cart[n] + images @ matrix - cart[c]) / d[:, None]
        push = np.zeros_like(cart)
        np.add.at(push, c, -unit * ((want - d) / 2.0)[:, None])
        step = push @ inverse
        sym = np.zeros_like(step)
        for rot, perm in maps:
            np.add.at(sym, perm, step @ rot.T)
        frac = frac + sym / len(maps)
    return None


def repair_contacts(
    structure: Structure,
    factor: float = MIN_CONTACT_FACTOR,
    max_stretch: float = MAX_STRETCH,
    *,
    space_group: int | None = None,
) -> tuple[Structure | None, str | None]:
    """``(structure, note)``: the structure itself when it passes (note ``None``), else repaired: atoms pushed
    apart within the cell keeping the space group (:func:`push_apart`; when ``space_group`` is given the
    result must still have it), or failing that the cell stretched isotropically by at most ``max_stretch``
    (the note says what was done). ``(None, reason)`` when neither works."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    contact = shortest_contact(structure)
    stretch = _needed_stretch(contact, factor)
    if stretch <= 1.0:
        return structure, None
    pushed = push_apart(structure, factor)
    if pushed is not None:
        try:
            group = SpacegroupAnalyzer(pushed, symprec=0.1).get_space_group_number()
        except Exception:  # spglib failures surface as several types
            group = None
        if space_group is None or group == space_group:
            moved = np.linalg.norm(pushed.cart_coords - structure.cart_coords, axis=1).max()
            return (
                pushed,
                f"atoms pushed apart (at most {moved:.2f} Å, symmetry kept): {contact} (< {factor:g})",
            )
    if stretch > max_stretch:
        return None, (
            f"atoms too close: {contact} (< {factor:g}; pushing them apart failed and a stretch of {stretch:.2f} > "
            f"{max_stretch:g} would be needed)"
        )
    stretch *= 1.0 + 1e-6  # land just above the limit, not on it
    out = structure.copy()
    out.scale_lattice(structure.volume * stretch**3)
    return out, f"cell stretched {stretch:.3f}x (volume {stretch**3 - 1:+.0%}): {contact} (< {factor:g})"


def check_candidates(
    candidates: Sequence[Candidate],
    *,
    factor: float = MIN_CONTACT_FACTOR,
    max_stretch: float = MAX_STRETCH,
) -> CandidateList:
    """The candidates that pass (or are repaired to pass) the contact rules, ranks renumbered, with
    ``min_contact`` and ``charge_balanced`` set; each dropped one is added to ``skipped`` with the reason.

    ``candidates`` may be a :class:`~cryspnet_gen.records.CandidateList`: its formula, ``skipped`` and
    ``stop_reason`` are kept.
    """
    out = CandidateList(
        formula=getattr(candidates, "formula", ""),
        skipped=getattr(candidates, "skipped", ()),
        stop_reason=getattr(candidates, "stop_reason", None),
    )
    for cand in candidates:
        structure, note = repair_contacts(cand.structure, factor, max_stretch, space_group=cand.space_group)
        if structure is None:
            reason = f"{cand.source} candidate dropped: {note}"
            out.skipped.append(SkippedPair(cand.bravais, cand.space_group, reason, cand.probability))
            logger.info("%s: %s", cand.formula, reason)
            continue
        contact = shortest_contact(structure)
        balanced = charge_balanced(structure.composition.reduced_formula)
        notes = list(cand.notes)
        if note is not None:
            notes.append(note)
        if balanced is False:
            notes.append("not charge-balanced in common oxidation states")
        changes: dict[str, object] = {
            "structure": structure,
            "notes": notes,
            "min_contact": None if contact is None else round(contact.ratio, 4),
            "charge_balanced": balanced,
        }
        if note is not None:
            changes["cell"] = [float(x) for x in structure.lattice.parameters]
        out.append(dataclasses.replace(cand, **changes))  # type: ignore[arg-type]
    for rank, cand in enumerate(out, start=1):
        cand.rank = rank
    dropped = len(candidates) - len(out)
    if dropped and out.stop_reason is None:
        out.stop_reason = f"{dropped} candidate(s) dropped for atoms too close"
    return out
