"""Predictions -> candidate crystal structures (pyxtal).

:func:`generate_candidates` turns a formula into the ``k`` most likely concrete structures::

    cands = generate_candidates("Li7La3Zr2O12", k=3, seed=0)
    cands[0].structure            # pymatgen Structure, conventional cell, in the predicted space group

How a candidate is made
-----------------------
1. **Ranking.** The predictor is asked for every Bravais lattice and every modelled space group
   (``top_bravais=14, top_space_groups=230``); the (lattice, group) pairs are ranked by
   P(lattice) x P(group | lattice) and walked from the top until ``k`` candidates exist. ``space_groups=``
   forces the pairs tried (ranked among themselves by the same probability, 0 for a group the model does not
   know) and ``bravais=`` restricts the lattices.
2. **Formula unit.** The formula is reduced to its smallest integer formula unit. A non-integer formula
   (``La1.8Sr0.2CuO4``) uses the smallest integer multiple of it (``La9SrCu5O20``); an amount counts as an
   integer when it is within :data:`INTEGER_RTOL` (1e-6, relative) of one. Nothing is rounded silently: a
   formula without such a multiple of at most ``max_atoms`` atoms raises ``ValueError``.
3. **Cell and Z.** The shape is the predicted conventional cell of the lattice (``RankedGroup.cell``: pyxtal's
   setting, R groups in hexagonal axes). ``Z_est = V_cell / (v_atom x n_fu)`` from the predicted volume per
   atom; Z is the compatible value closest to ``Z_est`` on a log scale (ties: the smaller), where *compatible*
   means the group's Wyckoff multiplicities can hold ``Z x counts`` atoms (the same rule as pyxtal's
   ``Group.check_compatible``, solved exactly here in microseconds: pyxtal's own check enumerates products and can
   run for minutes on large counts) and ``Z x n_fu <= max_atoms`` (default :data:`DEFAULT_MAX_ATOMS` = 200:
   enough for garnet Li7La3Zr2O12 in Ia-3d, Z = 8, 192 atoms). The cell is then scaled, keeping its shape, to
   ``Z x n_fu x v_atom``. If every attempt at that Z fails, the next closest compatible Z is tried (recorded
   in the notes).
4. **Robustness to poor predictions.** A missing or unusable predicted cell (NaN, non-positive lengths, an hR
   alpha that does not close) is replaced by a generic cell of the lattice system (then Z is the smallest
   compatible value); lengths whose ratio exceeds :data:`MAX_LENGTH_RATIO` are pulled together (volume kept);
   a monoclinic beta < 90 is folded to 180 - beta and capped at :data:`MAX_MONOCLINIC_BETA`; triclinic angles
   are clamped to [60, 120] degrees. The predicted volume per atom is clamped so that the atoms' covalent
   spheres fill between 5 % and 100 % of it (98 % of Materials Project structures lie inside); a missing or
   non-positive prediction is replaced by the covalent-sphere volume at a packing fraction of 0.5. Every such
   change is recorded in ``Candidate.notes``.
5. **Sanity before pyxtal.** Spheres of ``min_distance_factor`` x covalent radius must fit in the cell
   (packing <= 0.74) and the shortest lattice translation (centring included) must be at least
   ``min_distance_factor`` x twice the smallest radius: a cramped cell can keep pyxtal busy for minutes or come
   back with 0.8 Å contacts.
6. **Build.** ``pyxtal().from_random(3, group, species, num_ions, lattice=Lattice.from_para(..., ltype=...),
   random_state=rng, t_factor=min_distance_factor / 0.5)``: ``num_ions`` counts the conventional cell and
   pyxtal's distance tolerance is set to the same fraction of the covalent-radius sum as the check below (the
   default 0.5 is pyxtal's own; stricter values slow pyxtal down many times over).
7. **Checks.** pymatgen's ``SpacegroupAnalyzer(symprec=`` :data:`SYMPREC` ``= 0.1)`` finds the requested
   group, the reduced formula equals the formula unit's, and no two atoms (periodic images included) are closer
   than ``min_distance_factor`` (default :data:`DEFAULT_MIN_DISTANCE_FACTOR` = 0.5) x the sum of their
   covalent radii (pyxtal's table). A failed attempt is retried with the next attempt number: 2 attempts per
   Z (plus one per extra structure wanted with ``per_group``), at most 2 values of Z per pair. With
   ``per_group > 1``, a structure that pymatgen's ``StructureMatcher`` matches to one already built is dropped.

Time limits
-----------
Each pyxtal call runs under a hard limit: half the time left of ``timeout_per_group`` (default 10 s for all
attempts at one pair; the last planned attempt gets all that is left) and at most what is left of ``timeout``
(default 60 s for the whole call). An attempt that hits its limit counts as a failed attempt; a pair whose
time is spent is skipped with a "time limit" reason, and the walk stops when the call's time is spent. On the
main thread of a POSIX process the limit is a ``SIGALRM`` interval timer whose handler raises a private
``BaseException`` subclass inside pyxtal's Python loops (re-raised every second in case pyxtal swallows it; a
previous handler and timer are restored afterwards). Elsewhere (other threads, no ``SIGALRM``) each attempt
runs in a child process (``fork`` where available) that is killed at the limit; ``isolation="process"``
forces that.

Determinism
-----------
Attempt ``n`` of space group ``sg`` draws from ``numpy.random.default_rng(SeedSequence([seed, sg, n]))``; that
Generator is given to both ``Lattice.from_para`` and ``from_random`` and no global random state is used. The
same seed, predictor and options rebuild the same candidates exactly (unless a time limit cut an attempt
short: time is the only input that can differ between runs; ``Candidate.attempt`` records which attempt
made each structure).

Files
-----
:func:`write_candidates` writes per formula ``<formula>_<rank>_<space group>.cif`` / ``.vasp``,
``<formula>_candidates.json`` and ``<formula>_summary.csv``: several formulas can share one folder without
losing each other's rows, and :func:`read_candidates` reads one JSON file or every ``*_candidates.json`` of a
folder.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
from monty.json import MSONable

if TYPE_CHECKING:
    from pymatgen.core import Composition, Structure

    from cryspnet_gen.predict import LatticePrediction, Prediction, Predictor
    from cryspnet_gen.templates import TemplateStore

__all__ = [
    "DEFAULT_MAX_ATOMS",
    "DEFAULT_MIN_DISTANCE_FACTOR",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TIMEOUT_PER_GROUP",
    "INTEGER_RTOL",
    "SYMPREC",
    "Candidate",
    "CandidateList",
    "CandidateWarning",
    "GenerationError",
    "GenerationResult",
    "SkippedPair",
    "generate_candidates",
    "generate_many",
    "read_candidates",
    "write_candidates",
]

logger = logging.getLogger(__name__)

#: Largest conventional cell built (atoms); Li7La3Zr2O12 in Ia-3d needs 192.
DEFAULT_MAX_ATOMS = 200
#: Seconds for the whole of one ``generate_candidates`` call.
DEFAULT_TIMEOUT = 60.0
#: Seconds for all attempts at one (lattice, space group) pair.
DEFAULT_TIMEOUT_PER_GROUP = 10.0
#: Smallest allowed distance as a fraction of the covalent-radius sum of the two atoms.
DEFAULT_MIN_DISTANCE_FACTOR = 0.5
#: Symmetry tolerance (Å) of the space-group check and of the symmetrised CIF files.
SYMPREC = 0.1
#: Relative tolerance under which an amount in a formula counts as an integer.
INTEGER_RTOL = 1e-6
#: Largest ratio of the longest to the shortest cell length kept from a prediction.
MAX_LENGTH_RATIO = 10.0
#: Largest monoclinic beta (degrees) kept from a prediction.
MAX_MONOCLINIC_BETA = 135.0

BravaisModel = Literal["master", "metal", "oxide"]
Isolation = Literal["auto", "signal", "process"]
FileFormat = Literal["poscar", "cif"]

_EXTENSIONS: dict[str, str] = {"poscar": "vasp", "cif": "cif"}
_SOURCE = "cryspnet"
# Attempts at one Z before the next Z is tried (plus one per extra structure wanted from a pair).
_ATTEMPTS_PER_Z = 2
# Compatible Z values tried per pair, nearest first.
_Z_CHOICES = 2
# pyxtal's own retries inside one from_random call; with a fixed lattice each retry repeats the same 40 x 10
# placement loops, so new attempts (new seeds) are a better use of the time.
_PYXTAL_MAX_COUNT = 2
# pyxtal's atomic tolerance is 0.5 x the covalent-radius sum; t_factor scales it.
_PYXTAL_TOL_BASE = 0.5
# Covalent-sphere packing (sphere volume / cell volume, pyxtal's covalent radii) into which a predicted volume
# per atom is clamped, and the packing of the fallback volume. On 20k Materials Project structures the packing
# has median 0.53, 1 % quantile 0.063 and 99 % quantile 1.03; denser random cells make pyxtal slow.
_PACKING_RANGE = (0.05, 1.0)
_FALLBACK_PACKING = 0.5
# Densest packing of spheres: the cell must hold spheres of min_distance_factor x the covalent radius.
_MAX_SPHERE_PACKING = 0.74
_TRICLINIC_ANGLES = (60.0, 120.0)
_MIN_METRIC_FACTOR = 0.3
_LARGEST_MULTIPLIER = 100_000
_REPEAT_ALARM_S = 1.0
_MAX_REASONS_IN_MESSAGE = 8

# Generic shapes (a, b, c, alpha, beta, gamma) up to scale, used when a prediction gives no usable cell; the
# unequal lengths and angles avoid accidental higher metric symmetry.
_FALLBACK_SHAPES: dict[str, tuple[float, ...]] = {
    "aP": (1.0, 1.07, 1.14, 97.0, 101.0, 104.0),
    "mP": (1.0, 1.07, 1.14, 90.0, 100.0, 90.0),
    "mC": (1.0, 1.07, 1.14, 90.0, 100.0, 90.0),
    "oP": (1.0, 1.07, 1.14, 90.0, 90.0, 90.0),
    "oC": (1.0, 1.07, 1.14, 90.0, 90.0, 90.0),
    "oI": (1.0, 1.07, 1.14, 90.0, 90.0, 90.0),
    "oF": (1.0, 1.07, 1.14, 90.0, 90.0, 90.0),
    "tP": (1.0, 1.0, 1.3, 90.0, 90.0, 90.0),
    "tI": (1.0, 1.0, 2.0, 90.0, 90.0, 90.0),
    "hP": (1.0, 1.0, 1.6, 90.0, 90.0, 120.0),
    "hR": (1.0, 1.0, 2.5, 90.0, 90.0, 120.0),
    "cP": (1.0, 1.0, 1.0, 90.0, 90.0, 90.0),
    "cI": (1.0, 1.0, 1.0, 90.0, 90.0, 90.0),
    "cF": (1.0, 1.0, 1.0, 90.0, 90.0, 90.0),
}

# Centring translations of the conventional cell by the first letter of the Hermann-Mauguin symbol
# (R: obverse hexagonal axes, as pyxtal uses).
_CENTRING: dict[str, tuple[tuple[float, float, float], ...]] = {
    "P": (),
    "I": ((0.5, 0.5, 0.5),),
    "F": ((0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0)),
    "C": ((0.5, 0.5, 0.0),),
    "A": ((0.0, 0.5, 0.5),),
    "B": ((0.5, 0.0, 0.5),),
    "R": ((2 / 3, 1 / 3, 1 / 3), (1 / 3, 2 / 3, 2 / 3)),
}


# ---------------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------------


@dataclass
class SkippedPair(MSONable):
    """A (Bravais lattice, space group) pair that gave no candidate, and why.

    Attributes
    ----------
    bravais, space_group
        The pair.
    reason
        Why it gave nothing (incompatible composition, failed checks, pyxtal errors, a time limit...).
    probability
        Its joint probability P(lattice) x P(group | lattice).
    """

    bravais: str
    space_group: int
    reason: str
    probability: float = 0.0

    def __str__(self) -> str:
        from cryspnet_gen.symmetry import space_group_symbol

        return f"{self.bravais} {space_group_symbol(self.space_group)} ({self.space_group}): {self.reason}"


@dataclass
class Candidate(MSONable):
    """One candidate structure for a formula.

    Attributes
    ----------
    formula
        The input formula as given.
    rank
        1 for the most likely candidate of this formula, then 2, 3...
    bravais, space_group, space_group_symbol
        The lattice and group the structure was built in (the structure's symmetry was checked).
    probability, bravais_probability, space_group_probability
        P(lattice) x P(group | lattice), P(lattice) and P(group | lattice) from the model (0 for a forced group
        the model does not know).
    structure
        The conventional cell, as built by pyxtal (pymatgen ``Structure``).
    z
        Formula units (of ``formula_unit``) in ``structure``.
    formula_unit
        The integer formula unit that ``z`` counts (the input, reduced; for a non-integer input its smallest
        integer multiple).
    lattice_parameters, lattice_parameters_std
        Predicted lattice parameters of ``bravais`` (named as in ``symmetry.PARAMETER_NAMES``), ensemble mean
        and std; ``None`` values when the model has none.
    predicted_cell, predicted_cell_std
        The predicted full conventional cell ``[a, b, c, alpha, beta, gamma]`` and its spread, or ``None``.
    cell
        The cell actually built: the predicted shape (or a fallback, see ``notes``) scaled to ``z``.
    volume_per_atom, volume_per_atom_std
        Predicted volume per atom (Å^3) and its spread.
    model, bundle, bundle_version
        Bravais model (``master``, ``metal`` or ``oxide``), model bundle name and version.
    seed, attempt
        ``generate_candidates(..., seed=seed)`` with the same predictor and options rebuilds this candidate;
        ``attempt`` numbers the pyxtal attempt within its space group.
    pair_rank
        Position of the (lattice, group) pair in the model's ranking (1 = most likely; 0 when not ranked).
    source, template_id, score
        ``"cryspnet"`` for structures built from the network predictions, ``"template"`` for a substituted known
        structure (``template_id`` names it in the template store, see :mod:`cryspnet_gen.templates`);
        ``score`` is the log-scale ranking score of a list that mixes both sources (``None`` otherwise).
    notes
        Anything adjusted on the way (clamped cell, fallback volume, a second Z...).
    energy_per_atom, relaxed_by, predicted_rank, relaxed_space_group
        Set by ``relax=``: energy per atom (eV/atom) of the relaxed ``structure``, what relaxed it, the rank the
        model gave before re-ranking by energy, and the space group after relaxation (symprec 0.1). ``None``
        for unrelaxed candidates.
    """

    formula: str
    rank: int
    bravais: str
    space_group: int
    space_group_symbol: str
    probability: float
    bravais_probability: float
    space_group_probability: float
    structure: Structure
    z: int
    formula_unit: str
    lattice_parameters: dict[str, float | None] = field(default_factory=dict)
    lattice_parameters_std: dict[str, float | None] = field(default_factory=dict)
    predicted_cell: list[float] | None = None
    predicted_cell_std: list[float] | None = None
    cell: list[float] = field(default_factory=list)
    volume_per_atom: float | None = None
    volume_per_atom_std: float | None = None
    model: str = "master"
    bundle: str = ""
    bundle_version: str = ""
    seed: int = 0
    attempt: int = 0
    pair_rank: int = 0
    source: str = _SOURCE
    template_id: str | None = None
    score: float | None = None
    notes: list[str] = field(default_factory=list)
    energy_per_atom: float | None = None
    relaxed_by: str | None = None
    predicted_rank: int | None = None
    relaxed_space_group: int | None = None

    def __post_init__(self) -> None:
        self.rank = int(self.rank)
        self.space_group = int(self.space_group)
        self.z = int(self.z)
        self.seed = int(self.seed)
        self.attempt = int(self.attempt)
        self.pair_rank = int(self.pair_rank)

    @property
    def nsites(self) -> int:
        """Number of atoms in ``structure``."""
        return len(self.structure)

    def __repr__(self) -> str:
        return (
            f"Candidate({self.formula!r}, rank={self.rank}, {self.bravais} {self.space_group_symbol} "
            f"({self.space_group}), p={self.probability:.3g}, z={self.z}, {self.nsites} sites, seed={self.seed})"
        )


class CandidateList(list["Candidate"]):
    """The candidates of one formula, most likely first, and the pairs that gave none.

    A plain ``list`` of :class:`Candidate` with three extra attributes: ``formula``, ``skipped`` (a list of
    :class:`SkippedPair`, in the order tried) and ``stop_reason`` (why the walk ended before ``k`` candidates:
    ``None`` when it found them all).
    """

    def __init__(
        self,
        candidates: Iterable[Candidate] = (),
        *,
        formula: str = "",
        skipped: Iterable[SkippedPair] = (),
        stop_reason: str | None = None,
    ) -> None:
        super().__init__(candidates)
        self.formula = formula
        self.skipped: list[SkippedPair] = list(skipped)
        self.stop_reason = stop_reason


class CandidateWarning(UserWarning):
    """Fewer candidates than asked for could be built."""


class GenerationError(RuntimeError):
    """No candidate structure could be built for a formula.

    Attributes
    ----------
    formula
        The input formula.
    skipped
        Every pair tried, with the reason it gave nothing.
    """

    def __init__(self, message: str, *, formula: str = "", skipped: Sequence[SkippedPair] = ()) -> None:
        super().__init__(message)
        self.formula = formula
        self.skipped = list(skipped)


@dataclass
class GenerationResult(MSONable):
    """The outcome of one formula in :func:`generate_many`.

    Attributes
    ----------
    formula
        The input formula.
    candidates
        The candidates built (possibly fewer than ``k``; empty on error).
    skipped
        Pairs that gave no candidate, with reasons.
    error, error_type
        Why nothing was built (``"ValueError"`` for bad input, ``"GenerationError"`` when no pair worked);
        ``None`` on success.
    warning
        Why fewer than ``k`` candidates were built, else ``None``.
    """

    formula: str
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[SkippedPair] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        """Whether at least one candidate was built."""
        return self.error is None


# ---------------------------------------------------------------------------------------------------------
# formula units
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FormulaUnit:
    formula: str
    species: tuple[str, ...]
    counts: tuple[int, ...]
    multiplier: float  # counts = multiplier x the input amounts

    @property
    def n_atoms(self) -> int:
        return sum(self.counts)

    @functools.cached_property
    def reduced_formula(self) -> str:
        from pymatgen.core import Composition

        return Composition(dict(zip(self.species, self.counts, strict=True))).reduced_formula

    @property
    def text(self) -> str:
        return "".join(f"{s}{c if c != 1 else ''}" for s, c in zip(self.species, self.counts, strict=True))


def _parse(formula: str) -> Composition:
    from cryspnet_gen.featurize import parse_composition

    try:
        return parse_composition(formula)
    except ValueError as exc:
        raise ValueError(
            f"{exc}; give a chemical formula with element symbols and amounts, e.g. 'Li7La3Zr2O12' or "
            f"'La1.8Sr0.2CuO4'"
        ) from exc


def _formula_unit(formula: str, max_atoms: int) -> _FormulaUnit:
    """The smallest integer formula unit of ``formula``; ValueError naming the formula when there is none."""
    comp = _parse(formula)
    species = tuple(el.symbol for el in comp.elements)
    amounts = np.array([float(comp[el]) for el in comp.elements])
    m = 0
    for lo, hi in ((1, 1), (2, 1000), (1001, _LARGEST_MULTIPLIER)):  # integer formulas stop at once
        multipliers = np.arange(lo, hi + 1, dtype=np.float64)[:, None]
        scaled = multipliers * amounts[None, :]
        near = (np.abs(scaled - np.rint(scaled)) <= INTEGER_RTOL * np.abs(scaled)) & (np.rint(scaled) >= 1)
        hits = np.flatnonzero(near.all(axis=1))
        if len(hits):
            m = lo + int(hits[0])
            break
    if not m:
        raise ValueError(
            f"formula {formula!r} has amounts {amounts.tolist()} with no integer multiple up to "
            f"x{_LARGEST_MULTIPLIER} (tolerance {INTEGER_RTOL:g} relative): a crystal structure needs an integer "
            f"formula unit; give the amounts as exact fractions (e.g. La1.8Sr0.2CuO4) or an integer formula"
        )
    ints = [round(v) for v in m * amounts]
    g = math.gcd(*ints)
    counts = tuple(i // g for i in ints)
    fu = _FormulaUnit(formula=formula, species=species, counts=counts, multiplier=m / g)
    if fu.n_atoms > max_atoms:
        what = "formula unit" if m == 1 else f"smallest integer multiple of {formula!r}"
        raise ValueError(
            f"formula {formula!r}: the {what} is {fu.text} with {fu.n_atoms} atoms, more than max_atoms="
            f"{max_atoms}; raise max_atoms (at least {fu.n_atoms}) to build structures for it"
        )
    return fu


# ---------------------------------------------------------------------------------------------------------
# Wyckoff compatibility
# ---------------------------------------------------------------------------------------------------------


@functools.cache
def _wyckoff_classes(space_group: int) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...], int]:
    """``(free, fixed, gcd)`` of a group's Wyckoff multiplicities (conventional cell, pyxtal's tables).

    ``free``: multiplicities with a position that has free coordinates (usable any number of times);
    ``fixed``: ``(multiplicity, number of positions)`` for multiplicities whose positions are all fixed points
    (each usable once, shared by all species); ``gcd``: of all multiplicities.
    """
    from pyxtal.symmetry import get_wyckoffs

    free: set[int] = set()
    fixed: dict[int, int] = {}
    for ops in get_wyckoffs(space_group):
        mult = len(ops)
        if np.linalg.matrix_rank(np.asarray(ops[0].rotation_matrix, dtype=float)) > 0:
            free.add(mult)
        else:
            fixed[mult] = fixed.get(mult, 0) + 1
    mults = list(free) + list(fixed)
    return (
        tuple(sorted(free)),
        tuple(sorted((m, n) for m, n in fixed.items() if m not in free)),
        math.gcd(*mults),
    )


@functools.lru_cache(maxsize=4096)
def _free_sums(free: tuple[int, ...], limit: int) -> np.ndarray:
    """Boolean array: which totals 0..limit are sums of the ``free`` multiplicities (any number of each)."""
    ok = np.zeros(limit + 1, dtype=bool)
    ok[0] = True
    for n in range(1, limit + 1):
        ok[n] = any(m <= n and ok[n - m] for m in free)
    return ok


@functools.lru_cache(maxsize=65536)
def _compatible(space_group: int, counts: tuple[int, ...]) -> bool:
    """Whether ``counts`` atoms per species fit the Wyckoff positions of ``space_group``.

    The rule of pyxtal's ``Group.check_compatible`` (positions with free coordinates any number of times,
    fixed points once each across all species), solved by a small exact search instead of enumeration.
    """
    free, fixed, g = _wyckoff_classes(space_group)
    if any(c <= 0 or c % g for c in counts):
        return False
    limit = 1 << max(counts).bit_length()
    sums = _free_sums(free, limit)
    mults = [m for m, _ in fixed]
    order = sorted(counts, reverse=True)

    @functools.cache
    def solve(i: int, bounds: tuple[int, ...]) -> bool:
        if i == len(order):
            return True
        c = order[i]
        for use in itertools.product(*(range(b + 1) for b in bounds)):
            used = sum(u * m for u, m in zip(use, mults, strict=True))
            if (
                used <= c
                and sums[c - used]
                and solve(i + 1, tuple(b - u for b, u in zip(bounds, use, strict=True)))
            ):
                return True
        return False

    return solve(0, tuple(n for _, n in fixed))


def _z_options(space_group: int, fu: _FormulaUnit, z_est: float | None, max_atoms: int) -> list[int]:
    """Compatible Z values, closest to ``z_est`` (log scale) first; smallest first when ``z_est`` is None."""
    z_max = max_atoms // fu.n_atoms
    if z_est is None or not math.isfinite(z_est) or z_est <= 0:
        order = list(range(1, z_max + 1))
    else:
        order = sorted(range(1, z_max + 1), key=lambda z: (abs(math.log(z / z_est)), z))
    out = []
    for z in order:
        if _compatible(space_group, tuple(c * z for c in fu.counts)):
            out.append(z)
            if len(out) == _Z_CHOICES:
                break
    return out


# ---------------------------------------------------------------------------------------------------------
# cells
# ---------------------------------------------------------------------------------------------------------


@functools.cache
def _covalent_radius(symbol: str) -> float:
    """pyxtal's covalent radius (Å), the table its distance tolerances use."""
    from pyxtal.database.element import Element

    radius = Element(symbol).covalent_radius
    return float(radius) if radius else 1.5


def _sphere_volume_per_atom(fu: _FormulaUnit, scale: float = 1.0) -> float:
    total = sum(
        c * 4.0 / 3.0 * math.pi * (scale * _covalent_radius(s)) ** 3
        for s, c in zip(fu.species, fu.counts, strict=True)
    )
    return total / fu.n_atoms


def _volume_per_atom(pred_vpa: float | None, fu: _FormulaUnit, notes: list[str]) -> float:
    """The predicted volume per atom, or a covalent-radius estimate when the prediction is unusable."""
    spheres = _sphere_volume_per_atom(fu)
    fallback = spheres / _FALLBACK_PACKING
    if pred_vpa is None or not math.isfinite(pred_vpa) or pred_vpa <= 0:
        notes.append(f"no usable volume per atom predicted; used {fallback:.2f} Å^3 from covalent radii")
        return fallback
    packing = spheres / pred_vpa
    lo, hi = _PACKING_RANGE
    if not lo <= packing <= hi:
        clamped = spheres / min(max(packing, lo), hi)
        notes.append(
            f"predicted volume per atom {pred_vpa:.2f} Å^3 is implausible (covalent spheres would fill "
            f"{packing:.0%}); used {clamped:.2f} Å^3 (covalent-sphere packing clamped to [{lo:g}, {hi:g}])"
        )
        return clamped
    return float(pred_vpa)


def _compress_lengths(lengths: np.ndarray, max_ratio: float) -> np.ndarray:
    """Pull lengths towards their geometric mean until max/min <= max_ratio (the product is kept)."""
    logs = np.log(lengths)
    mean = logs.mean()
    spread = logs.max() - logs.min()
    if spread <= math.log(max_ratio):
        return lengths
    return np.exp(mean + (logs - mean) * (math.log(max_ratio) / spread))


def _metric_factor(angles: np.ndarray) -> float:
    cos = np.cos(np.radians(angles))
    return float(1.0 - np.sum(cos**2) + 2.0 * np.prod(cos))


def _cell_shape(bravais: str, cell: Sequence[float] | None, notes: list[str]) -> tuple[np.ndarray, bool]:
    """A usable cell shape from a predicted cell: ``(cell6, predicted)``; ``predicted`` False for a fallback."""
    fallback = np.asarray(_FALLBACK_SHAPES[bravais], dtype=float)
    if cell is None:
        notes.append(f"no {bravais} cell predicted; used a generic {bravais} cell shape")
        return fallback, False
    arr = np.asarray(cell, dtype=float)
    if arr.shape != (6,) or not np.all(np.isfinite(arr)) or np.any(arr[:3] <= 0) or np.any(arr[3:] <= 0):
        notes.append(
            f"predicted {bravais} cell {np.round(arr, 3).tolist()} is unusable; used a generic shape"
        )
        return fallback, False
    arr = arr.copy()
    lengths = _compress_lengths(arr[:3], MAX_LENGTH_RATIO)
    if not np.allclose(lengths, arr[:3]):
        notes.append(
            f"cell length ratio capped at {MAX_LENGTH_RATIO:g} (predicted {np.round(arr[:3], 3).tolist()})"
        )
        arr[:3] = lengths
    if bravais[0] == "m":
        beta = arr[4] if arr[4] >= 90.0 else 180.0 - arr[4]
        if beta > MAX_MONOCLINIC_BETA:
            notes.append(f"monoclinic beta {arr[4]:.1f} capped at {MAX_MONOCLINIC_BETA:g} degrees")
            beta = MAX_MONOCLINIC_BETA
        arr[4] = beta
    elif bravais == "aP":
        lo, hi = _TRICLINIC_ANGLES
        clipped = np.clip(arr[3:], lo, hi)
        if not np.allclose(clipped, arr[3:]):
            notes.append(
                f"triclinic angles {np.round(arr[3:], 1).tolist()} clamped to [{lo:g}, {hi:g}] degrees"
            )
            arr[3:] = clipped
        if _metric_factor(arr[3:]) < _MIN_METRIC_FACTOR:
            notes.append(
                f"triclinic angles {np.round(arr[3:], 1).tolist()} give a flat cell; used a generic shape"
            )
            return fallback, False
    return arr, True


def _scaled(cell6: np.ndarray, volume: float) -> np.ndarray:
    from cryspnet_gen.symmetry import conventional_volume

    out = cell6.copy()
    out[:3] *= (volume / float(conventional_volume(cell6))) ** (1.0 / 3.0)
    return out


def _shortest_translation(cell6: np.ndarray, space_group: int) -> float:
    from pymatgen.core import Lattice

    from cryspnet_gen.symmetry import space_group_symbol

    matrix = Lattice.from_parameters(*(float(x) for x in cell6)).matrix
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=float)
    centring = np.array([(0.0, 0.0, 0.0), *_CENTRING.get(space_group_symbol(space_group)[0], ())])
    frac = (shifts[:, None, :] + centring[None, :, :]).reshape(-1, 3)
    lengths = np.linalg.norm(frac @ matrix, axis=1)
    return float(lengths[lengths > 1e-8].min())


def _precheck(cell6: np.ndarray, space_group: int, fu: _FormulaUnit, z: int, factor: float) -> str | None:
    """Why a cell is too small for the atoms at ``factor`` x covalent radii (None when it is fine)."""
    from cryspnet_gen.symmetry import conventional_volume

    volume = float(conventional_volume(cell6))
    spheres = _sphere_volume_per_atom(fu, factor) * fu.n_atoms * z
    if not volume > 0 or spheres / volume > _MAX_SPHERE_PACKING:
        return (
            f"cell too small: {volume:.1f} Å^3 cannot hold {fu.n_atoms * z} atoms {factor:g} x their covalent "
            f"radii apart"
        )
    shortest = _shortest_translation(cell6, space_group)
    need = 2.0 * factor * min(_covalent_radius(s) for s in fu.species)
    if shortest < need:
        return f"cell too thin: shortest lattice translation {shortest:.2f} Å < {need:.2f} Å"
    return None


# ---------------------------------------------------------------------------------------------------------
# building and checking one structure
# ---------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _group(space_group: int) -> Any:
    from pyxtal.symmetry import Group

    return Group(space_group)


@dataclass(frozen=True)
class _Job:
    """Everything one pyxtal attempt needs (picklable, for the child-process path)."""

    space_group: int
    species: tuple[str, ...]
    num_ions: tuple[int, ...]
    cell: tuple[float, ...]
    entropy: tuple[int, ...]
    t_factor: float


def _build(job: _Job) -> Structure:
    from pyxtal import pyxtal
    from pyxtal.lattice import Lattice

    group = _group(job.space_group)
    rng = np.random.default_rng(np.random.SeedSequence(list(job.entropy)))
    lattice = Lattice.from_para(*job.cell, ltype=group.lattice_type, random_state=rng)
    xtal = pyxtal()
    xtal.from_random(
        3,
        group,
        list(job.species),
        list(job.num_ions),
        lattice=lattice,
        random_state=rng,
        t_factor=job.t_factor,
        max_count=_PYXTAL_MAX_COUNT,
    )
    if not xtal.valid:
        raise RuntimeError("pyxtal returned an invalid structure")
    return xtal.to_pymatgen()


class _AlarmExpired(BaseException):
    """Raised by the SIGALRM handler; a BaseException so that pyxtal's ``except Exception`` does not eat it."""


class _TimeLimit(Exception):
    """An attempt ran out of time."""


def _can_use_signal() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _run_with_alarm(job: _Job, seconds: float) -> Structure:
    state = {"active": True}

    def handler(signum: int, frame: Any) -> None:
        if state["active"]:
            raise _AlarmExpired

    previous = signal.signal(signal.SIGALRM, handler)
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3), _REPEAT_ALARM_S)
    started = time.monotonic()
    try:
        try:
            return _build(job)
        finally:
            state["active"] = False
    except _AlarmExpired:
        raise _TimeLimit from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        # signal() returns None for a handler that was not set from Python: fall back to the default.
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if outer_delay > 0:  # someone else's timer was running: give it back what is left
            left = outer_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), outer_interval)


def _child(conn: Any, job: _Job) -> None:
    try:
        conn.send(("ok", _build(job).as_dict()))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


class _ChildError(Exception):
    pass


def _run_in_process(job: _Job, seconds: float | None) -> Structure:
    from pymatgen.core import Structure

    methods = multiprocessing.get_all_start_methods()
    ctx: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, job), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(seconds):
            raise _TimeLimit
        try:
            status, payload = parent.recv()
        except EOFError:
            raise _ChildError(f"the pyxtal worker process died (exit code {proc.exitcode})") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        parent.close()
    if status != "ok":
        raise _ChildError(payload)
    return Structure.from_dict(payload)


def _run(job: _Job, seconds: float | None, isolation: str) -> Structure:
    if isolation == "process" or (isolation == "auto" and seconds is not None and not _can_use_signal()):
        return _run_in_process(job, seconds)
    if seconds is None:
        return _build(job)
    return _run_with_alarm(job, seconds)


def _check(structure: Structure, space_group: int, fu: _FormulaUnit, factor: float) -> str | None:
    """Why a built structure is not acceptable (None when it passes)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    formula = structure.composition.reduced_formula
    if formula != fu.reduced_formula:
        return f"built formula {formula} differs from {fu.reduced_formula}"
    radii = np.array([_covalent_radius(site.specie.symbol) for site in structure])
    cutoff = 2.0 * factor * float(radii.max())
    centres, neighbours, _, distances = structure.get_neighbor_list(cutoff)
    if len(distances):
        ratio = distances / (radii[centres] + radii[neighbours])
        worst = int(np.argmin(ratio))
        if ratio[worst] < factor:
            a, b = structure[int(centres[worst])].specie, structure[int(neighbours[worst])].specie
            return (
                f"atoms too close: {a}-{b} {distances[worst]:.2f} Å is {ratio[worst]:.2f} x their covalent-radius "
                f"sum (< {factor:g})"
            )
    try:
        found = SpacegroupAnalyzer(structure, symprec=SYMPREC).get_space_group_number()
    except Exception as exc:  # spglib failures surface as several types
        return f"symmetry analysis failed ({type(exc).__name__}: {exc})"
    if found != space_group:
        return f"symmetry check found space group {found}, not {space_group} (symprec={SYMPREC:g})"
    return None


# ---------------------------------------------------------------------------------------------------------
# the walk over (lattice, space group) pairs
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Pair:
    bravais: str
    space_group: int
    probability: float
    bravais_probability: float
    space_group_probability: float
    lattice: LatticePrediction | None
    pair_rank: int
    notes: list[str] = field(default_factory=list)


def _ranked_pairs(
    pred: Prediction, space_groups: Sequence[int] | None, bravais: Sequence[str] | None
) -> list[_Pair]:
    from cryspnet_gen.symmetry import bravais_of

    pairs = [
        _Pair(
            bravais=lat.bravais,
            space_group=int(sg),
            probability=float(lat.probability * p),
            bravais_probability=float(lat.probability),
            space_group_probability=float(p),
            lattice=lat,
            pair_rank=0,
        )
        for lat in pred.lattices
        for sg, p in zip(lat.space_groups, lat.space_group_probabilities, strict=True)
    ]
    pairs.sort(key=lambda g: -g.probability)
    for i, pair in enumerate(pairs, start=1):
        pair.pair_rank = i
    if space_groups is not None:
        by_group = {p.space_group: p for p in pairs}
        lattices = {lat.bravais: lat for lat in pred.lattices}
        forced = []
        for sg in dict.fromkeys(space_groups):
            if sg in by_group:
                forced.append(by_group[sg])
                continue
            lat_name = bravais_of(sg)
            lat = lattices.get(lat_name)
            forced.append(
                _Pair(
                    bravais=lat_name,
                    space_group=sg,
                    probability=0.0,
                    bravais_probability=float(lat.probability) if lat is not None else 0.0,
                    space_group_probability=0.0,
                    lattice=lat,
                    pair_rank=0,
                    notes=[f"space group {sg} forced; the model does not rank it"],
                )
            )
        pairs = sorted(forced, key=lambda g: -g.probability)
    if bravais is not None:
        allowed = set(bravais)
        pairs = [p for p in pairs if p.bravais in allowed]
    return pairs


@dataclass
class _Options:
    k: int
    seed: int
    per_group: int
    max_atoms: int
    timeout: float | None
    timeout_per_group: float | None
    min_distance_factor: float
    isolation: str


def _same_structure(a: Structure, others: Sequence[Structure]) -> bool:
    if not others:
        return False
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher()
    return any(matcher.fit(a, b) for b in others)


def _try_pair(
    pair: _Pair,
    pred: Prediction,
    fu: _FormulaUnit,
    opts: _Options,
    want: int,
    call_deadline: float | None,
) -> tuple[list[tuple[Structure, int, int, np.ndarray, list[str]]], str | None]:
    """Build up to ``want`` structures for one pair: ``(built, reason)`` with ``reason`` when none was built.

    ``built`` holds ``(structure, z, attempt, cell, notes)``.
    """
    sg = pair.space_group
    notes = list(pair.notes)
    lat = pair.lattice
    shape, predicted = _cell_shape(pair.bravais, lat.cell if lat is not None else None, notes)
    vpa = _volume_per_atom(pred.volume_per_atom, fu, notes)
    z_est = None
    if predicted:
        from cryspnet_gen.symmetry import conventional_volume

        z_est = float(conventional_volume(shape)) / (vpa * fu.n_atoms)
    zs = _z_options(sg, fu, z_est, opts.max_atoms)
    if not zs:
        return [], (
            f"composition {fu.text} x Z does not fit the Wyckoff positions of the group for any Z <= "
            f"{opts.max_atoms // fu.n_atoms} (max_atoms={opts.max_atoms})"
        )
    now = time.monotonic()
    deadline = call_deadline
    if opts.timeout_per_group is not None:
        pair_deadline = now + opts.timeout_per_group
        deadline = pair_deadline if deadline is None else min(deadline, pair_deadline)
    # pyxtal's tolerance is set to the check's fraction; the default (0.5, t_factor 1) is pyxtal's own. A
    # stricter one slows pyxtal down many times over (LLZO in P-1 at 0.6: 30-45 s instead of 0.7-2.4 s).
    t_factor = opts.min_distance_factor / _PYXTAL_TOL_BASE
    built: list[tuple[Structure, int, int, np.ndarray, list[str]]] = []
    failures: list[str] = []
    attempt = 0
    cells = []
    for z in zs:
        cell = _scaled(shape, z * fu.n_atoms * vpa)
        problem = _precheck(cell, sg, fu, z, opts.min_distance_factor)
        if problem:
            failures.append(f"Z={z}: {problem}")
        else:
            cells.append((z, cell))
    per_z = _ATTEMPTS_PER_Z + want - 1
    planned = per_z * len(cells)
    for zi, (z, cell) in enumerate(cells):
        z_notes = list(notes)
        if z != zs[0]:
            z_notes.append(f"Z={z}: the closest compatible Z={zs[0]} failed ({'; '.join(failures)})")
        if z_est is not None:
            z_notes.append(f"Z estimated {z_est:.2f} from the predicted cell, chose Z={z}")
        for j in range(per_z):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return built, _time_reason(built, failures, opts, call_deadline)
            # Run times are heavy-tailed: an attempt that is not the last one planned gets half of the time
            # left, so that a fresh seed (or the next Z) still has a chance.
            last = zi * per_z + j == planned - 1
            cap = left if left is None or last else left / 2
            job = _Job(
                space_group=sg,
                species=fu.species,
                num_ions=tuple(c * z for c in fu.counts),
                cell=tuple(float(x) for x in cell),
                entropy=(opts.seed, sg, attempt),
                t_factor=t_factor,
            )
            this = attempt
            attempt += 1
            try:
                structure = _run(job, cap, opts.isolation)
            except _TimeLimit:
                logger.info(
                    "%s: space group %d attempt %d hit its time limit (%.2g s)", fu.formula, sg, this, cap
                )
                failures.append(f"Z={z} attempt {this}: time limit ({cap:.2g} s) reached")
                continue
            except Exception as exc:  # pyxtal raises RuntimeError, ValueError, IndexError... on bad inputs
                failures.append(f"Z={z} attempt {this}: pyxtal failed ({type(exc).__name__}: {exc})")
                continue
            problem = _check(structure, sg, fu, opts.min_distance_factor)
            if problem:
                failures.append(f"Z={z} attempt {this}: {problem}")
                continue
            if want > 1 and _same_structure(structure, [b[0] for b in built]):
                failures.append(f"Z={z} attempt {this}: same structure as an earlier attempt")
                continue
            built.append((structure, z, this, cell, z_notes))
            if len(built) >= want:
                return built, None
        if built:
            break
    if not built and deadline is not None and time.monotonic() >= deadline:
        return built, _time_reason(built, failures, opts, call_deadline)
    return built, None if built else "; ".join(failures)


def _time_reason(
    built: list[Any], failures: list[str], opts: _Options, call_deadline: float | None
) -> str | None:
    if built:
        return None
    if opts.timeout_per_group is None or (
        call_deadline is not None and time.monotonic() >= call_deadline - 1e-3
    ):
        what = f"time limit for the call (timeout={opts.timeout:g} s) reached"
    else:
        what = f"time limit for the group (timeout_per_group={opts.timeout_per_group:g} s) reached"
    return "; ".join([*failures, what])


def _walk(pred: Prediction, fu: _FormulaUnit, pairs: list[_Pair], opts: _Options) -> CandidateList:
    start = time.monotonic()
    call_deadline = None if opts.timeout is None else start + opts.timeout
    out = CandidateList(formula=fu.formula)
    for i, pair in enumerate(pairs):
        if len(out) >= opts.k:
            break
        if call_deadline is not None and time.monotonic() >= call_deadline:
            out.stop_reason = f"time limit for the call (timeout={opts.timeout:g} s) reached after {i} of {len(pairs)} pairs"
            break
        want = min(opts.per_group, opts.k - len(out))
        built, reason = _try_pair(pair, pred, fu, opts, want, call_deadline)
        if reason is not None:
            skip = SkippedPair(pair.bravais, pair.space_group, reason, pair.probability)
            out.skipped.append(skip)
            log = logger.debug if reason.startswith("composition") else logger.info
            log("%s: skipped %s", fu.formula, skip)
        for structure, z, attempt, cell, notes in built:
            out.append(_candidate(pair, pred, fu, opts, len(out) + 1, structure, z, attempt, cell, notes))
    else:
        if len(out) < opts.k:
            out.stop_reason = f"all {len(pairs)} (lattice, space group) pairs were tried"
    logger.info(
        "%s: %d candidate(s) in %.2f s (%d pairs skipped)",
        fu.formula,
        len(out),
        time.monotonic() - start,
        len(out.skipped),
    )
    return out


def _candidate(
    pair: _Pair,
    pred: Prediction,
    fu: _FormulaUnit,
    opts: _Options,
    rank: int,
    structure: Structure,
    z: int,
    attempt: int,
    cell: np.ndarray,
    notes: list[str],
) -> Candidate:
    from cryspnet_gen.symmetry import space_group_symbol

    lat = pair.lattice
    return Candidate(
        formula=fu.formula,
        rank=rank,
        bravais=pair.bravais,
        space_group=pair.space_group,
        space_group_symbol=space_group_symbol(pair.space_group),
        probability=pair.probability,
        bravais_probability=pair.bravais_probability,
        space_group_probability=pair.space_group_probability,
        structure=structure,
        z=z,
        formula_unit=fu.text,
        lattice_parameters=dict(lat.parameters) if lat is not None else {},
        lattice_parameters_std=dict(lat.parameters_std) if lat is not None else {},
        predicted_cell=list(lat.cell) if lat is not None and lat.cell is not None else None,
        predicted_cell_std=list(lat.cell_std) if lat is not None and lat.cell_std is not None else None,
        cell=[float(x) for x in cell],
        volume_per_atom=pred.volume_per_atom,
        volume_per_atom_std=pred.volume_per_atom_std,
        model=pred.model,
        bundle=pred.bundle,
        bundle_version=pred.bundle_version,
        seed=opts.seed,
        attempt=attempt,
        pair_rank=pair.pair_rank,
        source=_SOURCE,
        notes=list(notes),
    )


def _failure_message(formula: str, found: CandidateList, k: int) -> str:
    # Pairs that were built and failed say more than pairs whose composition never fitted: list them first.
    ordered = sorted(found.skipped, key=lambda s: s.reason.startswith("composition"))
    reasons = [str(s) for s in ordered[:_MAX_REASONS_IN_MESSAGE]]
    more = len(found.skipped) - len(reasons)
    tail = f"; ... and {more} more (see .skipped)" if more > 0 else ""
    stop = f" ({found.stop_reason})" if found.stop_reason else ""
    head = (
        f"no candidate structure could be built for {formula!r}"
        if not found
        else f"only {len(found)} of {k} candidate structures could be built for {formula!r}"
    )
    return f"{head}{stop}: " + ("; ".join(reasons) if reasons else "no pair was tried") + tail


# ---------------------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------------------


def _check_options(
    *,
    k: int,
    seed: int,
    per_group: int,
    max_atoms: int,
    timeout: float | None,
    timeout_per_group: float | None,
    min_distance_factor: float,
    isolation: str,
    model: str,
    space_groups: Sequence[int] | None,
    bravais: Sequence[str] | None,
) -> tuple[_Options, list[int] | None, list[str] | None]:
    from cryspnet_gen.symmetry import BRAVAIS_LATTICES, bravais_of

    def positive_int(name: str, value: Any) -> int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        return int(value)

    k = positive_int("k", k)
    per_group = positive_int("per_group", per_group)
    max_atoms = positive_int("max_atoms", max_atoms)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, value in (("timeout", timeout), ("timeout_per_group", timeout_per_group)):
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
    if not 0 < float(min_distance_factor) <= 1.5:
        raise ValueError(f"min_distance_factor must be in (0, 1.5], got {min_distance_factor!r}")
    if isolation not in get_args(Isolation):
        raise ValueError(f"Unknown {isolation=}; choose from {get_args(Isolation)}")
    if isolation == "signal" and not _can_use_signal():
        raise ValueError("isolation='signal' needs SIGALRM and the main thread; use 'auto' or 'process'")
    if model not in get_args(BravaisModel):
        raise ValueError(f"Unknown {model=}; choose from {get_args(BravaisModel)}")
    groups = None
    if space_groups is not None:
        groups = []
        for sg in space_groups:
            bravais_of(sg)  # ValueError for anything but an integer in 1..230
            groups.append(int(sg))
        if not groups:
            raise ValueError("space_groups is empty; give at least one space-group number or None")
    lattices = None
    if bravais is not None:
        lattices = list(bravais)
        bad = [b for b in lattices if b not in BRAVAIS_LATTICES]
        if bad or not lattices:
            raise ValueError(f"Unknown bravais {bad or lattices}; choose from {BRAVAIS_LATTICES}")
        if groups is not None and not any(bravais_of(sg) in lattices for sg in groups):
            raise ValueError(f"none of space_groups={groups} belongs to bravais={lattices}")
    opts = _Options(
        k=k,
        seed=int(seed),
        per_group=per_group,
        max_atoms=max_atoms,
        timeout=None if timeout is None else float(timeout),
        timeout_per_group=None if timeout_per_group is None else float(timeout_per_group),
        min_distance_factor=float(min_distance_factor),
        isolation=isolation,
    )
    return opts, groups, lattices


def _predict(predictor: Predictor | None, formulas: list[str], model: str) -> list[Prediction]:
    if predictor is None:
        from cryspnet_gen.predict import load_predictor

        predictor = load_predictor()
    # Every lattice and every modelled group, so the walk can go on when pairs fail.
    return predictor.predict(formulas, top_bravais=14, top_space_groups=230, model=model)  # type: ignore[arg-type]


def generate_candidates(
    formula: str,
    k: int = 3,
    *,
    seed: int = 0,
    predictor: Predictor | None = None,
    model: BravaisModel = "master",
    per_group: int = 1,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    space_groups: Sequence[int] | None = None,
    bravais: Sequence[str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    timeout_per_group: float | None = DEFAULT_TIMEOUT_PER_GROUP,
    min_distance_factor: float = DEFAULT_MIN_DISTANCE_FACTOR,
    isolation: Isolation = "auto",
    relax: Relax | None = None,
    relax_steps: int = 300,
    source: Source | None = None,
    templates: TemplateStore | str | os.PathLike[str] | None = None,
) -> CandidateList:
    """The ``k`` most likely candidate structures of a formula, most likely first.

    Parameters
    ----------
    formula
        A chemical formula; non-integer amounts are allowed (see the module docstring).
    k
        Number of candidates wanted.
    seed
        Base seed: the same seed, predictor and options give the same structures.
    predictor
        A :class:`~cryspnet_gen.predict.Predictor`; ``None`` loads the shipped default (``load_predictor()``).
    model
        Bravais model: ``"master"``, ``"metal"`` or ``"oxide"``.
    per_group
        Structures built per (lattice, space group) pair before moving to the next pair.
    max_atoms
        Largest conventional cell built.
    space_groups
        Try only these groups (ranked by the model's probability); ``None`` walks the model's ranking.
    bravais
        Try only these Bravais lattices.
    timeout, timeout_per_group
        Seconds for the whole call and for one pair (all its attempts); ``None`` for no limit.
    min_distance_factor
        Smallest allowed interatomic distance as a fraction of the covalent-radius sum.
    isolation
        How a pyxtal attempt is stopped at its time limit: ``"signal"`` (SIGALRM, main thread only),
        ``"process"`` (a child process that is killed) or ``"auto"`` (signal where possible).
    relax, relax_steps
        ``"chgnet"``: relax the candidates in this process (at most ``relax_steps`` steps each) and re-rank them
        by energy per atom; see :func:`relax_and_rerank`.
    source
        ``"cryspnet"`` (structures built in the predicted groups), ``"templates"`` (known structures of the same
        anonymous formula from a template store, substituted and scaled; see :mod:`cryspnet_gen.templates`) or
        ``"both"`` (one list ranked by score, duplicates removed). ``None``: ``"both"`` when a template store is
        given or set in ``$CRYSPNET_GEN_TEMPLATES``, else ``"cryspnet"`` (logged: templates are off). A formula
        without any template falls back to CRYSPNet candidates (with a :class:`CandidateWarning`).
    templates
        A template store (:class:`~cryspnet_gen.templates.TemplateStore` or its folder); ``None`` reads
        ``$CRYSPNET_GEN_TEMPLATES``.

    Returns
    -------
    CandidateList
        A list of :class:`Candidate` (``len <= k``) with ``.skipped`` (pairs that gave none, with reasons)
        and ``.stop_reason``. With fewer than ``k`` candidates a :class:`CandidateWarning` is issued.

    Raises
    ------
    ValueError
        For a formula that cannot be parsed, has an unknown element, has no integer formula unit within
        ``max_atoms``, or cannot be featurized; and for bad options.
    GenerationError
        When no pair gave a structure; ``.skipped`` lists each pair tried and why it failed.
    """
    opts, groups, lattices = _check_options(
        k=k,
        seed=seed,
        per_group=per_group,
        max_atoms=max_atoms,
        timeout=timeout,
        timeout_per_group=timeout_per_group,
        min_distance_factor=min_distance_factor,
        isolation=isolation,
        model=model,
        space_groups=space_groups,
        bravais=bravais,
    )
    if not isinstance(formula, str):
        raise ValueError(f"formula must be a string, got {type(formula).__name__}")
    chosen, store = _check_source(source, templates)
    fu = _formula_unit(formula, opts.max_atoms)
    (pred,) = _predict(predictor, [formula], model)
    found, message = _generate_sourced(pred, fu, opts, groups, lattices, chosen, store)
    if message is not None:
        warnings.warn(message, CandidateWarning, stacklevel=2)
    if relax is not None:
        found = relax_and_rerank(found, relax, steps=relax_steps, progress=True)
    return found


Source = Literal["cryspnet", "templates", "both"]
_SOURCES = ("cryspnet", "templates", "both")


def _check_source(
    source: str | None, templates: TemplateStore | str | os.PathLike[str] | None
) -> tuple[str, TemplateStore | None]:
    from cryspnet_gen.templates import ENV_VAR, resolve_store

    if source is not None and source not in _SOURCES:
        raise ValueError(f"Unknown {source=}; choose from {_SOURCES}")
    store = resolve_store(templates) if source != "cryspnet" else None
    if source is None:
        if store is None:
            logger.info("templates are off (no template store given and %s is not set)", ENV_VAR)
        source = "both" if store is not None else "cryspnet"
    if source != "cryspnet" and store is None:
        raise ValueError(
            f"source={source!r} needs a template store: pass templates=STORE (--templates) or set {ENV_VAR}; "
            "build one with 'cryspnet-gen templates build --from ../shared/data --out STORE'"
        )
    return source, store


def _generate_sourced(
    pred: Prediction,
    fu: _FormulaUnit,
    opts: _Options,
    groups: list[int] | None,
    lattices: list[str] | None,
    source: str,
    store: TemplateStore | None,
) -> tuple[CandidateList, str | None]:
    """Candidates of one formula from the chosen source(s) and the warning to give (or None)."""
    from cryspnet_gen.templates import cryspnet_needed, merge_candidates, template_candidates

    if source == "cryspnet":
        found = _generate_one(pred, fu, opts, groups, lattices)
        return found, (_failure_message(fu.formula, found, opts.k) if len(found) < opts.k else None)
    if pred.error is not None:
        raise ValueError(f"formula {fu.formula!r} cannot be predicted: {pred.error}")
    from_templates = template_candidates(
        fu.formula,
        opts.k,
        templates=store,
        prediction=pred,
        max_atoms=opts.max_atoms,
        space_groups=groups,
        bravais=lattices,
    )
    if source == "templates" and from_templates:
        message = None
        if len(from_templates) < opts.k:
            message = f"{fu.formula}: only {len(from_templates)} of {opts.k} candidates from templates ({from_templates.stop_reason})"
        return from_templates, message
    if source == "both" and not cryspnet_needed(from_templates, opts.k):
        # every template candidate outscores any CRYSPNet structure: building those would change nothing
        return merge_candidates([from_templates], opts.k, formula=fu.formula), None
    fallback = None
    if not from_templates:
        fallback = f"{fu.formula}: {from_templates.stop_reason}; " + (
            "falling back to CRYSPNet candidates" if source == "templates" else "CRYSPNet candidates only"
        )
        logger.info("%s", fallback)
    try:
        built = _generate_one(pred, fu, opts, groups, lattices)
    except GenerationError:
        if not from_templates:
            raise
        built = CandidateList([], formula=fu.formula)
    if not from_templates:
        for c in built:
            c.notes.append(fallback or "")
        message = fallback if source == "templates" else None
        if len(built) < opts.k:
            message = "; ".join(m for m in (message, _failure_message(fu.formula, built, opts.k)) if m)
        built.stop_reason = built.stop_reason or (fallback if source == "templates" else None)
        return built, message
    merged = merge_candidates([from_templates, built], opts.k, formula=fu.formula)
    message = None
    if len(merged) < opts.k:
        message = _failure_message(fu.formula, merged, opts.k)
    return merged, message


Relax = Literal["chgnet"]


def relax_and_rerank(
    found: CandidateList, relax: str, *, steps: int = 300, fmax: float = 0.1, progress: bool = False
) -> CandidateList:
    """Relax candidates in this process and re-rank them by energy per atom (lowest first).

    Each returned candidate holds the relaxed structure, ``energy_per_atom``, ``relaxed_by``,
    ``relaxed_space_group`` and its model rank in ``predicted_rank``; a candidate whose relaxation failed keeps
    its unrelaxed structure, goes last and says why in ``notes``. Needs the ``[workflows]`` extra (CHGNet).
    """
    import dataclasses

    if relax != "chgnet":
        raise ValueError(f"Unknown {relax=}; choose from ('chgnet',)")
    try:
        from cryspnet_gen.workflows.relax import relax_candidates
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            f"relax={relax!r} needs CHGNet: pip install 'cryspnet-gen[workflows]' ({exc})"
        ) from exc
    relaxed = relax_candidates(list(found), relaxer="chgnet", steps=steps, fmax=fmax, progress=progress)
    done, failed = [], []
    for r in relaxed:
        c = r.candidate
        if r.structure is None or r.energy_per_atom is None:
            failed.append(
                dataclasses.replace(
                    c, predicted_rank=c.rank, notes=[*c.notes, f"relaxation failed: {r.error}"]
                )
            )
        else:
            done.append(
                dataclasses.replace(
                    c,
                    structure=r.structure,
                    energy_per_atom=float(r.energy_per_atom),
                    relaxed_by=r.relaxer,
                    predicted_rank=c.rank,
                    relaxed_space_group=r.relaxed_space_group,
                )
            )
    done.sort(key=lambda c: c.energy_per_atom)  # type: ignore[arg-type, return-value]
    ranked = [*done, *failed]
    for rank, c in enumerate(ranked, 1):
        c.rank = rank
    return CandidateList(ranked, formula=found.formula, skipped=found.skipped, stop_reason=found.stop_reason)


def _generate_one(
    pred: Prediction, fu: _FormulaUnit, opts: _Options, groups: list[int] | None, lattices: list[str] | None
) -> CandidateList:
    if pred.error is not None:
        raise ValueError(f"formula {fu.formula!r} cannot be predicted: {pred.error}")
    pairs = _ranked_pairs(pred, groups, lattices)
    found = _walk(pred, fu, pairs, opts)
    if not found:
        raise GenerationError(
            _failure_message(fu.formula, found, opts.k), formula=fu.formula, skipped=found.skipped
        )
    return found


def generate_many(
    formulas: Iterable[str],
    k: int = 3,
    *,
    seed: int = 0,
    predictor: Predictor | None = None,
    model: BravaisModel = "master",
    per_group: int = 1,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    space_groups: Sequence[int] | None = None,
    bravais: Sequence[str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    timeout_per_group: float | None = DEFAULT_TIMEOUT_PER_GROUP,
    min_distance_factor: float = DEFAULT_MIN_DISTANCE_FACTOR,
    isolation: Isolation = "auto",
    progress: bool = True,
    relax: Relax | None = None,
    relax_steps: int = 300,
    source: Source | None = None,
    templates: TemplateStore | str | os.PathLike[str] | None = None,
) -> list[GenerationResult]:
    """:func:`generate_candidates` for many formulas: one :class:`GenerationResult` per input, in order.

    ``source`` and ``templates`` as in :func:`generate_candidates` (the template store is loaded once).

    The predictions are made in one batch. A bad formula or one without any structure gives a result with
    ``error`` set instead of stopping the batch; fewer than ``k`` candidates sets ``warning`` (no Python
    warning is issued). ``timeout`` applies to each formula. Options are those of :func:`generate_candidates`;
    ``progress`` shows a progress bar on stderr.

    Raises
    ------
    ValueError
        For bad options (not for bad formulas).
    """
    opts, groups, lattices = _check_options(
        k=k,
        seed=seed,
        per_group=per_group,
        max_atoms=max_atoms,
        timeout=timeout,
        timeout_per_group=timeout_per_group,
        min_distance_factor=min_distance_factor,
        isolation=isolation,
        model=model,
        space_groups=space_groups,
        bravais=bravais,
    )
    chosen, store = _check_source(source, templates)
    items = [str(f) for f in formulas]
    results: list[GenerationResult | None] = [None] * len(items)
    units: dict[int, _FormulaUnit] = {}
    for i, f in enumerate(items):
        try:
            units[i] = _formula_unit(f, opts.max_atoms)
        except ValueError as exc:
            results[i] = GenerationResult(formula=f, error=str(exc), error_type="ValueError")
    good = sorted(units)
    preds = _predict(predictor, [items[i] for i in good], model) if good else []
    iterator: Iterable[tuple[int, Prediction]] = zip(good, preds, strict=True)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(good), desc="generate", unit="formula")
    for i, pred in iterator:
        try:
            found, message = _generate_sourced(pred, units[i], opts, groups, lattices, chosen, store)
        except (ValueError, GenerationError) as exc:
            skipped = exc.skipped if isinstance(exc, GenerationError) else []
            results[i] = GenerationResult(
                formula=items[i], skipped=skipped, error=str(exc), error_type=type(exc).__name__
            )
            logger.warning("%s", exc)
            continue
        if relax is not None:
            found = relax_and_rerank(found, relax, steps=relax_steps)
        results[i] = GenerationResult(
            formula=items[i], candidates=list(found), skipped=found.skipped, warning=message
        )
    return [r for r in results if r is not None]


# ---------------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------------

_SUMMARY_COLUMNS = (
    "formula",
    "rank",
    "space_group",
    "space_group_symbol",
    "bravais",
    "probability",
    "z",
    "nsites",
    "seed",
    "source",
    "template_id",
)


def _file_stem(formula: str) -> str:
    """A file-name-safe version of a formula: characters other than letters, digits, '.', '+', '-' -> '_'."""
    stem = re.sub(r"[^A-Za-z0-9.+-]+", "_", formula.strip()).strip("_.")
    return stem or "formula"


def _render(candidate: Candidate, fmt: str) -> str:
    if fmt == "cif":
        from pymatgen.io.cif import CifWriter

        return str(CifWriter(candidate.structure, symprec=SYMPREC))
    from pymatgen.io.vasp import Poscar

    comment = (
        f"{candidate.formula} rank {candidate.rank} {candidate.space_group_symbol} ({candidate.space_group}) "
        f"p={candidate.probability:.4g} seed={candidate.seed} {candidate.source}"
        + (f" {candidate.template_id}" if candidate.template_id else "")
    )
    return Poscar(candidate.structure, comment=comment).get_str()


def _summary_csv(cands: Sequence[Candidate]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_SUMMARY_COLUMNS)
    for c in cands:
        writer.writerow(
            [
                c.formula,
                c.rank,
                c.space_group,
                c.space_group_symbol,
                c.bravais,
                f"{c.probability:.6g}",
                c.z,
                c.nsites,
                c.seed,
                c.source,
            ]
        )
    return buffer.getvalue()


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_candidates(
    cands: Iterable[Candidate],
    out_dir: str | os.PathLike[str],
    formats: Sequence[FileFormat] = ("poscar", "cif"),
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write candidates to a folder, one set of files per formula.

    For each formula (``<formula>`` made file-name safe): ``<formula>_<rank>_<space group>.vasp`` (POSCAR) and
    ``.cif`` (symmetrised with ``CifWriter(symprec=0.1)``) per candidate, ``<formula>_candidates.json`` (the
    candidates' ``as_dict()`` list, read back with :func:`read_candidates`) and ``<formula>_summary.csv``
    (formula, rank, space group and symbol, lattice, probability, Z, sites, seed, source). Candidates of several
    formulas can share a folder: each formula has its own JSON and CSV.

    Parameters
    ----------
    cands
        Candidates, e.g. ``generate_candidates(...)`` or several such lists joined.
    out_dir
        The folder (created if missing).
    formats
        Structure files to write: ``"poscar"`` and/or ``"cif"``.
    overwrite
        Replace existing files. Without it, nothing is written when any target exists.

    Returns
    -------
    list[Path]
        The files written.

    Raises
    ------
    FileExistsError
        Naming an existing target when ``overwrite`` is False (all names are checked before anything is
        written).
    ValueError
        For an unknown format or two candidates that would share a file name.
    """
    cands = list(cands)
    formats = list(formats)
    bad = [f for f in formats if f not in _EXTENSIONS]
    if bad:
        raise ValueError(f"Unknown formats {bad}; choose from {tuple(_EXTENSIONS)}")
    folder = Path(out_dir)
    by_formula: dict[str, list[Candidate]] = {}
    for c in cands:
        by_formula.setdefault(c.formula, []).append(c)
    stems: dict[str, str] = {}
    for formula in by_formula:
        stem = _file_stem(formula)
        if stem in stems:
            raise ValueError(
                f"formulas {stems[stem]!r} and {formula!r} map to the same file names ({stem}_*)"
            )
        stems[stem] = formula

    targets: list[tuple[Path, Callable[[], str]]] = []
    for formula, group in by_formula.items():
        stem = _file_stem(formula)
        for c in group:
            for fmt in formats:
                name = f"{stem}_{c.rank}_{c.space_group}.{_EXTENSIONS[fmt]}"
                targets.append((folder / name, functools.partial(_render, c, fmt)))
        targets.append(
            (
                folder / f"{stem}_candidates.json",
                functools.partial(_candidates_json, group),
            )
        )
        targets.append((folder / f"{stem}_summary.csv", functools.partial(_summary_csv, group)))
    names = [p.name for p, _ in targets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"several candidates would be written to {dupes[0]} (repeated formula and rank?)")
    if not overwrite:
        existing = [p for p, _ in targets if p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise FileExistsError(
                f"{existing[0]} already exists{more}; nothing was written. Pass overwrite=True (--force on the "
                f"command line) to replace, or choose another folder"
            )
    # Render everything first, so that a failure leaves the folder untouched.
    contents = [(path, render()) for path, render in targets]
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path, text in contents:
        _atomic_write(path, text)
        written.append(path)
    logger.info("wrote %d files for %d formula(s) to %s", len(written), len(by_formula), folder)
    return written


def _candidates_json(cands: Sequence[Candidate]) -> str:
    from monty.json import MontyEncoder

    return json.dumps([c.as_dict() for c in cands], cls=MontyEncoder, indent=1) + "\n"


def read_candidates(path: str | os.PathLike[str]) -> list[Candidate]:
    """Read candidates written by :func:`write_candidates`.

    Parameters
    ----------
    path
        A ``*_candidates.json`` file, or a folder: then every ``*_candidates.json`` in it, by file name.
    """
    target = Path(path)
    files = sorted(target.glob("*_candidates.json")) if target.is_dir() else [target]
    if target.is_dir() and not files:
        raise FileNotFoundError(f"no *_candidates.json file in {target}")
    out: list[Candidate] = []
    for file in files:
        data = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{file} is not a candidates file (expected a JSON list of candidates)")
        for entry in data:
            candidate = Candidate.from_dict(entry)
            if not isinstance(candidate, Candidate):  # pragma: no cover - from_dict returns cls
                raise TypeError(f"{file}: entry is not a Candidate")
            out.append(candidate)
    return out
