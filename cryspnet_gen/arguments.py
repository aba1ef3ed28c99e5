"""Command-line pieces shared by ``cryspnet-gen`` and its workflow commands: the candidate-source options and the
mapping of parsed arguments onto :class:`~cryspnet_gen.options.GenerateOptions` fields.

It sits low in the layers so that both command-line modules (``cli`` and ``workflows.cli``) can use it, and
imports nothing heavy (the CLI's ``--help`` stays fast).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

__all__ = ["SOURCES", "add_source_options", "option_values"]

SOURCES = ("cryspnet", "templates", "both")


def add_source_options(parser: argparse.ArgumentParser, *, templates_help: str) -> None:
    """``--source`` and ``--templates``: which candidate sources, and the template store or library."""
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default=None,
        help="candidate source: both = known structures and templates first, then CRYSPNet structures; "
        "cryspnet = templates off (default: both)",
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
