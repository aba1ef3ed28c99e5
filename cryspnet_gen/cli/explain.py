"""``cryspnet-gen similar``, ``explain`` and ``interpret``: what a prediction leans on, and why."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cryspnet_gen.arguments import add_model_option, non_negative_int, output_folder, positive_int
from cryspnet_gen.cli.common import (
    DATA_DIR_HELP,
    CLIError,
    add_force,
    add_formula_inputs,
    load_predictor_for,
    read_formulas,
    subcommand,
)

__all__ = ["add_subcommands", "cmd_explain", "cmd_interpret", "cmd_similar"]

_REPRESENTATIONS = ["combined", "weighted", "features", "hidden", "predictions"]


def _each_formula(args: argparse.Namespace, work: Any) -> int:
    """Run ``work(formula)`` for every formula; a bad one is a one-line error and the others still run."""
    failed = 0
    for formula in read_formulas(args.formulas, args.input):
        try:
            work(formula)
        except ValueError as exc:
            failed += 1
            print(f"error: {formula!r}: {str(exc).splitlines()[0]}", file=sys.stderr)
    return 1 if failed else 0


def cmd_similar(args: argparse.Namespace) -> int:
    import pandas as pd

    from cryspnet_gen.explain import known_compound_index, similar_materials
    from cryspnet_gen.runtime import quiet_dependencies

    with quiet_dependencies():
        predictor = load_predictor_for(args)
        index = known_compound_index(predictor, args.library, args.representation)
    results: list[dict[str, Any]] = []

    def one(formula: str) -> None:
        frame = similar_materials(
            formula, args.n, model=predictor, library=args.library, representation=args.representation
        )
        if args.json:
            results.append({**frame.attrs, "similar": frame.to_dict(orient="records")})
            return
        print(
            f"{frame.attrs['formula']}: {len(frame)} nearest of {len(index)} known compounds "
            f"({frame.attrs['representation']}; {frame.attrs['bundle']})"
        )
        shown = frame.assign(
            query=frame["query"].map({True: "this formula", False: ""}),
            substitutable=frame["substitutable"].map({True: "yes", False: ""}),
        )
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print(shown.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
        print()

    code = _each_formula(args, one)
    if args.json:
        print(json.dumps(results, indent=1, default=str))
    return code


def cmd_explain(args: argparse.Namespace) -> int:
    from cryspnet_gen.explain import explain_formula
    from cryspnet_gen.runtime import quiet_dependencies

    with quiet_dependencies():
        predictor = load_predictor_for(args)
    results: list[dict[str, Any]] = []

    def one(formula: str) -> None:
        explanation = explain_formula(formula, model=predictor)
        if args.json:
            data = explanation.to_dict()
            data["features"] = data["features"][: args.top]
            results.append(data)
        else:
            print(explanation.format(args.top))
            print()

    code = _each_formula(args, one)
    if args.json:
        print(json.dumps(results, indent=1))
    return code


def cmd_interpret(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cryspnet_gen.explain.report import interpret, save_weights
    from cryspnet_gen.explain.similar import resolve_library

    out = Path(args.out)
    if (out / "interpretability.md").exists() and not args.force:
        raise CLIError(f"{out / 'interpretability.md'} already exists; pass --force to replace it")
    predictor = load_predictor_for(args)
    bundle_dir = predictor.path
    if args.save_weights and bundle_dir is None:
        raise CLIError("--save-weights needs a bundle folder")
    report = interpret(
        predictor,
        resolve_library(args.library),
        out_dir=out,
        data_dir=args.data_dir,
        rows=args.rows,
        repeats=args.repeats,
        queries=args.queries,
        map_sample=args.map_sample,
        seed=args.seed,
    )
    print(f"wrote {', '.join(report.files)} to {out}")
    if args.save_weights and bundle_dir is not None:
        path = save_weights(bundle_dir, report.model["feature_weights"])
        print(f"stored the feature weights in {path}")
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    add_formula_inputs(p)
    add_model_option(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def add_subcommands(subparsers: Any) -> None:
    """Add ``similar``, ``explain`` and ``interpret`` to the ``cryspnet-gen`` subparsers."""
    p = subcommand(
        subparsers, "similar", "the known compounds nearest to formulas in the model's representation"
    )
    _add_common(p)
    p.add_argument("-n", type=positive_int, default=10, help="compounds listed per formula")
    p.add_argument(
        "--library",
        default=None,
        metavar="NAME|DIR",
        help="prototype library of known compounds (default: the shipped prototypes-mp-v1)",
    )
    p.add_argument(
        "--representation",
        choices=_REPRESENTATIONS,
        default="combined",
        help="space compounds are compared in: importance-weighted features + prediction space (combined), "
        "either alone, plain standardized features, or the volume networks' hidden layer; the index is built "
        "once (about a minute) and cached",
    )
    p.set_defaults(func=cmd_similar)

    p = subcommand(
        subparsers, "explain", "a prediction with the features that moved it most (signed effects)"
    )
    _add_common(p)
    p.add_argument("--top", type=positive_int, default=10, help="features listed per formula")
    p.set_defaults(func=cmd_explain)

    p = subcommand(
        subparsers,
        "interpret",
        "report of a bundle: permutation importance, representations compared, material map and clusters",
    )
    add_model_option(p)
    p.add_argument("--out", required=True, type=output_folder, metavar="DIR", help="folder for the report")
    p.add_argument("--library", default=None, metavar="NAME|DIR", help="prototype library (default: shipped)")
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP + "; only a bench bundle needs it")
    p.add_argument("--rows", type=positive_int, default=1000, help="validation compounds for the importance")
    p.add_argument("--repeats", type=positive_int, default=3, help="shuffles per feature")
    p.add_argument(
        "--queries",
        type=non_negative_int,
        default=2000,
        help="other validation compounds for the neighbour check (0: skip)",
    )
    p.add_argument(
        "--map-sample", type=non_negative_int, default=20000, help="training compounds on the map (0: no map)"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the samples, shuffles and t-SNE")
    p.add_argument(
        "--save-weights",
        action="store_true",
        help="store the importance as the bundle's feature weights (the `weighted` representation)",
    )
    add_force(p, "an existing report")
    p.set_defaults(func=cmd_interpret)
