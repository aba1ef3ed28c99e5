"""Validation-only experiments around the version-2 Bravais model (issue 17; docs/evaluation.md, "What was tried").

Each variant prints Bravais top-1 / top-2 on the ``bench`` split's validation rows; no test row is read.

- ``neighbours``: LightGBM (lr 0.1, 127 leaves) on the 243 statistics, then the same with neighbour-label
  features added: the distance-weighted Bravais histograms of the 1, 4 and 16 nearest training compositions
  (Euclidean distance between element-fraction vectors; a training row never counts itself) and three distances.
- ``fractions``: the same booster with the element fractions themselves as extra features.
- ``rf-blend``: the bench bundle's calibrated probabilities blended with a RandomForest (200 trees, the
  evaluation baseline), the RF temperature and blend weight fitted on one random half of the validation rows and
  scored on the other, both ways.
- ``attention-blend``: the same with the element-attention network's validation probabilities
  (``python bench/composition_attention.py --save FILE``) in place of the forest.

Usage::

    python bench/symmetry_variants.py neighbours|fractions|rf-blend|attention-blend [--model models/cryspnet-bench]
        [--attention-probs FILE] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from cryspnet_gen.calibration import apply_temperature, fit_temperature
from cryspnet_gen.formula import element_encoding
from cryspnet_gen.symmetry import BRAVAIS_LATTICES

N_NEIGHBOURS = 16


def _top(p: np.ndarray, y: np.ndarray) -> str:
    order = np.argsort(-p, axis=1)
    return f"top-1 {100 * (order[:, 0] == y).mean():.1f} / top-2 {100 * (order[:, :2] == y[:, None]).any(1).mean():.1f}"


def element_fractions(formulas: list[str]) -> np.ndarray:
    """Atomic fraction of each element (column = atomic number) per formula, ``(n, 104)``."""
    enc = element_encoding(formulas, max_elements=12)
    out = np.zeros((len(formulas), 104), dtype=np.float32)
    rows = np.repeat(np.arange(len(formulas)), 12)
    np.add.at(out, (rows, enc[:, :12].astype(int).ravel()), enc[:, 12:].ravel())
    out[:, 0] = 0.0  # padding
    return out


def nearest_compositions(
    queries: np.ndarray, pool: np.ndarray, *, self_rows: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Distances and pool indices of each query's nearest pool rows (query ``i`` is pool row ``i`` when
    ``self_rows``, and never its own neighbour)."""
    norms = (pool * pool).sum(1)
    dist = np.empty((len(queries), N_NEIGHBOURS), dtype=np.float32)
    index = np.empty((len(queries), N_NEIGHBOURS), dtype=np.int64)
    for s in range(0, len(queries), 2048):
        q = queries[s : s + 2048]
        d = (q * q).sum(1)[:, None] + norms[None, :] - 2 * q @ pool.T
        if self_rows:
            d[np.arange(len(q)), np.arange(s, s + len(q))] = np.inf
        part = np.argpartition(d, N_NEIGHBOURS, axis=1)[:, :N_NEIGHBOURS]
        dd = np.take_along_axis(d, part, 1)
        order = np.argsort(dd, 1)
        index[s : s + len(q)] = np.take_along_axis(part, order, 1)
        dist[s : s + len(q)] = np.sqrt(np.maximum(np.take_along_axis(dd, order, 1), 0.0))
    return dist, index


def _neighbour_features(dist: np.ndarray, index: np.ndarray, labels: np.ndarray) -> np.ndarray:
    blocks = []
    for k in (1, 4, N_NEIGHBOURS):
        weight = 1.0 / (dist[:, :k] + 0.02)
        hist = np.zeros((len(dist), len(BRAVAIS_LATTICES)), dtype=np.float32)
        for j in range(k):
            np.add.at(hist, (np.arange(len(dist)), labels[index[:, j]]), weight[:, j])
        blocks.append(hist / weight.sum(1, keepdims=True))
    blocks.append(dist[:, [0, 3, N_NEIGHBOURS - 1]])
    return np.hstack(blocks)


def _booster(threads: int) -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str], None]:
    import lightgbm as lgb

    params = {
        "objective": "multiclass",
        "num_class": len(BRAVAIS_LATTICES),
        "learning_rate": 0.1,
        "num_leaves": 127,
        "min_data_in_leaf": 5,
        "feature_fraction": 0.5,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_bin": 127,
        "num_threads": threads,
        "seed": 0,
        "verbose": -1,
        "force_row_wise": True,
    }

    def run(Xtr: np.ndarray, ytr: np.ndarray, Xva: np.ndarray, yva: np.ndarray, label: str) -> None:
        start = time.perf_counter()
        dtrain = lgb.Dataset(Xtr, ytr)
        booster = lgb.train(
            params,
            dtrain,
            1000,
            valid_sets=[lgb.Dataset(Xva, yva, reference=dtrain)],
            callbacks=[lgb.early_stopping(30, verbose=False)],
        )
        p = booster.predict(Xva, num_iteration=booster.best_iteration)
        print(
            f"{label}: {_top(p, yva)} ({booster.best_iteration} rounds, {time.perf_counter() - start:.0f} s)"
        )

    return run


def _blend(p_model: np.ndarray, p_other: np.ndarray, y: np.ndarray, name: str) -> None:
    """Temperature of ``p_other`` and blend weight fitted on one half, scored on the other, both ways."""
    half = np.random.default_rng(0).random(len(y)) < 0.5
    for fit, score in ((half, ~half), (~half, half)):
        other = apply_temperature(p_other, fit_temperature(p_other[fit], y[fit]))

        def nll(w: float, fit: np.ndarray = fit, other: np.ndarray = other) -> float:
            mixed = (1 - w) * p_model[fit] + w * other[fit]
            return float(-np.log(np.clip(mixed[np.arange(fit.sum()), y[fit]], 1e-12, None)).mean())

        w = min(np.linspace(0, 1, 21), key=nll)
        print(
            f"half of {int(score.sum())} rows: bundle alone {_top(p_model[score], y[score])}; with {name} weight "
            f"{w:.2f}: {_top((1 - w) * p_model[score] + w * other[score], y[score])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", choices=("neighbours", "fractions", "rf-blend", "attention-blend"))
    parser.add_argument("--model", default="models/cryspnet-bench")
    parser.add_argument("--attention-probs", help="the .npz of bench/composition_attention.py --save")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.variant == "attention-blend" and not args.attention_probs:
        parser.error(
            "attention-blend needs --attention-probs FILE (bench/composition_attention.py --save FILE)"
        )
    from cryspnet_gen.train import frame_and_features

    frame, X = frame_and_features("bench", progress=False)
    index = {b: i for i, b in enumerate(BRAVAIS_LATTICES)}
    y = np.asarray([index.get(b, -1) for b in frame["bravais"]])
    split = frame["split"].to_numpy()
    good = np.isfinite(X).all(axis=1) & (y >= 0)
    tr, va = np.flatnonzero((split == "train") & good), np.flatnonzero((split == "val") & good)
    formulas = frame["formula"].tolist()
    print(f"{len(tr)} training / {len(va)} validation rows")

    if args.variant in ("neighbours", "fractions"):
        run = _booster(args.threads)
        run(X[tr], y[tr], X[va], y[va], "statistics alone")
        fractions = element_fractions(formulas)
        if args.variant == "fractions":
            used = fractions[tr].sum(0) > 0
            extra = fractions[:, used]
            run(
                np.hstack([X[tr], extra[tr]]),
                y[tr],
                np.hstack([X[va], extra[va]]),
                y[va],
                f"+ {used.sum()} fractions",
            )
            return
        d_tr, i_tr = nearest_compositions(fractions[tr], fractions[tr], self_rows=True)
        d_va, i_va = nearest_compositions(fractions[va], fractions[tr], self_rows=False)
        f_tr, f_va = _neighbour_features(d_tr, i_tr, y[tr]), _neighbour_features(d_va, i_va, y[tr])
        vote = f_va[:, 2 * len(BRAVAIS_LATTICES) : 3 * len(BRAVAIS_LATTICES)]
        print(f"{N_NEIGHBOURS}-neighbour vote alone: {_top(vote, y[va])}")
        run(np.hstack([X[tr], f_tr]), y[tr], np.hstack([X[va], f_va]), y[va], "+ neighbour-label features")
        return

    from cryspnet_gen.predict import load_predictor

    predictor = load_predictor(path=args.model)
    p_model = predictor.bravais_probabilities(predictor.model_inputs(X[va], [formulas[i] for i in va]))[0]
    if args.variant == "rf-blend":
        from sklearn.ensemble import RandomForestClassifier

        forest = RandomForestClassifier(n_estimators=200, random_state=0, n_jobs=args.threads)
        forest.fit(np.nan_to_num(X[tr]), y[tr])
        p_other = np.zeros_like(p_model)
        p_other[:, forest.classes_] = forest.predict_proba(np.nan_to_num(X[va]))
        name = "RandomForest"
    else:
        saved = np.load(args.attention_probs)
        position = {int(r): i for i, r in enumerate(saved["rows"])}
        keep = np.asarray([int(r) in position for r in va])
        va, p_model = va[keep], p_model[keep]
        p_other = saved["p"][[position[int(r)] for r in va]]
        name = "element attention"
    print(f"bundle {_top(p_model, y[va])}, {name} {_top(p_other, y[va])}")
    _blend(p_model, p_other, y[va], name)


if __name__ == "__main__":
    main()
