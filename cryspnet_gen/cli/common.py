"""What the ``cryspnet-gen`` command modules share: the user-facing error, reading formulas, common options."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryspnet_gen.arguments import existing_file, new_output_path, subcommand

if TYPE_CHECKING:
    from cryspnet_gen.predict import Predictor

__all__ = [
    "DATA_DIR_HELP",
    "LABEL_POLICIES",
    "CLIError",
    "Command",
    "add_bravais_model",
    "add_force",
    "add_formula_inputs",
    "add_output_file",
    "load_predictor_for",
    "read_formulas",
    "replace_atomically",
    "subcommand",
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
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"input file {input_file!r} cannot be read as text ({exc})") from exc
        first = text.splitlines()[0] if text.strip() else ""
        if path.suffix.lower() == ".csv" or "," in first:
            import pandas as pd

            try:
                frame = pd.read_csv(path)
            except ValueError as exc:  # pandas' ParserError and EmptyDataError are ValueErrors
                raise CLIError(f"{input_file}: not a readable CSV file ({exc})") from exc
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


def replace_atomically(out: Path, write: Callable[[Path], Any], *, overwrite: bool = False) -> None:
    """Create ``out``'s folder, ``write`` a temporary file beside ``out`` and move it into place.

    Refuses (``CLIError``) to replace an existing ``out`` unless ``overwrite``; a failed write leaves nothing
    behind. The file gets the usual mode (0644 under the common umask 022).
    """
    if out.is_dir():
        raise CLIError(f"{out} is a folder; give a file name")
    if out.exists() and not overwrite:
        raise CLIError(f"{out} already exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        write(tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------
# options shared by several subcommands


def add_formula_inputs(p: argparse.ArgumentParser) -> None:
    """``FORMULA ...`` and ``-i/--input FILE`` (read with :func:`read_formulas`)."""
    p.add_argument(
        "formulas", nargs="*", metavar="FORMULA", help="chemical formulas, e.g. LiFePO4 Li7La3Zr2O12"
    )
    p.add_argument(
        "-i",
        "--input",
        type=existing_file,
        default=None,
        metavar="FILE",
        help="file of formulas: CSV with a 'formula' column, or one per line (default: none)",
    )


def add_force(p: argparse.ArgumentParser, what: str = "existing output files") -> None:
    """``--force``: replace existing output."""
    p.add_argument("--force", action="store_true", help=f"replace {what} (default: refuse)")


def add_output_file(p: argparse.ArgumentParser, help: str) -> None:
    """``-o/--output FILE`` (not a folder) and ``--force`` (replace an existing file)."""
    p.add_argument("-o", "--output", type=new_output_path, default=None, metavar="FILE", help=help)
    add_force(p, "an existing output file")


def add_bravais_model(p: argparse.ArgumentParser) -> None:
    """``--bravais-model master|metal|oxide``."""
    p.add_argument(
        "--bravais-model",
        choices=["master", "metal", "oxide"],
        default="master",
        help="Bravais-lattice network: master (all compounds), or the paper's metal or oxide networks",
    )


def load_predictor_for(args: argparse.Namespace) -> Predictor:
    """The predictor of ``--model`` (a shipped name or a bundle folder; the shipped default when not given)."""
    from cryspnet_gen.predict import predictor_for

    return predictor_for(getattr(args, "model", None))
