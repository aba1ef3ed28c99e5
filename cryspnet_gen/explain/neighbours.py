"""Known compounds as points of a representation, and their nearest neighbours.

:class:`KnownCompoundIndex` holds one row per known formula (its ground state: the lowest energy above hull)
with the points of a :class:`~cryspnet_gen.explain.representation.Representation`, and answers nearest-neighbour
queries exactly (brute force over ~100k rows: a matrix product per query batch, a few ms per formula). The
points (float16, ~100 MB for the shipped library) and the table (parquet) are cached in the cache folder (:func:`cryspnet_gen.config.cache_dir`), keyed by the bundle, the
representation and the table, so a cold process loads them instead of featurizing every known formula again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryspnet_gen.explain.representation import Representation
from cryspnet_gen.symmetry import bravais_of

__all__ = ["INDEX_COLUMNS", "KnownCompoundIndex", "ground_states", "nearest"]

logger = logging.getLogger(__name__)

INDEX_COLUMNS = (
    "formula",
    "material_id",
    "space_group",
    "bravais",
    "anonymous",
    "type",
    "e_above_hull",
    "experimental",
    "polymorphs",
)
_QUERY_CHUNK = 256
_CACHE_VERSION = 3
#: How many similar-materials indexes (about 100 MB each) the cache keeps, most recently used first.
CACHE_KEEP = 3


def ground_states(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per formula of a prototype library's rows: its lowest energy above hull (ties: lowest id).

    Columns :data:`INDEX_COLUMNS`: ``type`` is the structure type (anonymous formula, space group, Wyckoff
    letters), ``polymorphs`` the number of rows of that formula.
    """
    from cryspnet_gen.sources.templates.prototypes import type_key

    frame = rows.assign(_e=rows["e_above_hull"].fillna(np.inf).to_numpy())
    frame = frame.sort_values(["formula", "_e", "template_id"], kind="stable")
    counts = frame.groupby("formula", sort=False).size()
    first = frame.drop_duplicates("formula").reset_index(drop=True)
    out = pd.DataFrame(
        {
            "formula": first["formula"].astype(str),
            "material_id": first["template_id"].astype(str),
            "space_group": first["space_group"].astype(int),
            "anonymous": first["anonymous"].astype(str),
            "e_above_hull": first["e_above_hull"].astype(float),
            "experimental": first["experimental"].astype(bool),
        }
    )
    out["bravais"] = [bravais_of(int(g)) for g in out["space_group"]]
    out["type"] = [
        type_key(a, int(g), w)
        for a, g, w in zip(first["anonymous"], first["space_group"], first["wyckoff"], strict=True)
    ]
    out["polymorphs"] = counts.loc[out["formula"]].to_numpy()
    return out[list(INDEX_COLUMNS)]


def nearest(points: np.ndarray, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``n`` nearest rows of ``points`` (Euclidean) for each query row: ``(indices, distances)``.

    Ties are broken by row index, so the answer is deterministic.
    """
    points = np.asarray(points, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    n = min(int(n), len(points))
    sq = np.einsum("ij,ij->i", points, points, dtype=np.float64)
    idx_out = np.empty((len(queries), n), dtype=np.int64)
    dist_out = np.empty((len(queries), n))
    for start in range(0, len(queries), _QUERY_CHUNK):
        q = queries[start : start + _QUERY_CHUNK]
        d2 = sq[None, :] - 2.0 * (q @ points.T).astype(np.float64) + np.einsum("ij,ij->i", q, q)[:, None]
        # a margin of candidates, re-ranked exactly in float64 so rounding cannot reorder near-ties
        m = min(len(points), n + 16)
        cand = (
            np.argpartition(d2, m - 1, axis=1)[:, :m]
            if m < len(points)
            else np.tile(np.arange(m), (len(q), 1))
        )
        exact = ((points[cand].astype(np.float64) - q[:, None, :].astype(np.float64)) ** 2).sum(axis=2)
        order = np.lexsort((cand, exact), axis=1)[:, :n]
        idx_out[start : start + len(q)] = np.take_along_axis(cand, order, 1)
        dist_out[start : start + len(q)] = np.sqrt(np.take_along_axis(exact, order, 1))
    return idx_out, dist_out


@dataclass
class KnownCompoundIndex:
    """Known compounds (:data:`INDEX_COLUMNS`) and their points in a representation."""

    table: pd.DataFrame
    points: np.ndarray
    representation: Representation

    def __len__(self) -> int:
        return len(self.table)

    @classmethod
    def build(
        cls,
        table: pd.DataFrame | Callable[[], pd.DataFrame],
        representation: Representation,
        *,
        cache_key: str | None = None,
    ) -> KnownCompoundIndex:
        """Embed every formula of ``table`` (:data:`INDEX_COLUMNS`; or a function that makes it, called only
        when the cache has no index under ``cache_key``).

        With a ``cache_key`` (which must change whenever the table or the bundle does), the table and the points
        are kept in the cache folder; a second process waits for the first one's build instead of repeating it.
        """
        path = _cache_path(cache_key, representation) if cache_key else None
        if path is None:
            frame = table() if callable(table) else table
            return cls(frame, _embed(frame, representation), representation)
        with _build_lock(path):
            cached = _read_cache(path, representation)
            if cached is not None:
                _touch(path)
                return cls(cached[0], cached[1], representation)
            frame = table() if callable(table) else table
            points = _embed(frame, representation)
            _write_cache(path, frame, points, representation.scales or (1.0, 1.0))
        _prune_cache(path, CACHE_KEEP)
        return cls(frame, points, representation)

    def query(self, X: np.ndarray, n: int) -> list[pd.DataFrame]:
        """The ``n`` nearest known compounds of each feature row, with a ``distance`` column."""
        idx, dist = nearest(self.points, self.representation.embed(X), n)
        out = []
        for i in range(len(idx)):
            rows = self.table.iloc[idx[i]].copy()
            rows.insert(0, "distance", dist[i])
            out.append(rows.reset_index(drop=True))
        return out


def _cache_path(key: str, representation: Representation) -> Path | None:
    from cryspnet_gen.config import cache_dir

    digest = hashlib.sha256()
    digest.update(f"{_CACHE_VERSION}|{key}|{representation.kind}|{representation.alpha}|".encode())
    if representation.weights is not None:
        digest.update(np.asarray(representation.weights, dtype=np.float64).tobytes())
    try:
        root = cache_dir() / "similar"
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.warning("no cache folder for the similar-materials index (%s): it is rebuilt each run", exc)
        return None
    return root / f"{digest.hexdigest()[:24]}.npz"


def _embed(table: pd.DataFrame, representation: Representation) -> np.ndarray:
    """Points of every formula, at float16 precision (as cached, so fresh and cached indexes answer alike)."""
    from cryspnet_gen.featurize import featurize

    start = time.perf_counter()
    logger.info("embedding %d known compounds (once; cached afterwards)", len(table))
    points = representation.fit_embed(featurize(list(table["formula"])).matrix)
    logger.info("embedded %d known compounds in %.1f s", len(table), time.perf_counter() - start)
    return points.astype(np.float16).astype(np.float32)


def _read_cache(path: Path, representation: Representation) -> tuple[pd.DataFrame, np.ndarray] | None:
    """The cached table (``.parquet``) and points (``.npz``), or None when missing or unreadable."""
    if not (path.is_file() and path.with_suffix(".parquet").is_file()):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            points, scales = data["points"].astype(np.float32), data["scales"]
        table = pd.read_parquet(path.with_suffix(".parquet"))[list(INDEX_COLUMNS)]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        logger.warning("similar-materials cache %s unreadable (%s): rebuilding it", path, exc)
        return None
    if len(points) != len(table):
        logger.warning("similar-materials cache %s is inconsistent: rebuilding it", path)
        return None
    if representation.kind == "combined":
        representation.scales = (float(scales[0]), float(scales[1]))
    return table, points


def _touch(path: Path) -> None:
    """Mark a cached index as used now (pruning keeps the most recently used)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _prune_cache(current: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recently used indexes in ``current``'s folder (never ``current``, nor
    one whose build lock another process holds); each is about 100 MB."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock to tell a used index, so keep them all
        return
    try:
        indexes = sorted(current.parent.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    stale = [p for p in indexes if p != current][max(keep - 1, 0) :]
    for old in stale:
        try:
            with open(old.with_suffix(".lock"), "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                for suffix in (".npz", ".parquet"):
                    old.with_suffix(suffix).unlink(missing_ok=True)
                old.with_suffix(".lock").unlink(missing_ok=True)
            logger.info("removed the least recently used similar-materials index %s", old)
        except OSError:  # held by another process, or already gone
            continue


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock beside the cache file (POSIX ``flock``; no lock where that is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        handle = open(path.with_suffix(".lock"), "w")  # noqa: SIM115 - held for the block
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_cache(path: Path, table: pd.DataFrame, points: np.ndarray, scales: tuple[float, float]) -> None:
    """Write the table, then the points (each atomically: a reader sees both files whole, or rebuilds)."""
    stem = f".{path.stem}.{os.getpid()}"  # one temporary name per process
    tmp_table, tmp_points = path.with_name(stem + ".tmp.parquet"), path.with_name(stem + ".tmp.npz")
    try:
        table[list(INDEX_COLUMNS)].to_parquet(tmp_table, index=False)
        tmp_table.replace(path.with_suffix(".parquet"))
        np.savez(tmp_points, points=points.astype(np.float16), scales=np.asarray(scales, dtype=np.float64))
        tmp_points.replace(path)
    except OSError as exc:
        logger.warning("could not cache the similar-materials index at %s (%s)", path, exc)
    finally:
        tmp_table.unlink(missing_ok=True)
        tmp_points.unlink(missing_ok=True)
