"""Formula units per conventional cell (Z) given a formula and a space group, learned from known crystals.

CRYSPNet candidates are built with Z formula units in the conventional cell. Of the Z values whose Wyckoff
multiplicities fit the composition, the smallest is the true one for 74.8% of validation formulas in their true
group; counting which Z known crystals of the same space group and anonymous formula have (backing off to the
same group and number of atoms per formula unit, then to the group alone) puts the true Z first for 86.9%
(``bench/z_prior.py``, docs/benchmarks.md). :class:`ZPrior` holds those counts; bundles carry one built from their
own training rows (``z_prior.json.gz``, sha256 in the manifest), predictions list its ranking per space group
(``LatticePrediction.z_ranking``) and, with ``GenerateOptions(z_rule="prior")``,
:func:`cryspnet_gen.sources.cryspnet.cells.plan_cells` tries those Z first. It is opt-in because, with random
Wyckoff placement, the better Z has not built more true structures on validation formulas.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryspnet_gen.formula import FormulaUnit, formula_unit

__all__ = ["FORMAT", "ZPrior"]

FORMAT = "cryspnet-gen z prior"
_LEVELS = ("anonymous", "atoms", "group")
_NONE: Counter[int] = Counter()  # the counts of a key no crystal has (read only)


@dataclass
class ZPrior:
    """Counts of Z per (space group, anonymous formula), (space group, atoms per formula unit) and space group."""

    counts: dict[str, dict[str, Counter[int]]] = field(
        default_factory=lambda: {level: defaultdict(Counter) for level in _LEVELS}
    )
    rows: int = 0
    _rankings: dict[tuple[int, str, int, int], list[int]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """:meth:`ranking` answers by (group, anonymous formula, atoms per formula unit, limit): predictions ask for
    every group of every formula, and formula types repeat"""

    @staticmethod
    def _keys(space_group: int, anonymous: str, n_atoms: int) -> tuple[str, str, str]:
        g = int(space_group)
        return f"{g}|{anonymous}", f"{g}|{n_atoms}", str(g)

    @classmethod
    def from_rows(cls, formulas: Iterable[str], space_groups: Iterable[int], zs: Iterable[int]) -> ZPrior:
        """Count known crystals: a formula (any form :func:`cryspnet_gen.formula.formula_unit` reads), its space
        group and its Z (formula units of the reduced integer formula per conventional cell). Rows that cannot
        be parsed are skipped."""
        prior = cls()
        for formula, group, z in zip(formulas, space_groups, zs, strict=True):
            try:
                fu = formula_unit(str(formula), 10_000)
            except ValueError:
                continue
            for level, key in zip(_LEVELS, cls._keys(int(group), fu.anonymous, fu.n_atoms), strict=True):
                prior.counts[level][key][int(z)] += 1
            prior.rows += 1
        return prior

    def order(self, space_group: int, fu: FormulaUnit, options: Iterable[int]) -> list[int]:
        """``options`` (Z values) most frequent first, level by level (anonymous formula, then atoms per formula
        unit, then the group); the smallest first among equals and for values no known crystal has."""
        return self._order(self._keys(space_group, fu.anonymous, fu.n_atoms), options)

    def _order(self, keys: tuple[str, str, str], options: Iterable[int]) -> list[int]:
        tables = [self.counts[level].get(key, _NONE) for level, key in zip(_LEVELS, keys, strict=True)]
        return sorted(set(options), key=lambda z: (*(-t.get(z, 0) for t in tables), z))

    def ranking(self, space_group: int, fu: FormulaUnit, limit: int = 6) -> list[int]:
        """The Z values known crystals of this group have, at any level, in :meth:`order` (at most ``limit``)."""
        return self.ranking_of(space_group, fu.anonymous, fu.n_atoms, limit)

    def ranking_of(self, space_group: int, anonymous: str, n_atoms: int, limit: int = 6) -> list[int]:
        """:meth:`ranking` by the formula's anonymous form and atoms per formula unit (what it depends on)."""
        memo = (int(space_group), anonymous, int(n_atoms), limit)
        if memo not in self._rankings:
            keys = self._keys(space_group, anonymous, n_atoms)
            seen = {
                z for level, key in zip(_LEVELS, keys, strict=True) for z in self.counts[level].get(key, {})
            }
            self._rankings[memo] = self._order(keys, seen)[:limit] if seen else []
        return list(self._rankings[memo])

    def to_json(self) -> str:
        """Compact JSON (what bundles store, gzipped)."""
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": 1,
            "rows": self.rows,
            "counts": {
                level: {key: {str(z): n for z, n in sorted(c.items())} for key, c in sorted(table.items())}
                for level, table in self.counts.items()
            },
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ZPrior:
        """Read :meth:`to_json` output.

        Raises
        ------
        ValueError
            For text that is not a Z prior.
        """
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} (format {data.get('format')!r})")
            prior = cls(rows=int(data["rows"]))
            for level in _LEVELS:
                for key, counts in data["counts"][level].items():
                    prior.counts[level][key] = Counter({int(z): int(n) for z, n in counts.items()})
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a readable {FORMAT} ({exc})") from exc
        return prior
