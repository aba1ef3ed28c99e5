"""``cryspnet-gen generate``: candidate crystal structures of formulas, written as POSCAR/CIF."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, cast

from cryspnet_gen.arguments import (
    add_model_option,
    add_source_options,
    non_negative_int,
    output_folder,
    positive_float,
    positive_int,
    space_group_number,
)
from cryspnet_gen.cli.common import (
    CLIError,
    add_bravais_model,
    add_force,
    add_formula_inputs,
    load_predictor_for,
    read_formulas,
    subcommand,
)

if TYPE_CHECKING:
    from pathlib import Path

    from cryspnet_gen.files import FileFormat
    from cryspnet_gen.options import GenerateOptions
    from cryspnet_gen.records import GenerationResult

__all__ = ["add_relax_options", "add_subcommands", "cmd_generate", "generate_options", "output_formats"]


def output_formats(text: str) -> tuple[FileFormat, ...]:
    """The ``--format`` value as a tuple of ``poscar`` / ``cif`` (an argparse type)."""
    names = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = set(names) - {"poscar", "cif"}
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"takes poscar and/or cif, comma-separated; got {text!r}")
    return tuple(cast("FileFormat", f) for f in names)


#: GenerateOptions field -> argument of ``cryspnet-gen generate``.
OPTION_ARGS = {
    "k": "k",
    "seed": "seed",
    "model": "bravais_model",
    "max_atoms": "max_atoms",
    "z_rule": "z_rule",
    "wyckoff": "wyckoff",
    "template_ranking": "template_ranking",
    "space_groups": "space_group",
    "timeout": "timeout",
    "relax": "relax",
    "relax_steps": "steps",
    "prerelax": "prerelax",
    "prerelax_pool": "prerelax_pool",
    "prerelax_steps": "prerelax_steps",
    "prerelax_timeout": "prerelax_timeout",
    "threads": "threads",
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
        a, b, c = (f"{x:.2f}" for x in cand.structure.lattice.abc)
        print(
            f"{cand.formula:>16}  #{cand.rank}  {cand.bravais} {cand.space_group_symbol} ({cand.space_group})  "
            f"p = {cand.probability:.3f}  Z = {cand.z}  {cand.nsites} sites  a b c = {a} {b} {c} Å{extra}"
            + (f"  [{cand.source} {cand.template_id}]" if cand.template_id else "")
            + ("  [not charge-balanced]" if cand.charge_balanced is False else "")
        )
    print(f"  -> {len(paths)} files in {out}")
    return True


def check_outputs(formulas: list[str], out: Path, *, force: bool) -> None:
    """Refuse, before any work, to write over a formula's files from an earlier run (unless ``force``)."""
    from cryspnet_gen.files import existing_candidate_files

    if force:
        return
    existing = existing_candidate_files(out, formulas)
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise CLIError(
            f"{existing[0]} already exists{more}: choose another -o folder or pass --force to replace"
        )


def cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cryspnet_gen.generate import generate_many
    from cryspnet_gen.runtime import quiet_dependencies

    formulas = read_formulas(args.formulas, args.input)
    out = Path(args.output)
    check_outputs(formulas, out, force=args.force)
    options = generate_options(args)
    with quiet_dependencies():
        predictor = load_predictor_for(args)
        results = generate_many(formulas, options=options, predictor=predictor, progress=not args.quiet)
    n_failed = sum(not report(r, out, args.format, overwrite=args.force) for r in results)
    return 1 if n_failed else 0


def add_subcommands(subparsers: Any) -> None:
    """Add ``generate`` to the ``cryspnet-gen`` subparsers."""
    from cryspnet_gen.options import DEFAULT_MAX_ATOMS, DEFAULT_TIMEOUT

    p = subcommand(subparsers, "generate", "candidate crystal structures of formulas, written as POSCAR/CIF")
    add_formula_inputs(p)
    p.add_argument("-k", type=positive_int, default=3, help="candidates per formula")
    p.add_argument(
        "-o", "--output", type=output_folder, default="candidates", metavar="DIR", help="output folder"
    )
    p.add_argument(
        "--format",
        type=output_formats,
        default="poscar,cif",
        help="structure files: poscar and/or cif, comma-separated",
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="random seed: the same seed, model and options rebuild the same structures",
    )
    p.add_argument(
        "--max-atoms", type=positive_int, default=DEFAULT_MAX_ATOMS, help="largest conventional cell to build"
    )
    p.add_argument(
        "--z-rule",
        choices=["smallest", "prior"],
        default=None,
        help="formula units per cell tried first by CRYSPNet candidates: the smallest the Wyckoff positions "
        "allow, or the bundle's Z prior (the most frequent in known crystals; default: smallest)",
    )
    p.add_argument(
        "--wyckoff",
        choices=["auto", "random", "prior"],
        default=None,
        help="orbits of CRYSPNet candidates: first those known crystals of the group and formula type use (the "
        "bundle's Wyckoff prior), or random (pyxtal, the paper's approach); default auto: the prior when the "
        "bundle has one",
    )
    p.add_argument(
        "--template-ranking",
        choices=["auto", "learned", "score"],
        default=None,
        help="order of template candidates: the bundle's learned ranker (the probability that the substituted "
        "structure is the true one) or the hand-weighted score; default auto: the ranker when the bundle has one",
    )
    p.add_argument(
        "--space-group",
        type=space_group_number,
        action="append",
        metavar="N",
        help="build only in this space group, 1..230; repeatable (default: the model's ranking)",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="seconds per formula",
    )
    add_relax_options(p)
    add_model_option(p)
    add_bravais_model(p)
    add_force(p)
    add_source_options(
        p,
        templates_help="template store or prototype library folder (default: $CRYSPNET_GEN_TEMPLATES, else the "
        "prototype library shipped with cryspnet-gen)",
    )
    p.set_defaults(func=cmd_generate)


def add_relax_options(p: argparse.ArgumentParser) -> None:
    """``--relax``, ``--steps``, the ``--prerelax`` options and ``--threads`` of ``generate``."""
    from cryspnet_gen.options import (
        DEFAULT_PRERELAX_STEPS,
        DEFAULT_PRERELAX_TIMEOUT,
        DEFAULT_RELAX_STEPS,
        DEFAULT_THREADS,
    )

    p.add_argument(
        "--relax",
        choices=["chgnet"],
        default=None,
        help="relax with CHGNet and re-rank by energy per atom (default: not relaxed)",
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        default=DEFAULT_RELAX_STEPS,
        help="relaxation step cap per structure (with --relax)",
    )
    p.add_argument(
        "--prerelax",
        choices=["chgnet"],
        default=None,
        help="build a larger pool of CRYSPNet structures, relax each briefly with CHGNet keeping its space group, "
        "and keep the k of lowest energy per atom (default: off; costs seconds to a minute per formula)",
    )
    p.add_argument(
        "--prerelax-pool",
        type=positive_int,
        default=None,
        metavar="N",
        help="CRYSPNet structures built and pre-relaxed per formula (with --prerelax; default: 4 x k)",
    )
    p.add_argument(
        "--prerelax-steps",
        type=positive_int,
        default=DEFAULT_PRERELAX_STEPS,
        help="step cap per pre-relaxation (with --prerelax)",
    )
    p.add_argument(
        "--prerelax-timeout",
        type=positive_float,
        default=DEFAULT_PRERELAX_TIMEOUT,
        metavar="SECONDS",
        help="seconds for all pre-relaxations of one formula; structures not reached keep their unrelaxed form "
        "and come after the relaxed ones (with --prerelax)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=DEFAULT_THREADS,
        help="torch and BLAS threads for --relax and --prerelax; more threads than free cores slow CHGNet down many times over "
        "(default: %(default)s, measured fastest: docs/benchmarks.md)",
    )
