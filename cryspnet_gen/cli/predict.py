"""``cryspnet-gen predict``: Bravais lattice, space groups and lattice parameters of formulas."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryspnet_gen.arguments import add_model_option, bounded_int
from cryspnet_gen.cli.common import (
    add_bravais_model,
    add_formula_inputs,
    add_output_file,
    load_predictor_for,
    read_formulas,
    replace_atomically,
    subcommand,
)

if TYPE_CHECKING:
    import pandas as pd

    from cryspnet_gen.records import Prediction

__all__ = ["add_subcommands", "cmd_predict", "structure_cells"]


def structure_cells(preds: list[Prediction], frame: pd.DataFrame, max_atoms: int) -> pd.DataFrame:
    """``frame`` (from ``predictions_to_dataframe``) with the cell a CRYSPNet candidate of each row would be built
    in: ``z`` and ``a b c alpha beta gamma`` replaced by the predicted shape scaled to Z formula units at the
    predicted volume per atom (what ``generate`` builds); the network's raw lengths stay in ``a_predicted``...
    """
    import numpy as np

    from cryspnet_gen.formula import formula_unit
    from cryspnet_gen.sources.cryspnet import plan_cells
    from cryspnet_gen.symmetry import CELL_PARAMETERS

    frame = frame.copy()
    for name in ("a", "b", "c"):
        frame.insert(frame.columns.get_loc(name), f"{name}_predicted", frame[name])
    frame.insert(frame.columns.get_loc("a_predicted"), "z", np.nan)
    units = {}
    for i, p in enumerate(preds):
        try:
            units[i] = formula_unit(p.formula, max_atoms)
        except ValueError:
            continue
    for row in frame.itertuples():
        fu, pred = units.get(row.index), preds[row.index]
        if fu is None or pred.error is not None or row.bravais is None:
            continue
        lat = next((la for la in pred.lattices if la.bravais == row.bravais), None)
        plan = plan_cells(
            fu,
            int(row.space_group),
            row.bravais,
            lat.cell if lat is not None else None,
            pred.volume_per_atom,
            max_atoms,
        )
        if not plan.zs:
            continue
        z = plan.zs[0]
        cell = plan.cell(z, fu)
        frame.loc[row.Index, "z"] = z
        frame.loc[row.Index, list(CELL_PARAMETERS)] = [float(x) for x in cell]
    frame["z"] = frame["z"].astype("Int64")
    return frame


def cmd_predict(args: argparse.Namespace) -> int:
    from cryspnet_gen.options import DEFAULT_MAX_ATOMS
    from cryspnet_gen.records import predictions_to_dataframe
    from cryspnet_gen.runtime import quiet_dependencies

    formulas = read_formulas(args.formulas, args.input)
    out = Path(args.output) if args.output else None
    if out is not None and out.exists() and not args.force:
        raise FileExistsError(f"{out} already exists; pass --force to replace it")
    with quiet_dependencies():
        predictor = load_predictor_for(args)
        preds = predictor.predict(
            formulas,
            top_bravais=args.top_bravais,
            top_space_groups=args.top_space_groups,
            model=args.bravais_model,
        )
        frame = structure_cells(preds, predictions_to_dataframe(preds), DEFAULT_MAX_ATOMS)
    if out is not None:
        if out.suffix.lower() == ".json":
            import json

            text = json.dumps([p.as_dict() for p in preds], indent=1)
            replace_atomically(out, lambda tmp: tmp.write_text(text), overwrite=args.force)
        else:
            replace_atomically(out, lambda tmp: frame.to_csv(tmp, index=False), overwrite=args.force)
        print(f"wrote predictions for {len(preds)} formulas to {out}")
    else:
        import pandas as pd

        shown = frame.drop(
            columns=[c for c in frame.columns if c.endswith(("_std", "_predicted"))] + ["index"]
        )
        with pd.option_context("display.max_rows", 200, "display.width", 160, "display.max_columns", 20):
            print(shown.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    failed = [(p.formula, p.error) for p in preds if p.error]
    for formula, err in failed:
        print(f"error: {formula!r}: {err}", file=sys.stderr)
    return 1 if failed else 0


def add_subcommands(subparsers: Any) -> None:
    """Add ``predict`` to the ``cryspnet-gen`` subparsers."""
    p = subcommand(subparsers, "predict", "Bravais lattice, space groups and lattice parameters of formulas")
    add_formula_inputs(p)
    add_output_file(
        p, "write CSV (or JSON if the name ends in .json) instead of printing a table (default: print)"
    )
    add_model_option(p)
    p.add_argument(
        "--top-bravais",
        type=bounded_int(1, 14),
        default=2,
        help="Bravais lattices reported per formula, 1..14",
    )
    p.add_argument(
        "--top-space-groups",
        type=bounded_int(1, 230),
        default=3,
        help="space groups reported per Bravais lattice, 1..230",
    )
    add_bravais_model(p)
    p.set_defaults(func=cmd_predict)
