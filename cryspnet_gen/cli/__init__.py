"""``cryspnet-gen``: thin command-line subcommands over the public API.

Every value is checked when the command line is parsed (argument types in :mod:`cryspnet_gen.arguments`), before
any model loads; every error, from any subcommand, is one line on stderr and a non-zero exit code (2 for bad
input, 1 for a failure inside a command), with the traceback only under ``--verbose``. ``-v/--verbose`` and
``-q/--quiet`` are accepted anywhere on the line. Results go to stdout; progress, notes and errors to stderr.

One module per command group adds its subcommands (``add_subcommands``) and holds their functions:
:mod:`~.featurize`, :mod:`~.data`, :mod:`~.train` (train, evaluate), :mod:`~.predict`, :mod:`~.explain`
(similar, explain, interpret), :mod:`~.generate`,
:mod:`~.templates`; the workflow commands (submit, run, status, results) come from
:mod:`cryspnet_gen.workflows.cli`. :mod:`~.common` holds what they share.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from cryspnet_gen import __version__
from cryspnet_gen.arguments import ArgumentParser, HelpFormatter, split_global_flags
from cryspnet_gen.cli import data, explain, featurize, generate, predict, templates, train
from cryspnet_gen.cli.common import CLIError

__all__ = ["CLIError", "build_parser", "main", "run_command"]

logger = logging.getLogger("cryspnet_gen")

#: The command groups, in the order ``cryspnet-gen --help`` lists them (the workflow commands come last).
COMMAND_GROUPS = (featurize, data, train, predict, explain, generate, templates)


class _ShowDefaults:
    """Hands the workflow commands' ``add_parser`` calls the help formatter that shows defaults."""

    def __init__(self, subparsers: Any) -> None:
        self.subparsers = subparsers

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("formatter_class", HelpFormatter)
        parser: argparse.ArgumentParser = self.subparsers.add_parser(name, **kwargs)
        return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``cryspnet-gen`` parser with every subcommand."""
    parser = ArgumentParser(
        prog="cryspnet-gen",
        description="Chemical formula -> candidate crystal structures (CRYSPNet re-implemented). "
        "-v/--verbose and -q/--quiet may be given anywhere on the command line.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and details, tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)
    for group in COMMAND_GROUPS:
        group.add_subcommands(sub)

    from cryspnet_gen.workflows.cli import add_subcommands

    add_subcommands(_ShowDefaults(sub))  # submit, run, status, results
    return parser


#: Errors that mean bad input (exit code 2), by the module that defines them.
USER_ERRORS = {
    "cryspnet_gen.bundle": "BundleError",
    "cryspnet_gen.config": "DataDirError",
    "cryspnet_gen.data": "DataFormatError",
    "cryspnet_gen.sources.templates.store": "TemplateStoreError",
}


def _user_error_types() -> tuple[type[BaseException], ...]:
    # Only modules already imported can have raised their errors: importing the others would cost seconds.
    found = [getattr(sys.modules[m], name) for m, name in USER_ERRORS.items() if m in sys.modules]
    return (CLIError, FileExistsError, FileNotFoundError, NotADirectoryError, PermissionError, *found)


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed subcommand. Errors are one line on stderr: exit code 2 for bad input (missing files,
    bad bundles or stores...), 1 for anything else (``args.verbose`` adds its traceback)."""
    prog = f"cryspnet-gen {args.command}"
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        user_error = isinstance(exc, _user_error_types())
        if getattr(args, "verbose", False) and not user_error:
            traceback.print_exc(file=sys.stderr)
        message = str(exc) if user_error else f"{type(exc).__name__}: {exc}"
        hint = (
            "" if user_error or getattr(args, "verbose", False) else " (run with --verbose for the traceback)"
        )
        print(
            f"{prog}: error: {message.splitlines()[0] if message else type(exc).__name__}{hint}",
            file=sys.stderr,
        )
        return 2 if user_error else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cryspnet-gen`` console script."""
    from cryspnet_gen.runtime import configure_logging

    rest, flags = split_global_flags(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(rest)
    args.verbose, args.quiet = flags["verbose"], flags["quiet"]
    configure_logging(verbose=args.verbose, quiet=args.quiet)
    return run_command(args)
