"""The classifiers of each arch: tree sections, stacking weights and calibration temperatures.

The networks of every task are planned in :mod:`cryspnet_gen.train.tasks`; for the ``lightgbm`` and ``stack``
archs this module trains the tree counterparts of the Bravais and space-group classifiers
(:func:`tree_sections`), and for every arch it fits, on the validation rows only,

- the weight of the trees in a stack (one per Bravais model, one shared by the space-group models), by the
  lowest negative log-likelihood over a grid of weights, after calibrating each part;
- a temperature per Bravais model and one shared by the space-group models (:mod:`cryspnet_gen.calibration`).

Space-group models of different lattices have different numbers of classes; their probabilities are pooled by
padding them with zero columns, which temperature scaling leaves at zero.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from cryspnet_gen.bundle import TREE_SUFFIX
from cryspnet_gen.calibration import apply_temperature, fit_temperature
from cryspnet_gen.symmetry import BRAVAIS_LATTICES
from cryspnet_gen.train.tasks import space_group_prior
from cryspnet_gen.train.trees import fit_tree_classifier

if TYPE_CHECKING:
    from cryspnet_gen.train.config import TrainConfig
    from cryspnet_gen.train.table import TrainingRows

__all__ = ["STACK_WEIGHTS", "calibrate_sections", "stack_sections", "tree_sections"]

logger = logging.getLogger(__name__)

#: Tree weights tried when stacking (the network part gets one minus the weight).
STACK_WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 11))

#: class-model entry -> its raw (uncalibrated) probabilities on some rows
ProbaFn = Callable[[dict[str, Any], str, np.ndarray], np.ndarray]
_TINY = 1e-12


# ---------------------------------------------------------------------------------------------------------
# training the trees
# ---------------------------------------------------------------------------------------------------------


def tree_sections(
    X: np.ndarray,
    rows: TrainingRows,
    bravais_rows: dict[str, tuple[np.ndarray, np.ndarray]],
    config: TrainConfig,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Tree classifiers for every Bravais model and every lattice's space groups.

    Returns
    -------
    tuple
        ``(bravais, lattices, texts)``: the Bravais entries per model, the space-group entries per lattice
        (trees, or frequency priors where a lattice has one group or fewer than ``config.min_rows`` rows) and
        the tree texts per file name.
    """
    texts: dict[str, str] = {}
    bravais: dict[str, Any] = {}
    y = np.maximum(rows.bravais_idx, 0)
    for model, (tr, va) in bravais_rows.items():
        if model != "master" and not config.tree_subset_models:
            continue
        file = f"bravais_{model}{TREE_SUFFIX}"
        text, fields = fit_tree_classifier(
            X, y, tr, va, len(BRAVAIS_LATTICES), config, key=("bravais", model)
        )
        texts[file] = text
        bravais[model] = {"kind": "lightgbm", "tree_file": file, "classes": list(BRAVAIS_LATTICES), **fields}
    lattices: dict[str, Any] = {}
    sg_config = config.for_space_groups()
    sg_ok = rows.space_group > 0
    for j, lat in enumerate(BRAVAIS_LATTICES):
        tr = np.flatnonzero(rows.train & sg_ok & (rows.bravais_idx == j))
        va = np.flatnonzero(rows.val & sg_ok & (rows.bravais_idx == j))
        groups = sorted(int(g) for g in np.unique(rows.space_group[tr]))
        if len(groups) <= 1 or len(tr) < sg_config.min_rows:
            lattices[lat] = space_group_prior(lat, groups, rows.space_group[tr])
            continue
        index = {g: i for i, g in enumerate(groups)}
        target = np.asarray([index.get(int(g), -1) for g in rows.space_group])
        va = va[target[va] >= 0]
        file = f"space_group_{lat}{TREE_SUFFIX}"
        text, fields = fit_tree_classifier(
            X, target, tr, va, len(groups), sg_config, key=("space_group", lat)
        )
        texts[file] = text
        lattices[lat] = {"kind": "lightgbm", "tree_file": file, "classes": groups, **fields}
    return bravais, lattices, texts


# ---------------------------------------------------------------------------------------------------------
# stacking and calibration on the validation rows
# ---------------------------------------------------------------------------------------------------------


def _padded(blocks: list[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((sum(len(b) for b in blocks), width))
    start = 0
    for b in blocks:
        out[start : start + len(b), : b.shape[1]] = b
        start += len(b)
    return out


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.maximum(p[np.arange(len(y)), y], _TINY)).mean()) if len(y) else 0.0


def _best_weight(parts: list[np.ndarray], y: np.ndarray) -> float:
    """The tree weight of :data:`STACK_WEIGHTS` with the lowest NLL of ``(1 - w) * net + w * tree``."""
    net, tree = parts
    scores = [_nll((1.0 - w) * net + w * tree, y) for w in STACK_WEIGHTS]
    return float(STACK_WEIGHTS[int(np.argmin(scores))])


def _val_rows(rows: TrainingRows, lat_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation rows of a lattice with a known space group, and their groups."""
    va = np.flatnonzero(rows.val & (rows.space_group > 0) & (rows.bravais_idx == lat_index))
    return va, rows.space_group[va]


def stack_sections(
    network: dict[str, Any],
    trees: dict[str, Any],
    proba: ProbaFn,
    X: np.ndarray,
    rows: TrainingRows,
    bravais_val: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Stack the network and tree entries of the Bravais and space-group sections.

    Parameters
    ----------
    network, trees
        ``{"bravais": {model: entry}, "lattices": {lat: entry}}`` of each family.
    proba
        ``proba(entry, prefix, X_rows)``: an entry's raw probabilities.
    X, rows
        Features and rows of the training table.
    bravais_val
        Validation rows of each Bravais model.

    Returns
    -------
    dict
        ``{"bravais": ..., "lattices": ...}`` with stack entries (each part calibrated, the weight and
        ``temperature`` fitted on the validation rows).
    """
    out: dict[str, Any] = {"bravais": {}, "lattices": {}}
    for model, net_entry in network["bravais"].items():
        if model not in trees["bravais"]:
            out["bravais"][model] = net_entry  # a subset model without trees stays a network
            continue
        va = bravais_val[model]
        y = rows.bravais_idx[va]
        parts = [copy.deepcopy(net_entry), copy.deepcopy(trees["bravais"][model])]
        probs = []
        for part in parts:
            p = proba(part, "", X[va])
            part["temperature"] = fit_temperature(p, y)
            probs.append(apply_temperature(p, part["temperature"]))
        w = _best_weight(probs, y)
        out["bravais"][model] = {
            "kind": "stack",
            "classes": list(BRAVAIS_LATTICES),
            "parts": parts,
            "weights": [1.0 - w, w],
        }
        logger.info("stack bravais/%s: tree weight %.1f", model, w)
    # space groups: one weight shared by the lattices with both a network and a tree
    stacked: list[str] = []
    blocks: dict[str, list[list[np.ndarray]]] = {"net": [], "tree": []}
    ys: list[np.ndarray] = []
    width = 1
    for j, lat in enumerate(BRAVAIS_LATTICES):
        net_entry = network["lattices"].get(lat)
        tree_entry = trees["lattices"].get(lat)
        if not net_entry or not tree_entry or "prior" in (net_entry.get("kind"), tree_entry.get("kind")):
            out["lattices"][lat] = tree_entry if tree_entry else net_entry
            continue
        stacked.append(lat)
        va, groups = _val_rows(rows, j)
        index = {g: i for i, g in enumerate(tree_entry["classes"])}
        keep = np.asarray([g in index for g in groups], dtype=bool)
        va, yl = va[keep], np.asarray([index[g] for g in groups[keep]], dtype=np.int64)
        parts = [copy.deepcopy(net_entry), copy.deepcopy(tree_entry)]
        for name, part in zip(("net", "tree"), parts, strict=True):
            blocks[name].append([proba(part, f"{lat}.", X[va])])
        ys.append(yl)
        width = max(width, len(tree_entry["classes"]))
        out["lattices"][lat] = {"kind": "stack", "classes": tree_entry["classes"], "parts": parts}
    if stacked:
        y_all = np.concatenate(ys)
        pooled = {name: _padded([b[0] for b in blocks[name]], width) for name in blocks}
        temps = {name: fit_temperature(pooled[name], y_all) for name in pooled}
        w = _best_weight([apply_temperature(pooled[n], temps[n]) for n in ("net", "tree")], y_all)
        for lat in stacked:
            entry = out["lattices"][lat]
            entry["parts"][0]["temperature"] = temps["net"]
            entry["parts"][1]["temperature"] = temps["tree"]
            entry["weights"] = [1.0 - w, w]
        logger.info("stack space groups: tree weight %.1f over %d lattices", w, len(stacked))
    return out


def calibrate_sections(
    sections: dict[str, Any],
    proba: ProbaFn,
    X: np.ndarray,
    rows: TrainingRows,
    bravais_val: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Fit the ``temperature`` of every Bravais model and one shared by the space-group models (in place).

    Returns
    -------
    dict
        The fitted temperatures, ``{"bravais": {model: T}, "space_group": T}``, for the manifest.
    """
    fitted: dict[str, Any] = {"bravais": {}, "space_group": 1.0}
    for model, entry in sections["bravais"].items():
        va = bravais_val[model]
        entry["temperature"] = fit_temperature(proba(entry, "", X[va]), rows.bravais_idx[va])
        fitted["bravais"][model] = entry["temperature"]
    blocks: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    modelled = []
    for j, lat in enumerate(BRAVAIS_LATTICES):
        entry = sections["lattices"].get(lat)
        if not entry or entry.get("kind") == "prior":
            continue
        va, groups = _val_rows(rows, j)
        index = {g: i for i, g in enumerate(entry["classes"])}
        keep = np.asarray([g in index for g in groups], dtype=bool)
        if not keep.any():
            continue
        blocks.append(proba(entry, f"{lat}.", X[va[keep]]))
        ys.append(np.asarray([index[g] for g in groups[keep]], dtype=np.int64))
        modelled.append(lat)
    if blocks:
        width = max(b.shape[1] for b in blocks)
        temperature = fit_temperature(_padded(blocks, width), np.concatenate(ys))
        for lat in modelled:
            sections["lattices"][lat]["temperature"] = temperature
        fitted["space_group"] = temperature
    return fitted


def collapse_stacks(sections: dict[str, Any]) -> list[str]:
    """Replace every stack whose validation-chosen weights leave one part alone by that part (in place).

    The part keeps its calibration: tempering by the part's temperature and then the stack's equals tempering
    once by their product. A bundle then stores (and runs) only the models its predictions use.

    Returns
    -------
    list of str
        The collapsed entries, ``"bravais/<model>"`` or ``"space_group/<lattice>"``.
    """
    collapsed = []
    for section, label in (("bravais", "bravais"), ("lattices", "space_group")):
        for key, entry in sections[section].items():
            if entry.get("kind") != "stack":
                continue
            used = [i for i, w in enumerate(entry["weights"]) if w > 0.0]
            if len(used) != 1:
                continue
            part = copy.deepcopy(entry["parts"][used[0]])
            part["temperature"] = float(part.get("temperature", 1.0)) * float(entry.get("temperature", 1.0))
            sections[section][key] = part
            collapsed.append(f"{label}/{key}")
    return collapsed


def uses_networks(entry: dict[str, Any]) -> bool:
    """Whether a class-model entry (or a part of it) runs a network (``kind`` network or shared)."""
    if entry.get("kind") == "stack":
        return any(uses_networks(part) for part in entry["parts"])
    return entry.get("kind", "network") in ("network", "shared")
