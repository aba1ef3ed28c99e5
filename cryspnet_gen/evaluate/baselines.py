"""Baselines trained in the evaluation command on the same features and split: RandomForest and LightGBM.

Both predict the Bravais lattice (one classifier) and the space group given each lattice (one classifier per
lattice, trained on that lattice's rows), and return :class:`~cryspnet_gen.evaluate.outputs.ModelOutputs` like
the model under test, so every table scores them the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cryspnet_gen.evaluate.outputs import ModelOutputs
from cryspnet_gen.symmetry import BRAVAIS_LATTICES, space_groups_of

__all__ = ["LightGBMBaseline", "RandomForestBaseline"]

logger = logging.getLogger(__name__)


class RandomForestBaseline:
    """Bravais lattice and per-lattice space-group RandomForests on the same features and split."""

    def __init__(self, *, n_estimators: int = 200, seed: int = 0, n_jobs: int | None = None) -> None:
        self.n_estimators = n_estimators
        self.seed = seed
        self.n_jobs = n_jobs or os.cpu_count() or 1
        self.bravais: Any = None
        self.space_group: dict[str, Any] = {}

    def _forest(self) -> Any:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=self.n_estimators, random_state=self.seed, n_jobs=self.n_jobs
        )

    def fit(self, X: np.ndarray, bravais: Sequence[str], space_group: Sequence[int]) -> RandomForestBaseline:
        X = np.nan_to_num(np.asarray(X, dtype=np.float32))
        lattices = np.asarray(bravais)
        groups = np.asarray(space_group)
        self.bravais = self._forest().fit(X, lattices)
        for lattice in BRAVAIS_LATTICES:
            rows = lattices == lattice
            if rows.any():
                self.space_group[lattice] = self._forest().fit(X[rows], groups[rows])
        return self

    def outputs(self, X: np.ndarray) -> ModelOutputs:
        X = np.nan_to_num(np.asarray(X, dtype=np.float32))
        sg = {lat: (f.predict_proba(X), [int(g) for g in f.classes_]) for lat, f in self.space_group.items()}
        return assemble_outputs(len(X), self.bravais.predict_proba(X), list(self.bravais.classes_), sg)


class LightGBMBaseline:
    """Plain LightGBM classifiers (the library's default parameters), stopping early on the validation rows.

    This is the model a user would get from LightGBM without tuning: 31 leaves, learning rate 0.1, no bagging or
    feature sampling; boosting stops after ``early_stopping`` rounds without a better validation log-loss. The
    space-group booster of a lattice stops on that lattice's validation rows (a tenth of its training rows when
    it has fewer than ``min_val_rows``). Deterministic for a seed.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        n_jobs: int | None = None,
        max_rounds: int = 2000,
        early_stopping: int = 20,
        min_val_rows: int = 30,
    ) -> None:
        self.seed = seed
        self.n_jobs = n_jobs or os.cpu_count() or 1
        self.max_rounds = max_rounds
        self.early_stopping = early_stopping
        self.min_val_rows = min_val_rows
        self.bravais: Any = None
        self.space_group: dict[str, tuple[Any, list[int]]] = {}
        self.rounds: dict[str, int] = {}

    def _params(self, n_classes: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "objective": "multiclass" if n_classes > 2 else "binary",
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.n_jobs,
            "verbose": -1,
        }
        if n_classes > 2:
            params["num_class"] = n_classes
        return params

    def _booster(self, X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, n_classes: int) -> Any:
        import lightgbm as lgb

        if len(yv) < self.min_val_rows:  # too few validation rows: hold out a tenth of the training rows
            order = np.random.default_rng(self.seed).permutation(len(y))
            hold = order[: max(len(y) // 10, 1)]
            keep = np.setdiff1d(np.arange(len(y)), hold)
            X, y, Xv, yv = X[keep], y[keep], X[hold], y[hold]
        dtrain = lgb.Dataset(X, y, free_raw_data=True)
        booster = lgb.train(
            self._params(n_classes),
            dtrain,
            num_boost_round=self.max_rounds,
            valid_sets=[lgb.Dataset(Xv, yv, reference=dtrain)],
            callbacks=[lgb.early_stopping(self.early_stopping, verbose=False)],
        )
        return booster

    def fit(
        self,
        X: np.ndarray,
        bravais: Sequence[str],
        space_group: Sequence[int],
        X_val: np.ndarray,
        bravais_val: Sequence[str],
        space_group_val: Sequence[int],
    ) -> LightGBMBaseline:
        X = np.asarray(X, dtype=np.float32)
        X_val = np.asarray(X_val, dtype=np.float32)
        lattices, lattices_val = np.asarray(bravais), np.asarray(bravais_val)
        groups, groups_val = np.asarray(space_group, dtype=int), np.asarray(space_group_val, dtype=int)
        index = {b: i for i, b in enumerate(BRAVAIS_LATTICES)}
        y = np.array([index[b] for b in lattices])
        yv = np.array([index[b] for b in lattices_val])
        self.bravais = self._booster(X, y, X_val, yv, len(BRAVAIS_LATTICES))
        self.rounds["bravais"] = int(self.bravais.best_iteration or self.bravais.current_iteration())
        for lattice in BRAVAIS_LATTICES:
            rows = lattices == lattice
            classes = sorted(set(groups[rows].tolist()))
            if len(classes) < 2:
                if classes:
                    self.space_group[lattice] = (None, classes)
                continue
            code = {g: i for i, g in enumerate(classes)}
            vrows = (lattices_val == lattice) & np.isin(groups_val, classes)
            booster = self._booster(
                X[rows],
                np.array([code[g] for g in groups[rows]]),
                X_val[vrows],
                np.array([code[g] for g in groups_val[vrows]]),
                len(classes),
            )
            self.space_group[lattice] = (booster, classes)
            self.rounds[lattice] = int(booster.best_iteration or booster.current_iteration())
        return self

    def _proba(self, booster: Any, X: np.ndarray, n_classes: int) -> np.ndarray:
        out = np.asarray(booster.predict(X, num_iteration=booster.best_iteration or None), dtype=np.float64)
        if n_classes == 2 and out.ndim == 1:
            out = np.stack([1.0 - out, out], axis=1)
        return out.reshape(len(X), n_classes)

    def outputs(self, X: np.ndarray) -> ModelOutputs:
        X = np.asarray(X, dtype=np.float32)
        sg = {}
        for lattice, (booster, classes) in self.space_group.items():
            proba = np.ones((len(X), 1)) if booster is None else self._proba(booster, X, len(classes))
            sg[lattice] = (proba, classes)
        p = self._proba(self.bravais, X, len(BRAVAIS_LATTICES))
        return assemble_outputs(len(X), p, list(BRAVAIS_LATTICES), sg)


def assemble_outputs(
    n: int,
    bravais_proba: np.ndarray,
    bravais_classes: Sequence[str],
    space_group: dict[str, tuple[np.ndarray, list[int]]],
) -> ModelOutputs:
    """:class:`ModelOutputs` from per-classifier probabilities over the classes each classifier saw.

    A lattice without a space-group classifier gets uniform P(group | lattice) over its groups.
    """
    p = np.zeros((n, len(BRAVAIS_LATTICES)))
    for j, cls in enumerate(bravais_classes):
        p[:, BRAVAIS_LATTICES.index(cls)] = bravais_proba[:, j]
    conditional = {}
    for lattice in BRAVAIS_LATTICES:
        groups = list(space_groups_of(lattice))
        cond = np.full((n, len(groups)), 1.0 / len(groups))
        if lattice in space_group:
            proba, classes = space_group[lattice]
            cond[:] = 0.0
            for j, g in enumerate(classes):
                cond[:, groups.index(int(g))] = proba[:, j]
        conditional[lattice] = (groups, cond)
    return ModelOutputs(p, conditional)
