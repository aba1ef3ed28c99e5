"""Template stores: a folder (``templates.parquet`` + ``manifest.json``) of known structures, indexed by
anonymous formula. :func:`load_store` opens one, :func:`resolve_store` picks the store a call uses.
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryspnet_gen.formula import anonymous_formula

if TYPE_CHECKING:
    import pandas as pd
    from pymatgen.core import Composition, Structure

__all__ = [
    "ENV_VAR",
    "STORE_MANIFEST",
    "STORE_TABLE",
    "STORE_VERSION",
    "TemplateStore",
    "TemplateStoreError",
    "clear_store_cache",
    "load_store_folder",
    "read_store_files",
]

#: Environment variable naming the default template store folder.
ENV_VAR = "CRYSPNET_GEN_TEMPLATES"
STORE_VERSION = 1
STORE_TABLE = "templates.parquet"
STORE_MANIFEST = "manifest.json"


class TemplateStoreError(ValueError):
    """A template store is missing, unreadable or of another format version."""


COLUMNS = (
    "template_id",
    "formula",
    "anonymous",
    "space_group",
    "nsites",
    "e_above_hull",
    "volume_per_atom",
    "source",
    "elements",
    "wyckoff",
    "lattice",
    "numbers",
    "frac",
)


@dataclass
class AnonymousGroup:
    """Arrays of the templates of one anonymous formula: rows, canonical elements, groups, Wyckoff letters."""

    rows: np.ndarray
    elements: np.ndarray  # [n, m] atomic numbers in canonical order
    space_groups: np.ndarray
    wyckoff: list[tuple[str, ...]]
    prototype: np.ndarray  # id of (group, Wyckoff letters per canonical position)
    prevalence: np.ndarray


class TemplateStore:
    """A loaded template store, indexed by anonymous formula. Use :func:`load_store` to open one."""

    def __init__(self, frame: pd.DataFrame, path: Path | None = None, manifest: dict[str, Any] | None = None):
        self.frame = frame.reset_index(drop=True)
        self.path = path
        self.manifest = manifest or {}
        self._by_anonymous: dict[str, np.ndarray] = {
            str(key): np.asarray(idx, dtype=np.int64)
            for key, idx in self.frame.groupby("anonymous", sort=False).indices.items()
        }
        self.space_groups = self.frame["space_group"].to_numpy().astype(np.int64)
        self.formulas = self.frame["formula"].to_numpy().astype(str)
        self.template_ids = self.frame["template_id"].to_numpy().astype(str)
        pairs = zip(self.frame["anonymous"], self.space_groups, strict=True)
        self.prevalence: Counter = Counter((str(a), int(g)) for a, g in pairs)
        self._groups: dict[str, AnonymousGroup] = {}

    def group(self, anonymous: str) -> AnonymousGroup | None:
        """The templates of one anonymous formula as arrays (built on first use, then cached)."""
        if anonymous in self._groups:
            return self._groups[anonymous]
        idx = self._by_anonymous.get(anonymous)
        if idx is None or len(idx) == 0:
            return None
        elements = np.stack([np.asarray(e, dtype=np.int64) for e in self.frame["elements"].to_numpy()[idx]])
        wyckoff = [tuple(str(w) for w in ws) for ws in self.frame["wyckoff"].to_numpy()[idx]]
        groups = self.space_groups[idx]
        protos: dict[tuple[Any, ...], int] = {}
        proto = np.asarray(
            [protos.setdefault((int(g), w), len(protos)) for g, w in zip(groups, wyckoff, strict=True)]
        )
        prevalence = np.asarray([self.prevalence[(anonymous, int(g))] for g in groups], dtype=np.float64)
        grp = AnonymousGroup(idx, elements, groups, wyckoff, proto, prevalence)
        self._groups[anonymous] = grp
        return grp

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return f"TemplateStore({str(self.path)!r}, {len(self)} templates, {len(self._by_anonymous)} anonymous formulas)"

    def lookup(self, formula: str | Composition, space_group: int | None = None) -> pd.DataFrame:
        """The templates with the anonymous formula of ``formula`` (and ``space_group`` if given)."""
        idx = self._by_anonymous.get(anonymous_formula(formula), np.empty(0, dtype=np.int64))
        rows = self.frame.iloc[idx]
        if space_group is not None:
            rows = rows[rows["space_group"] == int(space_group)]
        return rows

    def indices(self, anonymous: str) -> np.ndarray:
        """Row numbers of the templates of an anonymous formula."""
        return self._by_anonymous.get(anonymous, np.empty(0, dtype=np.int64))

    def cell_arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(lattice 3x3 rows, atomic numbers, fractional coordinates)`` of row ``i``."""
        return self.row_cell(self.frame.iloc[int(i)])

    def row_cell(self, row: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(lattice, numbers, frac)`` of one row (of :attr:`frame` or of :meth:`known`)."""
        return (
            np.asarray(row["lattice"], dtype=float).reshape(3, 3),
            np.asarray(row["numbers"], dtype=int),
            np.asarray(row["frac"], dtype=float).reshape(-1, 3),
        )

    def known(self, reduced_formula: str) -> pd.DataFrame:
        """The stored compounds of exactly this reduced formula, lowest energy above hull first."""
        rows = self.frame[self.formulas == reduced_formula]
        order = rows.assign(_e=rows["e_above_hull"].fillna(np.inf)).sort_values(["_e", "template_id"])
        return order.drop(columns="_e")

    def structure(self, i: int) -> Structure:
        """The stored structure of row ``i``."""
        from pymatgen.core import Lattice, Structure

        lattice, numbers, frac = self.cell_arrays(i)
        species: list[Any] = [int(z) for z in numbers]
        return Structure(Lattice(lattice), species, frac)


#: How :func:`read_store_files` reads a template store folder.
STORE_FORMAT: dict[str, Any] = {
    "what": "template store",
    "manifest_name": STORE_MANIFEST,
    "table_name": STORE_TABLE,
    "version": STORE_VERSION,
    "columns": COLUMNS,
    "rebuild": "rebuild it with 'cryspnet-gen templates build --from ... --out ...'",
}


def read_store_files(
    root: Path,
    *,
    what: str,
    manifest_name: str,
    table_name: str,
    version: int,
    columns: Sequence[str],
    rebuild: str,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Read and check a store-like folder (a JSON manifest and a parquet table); one-line errors naming it.

    ``check`` runs on the manifest before the table is read (format, checksums); ``rebuild`` says what to do.
    """
    import pandas as pd

    try:
        manifest = json.loads((root / manifest_name).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TemplateStoreError(
            f"{what} {str(root)!r}: cannot read {manifest_name} ({exc}); {rebuild}"
        ) from exc
    if not isinstance(manifest, dict):
        raise TemplateStoreError(f"{what} {str(root)!r}: {manifest_name} is not a JSON object; {rebuild}")
    if manifest.get("version") != version:
        raise TemplateStoreError(
            f"{what} {str(root)!r} has format version {manifest.get('version')!r}, this cryspnet-gen reads "
            f"version {version}; {rebuild}"
        )
    if check is not None:
        check(manifest)
    try:
        frame = pd.read_parquet(root / table_name)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise TemplateStoreError(
            f"{what} {str(root)!r}: {table_name} is unreadable ({type(exc).__name__}: {exc}); {rebuild}"
        ) from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TemplateStoreError(f"{what} {str(root)!r} lacks the column(s) {missing}; {rebuild}")
    return manifest, frame


@functools.lru_cache(maxsize=4)
def _load_store_cached(path: str, mtime: float) -> TemplateStore:
    manifest, frame = read_store_files(Path(path), **STORE_FORMAT)
    return TemplateStore(frame, Path(path), manifest)


def clear_store_cache() -> None:
    """Forget the stores opened in this process (after a store folder was rebuilt)."""
    _load_store_cached.cache_clear()


def load_store_folder(path: str | os.PathLike[str]) -> TemplateStore:
    """Open a template store folder (``templates.parquet``; cached per process until its table changes)."""
    root = Path(path).expanduser().resolve()
    table = root / STORE_TABLE
    if not table.is_file():
        raise TemplateStoreError(
            f"no template store at {str(path)!r} (no {STORE_TABLE}); build one with "
            "'cryspnet-gen templates build --from ../shared/data --out STORE'"
        )
    return _load_store_cached(str(root), table.stat().st_mtime)
