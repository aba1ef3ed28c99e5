"""Bundle assembly: a labelled table + composition features -> a trained, validated model bundle.

:func:`train_bundle` plans every task (:mod:`cryspnet_gen.train.tasks`), trains them in turn, scores the stored
weights on the validation rows and writes the bundle (:func:`cryspnet_gen.bundle.save_bundle`);
:func:`train_from_data` does the same from the open data of a named split.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from cryspnet_gen.bundle import WeightsDtype, read_bundle, save_bundle, storage_tensors
from cryspnet_gen.formula import element_encoding
from cryspnet_gen.nn import Standardizer
from cryspnet_gen.predict import Predictor
from cryspnet_gen.symmetry import BRAVAIS_LATTICES, PARAMETER_NAMES
from cryspnet_gen.train.classifiers import (
    calibrate_sections,
    collapse_stacks,
    stack_sections,
    tree_sections,
    uses_networks,
)
from cryspnet_gen.train.config import TrainConfig
from cryspnet_gen.train.engine import Progress, torch_settings_of
from cryspnet_gen.train.table import TrainingRows, frame_and_features, prepare_rows
from cryspnet_gen.train.tasks import (
    TaskTrainer,
    bravais_subsets,
    bravais_task,
    lattice_parameters,
    lattice_task,
    space_group_task,
    volume_task,
)

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import os

    import pandas as pd

__all__ = ["train_bundle", "train_from_data", "validation_metrics"]


def train_bundle(
    frame: pd.DataFrame,
    X: np.ndarray,
    *,
    config: TrainConfig | None = None,
    out_dir: str | os.PathLike[str],
    name: str,
    version: str,
    split_name: str,
    feature_labels: Sequence[str],
    featurizer_settings: dict[str, Any],
    seed: int | None = None,
    labels: str = "mp",
    weights_dtype: WeightsDtype = "float16",
    overwrite: bool = False,
    networks_from: str | os.PathLike[str] | None = None,
) -> Path:
    """Train every network of a bundle, compute validation metrics and write the bundle.

    Parameters
    ----------
    frame
        Training table with the columns in :data:`cryspnet_gen.train.REQUIRED_COLUMNS` (``split`` in
        ``train``/``val``/test names; only ``train`` rows are fitted, ``val`` rows drive early stopping and the
        metrics).
    X
        Composition features aligned with ``frame`` (float32 ``(n, F)``, NaN rows for bad formulas).
    config
        Hyperparameters; defaults to ``TrainConfig()``.
    out_dir
        The bundle is written to ``out_dir / name``.
    name, version
        Bundle name and version.
    split_name
        Name of the data split recorded in the manifest (e.g. ``"bench"``).
    feature_labels, featurizer_settings
        ``featurize.feature_labels()`` and ``featurize.FEATURIZER_SETTINGS`` used to build ``X``.
    seed
        Overrides ``config.seed``.
    labels
        Which labels trained the bundle (e.g. ``"mp"`` or ``"mp+cod"``), recorded in the manifest.
    weights_dtype
        Storage precision of the weight matrices (see :func:`cryspnet_gen.bundle.save_bundle`).
    overwrite
        Replace an existing bundle.
    networks_from
        Reuse the networks (lattice, volume and, for the ``cryspnet-mlp`` and ``stack`` archs, the classifier
        networks) of this bundle instead of training them: it must have been trained on the same split, rows
        and features (checked). Adding trees to a trained bundle this way takes minutes instead of half an
        hour.

    Returns
    -------
    Path
        The bundle folder.
    """
    config = copy.deepcopy(config) if config is not None else TrainConfig()
    if seed is not None:
        config.seed = int(seed)
    X = np.ascontiguousarray(X, dtype=np.float32)
    labels_list = [str(s) for s in feature_labels]
    rows, train_all, norm_state, X_in = _training_inputs(frame, X, labels_list, config)

    bravais_rows = bravais_subsets(rows, config)
    params = lattice_parameters(rows)
    counts: dict[str, int] = {"train": len(train_all), "val": int(rows.val.sum())}
    tasks, tensors = _network_tasks(
        rows, bravais_rows, params, X_in, norm_state, config, counts, networks_from, split_name, labels_list
    )
    texts, trees = _tree_tasks(X, rows, bravais_rows, config, tasks, counts)

    manifest: dict[str, Any] = {
        "name": name,
        "version": str(version),
        "split": split_name,
        "labels": labels,
        "features": {
            "labels": labels_list,
            "settings": featurizer_settings,
            "n_features": X.shape[1],
            **({"element_slots": config.element_slots} if config.attention else {}),
        },
        "bravais_lattices": list(BRAVAIS_LATTICES),
        "parameter_names": {lat: list(PARAMETER_NAMES[lat]) for lat in BRAVAIS_LATTICES},
        "tasks": tasks,
        "train_config": asdict(config),
        "training": {"seed": config.seed, "rows": counts, "early_stopping": config.stop_on},
    }
    # Score exactly what will be stored (the weights rounded to the storage dtype).
    stored = {f: storage_tensors(t, weights_dtype) for f, t in tensors.items()}
    bravais_val = {model: va for model, (_, va) in bravais_rows.items()}
    base = Predictor(manifest, stored, check_features=False, trees=texts)
    manifest["calibration"] = _fit_classifiers(
        base, trees, X_in, rows, bravais_val, calibrate=config.calibrate
    )
    tensors = _used_tensors(tasks, tensors)
    texts = _used_trees(tasks, texts)
    stored = {f: stored[f] for f in tensors}
    if config.attention and not _uses_attention(tasks):  # every attention model lost its stack to the trees
        del manifest["features"]["element_slots"]
        X_in = X
    predictor = Predictor(manifest, stored, check_features=False, trees=texts)
    manifest["metrics"] = {
        "validation": validation_metrics(predictor, X_in, rows, bravais_val, params),
        "test": None,
    }
    path = save_bundle(
        Path(out_dir) / name, manifest, tensors, weights_dtype=weights_dtype, overwrite=overwrite, trees=texts
    )
    if "z" in frame.columns:
        add_z_prior(path, frame)
    return path


def add_z_prior(bundle_dir: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    """Count Z per (space group, formula type) on a training frame and store the counts in a bundle.

    The rows counted: ``train`` only when the frame has test rows (a ``bench`` split: validation formulas stay
    unseen, as for the models), else ``train`` and ``val`` (the ``full`` split: all the data). Rows without a Z
    (labels without a structure) are skipped.
    """
    from cryspnet_gen.bundle import write_z_prior
    from cryspnet_gen.zprior import ZPrior

    split = frame["split"].astype(str)
    bench = split.str.startswith("test").any()
    keep = split.isin(["train"] if bench else ["train", "val"]).to_numpy() & frame["z"].notna().to_numpy()
    rows = frame[keep]
    prior = ZPrior.from_rows(rows["formula"], rows["space_group"].astype(int), rows["z"].astype(int))
    which = (
        "train rows (bench split: no validation or test formula)"
        if bench
        else "train + val rows (all the data)"
    )
    return write_z_prior(bundle_dir, prior.to_json(), source=f"{prior.rows} {which}")


def _training_inputs(
    frame: pd.DataFrame, X: np.ndarray, labels: list[str], config: TrainConfig
) -> tuple[TrainingRows, np.ndarray, dict[str, torch.Tensor], np.ndarray]:
    """The rows, the training rows, the standardizer state and what the networks read: the features, and for
    element-attention classifiers the element encoding after them."""
    if X.ndim != 2 or X.shape[1] != len(labels):
        raise ValueError(f"X has {X.shape[-1]} columns but {len(labels)} feature labels were given")
    rows = prepare_rows(frame, X)
    train_all = np.flatnonzero(rows.train)
    if not len(train_all):
        raise ValueError("no training rows (split == 'train' with finite features)")
    norm_state = Standardizer(n_features=X.shape[1]).fit(X[train_all]).state_dict()
    X_in = X
    if config.attention:
        X_in = np.hstack([X, element_encoding(rows.formulas, config.element_slots)])
    return rows, train_all, norm_state, X_in


def _network_tasks(
    rows: TrainingRows,
    bravais_rows: dict[str, tuple[np.ndarray, np.ndarray]],
    params: dict[str, np.ndarray],
    X_in: np.ndarray,
    norm_state: dict[str, torch.Tensor],
    config: TrainConfig,
    counts: dict[str, int],
    networks_from: str | os.PathLike[str] | None,
    split_name: str,
    labels: list[str],
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """The manifest sections and weight files of every network of the bundle, trained here or reused from
    ``networks_from`` (the element-attention classifiers are always trained; any other network can be reused)."""
    plans = [lattice_task(rows, params, config), volume_task(rows, config)]
    if config.arch != "lightgbm":
        plans[:0] = [bravais_task(rows, bravais_rows, config), space_group_task(rows, config)]
    tasks: dict[str, Any] = {}
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    if networks_from is not None:
        reused = [p for p in plans if not (config.attention and p.name in ("bravais", "space_group"))]
        tasks, tensors = _reused_networks(networks_from, [p.name for p in reused], split_name, labels, counts)
        for plan in reused:
            counts.update(plan.rows)
        plans = [p for p in plans if p not in reused]
    if plans:
        trained, new_tensors = _train_networks(plans, X_in, norm_state, config, counts)
        tasks = {**trained, **tasks}
        tensors.update(new_tensors)
    return tasks, tensors


def _tree_tasks(
    X: np.ndarray,
    rows: TrainingRows,
    bravais_rows: dict[str, tuple[np.ndarray, np.ndarray]],
    config: TrainConfig,
    tasks: dict[str, Any],
    counts: dict[str, int],
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Train the tree classifiers of ``config.arch``: for ``lightgbm`` they become the Bravais and space-group
    tasks; for ``stack`` they are returned to be stacked with the networks. Returns the tree texts and the
    trees to stack (None unless stacking)."""
    if not config.stacked and config.arch != "lightgbm":
        return {}, None
    tree_bravais, tree_lattices, texts = tree_sections(X, rows, bravais_rows, config)
    counts.update({f"bravais_{model}": len(bravais_rows[model][0]) for model in tree_bravais})
    if config.arch == "lightgbm":
        for model in set(bravais_rows) - set(tree_bravais):
            del bravais_rows[model]  # no model, no validation rows
        tasks["bravais"] = tree_bravais
        tasks["space_group"] = {
            "file": None,
            "arch": "per_lattice",
            "shared": None,
            "lattices": tree_lattices,
        }
        return texts, None
    return texts, {"bravais": tree_bravais, "lattices": tree_lattices}


def _fit_classifiers(
    base: Predictor,
    trees: dict[str, Any] | None,
    X: np.ndarray,
    rows: TrainingRows,
    bravais_val: dict[str, np.ndarray],
    *,
    calibrate: bool,
) -> dict[str, Any] | None:
    """Stack ``base``'s classifier networks with ``trees`` (when given) and calibrate them on the validation
    rows, updating ``base.manifest``'s tasks in place; return the fitted temperatures (None: not calibrated)."""
    tasks = base.manifest["tasks"]

    def proba(entry: dict[str, Any], prefix: str, rows_X: np.ndarray) -> np.ndarray:
        return base.entry_probabilities(entry, rows_X, prefix=prefix)

    sections = {"bravais": tasks["bravais"], "lattices": tasks["space_group"]["lattices"]}
    if trees is not None:
        sections = stack_sections(sections, trees, proba, X, rows, bravais_val)
    calibration = calibrate_sections(sections, proba, X, rows, bravais_val) if calibrate else None
    collapsed = collapse_stacks(sections)
    if collapsed:
        logger.info("stacks reduced to one part (weight 0 for the other): %s", ", ".join(collapsed))
    if calibration is not None:  # the temperatures in effect (a collapsed stack multiplies two)
        for model, entry in sections["bravais"].items():
            calibration.setdefault("bravais", {})[model] = float(entry.get("temperature", 1.0))
        calibration["space_group_per_lattice"] = {
            lat: float(e["temperature"]) for lat, e in sections["lattices"].items() if "temperature" in e
        }
    tasks["bravais"] = sections["bravais"]
    tasks["space_group"]["lattices"] = sections["lattices"]
    if not any(uses_networks(e) for e in sections["lattices"].values()):
        tasks["space_group"].update(file=None, shared=None)  # no space-group network left to store
    return calibration


def _uses_attention(tasks: dict[str, Any]) -> bool:
    """Whether a classifier of the manifest's tasks is an element-attention network."""
    entries = [*tasks["bravais"].values(), *tasks["space_group"]["lattices"].values()]
    if tasks["space_group"].get("shared"):
        entries.append(tasks["space_group"]["shared"])
    parts = [p for e in entries for p in e.get("parts", [e])]
    return any(p.get("model_class") == "ElementAttention" for p in parts)


def _used_trees(tasks: dict[str, Any], texts: dict[str, str]) -> dict[str, str]:
    """The tree texts the manifest's tasks still refer to (a stack collapsed to its network drops its trees)."""
    entries = [*tasks["bravais"].values(), *tasks["space_group"]["lattices"].values()]
    used = {p["tree_file"] for e in entries for p in e.get("parts", [e]) if p.get("kind") == "lightgbm"}
    return {f: t for f, t in texts.items() if f in used}


def _used_tensors(
    tasks: dict[str, Any], tensors: dict[str, dict[str, torch.Tensor]]
) -> dict[str, dict[str, torch.Tensor]]:
    """The weight files the manifest's tasks still refer to (stacking may leave a network unused)."""
    used = set(_files_of(tasks))
    for entry in tasks["bravais"].values():
        parts = entry["parts"] if entry.get("kind") == "stack" else [entry]
        used.update(p["file"] for p in parts if uses_networks(p) and isinstance(p.get("file"), str))
    return {f: t for f, t in tensors.items() if f in used}


def _train_networks(
    plans: list[Any],
    X: np.ndarray,
    norm_state: dict[str, torch.Tensor],
    config: TrainConfig,
    counts: dict[str, int],
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Train every network of ``plans``; return the manifest sections and the weight files."""
    tasks: dict[str, Any] = {}
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    progress = Progress(sum(n.n_members for plan in plans for n in plan.networks), quiet=config.quiet)
    trainer = TaskTrainer(torch.from_numpy(X).to(config.device), norm_state, config, progress)
    try:
        with torch_settings_of(config):
            for plan in plans:
                tasks[plan.name] = trainer.train_task(plan, tensors)
                counts.update(plan.rows)
    finally:
        progress.close()
    return tasks, tensors


def _reused_networks(
    path: str | os.PathLike[str],
    names: list[str],
    split_name: str,
    labels: list[str],
    counts: dict[str, int],
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """The network tasks ``names`` of an existing bundle trained on the same split, rows and features."""
    manifest, tensors = read_bundle(path)
    rows = manifest.get("training", {}).get("rows", {})
    same = (
        manifest.get("split") == split_name
        and list(manifest["features"]["labels"]) == labels
        and all(rows.get(k) == counts[k] for k in ("train", "val"))
    )
    if not same:
        raise ValueError(
            f"{path}: its networks were trained on another split, features or rows (split "
            f"{manifest.get('split')!r}, rows {rows.get('train')}/{rows.get('val')} vs {split_name!r}, "
            f"{counts['train']}/{counts['val']}); train the networks afresh"
        )
    tasks = {}
    for name in names:
        section = manifest["tasks"][name]
        if name == "bravais" and any(e.get("kind", "network") != "network" for e in section.values()):
            raise ValueError(f"{path}: its Bravais models are not networks; train the networks afresh")
        tasks[name] = section
    files = {f for name in names for f in _files_of(tasks[name])}
    return tasks, {f: tensors[f] for f in files if f in tensors}


def _files_of(section: dict[str, Any]) -> list[str]:
    found = [section["file"]] if isinstance(section.get("file"), str) else []
    for value in section.values():
        if isinstance(value, dict):
            found.extend(_files_of(value))
    return found


# ---------------------------------------------------------------------------------------------------------
# validation metrics
# ---------------------------------------------------------------------------------------------------------


def _r2(y: np.ndarray, pred: np.ndarray) -> float | None:
    if len(y) < 2:
        return None
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot <= 0:
        return None
    return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot


def validation_metrics(
    predictor: Predictor,
    X: np.ndarray,
    rows: TrainingRows,
    bravais_val: dict[str, np.ndarray],
    params: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Bravais top-1/top-2, space-group top-1 given the true lattice, parameter and volume R² on ``val``.

    Parameters
    ----------
    predictor
        The trained bundle.
    X, rows
        Features and rows of the training table.
    bravais_val
        Validation rows of each Bravais model.
    params
        Per lattice, the true lattice parameters of every row (NaN when unknown).
    """
    lattices = predictor.bravais_lattices
    out: dict[str, Any] = {"bravais": {}, "space_group": {}, "lattice": {}, "volume": {}}
    for model, va in bravais_val.items():
        if not len(va):
            out["bravais"][model] = {"n": 0, "top1": None, "top2": None}
            continue
        mean, _ = predictor.bravais_probabilities(X[va], model=model)  # type: ignore[arg-type]
        order = np.argsort(-mean, axis=1, kind="stable")
        y = rows.bravais_idx[va]
        recalls = [float((order[y == j, 0] == j).mean()) for j in range(len(lattices)) if (y == j).any()]
        out["bravais"][model] = {
            "n": len(va),
            "top1": float((order[:, 0] == y).mean()),
            "top2": float((order[:, :2] == y[:, None]).any(axis=1).mean()),
            "balanced_top1": float(np.mean(recalls)),
        }
    per_lat: dict[str, Any] = {}
    hits = total = 0
    for j, lat in enumerate(lattices):
        va = np.flatnonzero(rows.val & (rows.space_group > 0) & (rows.bravais_idx == j))
        if not len(va):
            continue
        groups, mean, _ = predictor.space_group_probabilities(X[va], lat)
        top = np.asarray(groups)[np.argmax(mean, axis=1)]
        h = int((top == rows.space_group[va]).sum())
        per_lat[lat] = {"n": len(va), "top1": h / len(va)}
        hits, total = hits + h, total + len(va)
    out["space_group"] = {"n": total, "top1": hits / total if total else None, "per_lattice": per_lat}
    lat_metrics: dict[str, Any] = {}
    for j, lat in enumerate(lattices):
        p = params[lat]
        va = np.flatnonzero(rows.val & (rows.bravais_idx == j) & np.isfinite(p).all(axis=1))
        if not len(va):
            continue
        pred = predictor.lattice_parameter_members(X[va], lat).mean(axis=0)
        names = list(predictor.manifest["parameter_names"][lat])
        lat_metrics[lat] = {
            "n": len(va),
            "r2": {k: _r2(p[va, i], pred[:, i]) for i, k in enumerate(names)},
            "mape": {
                k: float(np.mean(np.abs(pred[:, i] / p[va, i] - 1)))
                if np.isfinite(pred[:, i]).all()
                else None
                for i, k in enumerate(names)
            },
        }
    out["lattice"] = {"per_lattice": lat_metrics}
    va = np.flatnonzero(rows.val & rows.volume_ok)
    if len(va):
        mean, _ = predictor.volume_per_atom(X[va])
        out["volume"] = {
            "n": len(va),
            "r2": _r2(rows.volume[va], mean),
            "mae": float(np.abs(mean - rows.volume[va]).mean()),
        }
    return out


# ---------------------------------------------------------------------------------------------------------
# data -> bundle
# ---------------------------------------------------------------------------------------------------------


def train_from_data(
    split: Literal["bench", "full"] = "bench",
    *,
    out_dir: str | os.PathLike[str],
    name: str | None = None,
    version: str = "1",
    data_dir: str | os.PathLike[str] | None = None,
    labels: Literal["mp", "mp+cod", "experimental"] = "mp",
    config: TrainConfig | None = None,
    seed: int | None = None,
    max_rows: int | None = None,
    overwrite: bool = False,
    networks_from: str | os.PathLike[str] | None = None,
) -> Path:
    """Build the split from the open data, featurize it and :func:`train_bundle` on it; return the bundle folder.

    The split's tables and features are cached (``cryspnet-gen data build``); the ``shipped`` preset then trains
    in about 25 minutes on 2 cores.

    Parameters
    ----------
    split
        ``"bench"`` (test formulas held out) or ``"full"`` (everything trains; for the shipped bundle).
    name
        Bundle name; default ``cryspnet-<split>`` (``cryspnet-<split>-<labels>`` for other label policies).
    data_dir
        Data folder (see :func:`cryspnet_gen.config.resolve_data_dir`).
    labels
        Label policy of :mod:`cryspnet_gen.data`.
    seed
        Seed for the validation draw and the training (default ``config.seed``).
    max_rows
        Use only the first rows of each source (smoke runs).
    out_dir, version, config, overwrite, networks_from
        As in :func:`train_bundle` (``config`` defaults to ``TrainConfig()``).
    """
    from cryspnet_gen.featurize import FEATURIZER_SETTINGS, feature_labels

    config = config if config is not None else TrainConfig()
    seed = config.seed if seed is None else int(seed)
    if name is None:
        name = f"cryspnet-{split}" + ("" if labels == "mp" else f"-{labels.replace('+', '-')}")
    frame, X = frame_and_features(
        split, data_dir=data_dir, labels=labels, seed=seed, progress=not config.quiet, max_rows=max_rows
    )
    return train_bundle(
        frame,
        X,
        config=config,
        out_dir=out_dir,
        name=name,
        version=version,
        split_name=split,
        feature_labels=feature_labels(),
        featurizer_settings=FEATURIZER_SETTINGS,
        seed=seed,
        labels=labels,
        overwrite=overwrite,
        networks_from=networks_from,
    )
