"""The training table: building it from the open data, screening implausible cells and reading its rows.

:func:`frame_and_features` builds a named split of :mod:`cryspnet_gen.data` and its composition features;
:func:`prepare_rows` checks a table against :data:`REQUIRED_COLUMNS` and derives the masks and labels every
task trains on (:class:`TrainingRows`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from cryspnet_gen.symmetry import BRAVAIS_LATTICES, CELL_PARAMETERS, space_groups_of

if TYPE_CHECKING:
    import os

    import pandas as pd

__all__ = [
    "MAX_VOLUME_RATIO",
    "REQUIRED_COLUMNS",
    "TrainingRows",
    "frame_and_features",
    "implausible_cells",
    "prepare_rows",
]

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = (
    "formula",
    "split",
    "bravais",
    "space_group",
    *CELL_PARAMETERS,
    "volume_per_atom",
)

#: A cell whose volume per atom exceeds this multiple of the composition-weighted elemental volume (Magpie's
#: ``GSvolume_pa``) is taken to be broken or mostly vacuum (molecules or slabs in a box). In MP 2025 about 2% of
#: the ground states are (up to 63x, e.g. 1,852 A^3/atom for Nd2CuSb3) and almost none of the benchmark test
#: structures (1 of 14,349 above 3x); left in, they dominate the squared errors of every cell regressor.
MAX_VOLUME_RATIO = 3.0


@dataclass
class TrainingRows:
    """Row masks and labels derived once from the training table (see :func:`prepare_rows`).

    Attributes
    ----------
    train, val
        Rows of the ``train`` / ``val`` split with finite features.
    bravais_idx
        Index into ``symmetry.BRAVAIS_LATTICES`` (-1 when unknown).
    space_group
        Space-group number (0 when unknown or inconsistent with the lattice).
    cell, cell_ok
        ``(n, 6)`` cell parameters (NaN when unknown) and whether all are finite and positive.
    volume, volume_ok
        Volume per atom and whether it is finite and positive.
    formulas
        The formulas as strings.
    """

    train: np.ndarray
    val: np.ndarray
    bravais_idx: np.ndarray
    space_group: np.ndarray
    cell: np.ndarray
    cell_ok: np.ndarray
    volume: np.ndarray
    volume_ok: np.ndarray
    formulas: list[str]


def prepare_rows(frame: pd.DataFrame, X: np.ndarray) -> TrainingRows:
    """Check the table and its features and derive the rows and labels of every task.

    Parameters
    ----------
    frame
        Training table with the columns in :data:`REQUIRED_COLUMNS`.
    X
        Composition features aligned with ``frame`` (rows without a finite feature are left out).

    Raises
    ------
    ValueError
        When a column is missing or ``X`` does not match ``frame``.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"training table lacks columns {missing}; expected {list(REQUIRED_COLUMNS)}")
    if X.ndim != 2 or len(X) != len(frame):
        raise ValueError(f"X must be (len(frame), n_features) = ({len(frame)}, F), got {X.shape}")
    feat_ok = np.isfinite(X).any(axis=1)
    split = frame["split"].astype(str).to_numpy()
    lattice_index = {b: i for i, b in enumerate(BRAVAIS_LATTICES)}
    bravais_idx = np.asarray([lattice_index.get(b, -1) for b in frame["bravais"].astype(str)], dtype=np.int64)
    sg = _int_column(frame["space_group"])
    allowed = {i: set(space_groups_of(b)) for i, b in enumerate(BRAVAIS_LATTICES)}
    consistent = np.asarray(
        [b >= 0 and g in allowed[b] for b, g in zip(bravais_idx, sg, strict=True)], dtype=bool
    )
    n_bad = int(((sg > 0) & (bravais_idx >= 0) & ~consistent).sum())
    if n_bad:
        logger.warning(
            "%d rows have a space group outside their Bravais lattice; ignored for space groups", n_bad
        )
    sg = np.where(consistent, sg, 0)
    cell = frame[list(CELL_PARAMETERS)].to_numpy(dtype=np.float64)
    cell_ok = np.isfinite(cell).all(axis=1) & (cell > 0).all(axis=1)
    vol = frame["volume_per_atom"].to_numpy(dtype=np.float64)
    vol_ok = np.isfinite(vol) & (vol > 0)
    n_unknown = int((bravais_idx < 0).sum())
    if n_unknown:
        logger.warning("%d rows have an unknown Bravais lattice; ignored", n_unknown)
    return TrainingRows(
        train=(split == "train") & feat_ok,
        val=(split == "val") & feat_ok,
        bravais_idx=bravais_idx,
        space_group=sg,
        cell=cell,
        cell_ok=cell_ok,
        volume=vol,
        volume_ok=vol_ok,
        formulas=[str(f) for f in frame["formula"]],
    )


def _int_column(series: pd.Series) -> np.ndarray:
    """Integer column with missing/invalid values as 0."""
    values = np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.where(np.isfinite(values), values, 0).astype(np.int64)


def frame_and_features(
    split: Literal["bench", "full"],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    labels: Literal["mp", "mp+cod", "experimental"] = "mp",
    seed: int = 0,
    progress: bool = True,
    max_rows: int | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The training table of a named split (:mod:`cryspnet_gen.data`) and its feature matrix.

    Train/val rows whose cell is implausible (:func:`implausible_cells`) keep their labels but lose their cell
    parameters and volume, so they are no regression targets.

    Parameters
    ----------
    split
        ``"bench"`` (test formulas held out) or ``"full"``.
    data_dir
        Data folder (see :func:`cryspnet_gen.config.resolve_data_dir`).
    labels
        Label policy of :mod:`cryspnet_gen.data`.
    seed
        Seed of the validation draw.
    progress
        Show progress bars while building the data.
    max_rows
        Use only the first rows of each source (smoke runs).

    Returns
    -------
    tuple
        ``(frame, X)``: the frame with a fresh RangeIndex and the float32 features aligned with its rows.
    """
    from cryspnet_gen.data import build
    from cryspnet_gen.featurize import featurize

    if split not in ("bench", "full"):
        raise ValueError(f"Unknown {split=}; choose from ('bench', 'full')")
    if labels not in ("mp", "mp+cod", "experimental"):
        raise ValueError(f"Unknown {labels=}; choose from ('mp', 'mp+cod', 'experimental')")
    frame = build(data_dir, progress=progress, max_rows=max_rows).frame(split, policy=labels, seed=seed)
    frame = frame.reset_index(drop=True)
    feats = featurize(list(frame["formula"]))
    n_bad = sum(e is not None for e in feats.errors)
    if n_bad:
        logger.warning(
            "%d of %d formulas could not be featurized; they are left out of training", n_bad, len(frame)
        )
    suspect = (
        implausible_cells(frame, feats.matrix, feats.labels)
        & frame["split"].isin(["train", "val"]).to_numpy()
    )
    if suspect.any():
        logger.info(
            "%d train/val rows have a volume per atom over %.0fx the elemental estimate: their cells and volumes "
            "are not used as regression targets (their space-group labels are kept)",
            int(suspect.sum()),
            MAX_VOLUME_RATIO,
        )
        frame.loc[suspect, [*CELL_PARAMETERS, "volume_per_atom"]] = np.nan
    return frame, feats.matrix


def implausible_cells(frame: pd.DataFrame, X: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Rows whose volume per atom is more than :data:`MAX_VOLUME_RATIO` x the elemental estimate."""
    column = list(labels).index("MagpieData mean GSvolume_pa")
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = frame["volume_per_atom"].to_numpy(dtype=float) / X[:, column]
    return np.asarray(ratio > MAX_VOLUME_RATIO)
