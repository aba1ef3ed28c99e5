"""``cryspnet-gen data build`` (the labelled tables and splits from the open data) and ``data z-prior``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cryspnet_gen.arguments import existing_dir, non_negative_int, positive_int
from cryspnet_gen.cli.common import DATA_DIR_HELP, LABEL_POLICIES, CLIError, subcommand

__all__ = ["add_subcommands", "add_wyckoff_prior", "cmd_data_build", "cmd_z_prior"]


def cmd_data_build(args: argparse.Namespace) -> int:
    from cryspnet_gen.data import build

    result = build(
        args.data_dir,
        workers=args.workers,
        use_cache=not args.no_cache,
        progress=not args.quiet,
        max_rows=args.max_rows,
    )
    if result.structures.from_cache:
        print("structure table: loaded from cache (inputs unchanged)")
    print(result.summary(policy=args.labels, seed=args.seed))
    for source, mid, reason in result.structures.errors[:10]:
        print(f"skipped {source} {mid}: {reason}", file=sys.stderr)
    return 0


def add_build(subparsers: Any) -> None:
    b = subcommand(
        subparsers,
        "build",
        "build the labelled tables (about 10 min on 2 cores, then cached) and print a summary",
    )
    b.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    b.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="processes for the symmetry analysis (default: all cores)",
    )
    b.add_argument("--no-cache", action="store_true", help="rebuild and do not write the cache")
    b.add_argument(
        "--max-rows",
        type=positive_int,
        default=None,
        help="use only the first N rows of each source (default: all)",
    )
    b.add_argument("--labels", choices=LABEL_POLICIES, default="mp", help="labelling policy")
    b.add_argument("--seed", type=non_negative_int, default=0, help="validation draw seed")
    b.set_defaults(func=cmd_data_build)


def cmd_z_prior(args: argparse.Namespace) -> int:
    from cryspnet_gen.bundle import read_manifest
    from cryspnet_gen.train import frame_and_features
    from cryspnet_gen.train.assemble import add_z_prior

    split = read_manifest(args.model).get("split")
    if split not in ("bench", "full"):
        raise CLIError(f"{args.model}: a Z prior needs a bundle of the bench or full split, not {split!r}")
    frame, _ = frame_and_features(split, data_dir=args.data_dir, progress=not args.quiet)
    path = add_z_prior(args.model, frame)
    print(f"Z prior ({read_manifest(args.model)['z_prior']['source']}) stored in {path.parent}")
    add_wyckoff_prior(args.model, split, args.data_dir)
    print(f"Wyckoff prior ({read_manifest(args.model)['wyckoff_prior']['source']}) stored in {path.parent}")
    return 0


def add_wyckoff_prior(bundle_dir: str, split: str, data_dir: str | None) -> None:
    """Count the Wyckoff assignments of the shipped prototype library's rows whose formula is in the bundle's
    training part (``bench``: the training formulas only; ``full``: every row) and store them in the bundle."""
    from cryspnet_gen.bundle import write_part
    from cryspnet_gen.data import formula_splits
    from cryspnet_gen.sources.templates import shipped_library
    from cryspnet_gen.wyckoffprior import WyckoffPrior

    library = shipped_library()
    if library is None:
        raise CLIError("no shipped prototype library: reinstall cryspnet-gen")
    rows = library.all_rows
    if split == "bench":
        parts = formula_splits(rows["formula"].unique(), "bench", data_dir=data_dir)
        rows = rows[rows["formula"].map(parts) == "train"]
    prior = WyckoffPrior.from_rows(rows["anonymous"], rows["space_group"].astype(int), rows["wyckoff"])
    which = "rows of the bench split's training formulas" if split == "bench" else "rows (all the data)"
    write_part(bundle_dir, "wyckoff_prior", prior.to_json(), source=f"{prior.rows} prototype-library {which}")


def add_z_prior_command(subparsers: Any) -> None:
    z = subcommand(
        subparsers,
        "z-prior",
        "count formula units per cell (Z) and Wyckoff assignments by space group and formula type on a bundle's "
        "training formulas and store them in the bundle (--z-rule prior / --wyckoff prior of generate)",
    )
    z.add_argument("--model", required=True, type=existing_dir, metavar="DIR", help="bundle folder")
    z.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    z.set_defaults(func=cmd_z_prior)


def add_subcommands(subparsers: Any) -> None:
    """Add ``data`` (and its action ``build``) to the ``cryspnet-gen`` subparsers."""
    p = subcommand(subparsers, "data", "build the labelled tables and splits from the open data")
    actions = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    add_build(actions)
    add_z_prior_command(actions)
