"""``cryspnet-gen submit | run | status | results``: candidate relaxation workflows from the command line.

:func:`add_subcommands` adds the four subcommands to the main ``cryspnet-gen`` parser::

    sub = parser.add_subparsers(dest="command", required=True)
    from cryspnet_gen.workflows.cli import add_subcommands
    add_subcommands(sub)

Each sets ``func``, which takes the parsed ``argparse.Namespace`` and returns the exit code (0 ok; 1 some
formulas or jobs failed; 2 a usage or store error, printed on stderr without a traceback). The module also
runs on its own: ``python -m cryspnet_gen.workflows.cli results NaCl``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryspnet_gen.arguments import add_source_options

__all__ = [
    "add_results",
    "add_run",
    "add_status",
    "add_subcommands",
    "add_submit",
    "build_parser",
    "cmd_results",
    "cmd_run",
    "cmd_status",
    "cmd_submit",
    "main",
]

Command = Callable[[argparse.Namespace], int]


class WorkflowCLIError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def _user_errors(func: Command) -> Command:
    """Print user-facing errors (store locked, bad model path, ...) as one line and return 2."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        from cryspnet_gen.bundle import BundleError
        from cryspnet_gen.sources.templates import TemplateStoreError
        from cryspnet_gen.workflows.store import StoreError

        try:
            return func(args)
        except (StoreError, WorkflowCLIError, BundleError, TemplateStoreError, FileNotFoundError) as exc:
            print(f"cryspnet-gen {args.command}: error: {exc}", file=sys.stderr)
            return 2

    return wrapper


def _store_options(p: argparse.ArgumentParser, *, wait: bool = True) -> None:
    g = p.add_argument_group("where workflows live (default: the embedded store)")
    g.add_argument(
        "--store",
        metavar="DIR",
        default=None,
        help="embedded store folder (default: $CRYSPNET_GEN_STORE or ~/.local/share/cryspnet-gen/store)",
    )
    g.add_argument(
        "--launchpad",
        metavar="FILE",
        default=None,
        help="FireWorks my_launchpad.yaml of a MongoDB instead (job outputs: jobflow's JOB_STORE, "
        "set by $JOBFLOW_CONFIG_FILE)",
    )
    if wait:
        g.add_argument(
            "--wait",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="wait this long for another process using the embedded store (default: refuse at once)",
        )


def _open(args: argparse.Namespace, *, readonly: bool = False) -> Any:
    from cryspnet_gen.workflows.store import open_store

    return open_store(
        args.store, launchpad=args.launchpad, readonly=readonly, wait=getattr(args, "wait", 0.0)
    )


def _check_model(args: argparse.Namespace) -> None:
    from cryspnet_gen.bundle import DEFAULT_BUNDLE, available_bundles

    if args.model_path:
        path = Path(args.model_path).expanduser()
        if not (path / "manifest.json").is_file():
            raise WorkflowCLIError(
                f"--model-path {args.model_path!r} is not a model bundle folder (no manifest.json)"
            )
        return
    name = args.model or DEFAULT_BUNDLE
    shipped = available_bundles()
    if name not in shipped:
        raise WorkflowCLIError(
            f"no shipped model bundle named {name!r} (shipped: {shipped or 'none'}): pass --model-path DIR"
        )


# ----------------------------------------------------------------------------------------------------------


def _source_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """generate_candidates options for the candidate source (the store path made absolute for the workers)."""
    out: dict[str, Any] = {}
    if args.templates:
        from cryspnet_gen.sources.templates import load_store

        store = Path(args.templates).expanduser().resolve()
        load_store(store)  # fail now, not on a worker
        out["templates"] = str(store)
    if args.source:
        if args.source != "cryspnet" and not args.templates:
            raise WorkflowCLIError(
                f"--source {args.source} needs --templates STORE (a path the workers can read)"
            )
        out["source"] = args.source
    if not args.known:
        out["known"] = False
    return out


@_user_errors
def cmd_submit(args: argparse.Namespace) -> int:
    from cryspnet_gen.workflows.makers import CandidateRelaxMaker, relax_maker_for
    from cryspnet_gen.workflows.manage import submit

    _check_model(args)
    if args.k < 1:
        raise WorkflowCLIError(f"-k must be >= 1, got {args.k}")
    maker = CandidateRelaxMaker(
        k=args.k,
        seed=args.seed,
        model=args.model,
        model_path=args.model_path,
        max_atoms=args.max_atoms,
        space_groups=args.space_group,
        relax_maker=relax_maker_for(args.relax, steps=args.steps, fmax=args.fmax),
        relax_category=args.relax_category,
        generate_kwargs=_source_kwargs(args),
    )
    with _open(args) as handle:
        outcomes = submit(args.formulas, maker=maker, handle=handle)
        where = handle.location
    n_added = n_there = n_bad = 0
    for o in outcomes:
        if o.error:
            n_bad += 1
            print(f"error    {o.formula}: {o.error}", file=sys.stderr)
        elif o.added:
            n_added += 1
            print(f"added    {o.formula}: fireworks {o.fw_ids} (key {o.key})")
        else:
            n_there += 1
            print(
                f"already  {o.formula}: already submitted with these settings (workflow {o.state}, "
                f"fireworks {o.fw_ids}, key {o.key}); not added again"
            )
    print(f"{n_added} added, {n_there} already there, {n_bad} bad formula(s); store: {where}")
    if n_added:
        hint = (
            f" --store {args.store}"
            if args.store
            else (f" --launchpad {args.launchpad}" if args.launchpad else "")
        )
        print(f"run them with: cryspnet-gen run{hint}   (or rlaunch/qlaunch on a cluster)")
    return 1 if n_bad else 0


@_user_errors
def cmd_run(args: argparse.Namespace) -> int:
    from cryspnet_gen.workflows.manage import run_local

    with _open(args) as handle:
        summary = run_local(
            handle,
            formulas=args.formulas or None,
            rerun_fizzled_first=args.rerun_fizzled,
            max_jobs=args.max_jobs,
            category=args.category,
            progress=not args.quiet,
            fw_log_level="INFO" if getattr(args, "verbose", False) else "WARNING",
            threads=args.threads,
        )
    if summary.recovered:
        print(
            f"reset {len(summary.recovered)} job(s) left RUNNING by an interrupted run: {summary.recovered}"
        )
    if summary.rerun:
        print(f"marked {len(summary.rerun)} FIZZLED job(s) to run again: {summary.rerun}")
    print(
        f"ran {summary.launched} job(s) in {summary.seconds:.1f} s: {len(summary.completed)} COMPLETED, "
        f"{len(summary.fizzled)} FIZZLED"
    )
    if summary.fizzled:
        print(
            "see the errors with `cryspnet-gen results FORMULA`; rerun with `cryspnet-gen run --rerun-fizzled`"
        )
    if summary.interrupted:
        print(
            "interrupted: the running job is FIZZLED; `cryspnet-gen run --rerun-fizzled` continues",
            file=sys.stderr,
        )
        return 130
    return 1 if summary.fizzled else 0


def _busy_note(handle: Any) -> None:
    if handle.busy:
        b = handle.busy
        print(
            f"note: process {b.get('pid', '?')} ({b.get('command', '?')}) is writing this store; "
            "showing its last saved state",
            file=sys.stderr,
        )


@_user_errors
def cmd_status(args: argparse.Namespace) -> int:
    from cryspnet_gen.workflows.manage import workflow_status

    with _open(args, readonly=True) as handle:
        _busy_note(handle)
        rows = workflow_status(handle.launchpad, args.formulas or None)
        where = handle.location
    if not rows:
        print(f"no workflows{' for ' + ', '.join(args.formulas) if args.formulas else ''} in {where}")
        return 1 if args.formulas else 0
    cols = ["WAITING", "READY", "RUNNING", "COMPLETED", "FIZZLED"]
    header = f"{'formula':<16} {'k':>2} {'seed':>4} {'relax':<7} {'workflow':<10} " + " ".join(
        f"{c:>9}" for c in cols
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        counts = " ".join(f"{r.counts.get(c, 0):>9d}" for c in cols)
        other = sum(v for s, v in r.counts.items() if s not in cols)
        extra = f"  (+{other} other)" if other else ""
        print(f"{r.formula:<16} {r.k:>2} {r.seed:>4} {r.relax:<7} {r.state:<10} {counts}{extra}")
    print(f"store: {where}")
    return 0


@_user_errors
def cmd_results(args: argparse.Namespace) -> int:
    from cryspnet_gen.workflows.manage import find_workflows
    from cryspnet_gen.workflows.results import format_results, load_results, write_results

    failed = False
    payload = []
    with _open(args, readonly=True) as handle:
        _busy_note(handle)
        job_store = handle.job_store()
        seen: set[str] = set()
        for formula in args.formulas:
            wfs = find_workflows(handle.launchpad, [formula], k=args.k, seed=args.seed, relax=args.relax)
            if not wfs:
                print(f"no workflow for {formula} in {handle.location} (submit it first)", file=sys.stderr)
                failed = True
                continue
            for wf in wfs:
                if wf["metadata"]["cryspnet"]["key"] in seen:  # the same formula spelled twice
                    continue
                seen.add(wf["metadata"]["cryspnet"]["key"])
                res = load_results(handle, wf, job_store=job_store)
                failed = failed or bool(res.failures) or not any(r.ok for r in res.relaxed)
                if args.json:
                    payload.append(
                        {
                            "metadata": res.metadata,
                            "state": res.state,
                            "complete": res.complete,
                            "counts": res.counts,
                            "failures": res.failures,
                            "candidates": res.rows(),
                        }
                    )
                else:
                    print(format_results(res))
                    print()
                if args.output:
                    out = Path(args.output) / res.label
                    files = write_results(res, out)
                    n_cif = sum(p.suffix == ".cif" for p in files)
                    msg = f"wrote {n_cif} CIF file(s), summary.csv and results.json to {out}"
                    print(msg, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(payload, indent=1, default=str))
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------------------------


def add_submit(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "submit",
        help="add candidate-relaxation workflows (generate k candidates, relax each, rank by energy)",
        description="Add one FireWorks workflow per formula: generate k candidates, relax each (CHGNet or "
        "VASP via atomate2), rank them by energy per atom. Submitting the same formula with the same "
        "settings again adds nothing.",
    )
    p.add_argument("formulas", nargs="+", metavar="FORMULA")
    p.add_argument("-k", type=int, default=3, help="candidates per formula (default 3)")
    p.add_argument("--relax", choices=["chgnet", "vasp"], default="chgnet", help="relaxer (default chgnet)")
    p.add_argument("--steps", type=int, default=None, help="ionic step cap (chgnet default 500; vasp: NSW)")
    p.add_argument("--fmax", type=float, default=None, help="force criterion, eV/Å (chgnet default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="structure generation seed (default 0)")
    p.add_argument("--model", default=None, help="shipped model bundle name (default: the shipped default)")
    p.add_argument(
        "--model-path", default=None, metavar="DIR", help="model bundle folder (wins over --model)"
    )
    p.add_argument("--max-atoms", type=int, default=None, help="largest candidate cell to generate")
    p.add_argument(
        "--space-group",
        type=int,
        action="append",
        default=None,
        metavar="N",
        help="generate in this space group instead of the predicted ones (repeatable)",
    )
    p.add_argument(
        "--relax-category", default=None, metavar="NAME", help="FireWorks _category of the relaxation jobs"
    )
    add_source_options(
        p,
        templates_help="template store or prototype library folder the workers can read (default: the "
        "prototype library shipped with cryspnet-gen)",
    )
    _store_options(p)
    p.set_defaults(func=cmd_submit)


def add_run(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the submitted workflows here, job after job (FireWorks rapidfire)",
        description="Run READY jobs in this process until none is left, showing progress.",
    )
    p.add_argument("formulas", nargs="*", metavar="FORMULA", help="only these formulas' workflows")
    p.add_argument("--rerun-fizzled", action="store_true", help="run FIZZLED jobs again first")
    p.add_argument("--max-jobs", type=int, default=None, metavar="N", help="stop after N jobs")
    p.add_argument(
        "--category",
        default=None,
        help="only jobs of this FireWorks _category ('__none__': only uncategorised)",
    )
    p.add_argument(
        "--threads", type=int, default=None, metavar="N", help="torch threads (1 is fastest for small cells)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _store_options(p)
    p.set_defaults(func=cmd_run)


def add_status(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "status", help="jobs per state (READY / RUNNING / COMPLETED / FIZZLED) for each submitted formula"
    )
    p.add_argument("formulas", nargs="*", metavar="FORMULA", help="only these formulas")
    _store_options(p, wait=False)
    p.set_defaults(func=cmd_status)


def add_results(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "results",
        help="ranking of the relaxed candidates of a formula; relaxed structures as CIF",
        description="Table of rank, predicted group and probability, relaxed energy per atom, space group "
        "after relaxation (symprec 0.1) and volume change; FIZZLED jobs with their error.",
    )
    p.add_argument("formulas", nargs="+", metavar="FORMULA")
    p.add_argument(
        "-o", "--output", metavar="DIR", help="write CIFs, summary.csv, results.json to DIR/<label>/"
    )
    p.add_argument("-k", type=int, default=None, help="only workflows with this k")
    p.add_argument("--seed", type=int, default=None, help="only workflows with this seed")
    p.add_argument("--relax", default=None, help="only workflows with this relaxer (chgnet, vasp)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _store_options(p, wait=False)
    p.set_defaults(func=cmd_results)


def add_subcommands(subparsers: Any) -> None:
    """Add ``submit``, ``run``, ``status`` and ``results`` to the ``cryspnet-gen`` subparsers.

    Parameters
    ----------
    subparsers
        What ``parser.add_subparsers(dest="command", ...)`` returned.
    """
    add_submit(subparsers)
    add_run(subparsers)
    add_status(subparsers)
    add_results(subparsers)


def build_parser() -> argparse.ArgumentParser:
    """A parser with only the workflow subcommands (for ``python -m cryspnet_gen.workflows.cli``)."""
    from cryspnet_gen import __version__

    parser = argparse.ArgumentParser(
        prog="cryspnet-gen", description="cryspnet-gen candidate relaxation workflows"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("cryspnet-gen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
