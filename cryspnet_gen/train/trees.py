"""Gradient-boosted tree classifiers (LightGBM) for the Bravais and space-group tasks.

:func:`fit_tree_classifier` trains one multiclass booster with early stopping on the validation rows and
returns it as LightGBM's text model (what a bundle stores; see :mod:`cryspnet_gen.trees`). Training is
deterministic for a seed (``deterministic=True``, row-wise histograms, fixed thread count).
"""

from __future__ import annotations

import logging
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from cryspnet_gen.trees import compact_model_text

if TYPE_CHECKING:
    from cryspnet_gen.train.config import TrainConfig

__all__ = ["fit_tree_classifier", "tree_params"]

logger = logging.getLogger(__name__)


def tree_params(config: TrainConfig, n_classes: int, seed: int) -> dict[str, Any]:
    """LightGBM parameters of a ``n_classes`` classifier from ``config``'s ``tree_*`` fields."""
    params: dict[str, Any] = {
        "objective": "multiclass" if n_classes > 2 else "binary",
        "learning_rate": config.tree_learning_rate,
        "num_leaves": config.tree_num_leaves,
        "min_data_in_leaf": config.tree_min_data_in_leaf,
        "feature_fraction": config.tree_feature_fraction,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": config.tree_lambda_l2,
        "max_bin": config.tree_max_bin,
        "num_threads": config.tree_threads,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
    }
    if n_classes > 2:
        params["num_class"] = n_classes
    return params


def fit_tree_classifier(
    X: np.ndarray,
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    n_classes: int,
    config: TrainConfig,
    *,
    key: tuple[str, ...],
) -> tuple[str, dict[str, Any]]:
    """Train one booster on ``X[train_idx]``, stopping early on ``X[val_idx]``.

    Parameters
    ----------
    X
        All features ``(n, F)``.
    y
        Class index of every row (only the train/val rows are read).
    train_idx, val_idx
        Training rows and validation rows (early stopping; with fewer than ``config.min_val_rows`` the
        booster trains ``config.tree_max_rounds`` rounds... capped by the rounds a held-out tenth of the
        training rows picks).
    n_classes
        Number of classes (>= 2).
    config
        Hyperparameters (``tree_*`` fields, ``seed``, ``min_val_rows``).
    key
        Task keys mixed into the seed, e.g. ``("bravais", "master")``.

    Returns
    -------
    tuple
        ``(text, fields)``: the model in LightGBM's text format and its manifest fields.
    """
    import lightgbm as lgb

    seed = (int(config.seed) * 1_000_003 + zlib.crc32("/".join(key).encode())) % (2**31 - 1)
    params = tree_params(config, n_classes, seed)
    tr = np.asarray(train_idx)
    va = np.asarray(val_idx)
    stop_set = "val"
    if len(va) < config.min_val_rows:
        rng = np.random.default_rng(seed)
        shuffled = rng.permutation(tr)
        n_hold = max(len(tr) // 10, 1)
        va, tr = np.sort(shuffled[:n_hold]), np.sort(shuffled[n_hold:])
        stop_set = "train-holdout"
    dtrain = lgb.Dataset(X[tr], y[tr], free_raw_data=True, params={"max_bin": params["max_bin"]})
    dval = lgb.Dataset(X[va], y[va], reference=dtrain)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=config.tree_max_rounds,
        valid_sets=[dval],
        callbacks=[lgb.early_stopping(config.tree_early_stopping, verbose=False)],
    )
    best = int(booster.best_iteration or booster.current_iteration())
    text = compact_model_text(booster.model_to_string(num_iteration=best))
    score = booster.best_score.get("valid_0", {})
    fields = {
        "n_train": len(tr),
        "best_iteration": best,
        "stop_set": stop_set,
        "stop_loss": float(next(iter(score.values()))) if score else None,
        "params": {k: v for k, v in params.items() if k not in ("verbose",)},
    }
    logger.info("%s: %d boosting rounds (stopping loss %s)", "/".join(key), best, fields["stop_loss"])
    return text, fields
