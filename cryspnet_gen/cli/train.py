"""``cryspnet-gen train`` and ``cryspnet-gen evaluate``: model bundles from the open data, and their reports."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryspnet_gen.arguments import (
    add_model_option,
    existing_dir,
    existing_file,
    non_negative_int,
    positive_int,
)
from cryspnet_gen.cli.common import DATA_DIR_HELP, LABEL_POLICIES, CLIError, add_force, subcommand

if TYPE_CHECKING:
    from cryspnet_gen.train import TrainConfig

__all__ = ["PRESETS", "add_interpretability", "add_subcommands", "cmd_evaluate", "cmd_train", "train_config"]

#: The names ``TrainConfig.preset`` knows (tests/test_cli.py checks that they agree).
PRESETS = ("attention", "default", "fast", "shipped", "shipped-mlp", "tiny")
#: The classifier families of ``TrainConfig.arch`` (tests/test_cli.py checks that they agree).
ARCHS = ("cryspnet-mlp", "lightgbm", "stack", "attention", "attention-stack")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The ``--preset`` (or default) configuration with the ``--config`` JSON file's fields applied."""
    import json

    from cryspnet_gen.train import TrainConfig

    config = TrainConfig.preset(args.preset) if args.preset else TrainConfig()
    if args.config:
        path = Path(args.config)
        try:
            overrides = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CLIError(f"config file {args.config!r} is not readable JSON ({exc})") from exc
        if not isinstance(overrides, dict):
            raise CLIError(f"config file {args.config!r} must hold a JSON object of TrainConfig fields")
        unknown = set(overrides) - set(config.as_dict()) - {"@module", "@class", "@version"}
        if unknown:
            raise CLIError(f"{args.config}: unknown TrainConfig field(s) {sorted(unknown)}")
        try:
            config = TrainConfig(
                **{k: v for k, v in {**config.as_dict(), **overrides}.items() if not k.startswith("@")}
            )
        except (TypeError, ValueError) as exc:
            raise CLIError(f"{args.config}: {exc}; fix the value or leave the field out") from exc
    if args.arch is not None:
        config.arch = args.arch
    config.quiet = args.quiet
    return config


def cmd_train(args: argparse.Namespace) -> int:
    import time

    from cryspnet_gen.train import train_from_data

    config = train_config(args)
    start = time.perf_counter()
    path = train_from_data(
        args.split,
        out_dir=args.out,
        name=args.name,
        version=args.version,
        data_dir=args.data_dir,
        labels=args.labels,
        config=config,
        seed=args.seed,
        max_rows=args.max_rows,
        overwrite=args.force,
        networks_from=args.networks_from,
    )
    print(f"trained bundle written to {path} in {time.perf_counter() - start:.0f} s")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cryspnet_gen.cli.common import load_predictor_for
    from cryspnet_gen.evaluate import evaluate
    from cryspnet_gen.train import frame_and_features

    predictor = load_predictor_for(args)
    frame, X = frame_and_features(
        "bench", data_dir=args.data_dir, progress=not args.quiet, max_rows=args.max_rows
    )
    ablation = _labelled_bundles(args.ablation, "--ablation takes POLICY=BUNDLE_DIR")
    compare = _labelled_bundles(
        args.compare, "--compare takes LABEL=BUNDLE_DIR, e.g. trees=models/trees-bench"
    )
    report = evaluate(
        predictor,
        frame,
        X,
        out_dir=args.out,
        random_forest=not args.no_rf,
        rf_trees=args.rf_trees,
        lightgbm=not args.no_lightgbm,
        compare=compare or None,
        ablation=ablation or None,
        seed=args.seed,
    )
    if not args.no_interpret:
        add_interpretability(report, predictor, args)
    print(report.markdown)
    print(f"report written to {args.out}")
    return 0


def add_interpretability(report: Any, predictor: Any, args: argparse.Namespace) -> None:
    """Add the interpretability report (importance, material map) to the evaluation folder and link it."""
    from cryspnet_gen.explain.report import interpret
    from cryspnet_gen.explain.similar import resolve_library

    extra = interpret(
        predictor,
        resolve_library(),
        out_dir=args.out,
        data_dir=args.data_dir,
        rows=args.importance_rows,
        queries=2000,
        map_sample=args.map_sample,
        seed=args.seed,
    )
    report.markdown += (
        "\n## Interpretability\n\n"
        f"Permutation importance on {extra.importance.settings['n_rows']} validation compounds, the representations "
        "compared and the material map: [interpretability.md](interpretability.md).\n\n"
        "![permutation importance](importance.png)\n"
    )
    report.write(args.out)


def _labelled_bundles(specs: list[str] | None, usage: str) -> dict[str, Any]:
    """``{label: Predictor}`` from repeated ``LABEL=BUNDLE_DIR`` option values."""
    from cryspnet_gen.predict import load_predictor

    bundles = {}
    for spec in specs or []:
        label, _, path = spec.partition("=")
        if not label or not path:
            raise CLIError(f"{usage}, got {spec!r}")
        bundles[label] = load_predictor(path=path)
    return bundles


def add_train(subparsers: Any) -> None:
    p = subcommand(
        subparsers,
        "train",
        "train a model bundle on a named split of the open data",
        description="Train a model bundle (preset 'shipped': about 25 min on 2 cores per split).",
    )
    p.add_argument(
        "--split", choices=["bench", "full"], default="bench", help="bench: test formulas held out; full: all"
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="folder to write the bundle into (as OUT/NAME)"
    )
    p.add_argument("--name", default=None, help="bundle name (default: cryspnet-SPLIT)")
    p.add_argument("--version", default="1", help="bundle version string")
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument("--labels", choices=LABEL_POLICIES, default="mp", help="labelling policy")
    p.add_argument(
        "--preset", choices=PRESETS, default=None, help="named hyperparameter preset (default: 'default')"
    )
    p.add_argument(
        "--config",
        type=existing_file,
        default=None,
        metavar="FILE",
        help="JSON file of TrainConfig fields overriding the preset (default: none)",
    )
    p.add_argument(
        "--arch",
        choices=ARCHS,
        default=None,
        help="classifier family: the paper's networks, LightGBM trees, or both stacked (default: the preset's)",
    )
    p.add_argument(
        "--networks-from",
        type=existing_dir,
        default=None,
        metavar="DIR",
        help="reuse the networks of this bundle, trained on the same split (default: train them)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="training and validation-draw seed")
    p.add_argument(
        "--max-rows",
        type=positive_int,
        default=None,
        help="use only the first N rows of each source (default: all)",
    )
    add_force(p, "an existing bundle folder")
    p.set_defaults(func=cmd_train)


def add_evaluate(subparsers: Any) -> None:
    p = subcommand(subparsers, "evaluate", "evaluation report of a bench-split bundle on the test sets")
    add_model_option(p, required=True)
    p.add_argument(
        "--out", required=True, metavar="DIR", help="folder for evaluation.md, evaluation.json and plots"
    )
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument("--no-rf", action="store_true", help="skip the RandomForest baseline")
    p.add_argument("--rf-trees", type=positive_int, default=200, help="trees of the RandomForest baseline")
    p.add_argument("--no-lightgbm", action="store_true", help="skip the LightGBM baseline")
    p.add_argument(
        "--compare",
        action="append",
        metavar="LABEL=DIR",
        default=None,
        help="another bundle of the bench split (e.g. another arch) scored side by side; repeatable (default: none)",
    )
    p.add_argument(
        "--ablation",
        action="append",
        metavar="POLICY=DIR",
        default=None,
        help="another bundle to score, e.g. mp+cod=DIR; repeatable (default: none)",
    )
    p.add_argument(
        "--no-interpret",
        action="store_true",
        help="skip the interpretability part (permutation importance, material map: ~9 min)",
    )
    p.add_argument(
        "--importance-rows", type=positive_int, default=1000, help="validation compounds for the importance"
    )
    p.add_argument(
        "--map-sample", type=non_negative_int, default=20000, help="training compounds on the map (0: no map)"
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the RandomForest and LightGBM baselines"
    )
    p.add_argument("--max-rows", type=positive_int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_evaluate)


def add_subcommands(subparsers: Any) -> None:
    """Add ``train`` and ``evaluate`` to the ``cryspnet-gen`` subparsers."""
    add_train(subparsers)
    add_evaluate(subparsers)
