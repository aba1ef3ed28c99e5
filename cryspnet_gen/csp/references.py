"""The CSP test sets: which files they are, and their reference structures, loaded and sampled.

Each test set is deduplicated by reduced formula (the lowest energy above hull is kept) and put in a seeded
random order (:func:`sample_references`), so that the first ``n`` formulas of a run are a random sample.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["TEST_SETS", "Reference", "SetName", "TestSet", "load_test_set", "sample_references"]

logger = logging.getLogger(__name__)

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
