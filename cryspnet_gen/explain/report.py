"""The interpretability report of a bundle: importance, which representation finds similar structures, a map.

:func:`interpret` needs only the bundle and a prototype library (and, for a ``bench`` bundle, the data folder
for the test formulas): the known compounds are the library's ground states, split as the bundle's training
split was (the validation draw is a hash of the formula, :func:`cryspnet_gen.data.assign_splits`), so the
validation compounds are ones the bundle did not train on. Disjoint validation samples serve the permutation
importance and the neighbour check (which representation finds the query's structure type among the training
compounds); the map shows training compounds in the ``combined`` representation.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryspnet_gen.explain.importance import ImportanceReport, model_importance
from cryspnet_gen.explain.materialmap import MaterialMap, material_map
from cryspnet_gen.explain.neighbours import ground_states, nearest
from cryspnet_gen.explain.representation import Representation, importance_weights, prediction_space

__all__ = [
    "InterpretReport",
    "importance_on",
    "interpret",
    "labelled_known",
    "neighbour_agreement",
    "representation_points",
    "save_weights",
    "split_known",
    "weights_entry",
]

logger = logging.getLogger(__name__)


def labelled_known(
    predictor: Any, library: Any, data_dir: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """The library's ground states with ``volume_per_atom`` and the bundle's ``split`` (train / val / test)."""
    from cryspnet_gen.data import formula_splits

    table = ground_states(library.all_rows)
    vpa = library.all_rows.set_index("template_id")["volume_per_atom"]
    table["volume_per_atom"] = vpa.reindex(table["material_id"]).to_numpy(dtype=float)
    split = str(predictor.manifest.get("split", "full"))
    split = split if split in ("bench", "full") else "full"
    table["split"] = table["formula"].map(formula_splits(table["formula"], split, data_dir=data_dir))  # type: ignore[arg-type]
    return table


def neighbour_agreement(
    known: pd.DataFrame, known_points: np.ndarray, queries: pd.DataFrame, query_points: np.ndarray, n: int = 5
) -> dict[str, float]:
    """How often the nearest known compound shares the query's lattice, group and structure type, and how often
    the type is among the ``n`` nearest (%)."""
    start = time.perf_counter()
    idx, _ = nearest(known_points, query_points, n)
    seconds = time.perf_counter() - start
    out = {}
    for column, name in (("bravais", "lattice"), ("space_group", "group"), ("type", "type")):
        mine = queries[column].to_numpy()[:, None]
        theirs = known[column].to_numpy()[idx]
        out[f"nearest same {name}"] = 100 * float((theirs[:, 0] == mine[:, 0]).mean())
    out[f"type among {n} nearest"] = 100 * float(
        (known["type"].to_numpy()[idx] == queries["type"].to_numpy()[:, None]).any(axis=1).mean()
    )
    out["ms per query"] = 1000 * seconds / max(len(queries), 1)
    return out


def split_known(
    known: pd.DataFrame, rows: int, queries: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(train, importance sample, neighbour queries)``: the training compounds and two disjoint seeded samples
    of the validation compounds."""
    val = known[known["split"] == "val"].sample(frac=1.0, random_state=seed).reset_index(drop=True)
    train = known[known["split"] == "train"].reset_index(drop=True)
    return train, val.head(rows), val.iloc[rows : rows + queries].reset_index(drop=True)


def importance_on(
    predictor: Any,
    sample: pd.DataFrame,
    *,
    repeats: int,
    seed: int,
    outputs: tuple[str, ...] = ("bravais", "space_group", "volume"),
) -> ImportanceReport:
    """:func:`~cryspnet_gen.explain.importance.model_importance` on labelled known compounds."""
    from cryspnet_gen.featurize import featurize

    return model_importance(
        predictor,
        featurize(list(sample["formula"])).matrix,
        sample["bravais"],
        sample["space_group"],
        sample["volume_per_atom"],
        n_rows=len(sample),
        n_repeats=repeats,
        seed=seed,
        outputs=outputs,
    )


def weights_entry(importance: ImportanceReport) -> dict[str, Any]:
    """The manifest entry ``feature_weights``: summed Bravais and space-group importance per feature."""
    total = pd.Series(0.0, index=list(importance.features[next(iter(importance.features))].index))
    for output in ("bravais", "space_group"):
        if output in importance.features:
            total = total.add(importance.features[output]["importance"].clip(lower=0), fill_value=0.0)
    return {
        "weights": {str(k): round(float(v), 8) for k, v in total.items()},
        "method": "permutation importance (mean log-likelihood drop), Bravais + space group given lattice",
        "rows": {k: int(v) for k, v in importance.rows.items()},
        **importance.settings,
    }


@dataclass
class InterpretReport:
    """What :func:`interpret` measured, and the files it wrote."""

    model: dict[str, Any]
    importance: ImportanceReport
    neighbours: pd.DataFrame
    material_map: MaterialMap | None
    timings: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "importance": self.importance.to_dict(),
            "neighbours": self.neighbours.to_dict(orient="records"),
            "timings_s": self.timings,
        }
        if self.material_map is not None:
            out["material_map"] = {
                "settings": self.material_map.settings,
                "clusters": self.material_map.clusters.drop(columns=["x", "y"]).to_dict(orient="records"),
            }
        return out


def interpret(
    predictor: Any,
    library: Any,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    rows: int = 1000,
    repeats: int = 3,
    queries: int = 2000,
    map_sample: int = 20000,
    seed: int = 0,
) -> InterpretReport:
    """Permutation importance, the neighbour check of each representation and the material map of a bundle.

    Parameters
    ----------
    predictor, library
        The bundle and the prototype library (known compounds).
    out_dir
        Where to write ``interpretability.md``, ``interpretability.json`` and the figures (nothing when None).
    rows, repeats
        Validation compounds and shuffles per feature of the permutation importance.
    queries
        Other validation compounds for the neighbour check (0: skip it).
    map_sample
        Training compounds on the map (0: no map).
    """
    from cryspnet_gen.featurize import featurize

    timings: dict[str, float] = {}
    train, sample, query = split_known(labelled_known(predictor, library, data_dir), rows, queries, seed)
    start = time.perf_counter()
    importance = importance_on(predictor, sample, repeats=repeats, seed=seed)
    timings["importance"] = time.perf_counter() - start
    weights = weights_entry(importance)
    fresh = importance_weights(weights["weights"], list(predictor.feature_labels))
    start = time.perf_counter()
    X_train = featurize(list(train["formula"])).matrix
    train_points, combined = representation_points(predictor, X_train, fresh, fit=None)
    timings["embedding"] = time.perf_counter() - start
    table = []
    if len(query):
        query_points, _ = representation_points(
            predictor, featurize(list(query["formula"])).matrix, fresh, fit=combined
        )
        for name, points in train_points.items():
            table.append(
                {"representation": name, **neighbour_agreement(train, points, query, query_points[name])}
            )

    the_map = None
    if map_sample:
        start = time.perf_counter()
        the_map = material_map(
            train, train_points["combined"], sample=map_sample, seed=seed, representation="combined"
        )
        timings["map"] = time.perf_counter() - start
    model = {
        "name": predictor.name,
        "version": predictor.version,
        "split": str(predictor.manifest.get("split", "full")),
        "train": len(train),
        "importance_rows": len(sample),
        "queries": len(query),
        "feature_weights": weights,
    }
    report = InterpretReport(model, importance, pd.DataFrame(table), the_map, timings)
    if out_dir is not None:
        from cryspnet_gen.explain.render import write_report

        report.files = write_report(report, Path(out_dir))
    return report


def representation_points(
    predictor: Any, X: np.ndarray, weights: np.ndarray, *, fit: Representation | None
) -> tuple[dict[str, np.ndarray], Representation]:
    """Every representation's points of ``X`` (the predictions computed once); the combined representation,
    fitted on these rows unless ``fit`` (one fitted on the known compounds) is given."""
    weighted = Representation.of(predictor, "features").with_weights(weights)
    combined = fit or Representation.of(predictor, "combined").with_weights(weights)
    chem, pred = weighted.chemistry(X), prediction_space(predictor, X)
    points = {
        "features": Representation.of(predictor, "features").embed(X),
        "hidden": Representation.of(predictor, "hidden").embed(X),
        "weighted": chem.astype(np.float32),
        "predictions": pred.astype(np.float32),
        "combined": combined.join(chem, pred, fit=fit is None),
    }
    return points, combined


def save_weights(bundle_dir: str | os.PathLike[str], entry: dict[str, Any]) -> Path:
    """Write ``feature_weights`` into a bundle's manifest, for the ``weighted`` representation."""
    from cryspnet_gen.bundle import update_manifest

    return update_manifest(bundle_dir, "feature_weights", entry)
