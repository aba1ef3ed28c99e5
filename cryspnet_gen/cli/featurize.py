"""``cryspnet-gen featurize``: composition features of formulas."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cryspnet_gen.cli.common import (
    add_formula_inputs,
    add_output_file,
    read_formulas,
    replace_atomically,
    subcommand,
)

__all__ = ["add_subcommands", "cmd_featurize"]


def cmd_featurize(args: argparse.Namespace) -> int:
    import pandas as pd

    from cryspnet_gen.featurize import featurize

    formulas = read_formulas(args.formulas, args.input)
    feats = featurize(formulas)
    frame = pd.DataFrame(feats.matrix, columns=feats.labels)
    frame.insert(0, "formula", formulas)
    frame.insert(1, "error", feats.errors)
    if args.output:
        out = Path(args.output)
        replace_atomically(out, lambda tmp: frame.to_csv(tmp, index=False), overwrite=args.force)
        print(f"wrote {len(frame)} rows x {len(feats.labels)} features to {out}")
    else:
        shown = frame.set_index("formula").drop(columns="error").T
        with pd.option_context("display.max_rows", 20, "display.width", 120):
            print(shown)
        print(f"[{len(feats.labels)} features per formula]")
    n_bad = sum(e is not None for e in feats.errors)
    for formula, err in zip(formulas, feats.errors, strict=True):
        if err is not None:
            print(f"error: {formula!r}: {err}", file=sys.stderr)
    return 1 if n_bad else 0


def add_subcommands(subparsers: Any) -> None:
    """Add ``featurize`` to the ``cryspnet-gen`` subparsers."""
    p = subcommand(subparsers, "featurize", "composition features of formulas (CSV)")
    add_formula_inputs(p)
    add_output_file(p, "CSV file to write (default: print a preview)")
    p.set_defaults(func=cmd_featurize)
