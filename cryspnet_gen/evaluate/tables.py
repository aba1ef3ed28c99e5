"""The report's tables as numbers: Bravais top-k, space group per lattice and end to end, lattice parameters,
volumes, and calibration (expected calibration error of the top-1 confidence)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cryspnet_gen import metrics as M
from cryspnet_gen.calibration import expected_calibration_error, reliability_curve
from cryspnet_gen.evaluate.outputs import ModelOutputs
from cryspnet_gen.symmetry import (
    BRAVAIS_LATTICES,
    CELL_PARAMETERS,
    PARAMETER_NAMES,
    conventional_volume,
    from_parameters,
    to_parameters,
)

CELL = CELL_PARAMETERS


def lattice_index(bravais: Sequence[str]) -> np.ndarray:
    return np.array([BRAVAIS_LATTICES.index(b) for b in bravais])


def bravais_table(out: ModelOutputs, y: np.ndarray) -> dict[str, float]:
    return {"top1": M.topk_accuracy(out.p_lattice, y, 1), "top2": M.topk_accuracy(out.p_lattice, y, 2)}


def baseline_bravais(
    train_bravais: Sequence[str], y: np.ndarray, *, seed: int = 0
) -> dict[str, dict[str, float]]:
    freq = M.class_frequencies(list(train_bravais), BRAVAIS_LATTICES)
    return {
        "random": {
            "top1": M.random_topk(freq, y, 1, seed=seed),
            "top2": M.random_topk(freq, y, 2, seed=seed),
        },
        "mode": {"top1": M.mode_topk(freq, y, 1), "top2": M.mode_topk(freq, y, 2)},
    }


def space_group_tables(
    out: ModelOutputs,
    test: pd.DataFrame,
    train: pd.DataFrame,
    *,
    seed: int = 0,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-lattice top-1/top-3 given the true lattice (with the random baseline), and end-to-end top-1/top-5."""
    per: dict[str, dict[str, float]] = {}
    for bravais in BRAVAIS_LATTICES:
        rows = (test["bravais"] == bravais).to_numpy()
        if not rows.any():
            continue
        groups, proba = out.conditional[bravais]
        index = {g: i for i, g in enumerate(groups)}
        y = np.array([index.get(int(g), -1) for g in test.loc[rows, "space_group"]])
        freq = M.class_frequencies(
            list(train.loc[train["bravais"] == bravais, "space_group"].astype(int)), groups
        )
        per[bravais] = {
            "n": int(rows.sum()),
            "top1": M.topk_accuracy(proba[rows], y, 1),
            "top3": M.topk_accuracy(proba[rows], y, 3),
            "random_top1": M.random_topk(freq, y, 1, seed=seed),
            "random_top3": M.random_topk(freq, y, 3, seed=seed),
        }
    y_all = test["space_group"].to_numpy(dtype=int) - 1
    joint = out.joint
    end = {"top1": M.topk_accuracy(joint, y_all, 1), "top5": M.topk_accuracy(joint, y_all, 5)}
    return per, end


def lattice_tables(out: ModelOutputs, test: pd.DataFrame) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-lattice parameter metrics given the true lattice, and the paper's Fig. 6 volume comparison."""
    per: dict[str, Any] = {}
    cells = test[list(CELL)].to_numpy(dtype=float)
    known = np.isfinite(cells).all(axis=1)
    for bravais in BRAVAIS_LATTICES:
        rows = (test["bravais"] == bravais).to_numpy() & known
        if rows.sum() < 2 or bravais not in out.params:
            continue
        truth = to_parameters(bravais, cells[rows])
        pred = out.params[bravais][rows]
        ok = np.isfinite(pred).all(axis=1)
        entry: dict[str, Any] = {"n": int(ok.sum())}
        for j, name in enumerate(PARAMETER_NAMES[bravais]):
            entry[name] = {
                "log_mse": M.log_mse(truth[ok, j], pred[ok, j]),
                "r2": M.r2_score(truth[ok, j], pred[ok, j]),
            }
        per[bravais] = entry
    # Fig. 6: volume from the predicted top-1 lattice's parameters
    top = np.argmax(out.p_lattice, axis=1)
    y = lattice_index(test["bravais"])
    v_true = np.array([conventional_volume(c) if np.isfinite(c).all() else np.nan for c in cells])
    v_pred = np.full(len(test), np.nan)
    for j, bravais in enumerate(BRAVAIS_LATTICES):
        rows = top == j
        if rows.any() and bravais in out.params:
            params = out.params[bravais][rows]
            v_pred[rows] = [
                conventional_volume(from_parameters(bravais, p)) if np.isfinite(p).all() else np.nan
                for p in params
            ]
    ok = np.isfinite(v_true) & np.isfinite(v_pred)
    right = ok & (top == y)
    wrong = ok & (top != y)
    volume: dict[str, Any] = {
        "cell_volume_r2_correct_lattice": M.r2_score(v_true[right], v_pred[right]),
        "cell_volume_r2_wrong_lattice": M.r2_score(v_true[wrong], v_pred[wrong]),
        "n_correct": int(right.sum()),
        "n_wrong": int(wrong.sum()),
    }
    if out.volume_per_atom is not None:
        vpa = test["volume_per_atom"].to_numpy(dtype=float)
        good = np.isfinite(vpa)
        volume["volume_per_atom_r2"] = M.r2_score(vpa[good], out.volume_per_atom[good])
        volume["volume_per_atom_mape"] = float(np.mean(np.abs(out.volume_per_atom[good] / vpa[good] - 1)))
    return per, volume


def calibration_table(out: ModelOutputs, y: np.ndarray, y_group: np.ndarray) -> dict[str, Any]:
    """Expected calibration error (15 bins, top-1 confidence) and reliability curves, Bravais and space group.

    ``y`` are lattice indices, ``y_group`` space groups minus one (columns of :attr:`ModelOutputs.joint`).
    """
    joint = out.joint
    return {
        "bravais_ece": expected_calibration_error(out.p_lattice, y),
        "space_group_ece": expected_calibration_error(joint, y_group),
        "bravais_curve": reliability_curve(out.p_lattice.max(axis=1), out.p_lattice.argmax(axis=1) == y),
        "space_group_curve": reliability_curve(joint.max(axis=1), joint.argmax(axis=1) == y_group),
    }


def model_scores(
    out: ModelOutputs, test: pd.DataFrame, train: pd.DataFrame, *, seed: int = 0
) -> dict[str, Any]:
    """One model's headline numbers on a test set: Bravais top-1/2, space group top-1/5 and per lattice,
    calibration."""
    y = lattice_index(test["bravais"])
    per, end = space_group_tables(out, test, train, seed=seed)
    return {
        "bravais": bravais_table(out, y),
        "space_group_given_lattice": {k: {"top1": v["top1"], "top3": v["top3"]} for k, v in per.items()},
        "space_group_end_to_end": end,
        "calibration": calibration_table(out, y, test["space_group"].to_numpy(dtype=int) - 1),
    }
