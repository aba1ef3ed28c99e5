"""Template stores: a folder (``templates.parquet`` + ``manifest.json``) of known structures, indexed by
anonymous formula. :func:`load_store` opens one, :func:`resolve_store` picks the store a call uses.
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
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
    "load_store",
    "resolve_store",
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

    def structure(self, i: int) -> Structure:
        """The stored structure of row ``i``."""
        from pymatgen.core import Lattice, Structure

        row = self.frame.iloc[int(i)]
        species: list[Any] = [int(z) for z in row["numbers"]]
        return Structure(
            Lattice(np.asarray(row["lattice"], dtype=float).reshape(3, 3)),
            species,
            np.asarray(row["frac"], dtype=float).reshape(-1, 3),
        )


@functools.lru_cache(maxsize=4)
def _load_store_cached(path: str, mtime: float) -> TemplateStore:
    import pandas as pd

    root = Path(path)
    try:
        manifest = json.loads((root / STORE_MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TemplateStoreError(
            f"template store {path!r}: cannot read {STORE_MANIFEST} ({exc}); rebuild it with "
            "'cryspnet-gen templates build --from ... --out ...'"
        ) from exc
    if manifest.get("version") != STORE_VERSION:
        raise TemplateStoreError(
            f"template store {path!r} has format version {manifest.get('version')!r}, this cryspnet-gen reads "
            f"version {STORE_VERSION}; rebuild it with 'cryspnet-gen templates build'"
        )
    try:
        frame = pd.read_parquet(root / STORE_TABLE)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise TemplateStoreError(
            f"template store {path!r}: {STORE_TABLE} is unreadable ({type(exc).__name__}: {exc}); rebuild it"
        ) from exc
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise TemplateStoreError(f"template store {path!r} lacks the column(s) {missing}; rebuild it")
    return TemplateStore(frame, root, manifest)


def clear_store_cache() -> None:
    """Forget the stores opened in this process (after a store folder was rebuilt)."""
    _load_store_cached.cache_clear()


def load_store(path: str | os.PathLike[str]) -> TemplateStore:
    """Open a template store folder (cached per process until the folder's table changes)."""
    root = Path(path).expanduser().resolve()
    table = root / STORE_TABLE
    if not table.is_file():
        raise TemplateStoreError(
            f"no template store at {str(path)!r} (no {STORE_TABLE}); build one with "
            "'cryspnet-gen templates build --from ../shared/data --out STORE'"
        )
    return _load_store_cached(str(root), table.stat().st_mtime)


def resolve_store(templates: TemplateStore | str | os.PathLike[str] | None) -> TemplateStore | None:
    """A store from an argument, else from ``$CRYSPNET_GEN_TEMPLATES``, else ``None`` (templates off)."""
    if isinstance(templates, TemplateStore):
        return templates
    if templates is not None:
        return load_store(templates)
    env = os.environ.get(ENV_VAR)
    return load_store(env) if env else None
