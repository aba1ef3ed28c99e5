"""``cryspnet-gen templates build | info | lookup`` (and ``train-ranker``, :mod:`cryspnet_gen.cli.ranker`): template stores (known structures as candidates)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryspnet_gen.arguments import deprecated_alias, existing_file, non_negative_int, positive_int
from cryspnet_gen.cli.common import CLIError, add_force, read_formulas, subcommand
from cryspnet_gen.cli.ranker import add_train_ranker

if TYPE_CHECKING:
    from cryspnet_gen.sources.templates import TemplateRecord, TemplateStore

__all__ = [
    "add_subcommands",
    "cmd_templates_build",
    "cmd_templates_info",
    "cmd_templates_lookup",
    "open_store",
    "template_records",
]

STORE_HELP = (
    "template store or prototype library folder (default: $CRYSPNET_GEN_TEMPLATES, else the prototype library "
    "shipped with cryspnet-gen)"
)
#: What ``templates build`` costs, measured (docs/benchmarks.md): shown in its help and the README.
BUILD_COST = (
    "From ../shared/data (every MP structure): about 12 min on 2 cores, 1.5 GB of memory, a 102 MB store; "
    "--prototypes: 10-20 min the first time (cached), seconds afterwards."
)


def template_records(args: argparse.Namespace) -> tuple[Iterable[TemplateRecord], str]:
    """The records of ``--from`` and a description of where they came from."""
    from cryspnet_gen.sources import templates as T

    src = str(args.source)
    if src == "materials-project":
        records = T.records_from_materials_project(
            args.api_key, max_sites=args.max_sites, max_e_above_hull=args.max_e_above_hull
        )
        return records, "Materials Project API"
    if (Path(src) / "mp2025_topology").is_dir():
        return T.records_from_data_dir(src), f"Materials Project structures of the data folder {src}"
    if Path(src).is_dir():
        return T.records_from_folder(src), f"structure files under {src}"
    raise CLIError(
        f"--from {src!r} is neither a folder nor 'materials-project'; give a data folder (with "
        "mp2025_topology/), a folder of CIF/POSCAR/JSON files, or materials-project"
    )


def build_prototypes(args: argparse.Namespace) -> int:
    """``templates build --prototypes``: a prototype library from a data folder."""
    from cryspnet_gen.sources.templates.prototype_build import build_library

    src = str(args.source)
    if not Path(src, "mp2025_topology").is_dir():
        raise CLIError(f"--prototypes needs a data folder with mp2025_topology/ as --from, got {src!r}")
    if args.per_type < 0:
        raise CLIError(f"--per-type must be 0 (every structure) or a positive integer, got {args.per_type}")
    folder = build_library(
        args.out,
        data_dir=src,
        variant=args.variant,
        per_type=args.per_type,
        workers=args.workers,
        overwrite=args.force,
        progress=not args.quiet,
    )
    from cryspnet_gen.sources.templates import load_library

    print(load_library(folder))
    return 0


def cmd_templates_build(args: argparse.Namespace) -> int:
    from cryspnet_gen.runtime import quiet_dependencies

    if args.prototypes:
        with quiet_dependencies():
            return build_prototypes(args)
    src = str(args.source)
    records, description = template_records(args)
    excluded: list[str] = []
    if args.exclude_formulas:
        excluded += read_formulas([], args.exclude_formulas)
    if args.exclude_test_sets:
        from cryspnet_gen.data import read_test_formulas

        tests = read_test_formulas(args.data_dir or (src if Path(src, "mp2025_topology").is_dir() else None))
        excluded += sorted(set().union(*tests.values()))
        description += " without the MPTS-52 and MP-20 test formulas"
    with quiet_dependencies():
        report = _build(args, records, excluded, description)
    print(report)
    return 0 if report.n_stored else 1


def _build(
    args: argparse.Namespace, records: Iterable[TemplateRecord], excluded: list[str], description: str
) -> Any:
    from cryspnet_gen.sources.templates import build_store

    return build_store(
        records,
        args.out,
        max_sites=args.max_sites,
        max_e_above_hull=args.max_e_above_hull,
        exclude_formulas=excluded,
        description=description,
        workers=args.workers,
        overwrite=args.force,
        progress=not args.quiet,
    )


def open_store(path: str | None) -> TemplateStore:
    """The store at ``path``, else the one named by ``$CRYSPNET_GEN_TEMPLATES``."""
    from cryspnet_gen.sources.templates import ENV_VAR, resolve_store

    store = resolve_store(path)
    if store is None:
        raise CLIError(
            f"no template store: pass --templates STORE or set {ENV_VAR} (the prototype library shipped with "
            "cryspnet-gen is not installed)"
        )
    return store


def cmd_templates_info(args: argparse.Namespace) -> int:
    import json

    store = open_store(args.templates or args.store)
    print(store)
    print(json.dumps(store.manifest, indent=1))
    return 0


def cmd_templates_lookup(args: argparse.Namespace) -> int:
    from cryspnet_gen.formula import anonymous_formula
    from cryspnet_gen.symmetry import space_group_symbol

    store = open_store(args.templates)
    try:
        anon = anonymous_formula(args.formula)
    except ValueError as exc:
        raise CLIError(f"formula {args.formula!r}: {exc}") from exc
    rows = store.lookup(args.formula)
    print(f"{args.formula}: anonymous formula {anon}, {len(rows)} templates")
    for sg, group in sorted(rows.groupby("space_group"), key=lambda kv: -len(kv[1]))[: args.n]:
        examples = ", ".join(
            f"{f} ({i})" for f, i in zip(group["formula"][:3], group["template_id"][:3], strict=True)
        )
        print(
            f"  {space_group_symbol(int(sg)):>12} ({int(sg):>3})  {len(group):>5} templates, e.g. {examples}"
        )
    return 0


def add_build(subparsers: Any) -> None:
    b = subcommand(
        subparsers,
        "build",
        "build a template store from structures",
        description=f"Build a template store. {BUILD_COST}",
    )
    b.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="SOURCE",
        help="a data folder like ../shared/data, a folder of CIF/POSCAR/JSON files, or 'materials-project'",
    )
    b.add_argument("--out", required=True, metavar="DIR", help="store folder to write")
    b.add_argument(
        "--max-sites",
        type=positive_int,
        default=None,
        help="leave out structures with more atoms (default: keep all)",
    )
    b.add_argument(
        "--max-e-above-hull",
        type=float,
        default=None,
        help="leave out structures further above the hull, eV/atom (default: keep all)",
    )
    b.add_argument(
        "--exclude-formulas",
        type=existing_file,
        default=None,
        metavar="FILE",
        help="file of formulas to leave out, one per line or CSV 'formula' (default: none)",
    )
    b.add_argument(
        "--exclude-test-sets",
        action="store_true",
        help="leave out the MPTS-52 and MP-20 test formulas of the data folder (for benchmarking)",
    )
    b.add_argument(
        "--data-dir",
        default=None,
        help="data folder for --exclude-test-sets (default: --from when it is one, else as for other commands)",
    )
    b.add_argument("--api-key", default=None, help="Materials Project API key (default: $MP_API_KEY)")
    b.add_argument("--workers", type=positive_int, default=1, help="processes for the symmetry analysis")
    b.add_argument(
        "--prototypes",
        action="store_true",
        help="build a compact prototype library (structure types in Wyckoff form) from a data folder, like the "
        "shipped one; the first build analyses every MP structure (10-20 min on 2 cores, cached), later ones "
        "take seconds",
    )
    b.add_argument(
        "--variant",
        choices=("full", "bench", "no-test", "mp20-equal", "mpts52-proxy"),  # prototype_build.VARIANTS
        default="full",
        help="with --prototypes: which structures (full: all; bench: no MPTS-52/MP-20 val/test formula; "
        "no-test: no MPTS-52/MP-20 test formula; mp20-equal / mpts52-proxy: the benchmarks' equal-data pools)",
    )
    b.add_argument(
        "--per-type",
        type=non_negative_int,
        default=0,
        help="with --prototypes: representatives kept per structure type; 0 keeps every structure, as the "
        "shipped library does (validation: 0 beats 30 by 5 points at k=1)",
    )
    add_force(b, "an existing store")
    b.set_defaults(func=cmd_templates_build)


def add_info(subparsers: Any) -> None:
    i = subcommand(subparsers, "info", "what a template store holds")
    i.add_argument("store", nargs="?", default=None, metavar="STORE", help=STORE_HELP)
    i.add_argument("--templates", default=None, metavar="STORE", help="the same as STORE (default: STORE)")
    i.set_defaults(func=cmd_templates_info)


def add_lookup(subparsers: Any) -> None:
    q = subcommand(subparsers, "lookup", "templates of a formula's anonymous formula, by space group")
    q.add_argument("formula", metavar="FORMULA", help="a chemical formula, e.g. SrTiO3")
    q.add_argument("--templates", default=None, metavar="STORE", help=STORE_HELP)
    deprecated_alias(q, "--store", "--templates", "templates")
    q.add_argument("-n", type=positive_int, default=10, help="space groups to list")
    q.set_defaults(func=cmd_templates_lookup)


def add_subcommands(subparsers: Any) -> None:
    """Add ``templates`` (and its actions ``build``, ``info``, ``lookup``) to the ``cryspnet-gen`` subparsers."""
    p = subcommand(
        subparsers, "templates", "build and inspect template stores (known structures as candidates)"
    )
    actions = p.add_subparsers(dest="templates_command", required=True, metavar="ACTION")
    add_build(actions)
    add_info(actions)
    add_lookup(actions)
    add_train_ranker(actions)
