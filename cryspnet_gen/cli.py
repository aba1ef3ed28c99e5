"""``cryspnet-gen``: thin command-line subcommands over the public API.

Every subcommand reports bad input on stderr with a non-zero exit code; batch commands finish the good rows.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cryspnet_gen import __version__

logger = logging.getLogger("cryspnet_gen")


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def _read_formulas(formulas: Sequence[str], input_file: str | None) -> list[str]:
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


# ----------------------------------------------------------------------------------------------------------
# featurize


def _cmd_featurize(args: argparse.Namespace) -> int:
    import pandas as pd

    from cryspnet_gen.featurize import featurize

    formulas = _read_formulas(args.formulas, args.input)
    feats = featurize(formulas)
    frame = pd.DataFrame(feats.matrix, columns=feats.labels)
    frame.insert(0, "formula", formulas)
    frame.insert(1, "error", feats.errors)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(out)
        print(f"wrote {len(frame)} rows x {len(feats.labels)} features to {out}")
    else:
        shown = frame.set_index("formula").drop(columns="error").T
        with pd.option_context("display.max_rows", 20, "display.width", 120):
            print(shown)
        print(f"[{len(feats.labels)} features per formula]")
    n_bad = sum(e is not None for e in feats.errors)
    for formula, err in zip(formulas, feats.errors, strict=True):
        if err is not None:
            print(f"error: {formula!r}: {err}", file=sys.stderr)
    return 1 if n_bad else 0


# ----------------------------------------------------------------------------------------------------------
# data


def _cmd_data_build(args: argparse.Namespace) -> int:
    from cryspnet_gen.data import build

    result = build(
        args.data_dir,
        workers=args.workers,
        use_cache=not args.no_cache,
        progress=not args.quiet,
        max_rows=args.max_rows,
    )
    if result.structures.from_cache:
        print("structure table: loaded from cache (inputs unchanged)")
    print(result.summary(policy=args.labels, seed=args.seed))
    for source, mid, reason in result.structures.errors[:10]:
        print(f"skipped {source} {mid}: {reason}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------------------
# train / evaluate / predict


def _train_config(args: argparse.Namespace):  # -> TrainConfig
    import json

    from cryspnet_gen.train import TrainConfig

    config = TrainConfig.preset(args.preset) if args.preset else TrainConfig()
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise CLIError(f"config file {args.config!r} does not exist")
        overrides = json.loads(path.read_text())
        unknown = set(overrides) - set(config.as_dict()) - {"@module", "@class", "@version"}
        if unknown:
            raise CLIError(f"{args.config}: unknown TrainConfig field(s) {sorted(unknown)}")
        config = TrainConfig(
            **{k: v for k, v in {**config.as_dict(), **overrides}.items() if not k.startswith("@")}
        )
    config.quiet = args.quiet
    return config


def _cmd_train(args: argparse.Namespace) -> int:
    import time

    from cryspnet_gen.train import train_from_data

    config = _train_config(args)
    start = time.perf_counter()
    path = train_from_data(
        args.split,
        out_dir=args.out,
        name=args.name,
        version=args.version,
        data_dir=args.data_dir,
        labels=args.labels,
        config=config,
        seed=args.seed,
        max_rows=args.max_rows,
        overwrite=args.force,
    )
    print(f"trained bundle written to {path} in {time.perf_counter() - start:.0f} s")
    return 0


def _load(args: argparse.Namespace):  # -> Predictor
    from cryspnet_gen.predict import load_predictor

    if getattr(args, "model_path", None):
        return load_predictor(path=args.model_path)
    return load_predictor(getattr(args, "model", None))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cryspnet_gen.evaluate import evaluate
    from cryspnet_gen.predict import load_predictor
    from cryspnet_gen.train import frame_and_features

    predictor = load_predictor(path=args.model_path)
    frame, X = frame_and_features(
        "bench", data_dir=args.data_dir, progress=not args.quiet, max_rows=args.max_rows
    )
    ablation = {}
    for spec in args.ablation or []:
        policy, _, path = spec.partition("=")
        if not path:
            raise CLIError(f"--ablation takes POLICY=BUNDLE_DIR, got {spec!r}")
        ablation[policy] = load_predictor(path=path)
    report = evaluate(
        predictor,
        frame,
        X,
        out_dir=args.out,
        random_forest=not args.no_rf,
        rf_trees=args.rf_trees,
        ablation=ablation or None,
        seed=args.seed,
    )
    print(report.markdown)
    print(f"report written to {args.out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from cryspnet_gen.predict import predictions_to_dataframe

    formulas = _read_formulas(args.formulas, args.input)
    predictor = _load(args)
    preds = predictor.predict(
        formulas,
        top_bravais=args.top_bravais,
        top_space_groups=args.top_space_groups,
        model=args.bravais_model,
    )
    frame = predictions_to_dataframe(preds)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        if out.suffix.lower() == ".json":
            import json

            tmp.write_text(json.dumps([p.as_dict() for p in preds], indent=1))
        else:
            frame.to_csv(tmp, index=False)
        tmp.replace(out)
        print(f"wrote predictions for {len(preds)} formulas to {out}")
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.width", 160, "display.max_columns", 20):
            print(frame.to_string(index=False))
    failed = [(p.formula, p.error) for p in preds if p.error]
    for formula, err in failed:
        print(f"error: {formula!r}: {err}", file=sys.stderr)
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------------------------
# generate


def _cmd_generate(args: argparse.Namespace) -> int:
    from cryspnet_gen.generate import generate_many, write_candidates

    formulas = _read_formulas(args.formulas, args.input)
    formats = tuple(f.strip().lower() for f in args.format.split(",") if f.strip())
    unknown = set(formats) - {"poscar", "cif"}
    if unknown or not formats:
        raise CLIError(f"--format takes poscar and/or cif, comma-separated; got {args.format!r}")
    out = Path(args.output)
    from cryspnet_gen.templates import ENV_VAR, resolve_store

    store = resolve_store(args.templates) if args.source != "cryspnet" else None
    if args.source in ("templates", "both") and store is None:
        raise CLIError(
            f"--source {args.source} needs --templates STORE or {ENV_VAR} (see 'cryspnet-gen templates build')"
        )
    if store is None and args.source is None and not args.quiet:
        print(
            f"templates are off (no --templates and {ENV_VAR} unset): CRYSPNet candidates only",
            file=sys.stderr,
        )
    predictor = _load(args)
    results = generate_many(
        formulas,
        args.k,
        seed=args.seed,
        predictor=predictor,
        model=args.bravais_model,
        max_atoms=args.max_atoms,
        space_groups=args.space_group,
        timeout=args.timeout,
        progress=not args.quiet,
        relax=args.relax,
        relax_steps=args.steps,
        source=args.source,
        templates=store,
    )
    n_failed = 0
    for result in results:
        if not result.ok:
            n_failed += 1
            print(f"error: {result.formula!r}: {result.error}", file=sys.stderr)
            continue
        if result.warning:
            print(f"warning: {result.formula!r}: {result.warning}", file=sys.stderr)
        try:
            paths = write_candidates(result.candidates, out, formats=formats, overwrite=args.force)
        except FileExistsError as exc:
            n_failed += 1
            print(f"error: {result.formula!r}: {exc}", file=sys.stderr)
            continue
        for cand in result.candidates:
            extra = "" if cand.energy_per_atom is None else f", E = {cand.energy_per_atom:.4f} eV/atom"
            print(
                f"{cand.formula:>16}  #{cand.rank}  {cand.bravais} {cand.space_group_symbol} ({cand.space_group})  "
                f"p = {cand.probability:.3f}  Z = {cand.z}  {cand.nsites} sites{extra}"
                + (f"  [template {cand.template_id}]" if cand.template_id else "")
            )
        print(f"  -> {len(paths)} files in {out}")
    return 1 if n_failed else 0


def _cmd_templates_build(args: argparse.Namespace) -> int:
    from cryspnet_gen import templates as T

    src = str(args.source)
    if src == "materials-project":
        records = T.records_from_materials_project(
            args.api_key, max_sites=args.max_sites, max_e_above_hull=args.max_e_above_hull
        )
        description = "Materials Project API"
    elif (Path(src) / "mp2025_topology").is_dir():
        records = T.records_from_data_dir(src)
        description = f"Materials Project structures of the data folder {src}"
    elif Path(src).is_dir():
        records = T.records_from_folder(src)
        description = f"structure files under {src}"
    else:
        raise CLIError(
            f"--from {src!r} is neither a folder nor 'materials-project'; give a data folder (with "
            "mp2025_topology/), a folder of CIF/POSCAR/JSON files, or materials-project"
        )
    excluded: list[str] = []
    if args.exclude_formulas:
        excluded += _read_formulas([], args.exclude_formulas)
    if args.exclude_test_sets:
        from cryspnet_gen.data import read_test_formulas

        tests = read_test_formulas(args.data_dir or (src if Path(src, "mp2025_topology").is_dir() else None))
        excluded += sorted(set().union(*tests.values()))
        description += " without the MPTS-52 and MP-20 test formulas"
    report = T.build_store(
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
    print(report)
    return 0 if report.n_stored else 1


def _cmd_templates_info(args: argparse.Namespace) -> int:
    import json

    from cryspnet_gen.templates import ENV_VAR, resolve_store

    store = resolve_store(args.store)
    if store is None:
        raise CLIError(f"no store given and {ENV_VAR} is not set")
    print(store)
    print(json.dumps(store.manifest, indent=1))
    return 0


def _cmd_templates_lookup(args: argparse.Namespace) -> int:
    from cryspnet_gen.symmetry import space_group_symbol
    from cryspnet_gen.templates import ENV_VAR, anonymous_formula, resolve_store

    store = resolve_store(args.store)
    if store is None:
        raise CLIError(f"no store given and {ENV_VAR} is not set")
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


# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryspnet-gen",
        description="Chemical formula -> candidate crystal structures (CRYSPNet re-implemented).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("featurize", help="composition features of formulas (CSV)")
    p.add_argument("formulas", nargs="*", metavar="FORMULA")
    p.add_argument("-i", "--input", help="file of formulas: CSV with a 'formula' column, or one per line")
    p.add_argument("-o", "--output", help="CSV file to write (default: print a preview)")
    p.set_defaults(func=_cmd_featurize)

    p = sub.add_parser("data", help="build the labelled tables and splits from the open data")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    b = data_sub.add_parser("build", help="build (or load from cache) the tables and print a summary")
    b.add_argument("--data-dir", help="data folder (default: $CRYSPNET_GEN_DATA_DIR or ../shared/data)")
    b.add_argument("--workers", type=int, default=None, help="processes for the symmetry analysis")
    b.add_argument("--no-cache", action="store_true", help="rebuild and do not write the cache")
    b.add_argument("--max-rows", type=int, default=None, help="use only the first N rows of each source")
    b.add_argument(
        "--labels", choices=["mp", "mp+cod", "experimental"], default="mp", help="labelling policy"
    )
    b.add_argument("--seed", type=int, default=0, help="validation draw seed")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_cmd_data_build)

    p = sub.add_parser("train", help="train a model bundle on a named split of the open data")
    p.add_argument(
        "--split", choices=["bench", "full"], default="bench", help="bench: test formulas held out"
    )
    p.add_argument("--out", required=True, help="folder to write the bundle into (as OUT/NAME)")
    p.add_argument("--name", default=None, help="bundle name (default cryspnet-SPLIT)")
    p.add_argument("--version", default="1", help="bundle version string")
    p.add_argument("--data-dir", help="data folder (default: $CRYSPNET_GEN_DATA_DIR or ../shared/data)")
    p.add_argument(
        "--labels", choices=["mp", "mp+cod", "experimental"], default="mp", help="labelling policy"
    )
    p.add_argument("--preset", default=None, help="named hyperparameter preset (see TrainConfig.preset)")
    p.add_argument("--config", default=None, help="JSON file of TrainConfig fields overriding the preset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows", type=int, default=None, help="use only the first N rows of each source")
    p.add_argument("--force", action="store_true", help="overwrite an existing bundle folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluation report of a bench-split bundle on the test sets")
    p.add_argument("--model-path", required=True, help="bundle folder trained on the bench split")
    p.add_argument("--out", required=True, help="folder for evaluation.md, evaluation.json and plots")
    p.add_argument("--data-dir", help="data folder (default: $CRYSPNET_GEN_DATA_DIR or ../shared/data)")
    p.add_argument("--no-rf", action="store_true", help="skip the RandomForest baseline")
    p.add_argument("--rf-trees", type=int, default=200)
    p.add_argument(
        "--ablation", action="append", metavar="POLICY=DIR", help="another bundle to score, e.g. mp+cod=DIR"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="Bravais lattice, space groups and lattice parameters of formulas")
    p.add_argument("formulas", nargs="*", metavar="FORMULA")
    p.add_argument("-i", "--input", help="file of formulas: CSV with a 'formula' column, or one per line")
    p.add_argument("-o", "--output", help="write CSV (or JSON if the name ends in .json) instead of printing")
    p.add_argument("--model", default=None, help="shipped bundle name (default: the shipped default)")
    p.add_argument("--model-path", default=None, help="bundle folder (wins over --model)")
    p.add_argument("--top-bravais", type=int, default=2)
    p.add_argument("--top-space-groups", type=int, default=3)
    p.add_argument("--bravais-model", choices=["master", "metal", "oxide"], default="master")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("generate", help="candidate crystal structures of formulas, written as POSCAR/CIF")
    p.add_argument("formulas", nargs="*", metavar="FORMULA")
    p.add_argument("-i", "--input", help="file of formulas: CSV with a 'formula' column, or one per line")
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
    p.add_argument("--model", default=None, help="shipped bundle name (default: the shipped default)")
    p.add_argument("--model-path", default=None, help="bundle folder (wins over --model)")
    p.add_argument("--bravais-model", choices=["master", "metal", "oxide"], default="master")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--source",
        choices=["cryspnet", "templates", "both"],
        default=None,
        help="candidate source (default: both with a template store, else cryspnet)",
    )
    p.add_argument(
        "--templates", default=None, help="template store folder (default $CRYSPNET_GEN_TEMPLATES)"
    )
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("templates", help="build and inspect template stores (known structures as candidates)")
    t_sub = p.add_subparsers(dest="templates_command", required=True, metavar="ACTION")
    b = t_sub.add_parser("build", help="build a template store from structures")
    b.add_argument(
        "--from",
        dest="source",
        required=True,
        help="a data folder like ../shared/data, a folder of CIF/POSCAR/JSON files, or 'materials-project'",
    )
    b.add_argument("--out", required=True, help="store folder to write")
    b.add_argument("--max-sites", type=int, help="leave out structures with more atoms")
    b.add_argument(
        "--max-e-above-hull", type=float, help="leave out structures further above the hull (eV/atom)"
    )
    b.add_argument("--exclude-formulas", help="file of formulas to leave out (one per line or CSV 'formula')")
    b.add_argument(
        "--exclude-test-sets",
        action="store_true",
        help="leave out the MPTS-52 and MP-20 test formulas of the data folder (for benchmarking)",
    )
    b.add_argument("--data-dir", help="data folder for --exclude-test-sets (default: as for other commands)")
    b.add_argument("--api-key", help="Materials Project API key (default $MP_API_KEY)")
    b.add_argument("--workers", type=int, default=1, help="processes for the symmetry analysis (default 1)")
    b.add_argument("--force", action="store_true", help="replace an existing store")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_cmd_templates_build)
    i = t_sub.add_parser("info", help="what a store holds")
    i.add_argument("store", nargs="?", help="store folder (default $CRYSPNET_GEN_TEMPLATES)")
    i.set_defaults(func=_cmd_templates_info)
    q = t_sub.add_parser("lookup", help="templates of a formula's anonymous formula, by space group")
    q.add_argument("formula")
    q.add_argument("--store", help="store folder (default $CRYSPNET_GEN_TEMPLATES)")
    q.add_argument("-n", type=int, default=10, help="space groups to list (default 10)")
    q.set_defaults(func=_cmd_templates_lookup)

    from cryspnet_gen.workflows.cli import add_subcommands

    add_subcommands(sub)  # submit, run, status, results
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from cryspnet_gen.config import DataDirError
    from cryspnet_gen.data import DataFormatError
    from cryspnet_gen.predict import BundleError
    from cryspnet_gen.templates import TemplateStoreError

    try:
        return int(args.func(args))
    except (CLIError, DataDirError, DataFormatError, BundleError, TemplateStoreError, FileExistsError) as exc:
        print(f"cryspnet-gen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cryspnet-gen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
