"""Space groups, Bravais lattices and the lattice-parameter conventions of CRYSPNet.

CRYSPNet (Liang et al., Phys. Rev. Materials 4, 123802, 2020) predicts a Bravais lattice, then a space group,
then the lattice parameters of the conventional cell. This module maps space groups onto the 14 Bravais
lattices and turns a crystal structure into ONE regression target per lattice, whatever setting or cell the
structure came in.

Conventions
-----------
Every cell starts as spglib's standardized conventional cell (``spglib.get_symmetry_dataset``, International
Tables standard setting: the first Hall number of each space group, i.e. unique axis b and cell choice 1 for
monoclinic groups, origin choice 1, hexagonal axes for R groups). Cells are given as six numbers
``(a, b, c, alpha, beta, gamma)``, lengths in Å and angles in degrees. Then:

- cubic ``cP cI cF``: ``(a, a, a, 90, 90, 90)``; target ``a``.
- tetragonal ``tP tI``: c is the 4-fold axis, ``(a, a, c, 90, 90, 90)``; targets ``a, c``.
- hexagonal ``hP`` (trigonal P groups included): c is the 3- or 6-fold axis, ``(a, a, c, 90, 90, 120)``;
  targets ``a, c``.
- rhombohedral ``hR``: the cell is kept in hexagonal axes (obverse setting, ``gamma = 120``), which is what
  pyxtal expects for R groups; the targets are the rhombohedral-cell ``a, alpha`` (paper, Appendix A), see
  :func:`hexagonal_to_rhombohedral`.
- orthorhombic ``oP oC oI oF``: the axes are those of the group's standard setting (so Pnma stays Pnma and
  Cmcm keeps c as the axis of the c glide; A-centred groups 38-41 stay A-centred). Where the standard
  setting leaves freedom, i.e. an axis permutation maps the group onto itself (up to an origin shift and axis
  reversal), the lexicographically smallest ``(a, b, c)`` reachable by such permutations is taken. The
  permutations are computed from spglib's symmetry-operation database (:func:`orthorhombic_axis_permutations`);
  with spglib 2.8 they are: all three axes sorted for 16 P222, 19 P2_12_12_1, 22 F222, 23 I222,
  24 I2_12_12_1, 47 Pmmm, 48 Pnnn, 69 Fmmm, 70 Fddd, 71 Immm, 73 Ibca; a and b sorted for 17, 18, 20, 21,
  25, 27, 32, 34, 35, 37, 42, 43, 44, 45, 49, 50, 55, 56, 58, 59, 65, 66, 67, 68, 72, 74 (P222_1 ... Imma);
  a cyclic rotation putting the shortest axis first for 61 Pbca; no freedom for the other 21 groups
  (Pnma, Cmcm, Cmce, Amm2, Pmn2_1...). Targets ``a, b, c``.
- monoclinic ``mP mC``: b is the unique axis, ``(a, b, c, 90, beta, 90)``. a and c are replaced by the basis of
  the lattice plane perpendicular to b with the smallest ``|a| + |c|``, then ``|beta - 90|`` smallest, and
  beta is reported as obtuse (``90 <= beta <= 120`` for mP; reversing one axis turns beta into 180 - beta).
  For ``mP`` the remaining tie is broken with ``a <= c``. For ``mC`` only basis changes
  ``a' = m a + n c`` with m odd and n even are allowed, which are exactly the ones keeping the cell C-centred
  (``(a' + b) / 2`` must stay a lattice vector), and they also keep the standard cell choice C2/c, Cc (up to
  an origin shift); a and c are never swapped. Under this constraint beta can stay far from 90 (about 20% of
  MP's mC cells keep beta > 120; the I-centred cell choice would be closer to 90). Targets ``a, b, c, beta``.
- triclinic ``aP``: the Niggli-reduced cell (``a <= b <= c``), all angles acute (Niggli type I) or all
  non-acute (type II), decided by the sign of ``cos(alpha) cos(beta) cos(gamma)`` exactly as in the Niggli
  conditions. Targets ``a, b, c, alpha, beta, gamma``.

mP groups with a glide (Pc, P2/c, P2_1/c): the reduced basis is a property of the lattice alone, so it may
be a basis in which the glide is not along c, i.e. the P2_1/n or P2_1/a cell choice of the structure (63% of
a sample of 709 MP entries in these groups). A structure generated in the standard P2_1/c setting with these parameters has the
right lattice and group but the glide along another lattice vector; :attr:`CellSymmetry.hall_number` records
the cell choice the reduced cell is in, for pyxtal's ``use_hall=True``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray
    from pymatgen.core import Structure

__all__ = [
    "BRAVAIS_LATTICES",
    "CELL_PARAMETERS",
    "CRYSTAL_SYSTEMS",
    "PARAMETER_NAMES",
    "SYMPREC",
    "CellSymmetry",
    "analyze_structure",
    "bravais_of",
    "conventional_volume",
    "crystal_system_of",
    "from_parameters",
    "hexagonal_to_rhombohedral",
    "orthorhombic_axis_permutations",
    "reduce_cell",
    "rhombohedral_to_hexagonal",
    "space_group_symbol",
    "space_groups_of",
    "standardize_cell",
    "to_parameters",
]

logger = logging.getLogger(__name__)

BRAVAIS_LATTICES: Final = ("aP", "mP", "mC", "oP", "oC", "oI", "oF", "tP", "tI", "hP", "hR", "cP", "cI", "cF")

CRYSTAL_SYSTEMS: Final = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal",
    "hexagonal",
    "cubic",
)

PARAMETER_NAMES: Final[dict[str, tuple[str, ...]]] = {
    "aP": ("a", "b", "c", "alpha", "beta", "gamma"),
    "mP": ("a", "b", "c", "beta"),
    "mC": ("a", "b", "c", "beta"),
    "oP": ("a", "b", "c"),
    "oC": ("a", "b", "c"),
    "oI": ("a", "b", "c"),
    "oF": ("a", "b", "c"),
    "tP": ("a", "c"),
    "tI": ("a", "c"),
    "hP": ("a", "c"),
    "hR": ("a", "alpha"),
    "cP": ("a",),
    "cI": ("a",),
    "cF": ("a",),
}

# Last space-group number of each crystal system (International Tables, Vol. A).
_SYSTEM_LAST_NUMBER: Final = (2, 15, 74, 142, 167, 194, 230)

# Bravais-lattice letter of each crystal system and the centring letters allowed in it; an A-centred
# orthorhombic group (Amm2, Aem2, Ama2, Aea2) is a C-centred lattice in another axis labelling.
_SYSTEM_LETTER: Final = {
    "triclinic": "a",
    "monoclinic": "m",
    "orthorhombic": "o",
    "tetragonal": "t",
    "trigonal": "h",
    "hexagonal": "h",
    "cubic": "c",
}
_CENTRING_ALIAS: Final = {"A": "C", "B": "C"}

#: Names of the six conventional-cell parameters, in order (Å and degrees).
CELL_PARAMETERS: Final = ("a", "b", "c", "alpha", "beta", "gamma")
_CELL_NAMES: Final = CELL_PARAMETERS
#: The one symmetry tolerance (Å) of the package: data tables, templates, candidate checks, CIF files,
#: relaxed structures and the benchmark all find space groups with spglib at this symprec.
SYMPREC: Final = 0.1

# Tolerances for checking that an input cell has its lattice system's shape (a = b, fixed angles...).
_LENGTH_RTOL: Final = 1e-2
_ANGLE_ATOL: Final = 1.0
# Relative tolerance under which two candidate monoclinic bases count as equally short.
_TIE_RTOL: Final = 1e-6
# |cos| below which a triclinic angle counts as 90 degrees.
_RIGHT_ANGLE_COS: Final = 1e-6
_NIGGLI_EPS: Final = 1e-5


# --------------------------------------------------------------------------------------------------------
# space group <-> Bravais lattice


@dataclass(frozen=True)
class _SpaceGroupTable:
    """Per space group (index ``n - 1``): standard Hall number, short symbol, Bravais lattice."""

    hall_number: tuple[int, ...]
    symbol: tuple[str, ...]
    bravais: tuple[str, ...]


@functools.cache
def _space_group_table() -> _SpaceGroupTable:
    """Build the table from spglib's Hall-symbol database (first Hall number = standard setting)."""
    first: dict[int, tuple[int, str]] = {}
    for hall in range(1, 531):
        sgtype = _spacegroup_type(hall)
        first.setdefault(int(sgtype.number), (hall, str(sgtype.international_short)))
    if sorted(first) != list(range(1, 231)):  # pragma: no cover
        raise RuntimeError("spglib's Hall table does not cover space groups 1..230")
    halls, symbols, bravais = [], [], []
    for number in range(1, 231):
        hall, symbol = first[number]
        system = _crystal_system(number)
        centring = _CENTRING_ALIAS.get(symbol[0], symbol[0])
        name = "hR" if centring == "R" else _SYSTEM_LETTER[system] + centring
        if name not in BRAVAIS_LATTICES:  # pragma: no cover
            raise RuntimeError(f"unexpected Bravais lattice {name!r} for space group {number} ({symbol})")
        halls.append(hall)
        symbols.append(symbol)
        bravais.append(name)
    return _SpaceGroupTable(tuple(halls), tuple(symbols), tuple(bravais))


@functools.cache
def _groups_by_bravais() -> dict[str, tuple[int, ...]]:
    table = _space_group_table()
    return {
        name: tuple(n for n in range(1, 231) if table.bravais[n - 1] == name) for name in BRAVAIS_LATTICES
    }


def _check_space_group(space_group: Any) -> int:
    is_int = isinstance(space_group, (int, np.integer)) and not isinstance(space_group, (bool, np.bool_))
    if not is_int or not 1 <= int(space_group) <= 230:
        raise ValueError(f"Invalid space group {space_group!r}: expected an integer in 1..230")
    return int(space_group)


def _check_bravais(bravais: Any) -> str:
    if not isinstance(bravais, str) or bravais not in PARAMETER_NAMES:
        raise ValueError(f"Unknown {bravais=}: expected one of {', '.join(BRAVAIS_LATTICES)}")
    return bravais


def _crystal_system(number: int) -> str:
    for last, system in zip(_SYSTEM_LAST_NUMBER, CRYSTAL_SYSTEMS, strict=True):
        if number <= last:
            return system
    raise ValueError(f"Invalid space group {number!r}: expected an integer in 1..230")  # pragma: no cover


def crystal_system_of(space_group: int) -> str:
    """Crystal system of a space group (international number 1..230, as :func:`bravais_of` takes it): one of
    :data:`CRYSTAL_SYSTEMS` (``"trigonal"`` for 143..167, ``"hexagonal"`` for 168..194)."""
    return _crystal_system(_check_space_group(space_group))


def bravais_of(space_group: int) -> str:
    """Bravais lattice of a space group, from the first letter of its Hermann–Mauguin symbol.

    Parameters
    ----------
    space_group
        International number, 1..230.

    Returns
    -------
    str
        One of :data:`BRAVAIS_LATTICES`; trigonal P groups are ``"hP"``, R groups ``"hR"`` and A-centred
        orthorhombic groups ``"oC"``.

    Raises
    ------
    ValueError
        If ``space_group`` is not an integer in 1..230 (bools are refused).
    """
    return _space_group_table().bravais[_check_space_group(space_group) - 1]


def space_group_symbol(space_group: int) -> str:
    """Short Hermann–Mauguin symbol of the standard setting as spglib writes it, e.g. ``"P2_1/c"``."""
    return _space_group_table().symbol[_check_space_group(space_group) - 1]


def space_groups_of(bravais: str) -> tuple[int, ...]:
    """Space-group numbers of a Bravais lattice, sorted ascending.

    Raises
    ------
    ValueError
        For a name not in :data:`BRAVAIS_LATTICES`.
    """
    return _groups_by_bravais()[_check_bravais(bravais)]


def _standard_hall_number(space_group: int) -> int:
    return _space_group_table().hall_number[_check_space_group(space_group) - 1]


# --------------------------------------------------------------------------------------------------------
# orthorhombic axis permutations and monoclinic cell choices, from spglib's symmetry-operation database

_PERMUTATIONS: Final[tuple[tuple[int, int, int], ...]] = (
    (0, 1, 2),
    (0, 2, 1),
    (1, 0, 2),
    (1, 2, 0),
    (2, 0, 1),
    (2, 1, 0),
)
_TRANSLATION_GRID: Final = 24  # database translations are multiples of 1/12 (orthorhombic: of 1/4)
_SHIFT_GRID: Final = 8  # origin shifts tried: multiples of 1/8 (enough for the orthorhombic normalisers)


def _spacegroup_type(hall: int) -> Any:
    import spglib

    sgtype = spglib.get_spacegroup_type(hall)
    if sgtype is None:  # pragma: no cover - spglib's table is complete
        raise RuntimeError(f"spglib has no space-group type for Hall number {hall}")
    return sgtype


def _database_operations(hall: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    import spglib

    ops = spglib.get_symmetry_from_database(hall)
    if ops is None:  # pragma: no cover
        raise RuntimeError(f"spglib has no symmetry operations for Hall number {hall}")
    return np.asarray(ops["rotations"], dtype=np.int64), np.asarray(ops["translations"], dtype=float)


def _operation_codes(rotations: NDArray[np.int64], translations: NDArray[np.float64]) -> NDArray[np.int64]:
    """Integer code per operation (rotation entries and translation mod 1); last axis of shape (..., n)."""
    digits = rotations.reshape(*rotations.shape[:-2], 9) + 1
    rot_code = digits @ (3 ** np.arange(9, dtype=np.int64))
    t = np.rint(translations * _TRANSLATION_GRID).astype(np.int64) % _TRANSLATION_GRID
    t_code = t @ (_TRANSLATION_GRID ** np.arange(3, dtype=np.int64))
    return rot_code * _TRANSLATION_GRID**3 + t_code


def _same_operations(rotations: NDArray[np.int64], translations: NDArray[np.float64], hall: int) -> bool:
    """Whether the operations equal those of Hall setting ``hall`` after some origin shift."""
    ref_rot, ref_trans = _database_operations(hall)
    if len(ref_rot) != len(rotations):
        return False
    reference = np.sort(_operation_codes(ref_rot, ref_trans))
    steps = np.arange(_SHIFT_GRID) / _SHIFT_GRID
    shifts = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)
    # Origin shift s: (R, t) -> (R, t + (1 - R) s).
    shifted = translations[None] + np.einsum("nij,sj->sni", np.eye(3) - rotations, shifts)
    rot = np.broadcast_to(rotations, (len(shifts), *rotations.shape))
    codes = np.sort(_operation_codes(rot, shifted), axis=1)
    return bool(np.any(np.all(codes == reference, axis=1)))


def _transform_operations(
    basis_change: NDArray[np.float64], rotations: NDArray[np.int64], translations: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Operations in a new basis whose rows are ``basis_change`` @ old basis.

    Fractional coordinates transform as x' = A x with A = M^-T, so (R, t) -> (A R A^-1, A t).
    """
    a_mat = np.linalg.inv(basis_change).T
    rot = np.einsum("ij,njk,kl->nil", a_mat, rotations, np.linalg.inv(a_mat))
    return np.rint(rot).astype(np.int64), translations @ a_mat.T


@functools.cache
def _axis_permutations(space_group: int) -> tuple[tuple[int, int, int], ...]:
    hall = _standard_hall_number(space_group)
    rotations, translations = _database_operations(hall)
    allowed: list[tuple[int, int, int]] = []
    for perm in _PERMUTATIONS:
        # New axis i is old axis perm[i], reversed where signs[i] = -1.
        for signs in itertools.product((1, -1), repeat=3):
            basis_change = np.diag(np.array(signs, dtype=float)) @ np.eye(3)[list(perm)]
            if _same_operations(*_transform_operations(basis_change, rotations, translations), hall):
                allowed.append(perm)
                break
    return tuple(allowed)


def orthorhombic_axis_permutations(space_group: int) -> tuple[tuple[int, int, int], ...]:
    """Axis permutations that map an orthorhombic group's standard setting onto itself.

    A permutation ``p`` (new axis ``i`` is old axis ``p[i]``) is allowed when, for some axis reversal and
    origin shift, it turns the set of symmetry operations of the standard setting (spglib's database,
    centring translations included) into itself. The result is a group; it always holds the identity.

    Parameters
    ----------
    space_group
        Orthorhombic space-group number, 16..74.

    Returns
    -------
    tuple of tuple of int
        The allowed permutations, identity first.
    """
    number = _check_space_group(space_group)
    if _crystal_system(number) != "orthorhombic":
        raise ValueError(f"Space group {space_group!r} is not orthorhombic (16..74)")
    return _axis_permutations(number)


@functools.cache
def _hall_numbers_of(space_group: int) -> tuple[int, ...]:
    return tuple(h for h in range(1, 531) if int(_spacegroup_type(h).number) == space_group)


@functools.cache
def _setting_hall_number(space_group: int, basis_change: tuple[int, ...]) -> int:
    """Hall number of the setting reached from the standard one by a basis change.

    ``basis_change`` is a flattened 3x3 integer matrix whose rows give the new basis vectors in terms of the
    standard ones. The transformed operations are compared, up to origin shifts, with those of every Hall
    setting of the group in spglib's database.
    """
    matrix = np.array(basis_change, dtype=float).reshape(3, 3)
    ops = _transform_operations(matrix, *_database_operations(_standard_hall_number(space_group)))
    for hall in _hall_numbers_of(space_group):
        if _same_operations(*ops, hall):
            return hall
    raise RuntimeError(f"No Hall setting of space group {space_group} matches basis change {basis_change}")


def _monoclinic_hall_number(space_group: int, transform: NDArray[np.int64]) -> int:
    """Hall number of the cell choice that a reduced monoclinic cell is in (unique axis b).

    ``transform`` gives the reduced (a, c) in terms of the standard (a, c).
    """
    # Only the parities matter for the operations modulo lattice translations: cache on them.
    m, n, p, q = (int(x) % 2 for x in np.ravel(transform))
    flip = 1 if m * q - n * p > 0 else -1  # reverse b to keep the basis right-handed
    return _setting_hall_number(space_group, (m, 0, n, 0, flip, 0, p, 0, q))


# --------------------------------------------------------------------------------------------------------
# cell geometry


def _as_cell6(cell: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(cell, dtype=float)
    if arr.shape[-1:] != (6,):
        raise ValueError(
            f"Expected cell parameters (a, b, c, alpha, beta, gamma) in the last axis, got {arr.shape=}"
        )
    return arr


def _cell6_from_matrix(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    """(a, b, c, alpha, beta, gamma) of a lattice given by its row vectors."""
    lengths = np.linalg.norm(matrix, axis=1)

    def angle(i: int, j: int) -> float:
        cos = float(matrix[i] @ matrix[j]) / (lengths[i] * lengths[j])
        return math.degrees(math.acos(min(1.0, max(-1.0, cos))))

    return np.array([*lengths, angle(1, 2), angle(0, 2), angle(0, 1)])


def _matrix_from_cell6(cell6: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row-vector lattice matrix (a along x, b in the xy plane) of one cell."""
    a, b, c = cell6[:3]
    cos_al, cos_be, cos_ga = np.cos(np.radians(cell6[3:]))
    sin_ga = math.sin(math.radians(cell6[5]))
    cx = c * cos_be
    cy = c * (cos_al - cos_be * cos_ga) / sin_ga
    cz2 = c * c - cx * cx - cy * cy
    if not cz2 > 0:
        raise ValueError(f"Cell parameters {cell6.tolist()} do not describe a cell with positive volume")
    return np.array([[a, 0.0, 0.0], [b * cos_ga, b * sin_ga, 0.0], [cx, cy, math.sqrt(cz2)]])


def conventional_volume(cell6: ArrayLike) -> NDArray[np.float64] | float:
    """Volume of cells given as (a, b, c, alpha, beta, gamma); vectorised over leading axes.

    Returns a float for one cell and an array of shape ``cell6.shape[:-1]`` otherwise (NaN where the
    angles do not close a cell).
    """
    arr = _as_cell6(cell6)
    cos = np.cos(np.radians(arr[..., 3:]))
    factor = 1.0 - np.sum(cos**2, axis=-1) + 2.0 * np.prod(cos, axis=-1)
    with np.errstate(invalid="ignore"):
        volume = np.prod(arr[..., :3], axis=-1) * np.sqrt(factor)
    return float(volume) if volume.ndim == 0 else volume


def hexagonal_to_rhombohedral(
    a_hex: ArrayLike, c_hex: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Rhombohedral-cell ``(a, alpha)`` of a rhombohedral lattice given in hexagonal axes (paper, App. A).

    ``a_r = sqrt(3 a_h^2 + c_h^2) / 3`` and ``cos(alpha) = (2 c_h^2 - 3 a_h^2) / (2 c_h^2 + 6 a_h^2)``.
    """
    a2 = np.square(np.asarray(a_hex, dtype=float))
    c2 = np.square(np.asarray(c_hex, dtype=float))
    a_r = np.sqrt(3.0 * a2 + c2) / 3.0
    alpha = np.degrees(np.arccos((2.0 * c2 - 3.0 * a2) / (2.0 * c2 + 6.0 * a2)))
    return a_r, alpha


def rhombohedral_to_hexagonal(
    a_rh: ArrayLike, alpha: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Hexagonal-axes ``(a, c)`` of a rhombohedral cell ``(a, alpha)``: the inverse of
    :func:`hexagonal_to_rhombohedral`.

    ``a_h = 2 a_r sin(alpha / 2)`` and ``c_h = a_r sqrt(3 (1 + 2 cos(alpha)))``; NaN where alpha is outside
    (0, 120) degrees, where no rhombohedral cell exists.
    """
    a_r = np.asarray(a_rh, dtype=float)
    alpha_rad = np.radians(np.asarray(alpha, dtype=float))
    valid = (alpha_rad > 0) & (alpha_rad < np.radians(120.0))
    with np.errstate(invalid="ignore"):
        a_h = np.where(valid, 2.0 * a_r * np.sin(alpha_rad / 2.0), np.nan)
        c_h = np.where(valid, a_r * np.sqrt(3.0 * (1.0 + 2.0 * np.cos(alpha_rad))), np.nan)
    return a_h, c_h


def to_parameters(bravais: str, cell6: ArrayLike) -> NDArray[np.float64]:
    """Regression targets :data:`PARAMETER_NAMES` ``[bravais]`` of reduced conventional cells.

    Parameters
    ----------
    bravais
        One of :data:`BRAVAIS_LATTICES`.
    cell6
        ``(a, b, c, alpha, beta, gamma)`` of one cell, shape (6,), or of many, shape (N, 6), already reduced
        (:func:`reduce_cell`); hR cells in hexagonal axes.

    Returns
    -------
    numpy.ndarray
        Shape (k,) or (N, k) with ``k = len(PARAMETER_NAMES[bravais])``; for hR the rhombohedral
        ``(a, alpha)``.
    """
    names = PARAMETER_NAMES[_check_bravais(bravais)]
    arr = _as_cell6(cell6)
    if bravais == "hR":
        a_r, alpha = hexagonal_to_rhombohedral(arr[..., 0], arr[..., 2])
        return np.stack([a_r, alpha], axis=-1)
    return arr[..., [_CELL_NAMES.index(name) for name in names]].copy()


def from_parameters(bravais: str, params: ArrayLike) -> NDArray[np.float64]:
    """Full conventional cell from regression targets ``params`` (shape (k,) or (N, k), ordered as
    :data:`PARAMETER_NAMES` ``[bravais]``): the inverse of :func:`to_parameters`.

    Returns ``(a, b, c, alpha, beta, gamma)``, shape (6,) or (N, 6), in the standard setting pyxtal expects:
    cubic ``(a, a, a, 90, 90, 90)``, tetragonal ``(a, a, c, 90, 90, 90)``, hP and hR in hexagonal axes
    ``(a, a, c, 90, 90, 120)``, monoclinic ``(a, b, c, 90, beta, 90)``. hR rows with alpha outside (0, 120)
    degrees come back as NaN.
    """
    names = PARAMETER_NAMES[_check_bravais(bravais)]
    arr = np.asarray(params, dtype=float)
    if arr.shape[-1:] != (len(names),):
        raise ValueError(
            f"{bravais} parameters are {names}: expected last axis of length {len(names)}, got {arr.shape=}"
        )
    cols = np.moveaxis(arr, -1, 0)
    right = np.full(arr.shape[:-1], 90.0)
    if bravais == "hR":
        a_h, c_h = rhombohedral_to_hexagonal(cols[0], cols[1])
        out = [a_h, a_h, c_h, right, right, np.full_like(right, 120.0)]
    elif bravais[0] == "c":
        out = [cols[0], cols[0], cols[0], right, right, right]
    elif bravais[0] == "t":
        out = [cols[0], cols[0], cols[1], right, right, right]
    elif bravais == "hP":
        out = [cols[0], cols[0], cols[1], right, right, np.full_like(right, 120.0)]
    elif bravais[0] == "o":
        out = [cols[0], cols[1], cols[2], right, right, right]
    elif bravais[0] == "m":
        out = [cols[0], cols[1], cols[2], right, cols[3], right]
    else:
        out = list(cols)
    return np.stack(out, axis=-1)


# --------------------------------------------------------------------------------------------------------
# reduction of standardized conventional cells


@functools.cache
def _unimodular_2x2(limit: int = 3) -> NDArray[np.int64]:
    """All integer 2x2 matrices with entries in -limit..limit and determinant +-1, shape (K, 2, 2)."""
    values = np.arange(-limit, limit + 1)
    grid = np.stack(np.meshgrid(values, values, values, values, indexing="ij"), axis=-1).reshape(-1, 2, 2)
    det = grid[:, 0, 0] * grid[:, 1, 1] - grid[:, 0, 1] * grid[:, 1, 0]
    return grid[np.abs(det) == 1].astype(np.int64)


def _gauss_reduce(gram: NDArray[np.float64]) -> NDArray[np.int64]:
    """Lagrange–Gauss reduction of a 2D lattice given by its Gram matrix.

    Returns the integer matrix whose rows give the reduced basis in terms of the input basis.
    """
    g = gram.copy()
    t = np.eye(2, dtype=np.int64)
    for _ in range(10_000):
        if g[0, 0] > g[1, 1]:
            g = g[::-1, ::-1].copy()
            t = t[::-1].copy()
        mu = round(g[0, 1] / g[0, 0])
        if mu == 0:
            return t
        # v <- v - mu u
        g[1, 1] += mu * mu * g[0, 0] - 2 * mu * g[0, 1]
        g[0, 1] -= mu * g[0, 0]
        g[1, 0] = g[0, 1]
        t[1] -= mu * t[0]
    raise RuntimeError("Gauss reduction did not converge")  # pragma: no cover


def _reduce_monoclinic(
    a: float, c: float, beta: float, *, centred: bool
) -> tuple[float, float, float, NDArray[np.int64]]:
    """Reduced (a, c, beta) in the plane perpendicular to the unique axis b; see the module docstring.

    Also returns the 2x2 integer matrix whose rows give the reduced a, c in terms of the input a, c.
    """
    cos_beta = math.cos(math.radians(beta))
    gram = np.array([[a * a, a * c * cos_beta], [a * c * cos_beta, c * c]])
    mats = _unimodular_2x2() @ _gauss_reduce(gram)
    if centred:
        # a' = m a + n c keeps the C-centring vector (a' + b) / 2 a lattice vector iff m is odd, n even.
        mats = mats[(mats[:, 0, 0] % 2 == 1) & (mats[:, 0, 1] % 2 == 0)]
    grams = mats @ gram @ mats.transpose(0, 2, 1)
    len_a = np.sqrt(grams[:, 0, 0])
    len_c = np.sqrt(grams[:, 1, 1])
    abs_cos = np.abs(grams[:, 0, 1] / (len_a * len_c))
    total = len_a + len_c
    keep = total <= total.min() * (1 + _TIE_RTOL)
    keep &= abs_cos <= abs_cos[keep].min() + _TIE_RTOL
    candidates = np.flatnonzero(keep)
    best = candidates[np.lexsort((len_c[candidates], len_a[candidates]))[0]]
    beta_r = math.degrees(math.acos(-float(abs_cos[best])))
    return float(len_a[best]), float(len_c[best]), beta_r, mats[best]


def _reduce_triclinic(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    import spglib

    reduced = spglib.niggli_reduce(matrix, eps=_NIGGLI_EPS)
    if reduced is None:  # pragma: no cover - spglib failed; pymatgen's implementation as a fallback
        from pymatgen.core import Lattice

        reduced = Lattice(matrix).get_niggli_reduced_lattice().matrix
    cell = _cell6_from_matrix(np.asarray(reduced, dtype=float))
    cos = np.cos(np.radians(cell[3:]))
    # Flipping one basis vector negates two cosines, so the sign of their product is a lattice invariant:
    # positive -> all acute reachable (Niggli type I), otherwise all non-acute (type II).
    acute = bool(np.all(np.abs(cos) > _RIGHT_ANGLE_COS) and np.prod(cos) > 0)
    signed = np.abs(cos) if acute else -np.abs(cos)
    if np.any(np.sign(cos) != np.sign(signed)) and np.any(np.abs(cos) > _RIGHT_ANGLE_COS):
        logger.debug("Niggli cell %s had mixed angles; made all %s", cell, "acute" if acute else "obtuse")
    cell[3:] = np.degrees(np.arccos(signed))
    return cell


def _check_shape(bravais: str, cell: NDArray[np.float64]) -> None:
    """Refuse a cell that is not in its lattice system's standard shape (e.g. monoclinic with unique c)."""
    system = bravais[0]
    lengths, angles = cell[:3], cell[3:]
    expected_angles: tuple[float | None, ...]
    equal_lengths: tuple[int, ...] = ()
    if system == "c":
        expected_angles, equal_lengths = (90.0, 90.0, 90.0), (0, 1, 2)
    elif system == "t":
        expected_angles, equal_lengths = (90.0, 90.0, 90.0), (0, 1)
    elif system == "h":
        expected_angles, equal_lengths = (90.0, 90.0, 120.0), (0, 1)
    elif system == "o":
        expected_angles = (90.0, 90.0, 90.0)
    elif system == "m":
        expected_angles = (90.0, None, 90.0)
    else:
        expected_angles = (None, None, None)
    problems = [
        f"{_CELL_NAMES[3 + i]}={angles[i]:.3f} (expected {want:g})"
        for i, want in enumerate(expected_angles)
        if want is not None and abs(angles[i] - want) > _ANGLE_ATOL
    ]
    if equal_lengths:
        sub = lengths[list(equal_lengths)]
        if np.ptp(sub) > _LENGTH_RTOL * sub.mean():
            problems.append(f"{'='.join(_CELL_NAMES[i] for i in equal_lengths)} expected, got {sub.tolist()}")
    if problems:
        raise ValueError(
            f"Cell {np.round(cell, 4).tolist()} is not a standard conventional {bravais} cell: "
            + "; ".join(problems)
        )


def reduce_cell(bravais: str, space_group: int, cell: ArrayLike) -> NDArray[np.float64]:
    """Apply this module's conventions to a standardized conventional cell.

    Parameters
    ----------
    bravais
        Bravais lattice of ``space_group`` (checked).
    space_group
        International number, 1..230; the orthorhombic axis permutations depend on it.
    cell
        The conventional cell in the group's standard setting (as spglib's ``std_lattice``), either as
        ``(a, b, c, alpha, beta, gamma)`` or as a 3x3 matrix of row vectors.

    Returns
    -------
    numpy.ndarray
        ``(a, b, c, alpha, beta, gamma)`` of the reduced conventional cell (see the module docstring);
        hR in hexagonal axes. Lengths that the lattice system makes equal are averaged and fixed angles are
        set exactly.

    Raises
    ------
    ValueError
        If ``bravais`` does not match ``space_group`` or the cell does not have the lattice system's shape
        (e.g. a monoclinic cell whose unique axis is not b).
    """
    return _reduce_cell(bravais, space_group, cell)[0]


def _reduce_cell(
    bravais: str, space_group: int, cell: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.int64] | None]:
    """:func:`reduce_cell`, plus the monoclinic (a, c) basis change (None for other systems)."""
    number = _check_space_group(space_group)
    _check_bravais(bravais)
    if bravais_of(number) != bravais:
        raise ValueError(f"Space group {number} is {bravais_of(number)}, not {bravais=}")
    arr = np.asarray(cell, dtype=float)
    if arr.shape == (3, 3):
        matrix: NDArray[np.float64] | None = arr
        cell6 = _cell6_from_matrix(arr)
    elif arr.shape == (6,):
        matrix, cell6 = None, arr.copy()
    else:
        raise ValueError(f"Expected a cell as 6 parameters or a 3x3 matrix, got {arr.shape=}")
    if (
        not np.all(np.isfinite(cell6))
        or np.any(cell6[:3] <= 0)
        or np.any((cell6[3:] <= 0) | (cell6[3:] >= 180))
    ):
        raise ValueError(f"Invalid cell parameters {cell6.tolist()}")
    _check_shape(bravais, cell6)

    a, b, c, _, beta, _ = cell6
    system = bravais[0]
    if system == "c":
        mean = float(np.mean(cell6[:3]))
        return np.array([mean, mean, mean, 90.0, 90.0, 90.0]), None
    if system in "th":
        mean = 0.5 * (a + b)
        return np.array([mean, mean, c, 90.0, 90.0, 120.0 if system == "h" else 90.0]), None
    if system == "o":
        lengths = cell6[:3]
        perm = min(orthorhombic_axis_permutations(number), key=lambda p: tuple(lengths[list(p)]))
        return np.array([*lengths[list(perm)], 90.0, 90.0, 90.0]), None
    if system == "m":
        a_r, c_r, beta_r, transform = _reduce_monoclinic(a, c, beta, centred=bravais == "mC")
        return np.array([a_r, b, c_r, 90.0, beta_r, 90.0]), transform
    return _reduce_triclinic(matrix if matrix is not None else _matrix_from_cell6(cell6)), None


# --------------------------------------------------------------------------------------------------------
# structures


@dataclass(frozen=True, eq=False)
class CellSymmetry:
    """Symmetry of a structure and its reduced conventional cell.

    Attributes
    ----------
    space_group
        International number.
    symbol
        Short Hermann–Mauguin symbol of the standard setting.
    bravais
        One of :data:`BRAVAIS_LATTICES`.
    cell
        ``(a, b, c, alpha, beta, gamma)`` of the reduced conventional cell (:func:`reduce_cell`); hR in
        hexagonal axes. Read-only.
    conventional_nsites
        Number of atoms in the conventional cell.
    volume
        Conventional cell volume, Å^3.
    hall_number
        spglib's Hall number of the setting that ``cell`` is in: the standard setting of ``space_group``
        (the default), except for Pc, P2/c and P2_1/c, whose reduced cell can be in the n- or a-glide cell
        choice (e.g. 82 = P 1 2_1/n 1). ``pyxtal.symmetry.Group(hall_number, use_hall=True)`` gives that
        setting.
    """

    space_group: int
    symbol: str
    bravais: str
    cell: NDArray[np.float64]
    conventional_nsites: int
    volume: float
    hall_number: int = 0

    def __post_init__(self) -> None:
        cell = np.array(self.cell, dtype=float)
        cell.setflags(write=False)
        object.__setattr__(self, "cell", cell)
        if not self.hall_number:
            object.__setattr__(self, "hall_number", _standard_hall_number(self.space_group))

    @property
    def params(self) -> NDArray[np.float64]:
        """Regression targets, ``to_parameters(bravais, cell)``."""
        return to_parameters(self.bravais, self.cell)

    @property
    def crystal_system(self) -> str:
        return crystal_system_of(self.space_group)


def _dataset_value(dataset: Any, key: str) -> Any:
    # spglib < 2.5 returns a dict, later versions a dataclass.
    return dataset[key] if isinstance(dataset, dict) else getattr(dataset, key)


def standardize_cell(
    lattice: ArrayLike,
    frac_coords: ArrayLike,
    numbers: ArrayLike,
    *,
    symprec: float = SYMPREC,
    angle_tolerance: float = -1.0,
) -> CellSymmetry:
    """Symmetry and reduced conventional cell of a crystal given as plain arrays.

    Parameters
    ----------
    lattice
        3x3 lattice matrix, row vectors in Å.
    frac_coords
        (N, 3) fractional coordinates.
    numbers
        (N,) integer atom types (atomic numbers or any labels).
    symprec, angle_tolerance
        Passed to ``spglib.get_symmetry_dataset`` (Å and degrees; -1 is spglib's default angle handling).

    Returns
    -------
    CellSymmetry

    Raises
    ------
    ValueError
        For inconsistent arrays or when spglib cannot find the symmetry.
    """
    import spglib

    lat = np.ascontiguousarray(lattice, dtype=float)
    pos = np.ascontiguousarray(frac_coords, dtype=float)
    num = np.ascontiguousarray(numbers, dtype=np.intc).reshape(-1)
    if lat.shape != (3, 3) or pos.ndim != 2 or pos.shape[1] != 3 or len(pos) != len(num) or len(num) == 0:
        raise ValueError(
            f"Expected a 3x3 lattice, (N, 3) fractional coordinates and N numbers; got {lat.shape=}, "
            f"{pos.shape=}, {num.shape=}"
        )
    error = getattr(spglib, "SpglibError", RuntimeError)
    spg_cell: Any = (lat, pos, num)  # spglib's stubs want sequences; arrays are what it uses
    try:
        dataset = spglib.get_symmetry_dataset(spg_cell, symprec=symprec, angle_tolerance=angle_tolerance)
    except error as exc:  # spglib >= 3 raises instead of returning None
        raise ValueError(f"spglib could not determine the symmetry ({symprec=}): {exc}") from exc
    if dataset is None:
        raise ValueError(f"spglib could not determine the symmetry ({symprec=})")
    number = int(_dataset_value(dataset, "number"))
    std_lattice = np.asarray(_dataset_value(dataset, "std_lattice"), dtype=float)
    bravais = bravais_of(number)
    cell, transform = _reduce_cell(bravais, number, std_lattice)
    return CellSymmetry(
        space_group=number,
        symbol=space_group_symbol(number),
        bravais=bravais,
        cell=cell,
        conventional_nsites=len(_dataset_value(dataset, "std_types")),
        volume=float(abs(np.linalg.det(std_lattice))),
        hall_number=(
            _monoclinic_hall_number(number, transform)
            if transform is not None
            else _standard_hall_number(number)
        ),
    )


def analyze_structure(
    structure: Structure, *, symprec: float = SYMPREC, angle_tolerance: float = -1.0
) -> CellSymmetry:
    """:func:`standardize_cell` for a pymatgen ``Structure``.

    Sites with different species (or different partial occupancies) are different atom types; magnetic
    moments and other site properties are ignored.
    """
    types: dict[Any, int] = {}
    numbers = [types.setdefault(site.species, len(types)) for site in structure]
    return standardize_cell(
        structure.lattice.matrix,
        structure.frac_coords,
        numbers,
        symprec=symprec,
        angle_tolerance=angle_tolerance,
    )
