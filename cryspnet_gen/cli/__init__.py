"""``cryspnet-gen``: thin command-line subcommands over the public API.

Every subcommand reports bad input on stderr with a non-zero exit code; batch commands finish the good rows.
One module per command group adds its subcommands (``add_subcommands``) and holds their functions:
:mod:`~.featurize`, :mod:`~.data`, :mod:`~.train` (train, evaluate), :mod:`~.predict`, :mod:`~.generate`,
:mod:`~.templates`; the workflow commands (submit, run, status, results) come from
:mod:`cryspnet_gen.workflows.cli`. :mod:`~.common` holds what they share.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cryspnet_gen import __version__
from cryspnet_gen.cli import data, featurize, generate, predict, templates, train
from cryspnet_gen.cli.common import CLIError

__all__ = ["CLIError", "build_parser", "main", "run_command"]

logger = logging.getLogger("cryspnet_gen")

#: The command groups, in the order ``cryspnet-gen --help`` lists them (the workflow commands come last).
COMMAND_GROUPS = (featurize, data, train, predict, generate, templates)


def build_parser() -> argparse.ArgumentParser:
    """The ``cryspnet-gen`` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="cryspnet-gen",
        description="Chemical formula -> candidate crystal structures (CRYSPNet re-implemented).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_subcommands(sub)

    from cryspnet_gen.workflows.cli import add_subcommands

    add_subcommands(sub)  # submit, run, status, results
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed subcommand; user-facing errors are printed without a traceback and give exit code 2."""
    from cryspnet_gen.bundle import BundleError
    from cryspnet_gen.config import DataDirError
    from cryspnet_gen.data import DataFormatError
    from cryspnet_gen.sources.templates import TemplateStoreError

    try:
        return int(args.func(args))
    except (CLIError, DataDirError, DataFormatError, BundleError, TemplateStoreError, FileExistsError) as exc:
        print(f"cryspnet-gen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cryspnet-gen: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cryspnet-gen`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return run_command(args)
