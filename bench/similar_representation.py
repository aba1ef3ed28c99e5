"""Which representation puts compounds of the same structure next to each other (chosen on validation).

For a bundle (default the ``bench`` one): the known compounds are the ground states (lowest energy above hull per
formula) of the shipped prototype library's ``train`` formulas of the bundle's split; the queries are validation
formulas of that split. Permutation importance (Bravais + space group) is measured on other validation formulas
and gives the ``weighted`` representation its weights. For every representation of
:mod:`cryspnet_gen.explain.representation`, and for the ``combined`` one with several weights ``alpha`` of its
prediction block, it prints how often the nearest known compound has the query's lattice, space group and
structure type (anonymous formula + space group + Wyckoff letters), and how often the type is among the five
nearest. The choice (docs/interpretability.md): the best mean of "nearest same type" and "type among 5 nearest".

Usage::

    python bench/similar_representation.py [--model models/cryspnet-bench] [--queries 2000] [--importance-rows 600]
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="models/cryspnet-bench")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--importance-rows", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--alpha", type=float, nargs="*", default=[0.5, 1.0, 2.0], help="prediction-block weights"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from cryspnet_gen.explain.report import (
        importance_on,
        labelled_known,
        neighbour_agreement,
        representation_points,
        split_known,
        weights_entry,
    )
    from cryspnet_gen.explain.representation import Representation, importance_weights
    from cryspnet_gen.explain.similar import resolve_library
    from cryspnet_gen.featurize import featurize
    from cryspnet_gen.predict import load_predictor

    t0 = time.perf_counter()
    predictor = load_predictor(path=args.model)
    known = labelled_known(predictor, resolve_library(), args.data_dir)
    train, sample, queries = split_known(known, args.importance_rows, args.queries, args.seed)
    print(
        f"{predictor.name}: {len(train)} known (train) compounds, {len(queries)} validation queries",
        flush=True,
    )

    start = time.perf_counter()
    importance = importance_on(
        predictor, sample, repeats=args.repeats, seed=args.seed, outputs=("bravais", "space_group")
    )
    weights = importance_weights(weights_entry(importance)["weights"], list(predictor.feature_labels))
    print(f"importance on {len(sample)} other validation compounds: {time.perf_counter() - start:.0f} s")

    start = time.perf_counter()
    X_train, X_query = featurize(list(train["formula"])).matrix, featurize(list(queries["formula"])).matrix
    train_points, _ = representation_points(predictor, X_train, weights, fit=None)
    query_points, _ = representation_points(predictor, X_query, weights, fit=None)
    print(f"representations of {len(train) + len(queries)} compounds: {time.perf_counter() - start:.0f} s")
    rows = []
    for name in ("features", "hidden", "weighted", "predictions"):
        rows.append(
            {
                "representation": name,
                **neighbour_agreement(train, train_points[name], queries, query_points[name]),
            }
        )
    for alpha in args.alpha:
        combined = Representation.of(predictor, "combined", alpha=alpha).with_weights(weights)
        points = combined.join(train_points["weighted"], train_points["predictions"], fit=True)
        mine = combined.join(query_points["weighted"], query_points["predictions"])
        rows.append(
            {
                "representation": f"combined, alpha {alpha:g}",
                **neighbour_agreement(train, points, queries, mine),
            }
        )
    table = pd.DataFrame(rows)
    table["objective"] = (table["nearest same type"] + table["type among 5 nearest"]) / 2
    print()
    print(table.to_markdown(index=False, floatfmt=".1f"))
    print(f"\n{' '.join(sys.argv)}: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
