"""Synthetic training tables and tiny bundles for the nn / train / predict tests.

The formulas are real (so features come from :func:`cryspnet_gen.featurize.featurize` and bundles carry the
real feature labels), but the labels are synthetic functions of the features, so the tasks are learnable and
every kind of per-lattice model is exercised: lattices with networks, one with a single space group
(constant), one with too few rows (prior) and lattices without rows (uniform).
"""

from __future__ import annotations

import atexit
import functools
import itertools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cryspnet_gen.train import TrainConfig

# Metals, oxygen and a few other non-metals, so that the metal and oxide subsets are both populated.
_METALS = "Li Na K Mg Ca Sr Ba Ti V Cr Mn Fe Co Ni Cu Zn Zr Nb Mo Ag Al Ga In Sn La Ce"
ELEMENTS = (*_METALS.split(), *["O"] * 6, "S", "Se", "N", "P", "Cl", "F", "B", "Si")

# Lattices given training rows; their first space groups are used as labels.
NETWORK_LATTICES = ("mP", "oP", "tP", "hP", "hR", "cF")
CONSTANT_LATTICE = "cP"  # one space group only -> constant space-group predictor
SPARSE_LATTICE = "tI"  # a handful of rows -> frequency prior and stored lattice parameters


def make_formulas(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct random formulas of 1-4 elements."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        k = int(rng.integers(1, 5))
        els = sorted(set(rng.choice(ELEMENTS, size=k)))
        seen["".join(f"{e}{int(rng.integers(1, 5))}" for e in els)] = None
    return list(seen)


def synthetic_table(n: int = 1600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """A training table in ``cryspnet_gen.data``'s schema, its features and the feature labels."""
    from cryspnet_gen.featurize import featurize
    from cryspnet_gen.symmetry import PARAMETER_NAMES, from_parameters, space_groups_of

    rng = np.random.default_rng(seed)
    formulas = make_formulas(n, seed)
    feats = featurize(formulas)
    X = feats.matrix.astype(np.float32)
    mu = np.nanmean(X, axis=0)
    sd = np.nanstd(X, axis=0)
    sd[sd == 0] = 1
    Z = np.nan_to_num((X - mu) / sd)
    # A few informative directions in feature space.
    W = rng.normal(size=(X.shape[1], 8)) / np.sqrt(X.shape[1])
    H = Z @ W  # (n, 8)

    lattices = list(NETWORK_LATTICES)
    lat_idx = np.argmax(H[:, : len(lattices)] + 0.05 * rng.normal(size=(n, len(lattices))), axis=1)
    bravais = np.asarray([lattices[i] for i in lat_idx], dtype=object)
    # Carve out a constant lattice and a sparse lattice.
    bravais[H[:, 5] > np.quantile(H[:, 5], 0.92)] = CONSTANT_LATTICE
    sparse_rows = rng.choice(n, size=12, replace=False)
    bravais[sparse_rows] = SPARSE_LATTICE

    sg = np.zeros(n, dtype=np.int64)
    params = {}
    cells = np.full((n, 6), np.nan)
    for lat in set(bravais):
        rows = np.flatnonzero(bravais == lat)
        groups = space_groups_of(lat)
        if lat == CONSTANT_LATTICE:
            sg[rows] = groups[0]
        else:
            sg[rows] = np.where(H[rows, 6] > np.median(H[:, 6]), groups[-1], groups[0])
        names = PARAMETER_NAMES[lat]
        p = np.empty((len(rows), len(names)))
        for k, name in enumerate(names):
            if name in ("alpha", "beta", "gamma"):
                p[:, k] = 95.0 + 10.0 / (1 + np.exp(-H[rows, (k + 2) % 8]))
            else:
                p[:, k] = 3.0 + 0.5 * k + 2.0 / (1 + np.exp(-H[rows, (k + 3) % 8]))
        params[lat] = p
        cells[rows] = from_parameters(lat, p)
    volume = 8.0 + 12.0 / (1 + np.exp(-H[:, 7]))

    split = np.where(rng.random(n) < 0.2, "val", "train").astype(object)
    split[rng.random(n) < 0.03] = "test_mp20"
    # Experimental-only labels: no cell, no volume.
    cod = rng.random(n) < 0.05
    cells[cod] = np.nan
    volume = np.where(cod, np.nan, volume)
    frame = pd.DataFrame(
        {
            "formula": formulas,
            "split": split,
            "bravais": bravais,
            "space_group": sg,
            **{c: cells[:, i] for i, c in enumerate(("a", "b", "c", "alpha", "beta", "gamma"))},
            "volume_per_atom": volume,
            "label_source": np.where(cod, "cod", "mp"),
        }
    )
    return frame, X, list(feats.labels)


def tiny_config(**overrides: object) -> TrainConfig:
    """A configuration that trains a whole bundle in seconds."""
    kwargs: dict[str, object] = {
        "bravais_hidden": [48, 24],
        "space_group_hidden": [24],
        "lattice_hidden": [24],
        "volume_hidden": [24],
        "max_epochs": 12,
        "batch_size": 64,
        "max_lr": 1e-2,
        "patience": 4,
        "n_members": 2,
        "n_members_space_group": 2,
        "n_members_lattice": 2,
        "n_members_volume": 2,
        "min_rows": 20,
        "min_val_rows": 10,
        "quiet": True,
        "num_threads": 1,
    }
    kwargs.update(overrides)
    return TrainConfig(**kwargs)  # type: ignore[arg-type]


@functools.cache
def cached_table(n: int = 1600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """:func:`synthetic_table`, computed once per process (callers must not modify it)."""
    return synthetic_table(n=n, seed=seed)


@functools.cache
def shared_bundle(name: str = "tiny", seed: int = 0) -> Path:
    """A tiny trained bundle, built once per test process in a temporary folder removed at exit.

    A plain cache rather than a fixture: fixtures shared between test modules belong in conftest.py.
    """
    from cryspnet_gen.featurize import FEATURIZER_SETTINGS

    out = Path(tempfile.mkdtemp(prefix="cryspnet-gen-test-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    frame, X, labels = cached_table(seed=seed)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_tiny(frame, X, labels, out, name=name, seed=seed, settings=FEATURIZER_SETTINGS)
    finally:
        torch.set_num_threads(prev)


def train_tiny(
    frame: pd.DataFrame,
    X: np.ndarray,
    labels: list[str],
    out_dir: Path,
    *,
    name: str,
    seed: int,
    settings: dict[str, object],
    weights_dtype: str = "float16",
    networks_from: Path | None = None,
    **config: object,
) -> Path:
    from cryspnet_gen.train import train_bundle

    return train_bundle(
        frame,
        X,
        config=tiny_config(**config),
        out_dir=out_dir,
        name=name,
        version="0.0.test",
        split_name="synthetic",
        feature_labels=labels,
        featurizer_settings=settings,
        seed=seed,
        weights_dtype=weights_dtype,  # type: ignore[arg-type]
        networks_from=networks_from,
    )


def pairs(values: list[float]) -> list[tuple[float, float]]:
    """Consecutive pairs (for checking orderings)."""
    return list(itertools.pairwise(values))
