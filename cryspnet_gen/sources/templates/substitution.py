"""Element substitution: Hautier et al.'s ionic substitution probabilities as a table by atomic number, and the
one-to-one mappings of a formula's elements onto a template's sites of equal amount.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from typing import Any

import numpy as np

from cryspnet_gen.formula import MAX_Z, canonical_elements

__all__ = ["MAX_ASSIGNMENTS", "assignments", "substitution_matrix"]

#: Most element-to-site mappings scored per template (a formula of many equal amounts has n! of them).
MAX_ASSIGNMENTS = 720
# Bump when _substitution_matrix changes: cached tables of older versions are rebuilt.
_TABLE_VERSION = 1


@functools.lru_cache(maxsize=1)
def substitution_matrix() -> np.ndarray:
    """``L[t, s]`` = log P(element ``t`` replaces element ``s``), by atomic number (0..MAX_Z).

    Hautier et al.'s conditional substitution probability (pymatgen ``SubstitutionProbability.cond_prob``),
    maximised over the oxidation states of the two elements in its table; an element always scores highest
    with itself. Elements not in the table: the table's "never observed" value (``alpha``) minus
    |Mendeleev-number difference| / 10.
    """
    from importlib.metadata import version

    from cryspnet_gen.config import cache_dir

    # Building the table from pymatgen's data takes seconds; it depends only on pymatgen's version.
    path = cache_dir() / f"substitution-v{_TABLE_VERSION}-pymatgen-{version('pymatgen-core')}.npy"
    if path.is_file():
        try:
            table = np.load(path, allow_pickle=False)
            if table.shape == (MAX_Z + 1, MAX_Z + 1):
                return table
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below
    table = _from_pymatgen()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, table, allow_pickle=False)
    os.replace(tmp, path)
    return table


def _from_pymatgen() -> np.ndarray:
    import warnings

    from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionProbability

    with warnings.catch_warnings():  # pymatgen warns about elements without electronegativity (noble gases)
        warnings.simplefilter("ignore")
        return _substitution_matrix(SubstitutionProbability())


def _substitution_matrix(sp: Any) -> np.ndarray:
    """The table of :func:`substitution_matrix` from a pymatgen ``SubstitutionProbability``."""
    from pymatgen.core import Element

    by_z: dict[int, list[Any]] = {}
    for s in sp.species:
        by_z.setdefault(s.Z, []).append(s)
    n = MAX_Z + 1
    mendeleev = np.zeros(n)
    for z in range(1, n):
        try:
            mendeleev[z] = Element.from_Z(z).mendeleev_no or 0
        except ValueError:
            mendeleev[z] = 0
    table = np.full((n, n), np.nan)
    for t, ts in by_z.items():
        for s, ss in by_z.items():
            if t <= MAX_Z and s <= MAX_Z:
                table[t, s] = max(math.log(sp.cond_prob(a, b)) for a in ts for b in ss)
    floor = float(np.nanmin(table)) if np.isfinite(table).any() else sp.alpha
    diff = np.abs(mendeleev[:, None] - mendeleev[None, :])
    fallback = floor - diff / 10.0
    out = np.where(np.isnan(table), fallback, table)
    best = out.max(axis=0)  # per template element s: the best replacement score
    idx = np.arange(n)
    out[idx, idx] = best + 1.0
    out[0, :] = out[:, 0] = -1e9
    return out


def assignments(target: dict[int, int]) -> np.ndarray:
    """All one-to-one maps of target elements onto canonical template positions with the same amounts.

    Row ``a`` gives, for each canonical position ``j`` (ordered by amount, then atomic number), the atomic number
    of the target element placed there.
    """
    order = canonical_elements(target)
    blocks: list[list[int]] = []
    for _amount, group in itertools.groupby(order, key=lambda z: target[z]):
        blocks.append(list(group))
    perms = [list(itertools.permutations(b)) for b in blocks]
    out = []
    for combo in itertools.product(*perms):
        out.append([z for block in combo for z in block])
        if len(out) >= MAX_ASSIGNMENTS:
            break
    return np.asarray(out, dtype=np.int64)
