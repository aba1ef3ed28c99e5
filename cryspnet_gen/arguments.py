"""Command-line pieces shared by ``cryspnet-gen`` and its workflow commands: argument types that check values
when the command line is parsed (before any model loads), the help formatter that shows every default, the
global ``-v/-q`` flags, the candidate-source options and the mapping of parsed arguments onto
:class:`~cryspnet_gen.options.GenerateOptions` fields.

It sits low in the layers so that both command-line modules (``cli`` and ``workflows.cli``) can use it, and
imports nothing heavy (the CLI's ``--help`` and its usage errors stay fast).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "GLOBAL_FLAGS",
    "SOURCES",
    "ArgumentParser",
    "HelpFormatter",
    "add_global_flags",
    "add_model_option",
    "add_source_options",
    "bounded_int",
    "deprecated_alias",
    "existing_dir",
    "existing_file",
    "model_spec",
    "new_output_path",
    "non_negative_float",
    "non_negative_int",
    "option_values",
    "output_folder",
    "positive_float",
    "positive_int",
    "space_group_number",
    "split_global_flags",
    "subcommand",
]

SOURCES = ("cryspnet", "templates", "both")

#: The flags accepted anywhere on a ``cryspnet-gen`` command line (before or after the subcommand).
GLOBAL_FLAGS = {"-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet"}


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose usage errors are one line on stderr (exit code 2), not the usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default (``(default: X)``) unless its help already says it or it has none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.option_strings
            and "default" not in text.lower()
            and not any(action.default is none for none in (None, False, True, argparse.SUPPRESS))
            and action.nargs != 0
        ):
            text += " (default: %(default)s)"
        return text


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    """``-v/--verbose`` and ``-q/--quiet`` on a subcommand. Their default is left to the top-level parser
    (``SUPPRESS``), so ``cryspnet-gen -v generate ...`` and ``cryspnet-gen generate ... -v`` mean the same."""
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress and details"
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars or notes, only results and errors",
    )


def subcommand(subparsers: Any, name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand's parser: one-line usage errors, defaults shown in ``--help``, ``-v/-q`` accepted."""
    kwargs.setdefault("formatter_class", HelpFormatter)
    kwargs.setdefault("description", help[0].upper() + help[1:] + ".")
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help, **kwargs)
    add_global_flags(parser)
    return parser


def split_global_flags(argv: list[str]) -> tuple[list[str], dict[str, bool]]:
    """``argv`` without the global flags (anywhere before ``--``; ``-vq`` counts as both), and the flags found."""
    rest: list[str] = []
    found = {"verbose": False, "quiet": False}
    for i, arg in enumerate(argv):
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg in GLOBAL_FLAGS:
            found[GLOBAL_FLAGS[arg]] = True
        elif len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and set(arg[1:]) <= {"v", "q"}:
            for letter in arg[1:]:
                found[GLOBAL_FLAGS["-" + letter]] = True
        else:
            rest.append(arg)
    return rest, found


# ----------------------------------------------------------------------------------------------------------
# argument types: each raises ArgumentTypeError with a message that names what is wrong and what to give


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return bounded_int(1)(text)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return bounded_int(0)(text)


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """A type for integers in ``low..high`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            want = f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}"
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def space_group_number(text: str) -> int:
    """A space-group number, 1..230."""
    try:
        return bounded_int(1, 230)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"a space-group number is an integer in 1..230, got {text!r}"
        ) from None


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (``--wait 0``: fail at once)."""
    try:
        return 0.0 if float(text) == 0 else positive_float(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None


def existing_file(text: str) -> str:
    """The name of a file that exists."""
    path = Path(text).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r} {what}")
    return str(path)


def existing_dir(text: str) -> str:
    """The name of a folder that exists."""
    path = Path(text).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.is_file() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r} {what}")
    return str(path)


def new_output_path(text: str) -> str:
    """An output file name: not an existing folder (whether an existing file may be replaced is ``--force``'s
    business, checked by the command)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the output file name is empty")
    if Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a folder; give a file name (e.g. {text.rstrip('/')}/out.csv)"
        )
    return text


def output_folder(text: str) -> str:
    """An output folder: missing (it is created) or a folder, not an existing file."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the output folder name is empty")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a file, not a folder; give a folder for the output files"
        )
    return text


def model_spec(text: str) -> str:
    """A shipped model bundle's name or a bundle folder (holding ``manifest.json``)."""
    from cryspnet_gen.bundle import available_bundles

    shipped = available_bundles()
    if text in shipped:
        return text
    path = Path(text).expanduser()
    if (path / "manifest.json").is_file():
        return str(path)
    if path.exists():
        raise argparse.ArgumentTypeError(f"{text!r} is not a model bundle folder (it has no manifest.json)")
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither a shipped model ({', '.join(shipped) or 'none installed'}) nor a bundle folder"
    )


class _DeprecatedAlias(argparse.Action):
    """Stores into another option's destination and says, once, which spelling to use instead."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        print(f"{parser.prog}: note: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def deprecated_alias(
    parser: argparse.ArgumentParser | Any, old: str, new: str, dest: str, type: Any = None
) -> None:
    """Accept ``old`` as a hidden, deprecated spelling of the option ``new`` (same destination ``dest``)."""
    parser.add_argument(old, dest=dest, action=_DeprecatedAlias, new=new, type=type, help=argparse.SUPPRESS)


# ----------------------------------------------------------------------------------------------------------
# options shared by several commands


def add_model_option(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--model NAME|PATH`` (``--model-path`` still accepted): a shipped bundle or a bundle folder."""
    from cryspnet_gen.bundle import DEFAULT_BUNDLE, available_bundles

    shipped = ", ".join(available_bundles()) or "none installed"
    parser.add_argument(
        "--model",
        type=model_spec,
        default=None,
        required=required,
        metavar="NAME|PATH",
        help=f"model bundle: a shipped name ({shipped}) or a bundle folder"
        + ("" if required else f" (default: {DEFAULT_BUNDLE})"),
    )
    deprecated_alias(parser, "--model-path", "--model PATH", "model", type=model_spec)


def add_source_options(parser: argparse.ArgumentParser, *, templates_help: str) -> None:
    """``--source``, ``--templates`` and ``--no-known``: which candidate sources, and the template store."""
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default=None,
        help="candidate source: both = known structures and templates first, then CRYSPNet structures; "
        "cryspnet = templates off (default: both when a template store or library is found, else cryspnet)",
    )
    parser.add_argument("--templates", default=None, metavar="STORE", help=templates_help)
    parser.add_argument(
        "--no-known",
        dest="known",
        action="store_false",
        help="do not put a known compound's own structures first (for benchmarking)",
    )


def option_values(args: argparse.Namespace, names: Mapping[str, str]) -> dict[str, Any]:
    """``{option field: args.<argument>}`` for the fields in ``names`` (field -> argument name) that were given."""
    return {field: getattr(args, arg) for field, arg in names.items() if getattr(args, arg, None) is not None}
