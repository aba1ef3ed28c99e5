"""``cryspnet-gen generate``: candidate crystal structures of formulas, written as POSCAR/CIF."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, cast

from cryspnet_gen.arguments import add_source_options
from cryspnet_gen.cli.common import (
    CLIError,
    add_bravais_model,
    add_formula_inputs,
    add_model_options,
    load_predictor_for,
    read_formulas,
)

if TYPE_CHECKING:
    from pathlib import Path

    from cryspnet_gen.files import FileFormat
    from cryspnet_gen.options import GenerateOptions
    from cryspnet_gen.records import GenerationResult

__all__ = ["add_subcommands", "cmd_generate", "generate_options", "output_formats"]


def output_formats(text: str) -> tuple[FileFormat, ...]:
    """The ``--format`` value as a tuple of ``poscar`` / ``cif``."""
    names = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = set(names) - {"poscar", "cif"}
    if unknown or not names:
        raise CLIError(f"--format takes poscar and/or cif, comma-separated; got {text!r}")
    return tuple(cast("FileFormat", f) for f in names)


#: GenerateOptions field -> argument of ``cryspnet-gen generate``.
OPTION_ARGS = {
    "k": "k",
    "seed": "seed",
    "model": "bravais_model",
    "max_atoms": "max_atoms",
    "space_groups": "space_group",
    "timeout": "timeout",
    "relax": "relax",
    "relax_steps": "steps",
    "source": "source",
    "known": "known",
}


def generate_options(args: argparse.Namespace) -> GenerateOptions:
    """The :class:`~cryspnet_gen.options.GenerateOptions` of the arguments (the template store loaded once)."""
    from cryspnet_gen.arguments import option_values
    from cryspnet_gen.options import GenerateOptions
    from cryspnet_gen.sources.templates import ENV_VAR, resolve_store

    store = resolve_store(args.templates) if args.source != "cryspnet" else None
    if args.source in ("templates", "both") and store is None:
        raise CLIError(
            f"--source {args.source} needs --templates STORE or {ENV_VAR} (see 'cryspnet-gen templates build')"
        )
    try:
        return GenerateOptions(**option_values(args, OPTION_ARGS), templates=store)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


def report(result: GenerationResult, out: Path, formats: tuple[FileFormat, ...], *, overwrite: bool) -> bool:
    """Write one formula's candidates and print them; False (and an error on stderr) when it failed."""
    from cryspnet_gen.files import write_candidates

    if not result.ok:
        print(f"error: {result.formula!r}: {result.error}", file=sys.stderr)
        return False
    if result.warning:
        print(f"warning: {result.formula!r}: {result.warning}", file=sys.stderr)
    try:
        paths = write_candidates(result.candidates, out, formats=formats, overwrite=overwrite)
    except FileExistsError as exc:
        print(f"error: {result.formula!r}: {exc}", file=sys.stderr)
        return False
    for cand in result.candidates:
        extra = "" if cand.energy_per_atom is None else f", E = {cand.energy_per_atom:.4f} eV/atom"
        print(
            f"{cand.formula:>16}  #{cand.rank}  {cand.bravais} {cand.space_group_symbol} ({cand.space_group})  "
            f"p = {cand.probability:.3f}  Z = {cand.z}  {cand.nsites} sites{extra}"
            + (f"  [template {cand.template_id}]" if cand.template_id else "")
        )
    print(f"  -> {len(paths)} files in {out}")
    return True


def cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cryspnet_gen.generate import generate_many

    formulas = read_formulas(args.formulas, args.input)
    formats = output_formats(args.format)
    out = Path(args.output)
    options = generate_options(args)
    predictor = load_predictor_for(args)
    results = generate_many(formulas, options=options, predictor=predictor, progress=not args.quiet)
    n_failed = sum(not report(r, out, formats, overwrite=args.force) for r in results)
    return 1 if n_failed else 0


def add_subcommands(subparsers: Any) -> None:
    """Add ``generate`` to the ``cryspnet-gen`` subparsers."""
    p = subparsers.add_parser(
        "generate", help="candidate crystal structures of formulas, written as POSCAR/CIF"
    )
    add_formula_inputs(p)
    p.add_argument("-k", type=int, default=3, help="candidates per formula (default 3)")
    p.add_argument("-o", "--output", default="candidates", help="output folder (default ./candidates)")
    p.add_argument("--format", default="poscar,cif", help="poscar and/or cif, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-atoms", type=int, default=200, help="largest conventional cell to build")
    p.add_argument("--space-group", type=int, action="append", help="force this space group (repeatable)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per formula")
    p.add_argument(
        "--relax", choices=["chgnet"], default=None, help="relax with CHGNet and re-rank by energy"
    )
    p.add_argument("--steps", type=int, default=300, help="relaxation steps cap (with --relax)")
    add_model_options(p)
    add_bravais_model(p)
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_source_options(
        p,
        templates_help="template store or prototype library folder (default $CRYSPNET_GEN_TEMPLATES, else the "
        "prototype library shipped with cryspnet-gen)",
    )
    p.set_defaults(func=cmd_generate)
