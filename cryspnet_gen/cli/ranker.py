"""``cryspnet-gen templates train-ranker``: the learned ranker of template options (issue 18)."""

from __future__ import annotations

import argparse
from typing import Any

from cryspnet_gen.arguments import existing_dir, non_negative_int, positive_int
from cryspnet_gen.cli.common import DATA_DIR_HELP, CLIError, subcommand

__all__ = ["add_train_ranker", "cmd_train_ranker"]

#: What training costs, measured (docs/benchmarks.md): shown in the help.
TRAIN_COST = (
    "4,000 training formulas: labels about 20 min on 2 cores (--workers 2, cached in --out), the CRYSPNet "
    "calibration about 5 min, each fit under a minute: about 26 min in all."
)


def cmd_train_ranker(args: argparse.Namespace) -> int:
    from cryspnet_gen.bundle import BundleError, read_manifest, write_part
    from cryspnet_gen.csp.rankertrain import train_template_ranker
    from cryspnet_gen.predict import predictor_for
    from cryspnet_gen.sources.templates import load_store
    from cryspnet_gen.sources.templates.ranker import features_without

    try:
        features_without(args.without or ())
    except ValueError as exc:
        raise CLIError(f"--without: {exc}") from None
    store = load_store(args.templates)
    predictor = predictor_for(args.model)
    for folder in args.write_to or ():
        try:
            read_manifest(folder)
        except BundleError as exc:
            raise CLIError(f"--write-to {folder}: {exc}") from None
    report = train_template_ranker(
        store,
        predictor,
        args.out,
        n=args.n,
        depth=args.depth,
        objectives=("binary", "lambdarank") if args.objective == "both" else (args.objective,),
        validation={"mp20_val": args.n_val_mp20, "mpts52_val": args.n_val_mpts52},
        n_cryspnet=args.n_cryspnet,
        workers=args.workers,
        seed=args.seed,
        without=args.without or (),
        cryspnet_offset=args.cryspnet_offset,
        data_dir=args.data_dir,
        progress=not args.quiet,
    )
    print(report.markdown)
    print(f"ranker written to {args.out}/template_ranker.json")
    for folder in args.write_to or ():
        source = (
            f"{report.model.meta.get('trained_on')}; symmetry model {report.model.meta.get('symmetry_model')}"
        )
        write_part(folder, "template_ranker", report.model.to_json(), source=source)
        print(f"stored in {folder}")
    return 0


def add_train_ranker(subparsers: Any) -> None:
    t = subcommand(
        subparsers,
        "train-ranker",
        "train the learned ranker of template options and store it in model bundles",
        description=(
            "Label the template options of formulas no benchmark evaluates (does the substituted structure match "
            "the formula's own?), fit LightGBM rankers, choose on the MP-20 / MPTS-52 validation formulas and "
            f"calibrate. {TRAIN_COST}"
        ),
    )
    t.add_argument("--templates", required=True, metavar="STORE", help="template store or prototype library")
    t.add_argument(
        "--model",
        default="cryspnet-bench",
        metavar="MODEL",
        help="symmetry bundle whose probabilities are features (default cryspnet-bench: it never trained on the "
        "formulas the ranker learns from)",
    )
    t.add_argument("--out", required=True, metavar="DIR", help="folder for labels, report and the ranker")
    t.add_argument("--n", type=positive_int, default=4000, help="training formulas (default 4000)")
    t.add_argument(
        "--depth", type=positive_int, default=30, help="options per formula re-ranked (default 30)"
    )
    t.add_argument(
        "--objective",
        choices=("binary", "lambdarank", "both"),
        default="both",
        help="LightGBM objective; both: train each and keep the better on validation (default)",
    )
    t.add_argument("--n-val-mp20", type=non_negative_int, default=300, help="MP-20 validation formulas")
    t.add_argument("--n-val-mpts52", type=non_negative_int, default=200, help="MPTS-52 validation formulas")
    t.add_argument(
        "--n-cryspnet",
        type=non_negative_int,
        default=100,
        help="MP-20 validation formulas whose CRYSPNet candidates calibrate their place in the list (0: keep "
        "the default)",
    )
    t.add_argument("--workers", type=positive_int, default=1, help="processes for the labels")
    t.add_argument("--seed", type=non_negative_int, default=0, help="seed of the formula draw and the trees")
    t.add_argument(
        "--without",
        action="append",
        metavar="GROUP",
        help="leave out a feature group (symmetry, substitution, chemistry, template, volume, hand) or a single "
        "feature (repeatable; default: none, every feature)",
    )
    t.add_argument(
        "--cryspnet-offset",
        type=float,
        default=-1.0,
        help="added to a CRYSPNet candidate's log P(match) where it is merged with templates (chosen on MP-20 "
        "validation formulas with bench/template_ranker.py --merge; default: %(default)s)",
    )
    t.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    t.add_argument(
        "--write-to",
        action="append",
        type=existing_dir,
        metavar="BUNDLE",
        help="model bundle folder to store the ranker in (repeatable; default: none, only --out)",
    )
    t.set_defaults(func=cmd_train_ranker)
