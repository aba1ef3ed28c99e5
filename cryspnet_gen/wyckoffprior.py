"""Which Wyckoff orbits each element occupies, learned from known crystals of a space group and formula type.

CRYSPNet candidates used to let pyxtal pick orbits at random. Given the true group, the assignment (Wyckoff letters
per element) that training compounds of the same group and anonymous formula use most often is the true one for
72% of MP-20 and 48% of MPTS-52 test formulas, one of the five most frequent for 90% / 66%
(``bench/wyckoff_coverage.py``). :class:`WyckoffPrior` holds those counts (bundles carry one built from their
training formulas' prototype-library rows, ``wyckoff_prior.json.gz``); with
``GenerateOptions(wyckoff="prior")`` CRYSPNet candidates are built on the most frequent assignments that fit the
formula and Z first (pyxtal ``from_random(sites=...)``), then on random orbits.
"""

from __future__ import annotations

import functools
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryspnet_gen.formula import FormulaUnit, canonical_elements

__all__ = ["FORMAT", "WyckoffPrior"]

FORMAT = "cryspnet-gen wyckoff prior"


@functools.lru_cache(maxsize=256)
def _labels(space_group: int) -> dict[str, str]:
    """Wyckoff letter -> pyxtal label with multiplicity (``"a"`` -> ``"4a"``) in the standard setting."""
    from pyxtal.symmetry import Group

    out = {}
    for wp in Group(int(space_group)).Wyckoff_positions:
        label = wp.get_label()
        out[label.lstrip("0123456789")] = label
    return out


def _multiplicity(label: str) -> int:
    return int(label.rstrip("abcdefghijklmnopqrstuvwxyzA"))


@dataclass
class WyckoffPrior:
    """Counts of Wyckoff assignments (letters per element, in the canonical element order of the anonymous
    formula) per (space group, anonymous formula)."""

    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    rows: int = 0

    @classmethod
    def from_rows(
        cls, anonymous: Iterable[str], space_groups: Iterable[int], wyckoff: Iterable[Sequence[str]]
    ) -> WyckoffPrior:
        """Count the assignments of known crystals: anonymous formula, space group and the Wyckoff letters of
        each element in canonical order (the prototype library's ``wyckoff`` column)."""
        prior = cls()
        for anon, group, letters in zip(anonymous, space_groups, wyckoff, strict=True):
            prior.counts[f"{int(group)}|{anon}"]["/".join(str(x) for x in letters)] += 1
            prior.rows += 1
        return prior

    def assignments(self, space_group: int, fu: FormulaUnit, z: int, limit: int = 5) -> list[list[list[str]]]:
        """Up to ``limit`` known assignments that fit ``z`` formula units, most frequent first, each as pyxtal
        ``sites``: one list of labels (``"4a"``) per element of ``fu.species``, in that order."""
        table = self.counts.get(f"{int(space_group)}|{fu.anonymous}")
        if not table:
            return []
        labels = _labels(int(space_group))
        slots = canonical_elements(fu.amounts)  # atomic numbers in the anonymous formula's order
        position = {number: i for i, number in enumerate(slots)}
        numbers = list(fu.amounts)  # fu.species order
        out = []
        for text, _ in sorted(table.items(), key=lambda kv: (-kv[1], kv[0])):
            parts = text.split("/")
            if len(parts) != len(slots) or any(c not in labels for part in parts for c in part):
                continue
            sites = [[labels[c] for c in parts[position[number]]] for number in numbers]
            if all(
                sum(_multiplicity(lab) for lab in site) == z * fu.amounts[number]
                for site, number in zip(sites, numbers, strict=True)
            ):
                out.append(sites)
                if len(out) == limit:
                    break
        return out

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": 1,
            "rows": self.rows,
            "counts": {key: dict(sorted(c.items())) for key, c in sorted(self.counts.items())},
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WyckoffPrior:
        """Read :meth:`to_json` output; ``ValueError`` for anything else."""
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} (format {data.get('format')!r})")
            prior = cls(rows=int(data["rows"]))
            for key, counts in data["counts"].items():
                prior.counts[key] = Counter({str(k): int(n) for k, n in counts.items()})
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a readable {FORMAT} ({exc})") from exc
        return prior
