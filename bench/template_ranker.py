"""Ablation and cost of the learned template ranker (issue 18), on validation formulas only.

Usage (from the repository root, after ``cryspnet-gen templates train-ranker ... --out runs/ranker``)::

    python bench/template_ranker.py --labels runs/ranker                 # ablation by feature group
    python bench/template_ranker.py --labels runs/ranker --timing        # + ranking cost and LLZO k=3
    python bench/template_ranker.py --labels runs/ranker --families      # + logistic regression, small MLP
    python bench/template_ranker.py --no-ablation --merge runs/csp/mp20val-both-learned   # CRYSPNet offset

The labelled option tables cached by ``train-ranker`` in its ``--out`` folder are reused: for each feature group
a booster is trained without it (the same recipe: early stopping and Platt scaling on the last 10% of the
training formulas) and scored on the MP-20 / MPTS-52 validation formulas (match@k over the options, as the
train-ranker report counts it). ``--timing`` measures, warm, the time ``template_candidates`` spends ranking a
formula's options with and without the ranker (features + booster, without building structures) and
``generate_candidates("Li7La3Zr2O12", k=3)``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def _tables(folder: Path):
    from cryspnet_gen.csp.rankertrain import RankerData, subset

    def load(path: Path) -> RankerData:
        import numpy as np
        import pandas as pd

        formulas = json.loads(path.with_suffix(".formulas.json").read_text())
        data = RankerData.from_frame(pd.read_parquet(path))
        index = {f: i for i, f in enumerate(formulas)}
        data.query = np.asarray([index[f] for f in np.asarray(data.formulas)[data.query]], dtype=np.int64)
        data.formulas = formulas
        return data

    (train_path,) = sorted(folder.glob("labels-train-*.parquet"))
    train = load(train_path)
    cut = max(int(0.9 * len(train.formulas)), 1)
    fit, stop = subset(train, train.formulas[:cut]), subset(train, train.formulas[cut:])
    vals = {}
    for name in ("mp20_val", "mpts52_val"):
        found = sorted(folder.glob(f"labels-{name}-*.parquet"))
        if found:
            vals[name] = load(found[-1])
    return fit, stop, vals


def ablation(folder: Path, objective: str, seed: int) -> str:
    from cryspnet_gen.csp.rankertrain import KS, fit_ranker, hand_scores, match_at_k, score_options
    from cryspnet_gen.sources.templates.ranker import FEATURE_GROUPS, FEATURES

    fit, stop, vals = _tables(folder)
    rows = [("hand-weighted score", {n: match_at_k(d, hand_scores(d)) for n, d in vals.items()})]
    settings = [("learned, all features", FEATURES)]
    settings += [
        (f"without {label} (`--without {name}`)", [f for f in FEATURES if f not in cols])
        for name, (label, cols) in FEATURE_GROUPS.items()
    ]
    settings.append(("only the hand-weighted score and rank", FEATURE_GROUPS["hand"][1]))
    for label, features in settings:
        t0 = time.perf_counter()
        model = fit_ranker(fit, stop, objective=objective, features=features, seed=seed)
        rows.append((label, {n: match_at_k(d, score_options(model, d)) for n, d in vals.items()}))
        print(f"{label}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    lines = [
        f"Ablation ({objective}; {len(fit.formulas)} + {len(stop.formulas)} training formulas, "
        + ", ".join(f"{len(d.formulas)} {n}" for n, d in vals.items())
        + ")",
        "",
        "| ranking | " + " | ".join(f"{n} @{k}" for n in vals for k in KS) + " | objective |",
        "|---|" + "---:|" * (len(vals) * len(KS) + 1),
    ]
    for label, rates in rows:
        objective_value = statistics.mean((r[1] + r[20]) / 2 for r in rates.values())
        cells = [f"{100 * rates[n][k]:.1f}" for n in vals for k in KS]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {100 * objective_value:.1f} |")
    return "\n".join(lines) + "\n"


def families(folder: Path, seed: int) -> str:
    """Other model families on the same labels and features: logistic regression and a small network
    (scikit-learn MLP, two hidden layers), both on standardised features with missing values set to the
    training median, next to the two LightGBM objectives."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cryspnet_gen.csp.rankertrain import KS, fit_ranker, match_at_k, score_options

    fit, stop, vals = _tables(folder)
    median = np.nanmedian(fit.X, axis=0)
    median = np.where(np.isnan(median), 0.0, median)

    def filled(X: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(X), median[None, :], X)

    rows = []
    for objective in ("binary", "lambdarank"):
        t0 = time.perf_counter()
        model = fit_ranker(fit, stop, objective=objective, seed=seed)
        rows.append(
            (
                f"LightGBM {objective}",
                time.perf_counter() - t0,
                {n: match_at_k(d, score_options(model, d)) for n, d in vals.items()},
            )
        )
    sklearn_models = {
        "logistic regression": LogisticRegression(C=1.0, max_iter=2000),
        "MLP 64-32 (scikit-learn, early stopping)": MLPClassifier(
            hidden_layer_sizes=(64, 32), early_stopping=True, random_state=seed, max_iter=200
        ),
    }
    for label, estimator in sklearn_models.items():
        t0 = time.perf_counter()
        pipe = make_pipeline(StandardScaler(), estimator).fit(filled(fit.X), fit.y)
        rates = {n: match_at_k(d, pipe.predict_proba(filled(d.X))[:, 1]) for n, d in vals.items()}
        rows.append((label, time.perf_counter() - t0, rates))
        print(f"{label}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    lines = [
        "Model families (same labels and features)",
        "",
        "| model | " + " | ".join(f"{n} @{k}" for n in vals for k in KS) + " | fit (s) |",
        "|---|" + "---:|" * (len(vals) * len(KS) + 1),
    ]
    for label, seconds, rates in rows:
        cells = [f"{100 * rates[n][k]:.1f}" for n in vals for k in KS]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    return "\n".join(lines) + "\n"


def merge_offsets(run: Path, offsets: tuple[float, ...] = (1.0, 0.0, -0.5, -1.0, -2.0, -3.0, -100.0)) -> str:
    """Match@k of a ``bench/csp.py --source both`` run's lists re-merged with each offset added to the CRYSPNet
    candidates' saved scores, which already hold the run's own offset (so 0 reproduces the run; the 20 candidates
    of each formula re-ordered; -100 puts them after every template)."""

    def rows(pattern: str) -> list[dict]:  # one file, or one per shard
        return [
            json.loads(line) for path in sorted(run.glob(pattern)) for line in path.read_text().splitlines()
        ]

    results = {d["formula"]: d for d in rows("results*.jsonl")}
    lists = {d["formula"]: d["candidates"] for d in rows("candidates*.jsonl")}
    lines = [
        f"CRYSPNet offset added to the saved scores, re-merged lists of {run} ({len(results)} formulas)",
        "",
        "| offset | k=1 | k=5 | k=20 | formulas with a CRYSPNet structure first |",
        "|---:|---:|---:|---:|---:|",
    ]
    for offset in offsets:
        hits, first = {1: 0, 5: 0, 20: 0}, 0
        for formula, result in results.items():
            cands = lists.get(formula, [])
            rows = result["candidates"]
            if len(rows) != len(cands):
                raise SystemExit(f"{run}: {formula} has {len(rows)} results but {len(cands)} candidates")
            order = sorted(
                zip(cands, rows, strict=True),
                key=lambda cr: (
                    -(
                        (-1e9 if cr[0]["score"] is None else cr[0]["score"])  # unscored: a list of one source
                        + (offset if cr[0]["source"] == "cryspnet" else 0.0)
                    )
                ),
            )
            first += bool(order) and order[0][0]["source"] == "cryspnet"
            for k in hits:
                hits[k] += any(r.get("rms") is not None and r.get("valid") for _, r in order[:k])
        n = max(len(results), 1)
        lines.append(
            f"| {offset:+g} | {100 * hits[1] / n:.0f} | {100 * hits[5] / n:.0f} | {100 * hits[20] / n:.0f} | {first} |"
        )
    return "\n".join(lines) + "\n"


def timing(model_dir: str | None, templates: str) -> str:
    import warnings

    from cryspnet_gen.formula import formula_unit
    from cryspnet_gen.generate import generate_candidates
    from cryspnet_gen.predict import predict_all_pairs, predictor_for
    from cryspnet_gen.sources.templates import load_store
    from cryspnet_gen.sources.templates.ranker import rerank_options
    from cryspnet_gen.sources.templates.scoring import TemplateScoring, pair_probabilities, rank_options

    warnings.simplefilter("ignore")
    predictor = predictor_for(model_dir)
    ranker = predictor.template_ranker
    if ranker is None:
        return f"{predictor.name} has no template ranker: no timing\n"
    store = load_store(templates)
    formulas = [
        "Li7La3Zr2O12",
        "SrTiO3",
        "NaCl",
        "LiFePO4",
        "BaTiO3",
        "Mg2SiO4",
        "CaF2",
        "ZnO",
        "GaAs",
        "KBr",
    ]
    preds = predict_all_pairs(predictor, formulas)
    hand, learned = [], []
    for _ in range(3):
        for f, pred in zip(formulas, preds, strict=True):
            target = formula_unit(f, 400).amounts
            probs, _, _ = pair_probabilities(pred)
            t0 = time.perf_counter()
            options = rank_options(store, target, probs, TemplateScoring())
            t1 = time.perf_counter()
            rerank_options(store, target, options, pred, ranker)
            t2 = time.perf_counter()
            hand.append(t1 - t0)
            learned.append(t2 - t1)
    generate_candidates("Li7La3Zr2O12", k=3, predictor=predictor, templates=store)  # warm-up
    llzo = []
    for _ in range(3):
        t0 = time.perf_counter()
        generate_candidates("Li7La3Zr2O12", k=3, predictor=predictor, templates=store)
        llzo.append(time.perf_counter() - t0)
    return (
        f"ranking, warm, {len(formulas)} formulas x 3: hand-weighted options median "
        f"{1000 * statistics.median(hand):.1f} ms; re-ranking by the learned ranker (features + booster) median "
        f"{1000 * statistics.median(learned):.1f} ms, max {1000 * max(learned):.1f} ms\n"
        f"generate_candidates('Li7La3Zr2O12', k=3), warm: " + ", ".join(f"{t:.2f}" for t in llzo) + " s\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labels", type=Path, default=Path("runs/ranker"), help="train-ranker --out folder")
    parser.add_argument("--objective", choices=("binary", "lambdarank"), default="binary")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--families", action="store_true", help="also compare logistic regression and an MLP")
    parser.add_argument(
        "--merge",
        type=Path,
        default=None,
        help="a bench/csp.py --source both output folder: CRYSPNet offsets",
    )
    parser.add_argument("--timing", action="store_true", help="also time the ranking and LLZO k=3")
    parser.add_argument("--model", default=None, help="bundle with a ranker for --timing (default: shipped)")
    parser.add_argument("--templates", default="models/prototypes-mp-v1", help="store for --timing")
    args = parser.parse_args(argv)
    if not args.no_ablation:
        print(ablation(args.labels, args.objective, args.seed))
    if args.merge is not None:
        print(merge_offsets(args.merge))
    if args.families:
        print(families(args.labels, args.seed))
    if args.timing:
        print(timing(args.model, args.templates))


if __name__ == "__main__":
    main()
