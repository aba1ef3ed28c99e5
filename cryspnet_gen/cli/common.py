"""What the ``cryspnet-gen`` command modules share: the user-facing error, reading formulas, common options."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryspnet_gen.predict import Predictor

__all__ = [
    "DATA_DIR_HELP",
    "LABEL_POLICIES",
    "CLIError",
    "Command",
    "add_bravais_model",
    "add_formula_inputs",
    "add_model_options",
    "load_predictor_for",
    "read_formulas",
    "replace_atomically",
]

#: A subcommand: takes the parsed arguments, returns the exit code.
Command = Callable[[argparse.Namespace], int]

DATA_DIR_HELP = "data folder (default: $CRYSPNET_GEN_DATA_DIR or ../shared/data)"
LABEL_POLICIES = ["mp", "mp+cod", "experimental"]


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def read_formulas(formulas: Sequence[str], input_file: str | None) -> list[str]:
    """Formulas from the command line and/or a file (CSV with a ``formula`` column, or one per line)."""
    out = list(formulas)
    if input_file:
        path = Path(input_file)
        if not path.is_file():
            raise CLIError(f"input file {input_file!r} does not exist")
        text = path.read_text()
        first = text.splitlines()[0] if text.strip() else ""
        if path.suffix.lower() == ".csv" or "," in first:
            import pandas as pd

            frame = pd.read_csv(path)
            if "formula" not in frame.columns:
                raise CLIError(
                    f"{input_file}: a CSV input needs a 'formula' column (found {list(frame.columns)})"
                )
            out.extend(str(f) for f in frame["formula"])
        else:
            out.extend(
                line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
            )
    if not out:
        raise CLIError("no formulas given: pass FORMULA arguments or -i FILE")
    return out


def replace_atomically(out: Path, write: Callable[[Path], Any]) -> None:
    """Create ``out``'s folder, ``write`` a temporary file beside ``out`` and move it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    write(tmp)
    tmp.replace(out)


# ----------------------------------------------------------------------------------------------------------
# options shared by several subcommands


def add_formula_inputs(p: argparse.ArgumentParser) -> None:
    """``FORMULA ...`` and ``-i/--input FILE`` (read with :func:`read_formulas`)."""
    p.add_argument("formulas", nargs="*", metavar="FORMULA")
    p.add_argument("-i", "--input", help="file of formulas: CSV with a 'formula' column, or one per line")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model NAME`` and ``--model-path DIR`` (loaded with :func:`load_predictor_for`)."""
    p.add_argument("--model", default=None, help="shipped bundle name (default: the shipped default)")
    p.add_argument("--model-path", default=None, help="bundle folder (wins over --model)")


def add_bravais_model(p: argparse.ArgumentParser) -> None:
    """``--bravais-model master|metal|oxide``."""
    p.add_argument("--bravais-model", choices=["master", "metal", "oxide"], default="master")


def load_predictor_for(args: argparse.Namespace) -> Predictor:
    """The predictor of ``--model-path`` or ``--model`` (the shipped default when neither is given)."""
    from cryspnet_gen.predict import load_predictor

    if getattr(args, "model_path", None):
        return load_predictor(path=args.model_path)
    return load_predictor(getattr(args, "model", None))
