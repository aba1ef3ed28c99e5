"""Small hand-made structures shared by the tests."""

from __future__ import annotations

from pymatgen.core import Lattice, Structure


def rocksalt(a: float = 5.64) -> Structure:
    """NaCl in Fm-3m with lattice constant ``a`` (Å)."""
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
