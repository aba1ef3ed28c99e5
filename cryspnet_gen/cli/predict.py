"""``cryspnet-gen predict``: Bravais lattice, space groups and lattice parameters of formulas."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cryspnet_gen.cli.common import (
    add_bravais_model,
    add_formula_inputs,
    add_model_options,
    load_predictor_for,
    read_formulas,
    replace_atomically,
)

__all__ = ["add_subcommands", "cmd_predict"]


def cmd_predict(args: argparse.Namespace) -> int:
    from cryspnet_gen.records import predictions_to_dataframe

    formulas = read_formulas(args.formulas, args.input)
    predictor = load_predictor_for(args)
    preds = predictor.predict(
        formulas,
        top_bravais=args.top_bravais,
        top_space_groups=args.top_space_groups,
        model=args.bravais_model,
    )
    frame = predictions_to_dataframe(preds)
    if args.output:
        out = Path(args.output)
        if out.suffix.lower() == ".json":
            import json

            text = json.dumps([p.as_dict() for p in preds], indent=1)
            replace_atomically(out, lambda tmp: tmp.write_text(text))
        else:
            replace_atomically(out, lambda tmp: frame.to_csv(tmp, index=False))
        print(f"wrote predictions for {len(preds)} formulas to {out}")
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.width", 160, "display.max_columns", 20):
            print(frame.to_string(index=False))
    failed = [(p.formula, p.error) for p in preds if p.error]
    for formula, err in failed:
        print(f"error: {formula!r}: {err}", file=sys.stderr)
    return 1 if failed else 0


def add_subcommands(subparsers: Any) -> None:
    """Add ``predict`` to the ``cryspnet-gen`` subparsers."""
    p = subparsers.add_parser(
        "predict", help="Bravais lattice, space groups and lattice parameters of formulas"
    )
    add_formula_inputs(p)
    p.add_argument("-o", "--output", help="write CSV (or JSON if the name ends in .json) instead of printing")
    add_model_options(p)
    p.add_argument("--top-bravais", type=int, default=2)
    p.add_argument("--top-space-groups", type=int, default=3)
    add_bravais_model(p)
    p.set_defaults(func=cmd_predict)
