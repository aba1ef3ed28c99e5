"""Cells and formula units for CRYSPNet candidates: Wyckoff compatibility, Z, cell shape and volume.

See :mod:`cryspnet_gen.sources.cryspnet` for how these steps fit together.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cryspnet_gen.formula import FormulaUnit
from cryspnet_gen.symmetry import conventional_volume, space_group_symbol
from cryspnet_gen.validity import covalent_radius

#: Largest ratio of the longest to the shortest cell length kept from a prediction.
MAX_LENGTH_RATIO = 10.0
#: Largest monoclinic beta (degrees) kept from a prediction.
MAX_MONOCLINIC_BETA = 135.0

# Compatible Z values tried per pair, nearest first.
_Z_CHOICES = 2
# Covalent-sphere packing (sphere volume / cell volume, pyxtal's covalent radii) into which a predicted volume
# per atom is clamped, and the packing of the fallback volume. On 20k Materials Project structures the packing
# has median 0.53, 1 % quantile 0.063 and 99 % quantile 1.03; denser random cells make pyxtal slow.
_PACKING_RANGE = (0.05, 1.0)
_FALLBACK_PACKING = 0.5
# Densest packing of spheres: the cell must hold spheres of min_distance_factor x the covalent radius.
_MAX_SPHERE_PACKING = 0.74
_TRICLINIC_ANGLES = (60.0, 120.0)
_MIN_METRIC_FACTOR = 0.3
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


def wyckoff_classes(space_group: int) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...], int]:
    """``(free, fixed, gcd)`` of a group's Wyckoff multiplicities (conventional cell, pyxtal's tables).

    ``free``: multiplicities with a position that has free coordinates (usable any number of times);
    ``fixed``: ``(multiplicity, number of positions)`` for multiplicities whose positions are all fixed points
    (each usable once, shared by all species); ``gcd``: of all multiplicities.
    """
    return _all_wyckoff_classes()[space_group - 1]


@functools.cache
def _all_wyckoff_classes() -> list[tuple[tuple[int, ...], tuple[tuple[int, int], ...], int]]:
    # the 230 groups' classes, kept in the cache folder: importing pyxtal's Wyckoff tables costs 0.4 s of every
    # cold `cryspnet-gen predict`
    from cryspnet_gen.config import cached_json, package_version

    table = cached_json(f"wyckoff-classes-pyxtal-{package_version('pyxtal')}", _pyxtal_wyckoff_classes)
    return [(tuple(free), tuple((m, n) for m, n in fixed), int(g)) for free, fixed, g in table]


def _pyxtal_wyckoff_classes() -> list[tuple[tuple[int, ...], tuple[tuple[int, int], ...], int]]:
    from pyxtal.symmetry import get_wyckoffs

    out = []
    for space_group in range(1, 231):
        free: set[int] = set()
        fixed: dict[int, int] = {}
        for ops in get_wyckoffs(space_group):
            mult = len(ops)
            if np.linalg.matrix_rank(np.asarray(ops[0].rotation_matrix, dtype=float)) > 0:
                free.add(mult)
            else:
                fixed[mult] = fixed.get(mult, 0) + 1
        mults = list(free) + list(fixed)
        out.append(
            (
                tuple(sorted(free)),
                tuple(sorted((m, n) for m, n in fixed.items() if m not in free)),
                math.gcd(*mults),
            )
        )
    return out


@functools.lru_cache(maxsize=4096)
def _free_sums(free: tuple[int, ...], limit: int) -> np.ndarray:
    """Boolean array: which totals 0..limit are sums of the ``free`` multiplicities (any number of each)."""
    ok = np.zeros(limit + 1, dtype=bool)
    ok[0] = True
    for n in range(1, limit + 1):
        ok[n] = any(m <= n and ok[n - m] for m in free)
    return ok


@functools.lru_cache(maxsize=65536)
def compatible(space_group: int, counts: tuple[int, ...]) -> bool:
    """Whether ``counts`` atoms per species fit the Wyckoff positions of ``space_group``.

    The rule of pyxtal's ``Group.check_compatible`` (positions with free coordinates any number of times,
    fixed points once each across all species), solved by a small exact search instead of enumeration.
    """
    free, fixed, g = wyckoff_classes(space_group)
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


def z_options(space_group: int, fu: FormulaUnit, max_atoms: int, ranking: Sequence[int] = ()) -> list[int]:
    """The Z values to try (at most two), in order: the Wyckoff-compatible values with ``Z x n_fu <= max_atoms``.

    ``ranking`` is the bundle's Z prior for this group and formula type (``LatticePrediction.z_ranking``, known
    crystals' most frequent Z first, :mod:`cryspnet_gen.zprior`): its compatible values come first, in its order,
    then the smallest compatible values. Without a ranking (older bundles) the smallest compatible values come
    first (``GenerateOptions.z_rule="smallest"``, the default). Given the true group, the prior puts the true Z
    first for 86.9% of validation formulas, the smallest value for 74.8% (``bench/z_prior.py``,
    docs/benchmarks.md), but random Wyckoff placement builds the true structure no more often with it; the Z
    closest to the predicted cell's volume is worse than either (``bench/z_choice.py``): the lattice-parameter
    networks are too rough to count formula units.
    """
    max_z = max_atoms // fu.n_atoms
    out = [
        z
        for z in dict.fromkeys(int(z) for z in ranking)
        if 1 <= z <= max_z and compatible(space_group, tuple(c * z for c in fu.counts))
    ][:_Z_CHOICES]
    for z in range(1, max_z + 1):
        if len(out) == _Z_CHOICES:
            break
        if z not in out and compatible(space_group, tuple(c * z for c in fu.counts)):
            out.append(z)
    return out


def sphere_volume_per_atom(fu: FormulaUnit, scale: float = 1.0) -> float:
    total = sum(
        c * 4.0 / 3.0 * math.pi * (scale * covalent_radius(s)) ** 3
        for s, c in zip(fu.species, fu.counts, strict=True)
    )
    return total / fu.n_atoms


def volume_per_atom(pred_vpa: float | None, fu: FormulaUnit, notes: list[str]) -> float:
    """The predicted volume per atom, or a covalent-radius estimate when the prediction is unusable."""
    spheres = sphere_volume_per_atom(fu)
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


def cell_shape(bravais: str, cell: Sequence[float] | None, notes: list[str]) -> tuple[np.ndarray, bool]:
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


def scaled_cell(cell6: np.ndarray, volume: float) -> np.ndarray:
    out = cell6.copy()
    out[:3] *= (volume / float(conventional_volume(cell6))) ** (1.0 / 3.0)
    return out


@dataclass(frozen=True)
class CellPlan:
    """How the cells of one (lattice, space group) pair are made.

    Attributes
    ----------
    shape
        The conventional cell shape ``(a, b, c, alpha, beta, gamma)``, up to scale.
    predicted
        Whether ``shape`` is the prediction (else a generic shape of the lattice).
    volume_per_atom
        The volume per atom the cell is scaled to.
    z_estimate
        Predicted cell volume / volume of one formula unit (``None`` without a predicted cell).
    zs
        The Z values to try, in order (see :func:`z_options`); empty when no Z fits.
    notes
        What was adjusted (clamped volume, generic shape...).
    """

    shape: np.ndarray
    predicted: bool
    volume_per_atom: float
    z_estimate: float | None
    zs: tuple[int, ...]
    notes: tuple[str, ...]

    def cell(self, z: int, fu: FormulaUnit) -> np.ndarray:
        """The conventional cell for ``z`` formula units: ``shape`` scaled to ``z`` x the formula unit's volume."""
        return scaled_cell(self.shape, z * fu.n_atoms * self.volume_per_atom)


def plan_cells(
    fu: FormulaUnit,
    space_group: int,
    bravais: str,
    cell: Sequence[float] | None,
    predicted_volume_per_atom: float | None,
    max_atoms: int,
    z_ranking: Sequence[int] = (),
) -> CellPlan:
    """The :class:`CellPlan` of a pair from its predicted cell, the predicted volume per atom and the bundle's Z
    ranking for the pair (see :func:`z_options`)."""
    notes: list[str] = []
    shape, predicted = cell_shape(bravais, cell, notes)
    vpa = volume_per_atom(predicted_volume_per_atom, fu, notes)
    z_est = float(conventional_volume(shape)) / (vpa * fu.n_atoms) if predicted else None
    zs = z_options(space_group, fu, max_atoms, z_ranking)
    return CellPlan(shape, predicted, vpa, z_est, tuple(zs), tuple(notes))


def _shortest_translation(cell6: np.ndarray, space_group: int) -> float:
    from pymatgen.core import Lattice

    matrix = Lattice.from_parameters(*(float(x) for x in cell6)).matrix
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=float)
    centring = np.array([(0.0, 0.0, 0.0), *_CENTRING.get(space_group_symbol(space_group)[0], ())])
    frac = (shifts[:, None, :] + centring[None, :, :]).reshape(-1, 3)
    lengths = np.linalg.norm(frac @ matrix, axis=1)
    return float(lengths[lengths > 1e-8].min())


def precheck(cell6: np.ndarray, space_group: int, fu: FormulaUnit, z: int, factor: float) -> str | None:
    """Why a cell is too small for the atoms at ``factor`` x covalent radii (None when it is fine)."""
    volume = float(conventional_volume(cell6))
    spheres = sphere_volume_per_atom(fu, factor) * fu.n_atoms * z
    if not volume > 0 or spheres / volume > _MAX_SPHERE_PACKING:
        return (
            f"cell too small: {volume:.1f} Å^3 cannot hold {fu.n_atoms * z} atoms {factor:g} x their covalent "
            f"radii apart"
        )
    shortest = _shortest_translation(cell6, space_group)
    need = 2.0 * factor * min(covalent_radius(s) for s in fu.species)
    if shortest < need:
        return f"cell too thin: shortest lattice translation {shortest:.2f} Å < {need:.2f} Å"
    return None
