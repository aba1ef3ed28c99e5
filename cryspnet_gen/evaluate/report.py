"""The evaluation command's driver: score a bench-split bundle, its baselines and other bundles on the test sets."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryspnet_gen.evaluate.baselines import LightGBMBaseline, RandomForestBaseline
from cryspnet_gen.evaluate.outputs import ModelOutputs, predictor_outputs
from cryspnet_gen.evaluate.render import render_markdown, write_plots
from cryspnet_gen.evaluate.tables import (
    baseline_bravais,
    bravais_table,
    calibration_table,
    lattice_index,
    lattice_tables,
    model_scores,
    space_group_tables,
)

__all__ = ["TEST_SPLITS", "EvaluationReport", "evaluate"]

logger = logging.getLogger(__name__)

TEST_SPLITS = ("test_mpts52", "test_mp20")


@dataclass
class EvaluationReport:
    """Metrics (JSON-serialisable ``data``) and the Markdown report built from them."""

    data: dict[str, Any]
    markdown: str

    def write(self, out_dir: str | os.PathLike[str]) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(self.data, indent=2, default=float))
        (out / "evaluation.md").write_text(self.markdown)
        return out


def _train_baselines(
    frame: pd.DataFrame,
    X: np.ndarray,
    good: np.ndarray,
    *,
    random_forest: bool,
    lightgbm: bool,
    rf_trees: int,
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The baselines trained on the train rows (LightGBM stops early on the val rows), and their settings."""
    split = frame["split"].to_numpy()
    train = frame[(split == "train") & good]
    val = frame[(split == "val") & good]
    X_train, X_val = X[train.index.to_numpy()], X[val.index.to_numpy()]
    models: dict[str, Any] = {}
    info: dict[str, Any] = {}
    if random_forest:
        start = time.perf_counter()
        models["random_forest"] = RandomForestBaseline(n_estimators=rf_trees, seed=seed).fit(
            X_train, train["bravais"], train["space_group"]
        )
        info["random_forest"] = {"n_estimators": rf_trees, "train_seconds": time.perf_counter() - start}
        logger.info("RandomForest baseline trained in %.0f s", info["random_forest"]["train_seconds"])
    if lightgbm:
        start = time.perf_counter()
        gbm = LightGBMBaseline(seed=seed).fit(
            X_train, train["bravais"], train["space_group"], X_val, val["bravais"], val["space_group"]
        )
        models["lightgbm"] = gbm
        info["lightgbm"] = {
            "params": "LightGBM defaults (31 leaves, learning rate 0.1), early stopping on val (20 rounds)",
            "rounds": gbm.rounds,
            "train_seconds": time.perf_counter() - start,
        }
        logger.info("LightGBM baseline trained in %.0f s", info["lightgbm"]["train_seconds"])
    return models, info


def evaluate(
    predictor: Any,
    frame: pd.DataFrame,
    X: np.ndarray,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    random_forest: bool = True,
    rf_trees: int = 200,
    lightgbm: bool = True,
    compare: dict[str, Any] | None = None,
    ablation: dict[str, Any] | None = None,
    seed: int = 0,
) -> EvaluationReport:
    """Evaluate a bundle trained on the ``bench`` split.

    Parameters
    ----------
    predictor
        The model under test (a :class:`~cryspnet_gen.predict.Predictor`).
    frame, X
        The ``bench`` training frame (:func:`cryspnet_gen.data.training_frame`) and its feature matrix; ``train``
        rows fit the baselines (``val`` rows stop LightGBM early), test rows are scored.
    out_dir
        Where to write ``evaluation.md``, ``evaluation.json`` and the PNG plots (nothing written when None).
    random_forest, lightgbm
        Also train and score the RandomForest / plain LightGBM baseline.
    compare
        Optional ``{label: Predictor}`` of other bundles trained on the same split (other archs), scored side by
        side with the same tables.
    ablation
        Optional ``{label policy: Predictor}`` trained on other labels, scored on the same test sets.
    """
    good = np.isfinite(X).all(axis=1)
    train = frame[(frame["split"] == "train").to_numpy() & good]
    baselines, info = _train_baselines(
        frame, X, good, random_forest=random_forest, lightgbm=lightgbm, rf_trees=rf_trees, seed=seed
    )
    data: dict[str, Any] = {
        "model": {"name": predictor.name, "version": predictor.version, "arch": _arch(predictor)},
        "train_rows": len(train),
        "random_forest": info.get("random_forest"),
        "lightgbm": info.get("lightgbm"),
        "compare": {
            label: {"name": p.name, "version": p.version, "arch": _arch(p)}
            for label, p in (compare or {}).items()
        },
        "test_sets": {},
    }
    plots: dict[str, list[str]] = {}
    for split in TEST_SPLITS:
        rows = (frame["split"] == split).to_numpy() & good
        if not rows.any():
            continue
        test = frame[rows].reset_index(drop=True)
        Xt = X[rows]
        formulas = list(test["formula"])
        master = predictor_outputs(predictor, Xt, formulas=formulas)
        entry = _model_entry(predictor, master, test, train, Xt, seed=seed)
        curves = {"this bundle": entry["calibration"]}
        for key, model in baselines.items():
            entry[key] = model_scores(model.outputs(Xt), test, train, seed=seed)
            curves[key] = entry[key]["calibration"]
        for key, others in (("compare", compare), ("ablation", ablation)):
            if others:
                entry[key] = {
                    label: model_scores(
                        predictor_outputs(other, Xt, formulas=formulas), test, train, seed=seed
                    )
                    for label, other in others.items()
                }
        for label, scores in (entry.get("compare") or {}).items():
            curves[label] = scores["calibration"]
        data["test_sets"][split] = entry
        if out_dir is not None:
            plots[split] = write_plots(Path(out_dir), split, master, test, curves)
    report = EvaluationReport(data, render_markdown(data, plots))
    if out_dir is not None:
        report.write(out_dir)
    return report


def _model_entry(
    predictor: Any,
    master: ModelOutputs,
    test: pd.DataFrame,
    train: pd.DataFrame,
    Xt: np.ndarray,
    *,
    seed: int,
) -> dict[str, Any]:
    """The full tables of the model under test on one test set."""
    from cryspnet_gen.formula import subset_mask

    y = lattice_index(test["bravais"])
    entry: dict[str, Any] = {"n": len(test), "bravais": {"master": bravais_table(master, y)}}
    entry["bravais"].update(baseline_bravais(train["bravais"], y, seed=seed))
    for subset in ("metal", "oxide"):
        if subset not in predictor.bravais_models:
            continue
        mask = subset_mask(test["formula"], subset)
        if not mask.any():
            continue
        Xs = predictor.model_inputs(Xt[mask], list(test["formula"][mask]))
        sub = ModelOutputs(predictor.bravais_probabilities(Xs, model=subset)[0], {})
        entry["bravais"][subset] = {
            "n": int(mask.sum()),
            **bravais_table(sub, y[mask]),
            "master_same_rows": bravais_table(ModelOutputs(master.p_lattice[mask], {}), y[mask]),
        }
    per, end = space_group_tables(master, test, train, seed=seed)
    entry["space_group_given_lattice"] = per
    entry["space_group_end_to_end"] = end
    entry["calibration"] = calibration_table(master, y, test["space_group"].to_numpy(dtype=int) - 1)
    entry["lattice"], entry["volume"] = lattice_tables(master, test)
    return entry


def _arch(predictor: Any) -> str:
    """The classifier arch a bundle was trained with (``cryspnet-mlp`` for bundles from before archs)."""
    manifest = getattr(predictor, "manifest", None) or {}
    return str((manifest.get("train_config") or {}).get("arch") or "cryspnet-mlp")
