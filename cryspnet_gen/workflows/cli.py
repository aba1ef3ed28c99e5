"""``cryspnet-gen submit | run | status | results | restore``: candidate relaxation workflows from the command line.

:func:`add_subcommands` adds the subcommands to the main ``cryspnet-gen`` parser::

    sub = parser.add_subparsers(dest="command", required=True)
    from cryspnet_gen.workflows.cli import add_subcommands
    add_subcommands(sub)

Every option is checked when the command line is parsed (argparse types and choices: a bad value is a usage
error, exit 2). Each command sets ``func``, which takes the parsed ``argparse.Namespace`` and returns the exit
code: 0 ok; 1 some formulas or jobs failed; 2 a usage or store error; 130 interrupted. Errors are one line on
stderr, never a traceback (``-v`` adds it). The module also runs on its own:
``python -m cryspnet_gen.workflows.cli results NaCl``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryspnet_gen.arguments import (
    ArgumentParser,
    add_model_option,
    add_source_options,
    existing_file,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    space_group_number,
    subcommand,
)

__all__ = [
    "add_restore",
    "add_results",
    "add_run",
    "add_status",
    "add_subcommands",
    "add_submit",
    "build_parser",
    "cmd_restore",
    "cmd_results",
    "cmd_run",
    "cmd_status",
    "cmd_submit",
    "main",
]

Command = Callable[[argparse.Namespace], int]
#: Seconds a writer waits for the store by default (see ``cryspnet_gen.workflows.store.DEFAULT_WAIT``).
DEFAULT_WAIT = 600.0
#: Default seconds without a sign of life after which a MongoDB job counts as lost (FireWorks' 4 h).
DEFAULT_LOST_AFTER = 4 * 3600.0
DEFAULT_THREADS = 1


class WorkflowCLIError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from cryspnet_gen.bundle import BundleError
    from cryspnet_gen.sources.templates import TemplateStoreError
    from cryspnet_gen.workflows.errors import StoreError

    return (StoreError, WorkflowCLIError, BundleError, TemplateStoreError, OSError)


def _user_errors(func: Command) -> Command:
    """Catch every error of a command in one place: one line on stderr (the traceback too with ``-v``)."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        prog = f"cryspnet-gen {args.command}"
        verbose = bool(getattr(args, "verbose", False))
        try:
            return func(args)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted; nothing saved was lost", file=sys.stderr)
            return 130
        except _expected_errors() as exc:
            if verbose:
                traceback.print_exc()
            print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except Exception as exc:  # the command line's last line of defence: one line, not a traceback
            if verbose:
                traceback.print_exc()
            hint = "" if verbose else " (-v shows the traceback)"
            print(f"{prog}: unexpected error: {type(exc).__name__}: {_one_line(exc)}{hint}", file=sys.stderr)
            return 1

    return wrapper


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# ----------------------------------------------------------------------------------------------------------
# option types: a bad value is an argparse usage error (one line, exit 2)


def store_dir(text: str) -> str:
    """``--store DIR``: any path that is not an existing file (a new folder is created when writing)."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a store folder")
    return text


#: help and description of each workflow subcommand
_COMMANDS = {
    "submit": (
        "add candidate-relaxation workflows (generate k candidates, relax each, rank by energy)",
        "Add one FireWorks workflow per formula: generate k candidates, relax each (CHGNet or VASP via atomate2), "
        "rank them by energy per atom. Submitting the same formula with the same settings again adds nothing. "
        "Several submits at once wait for each other.",
    ),
    "run": (
        "run the submitted workflows here, job after job (FireWorks rockets)",
        "Run READY jobs in this process until none is left, showing progress. Jobs of a run that was killed are "
        "run again; Ctrl-C stops, leaving the interrupted job READY. Between jobs the store is handed to a "
        "waiting submit.",
    ),
    "status": (
        "jobs per state (READY / RUNNING / COMPLETED / FIZZLED) for each submitted formula",
        "Jobs per state for each workflow, and notes on work that is waiting, running, interrupted or lost (on "
        "stderr).",
    ),
    "results": (
        "ranking of the relaxed candidates of a formula; relaxed structures as CIF",
        "Table of rank, predicted group and probability, relaxed energy per atom, space group after relaxation "
        "(symprec 0.1) and volume change; FIZZLED jobs with their error.",
    ),
    "restore": (
        "put back the last good copy of damaged or missing files of an embedded workflow store",
        "Check launchpad.json, jobs.json and data.json of an embedded store; replace each damaged or missing one "
        "by its backup (*.bak, the copy written with it), keeping the damaged file as <name>.damaged-<time>. Good "
        "files are left alone.",
    ),
}


def _new_parser(subparsers: Any, name: str, formulas: str | None, what: str = "") -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` (help and description from :data:`_COMMANDS`; one-line usage errors,
    defaults shown, ``-v/-q`` accepted), with a ``FORMULA`` positional of ``nargs=formulas`` unless ``None``."""
    short, description = _COMMANDS[name]
    p = subcommand(subparsers, name, short, description=description)
    if formulas is not None:
        p.add_argument("formulas", nargs=formulas, metavar="FORMULA", help=what)
    return p


def _store_options(p: argparse.ArgumentParser, *, wait: bool = True, launchpad: bool = True) -> None:
    g = p.add_argument_group("where workflows live (default: the embedded store)")
    g.add_argument(
        "--store",
        metavar="DIR",
        type=store_dir,
        default=None,
        help="embedded workflow store folder (default: $CRYSPNET_GEN_STORE, else "
        "~/.local/share/cryspnet-gen/store)",
    )
    if launchpad:
        g.add_argument(
            "--launchpad",
            metavar="FILE",
            type=existing_file,
            default=None,
            help="FireWorks my_launchpad.yaml of a MongoDB instead (job outputs: jobflow's JOB_STORE, "
            "set by $JOBFLOW_CONFIG_FILE; default: the embedded store)",
        )
    if wait:
        g.add_argument(
            "--wait",
            type=non_negative_float,
            default=DEFAULT_WAIT,
            metavar="SECONDS",
            help="how long to wait for another process using the embedded store (0: fail at once)",
        )


def _lost_after_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lost-after",
        type=positive_float,
        default=DEFAULT_LOST_AFTER,
        metavar="SECONDS",
        help="a RUNNING job without a sign of life for this long counts as lost (MongoDB)",
    )


def _print_wait(store: str) -> Callable[[dict[str, Any], float, float], None]:
    from cryspnet_gen.workflows.errors import describe_holder

    started: list[bool] = []

    def on_wait(holder: dict[str, Any], waited: float, limit: float) -> None:
        who = describe_holder(holder)
        if not started:
            started.append(True)
            print(
                f"waiting for the workflow store {store}: in use by {who}; waiting up to {limit:.0f} s "
                "(--wait SECONDS to change)",
                file=sys.stderr,
            )
        else:
            print(f"still waiting for {who} ({waited:.0f} of {limit:.0f} s)", file=sys.stderr)

    return on_wait


def _open(args: argparse.Namespace, *, readonly: bool = False, force_new: bool = False) -> Any:
    from cryspnet_gen.workflows.store import open_store, resolve_store_dir

    launchpad = getattr(args, "launchpad", None)
    if args.store is not None and launchpad is not None:
        raise WorkflowCLIError("give either --store DIR or --launchpad FILE, not both")
    return open_store(
        args.store,
        launchpad=launchpad,
        readonly=readonly,
        wait=getattr(args, "wait", DEFAULT_WAIT),
        force_new=force_new,
        on_wait=_print_wait(str(resolve_store_dir(args.store))),
    )


def _quiet(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "quiet", False))


def _hint(args: argparse.Namespace) -> str:
    if args.store:
        return f" --store {args.store}"
    return f" --launchpad {args.launchpad}" if getattr(args, "launchpad", None) else ""


def _model_and_path(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(model, model_path)``: a shipped name, or a bundle folder made absolute for the workers, from
    ``--model`` (checked when the command line was parsed)."""
    if args.model and Path(args.model).expanduser().is_dir():
        return None, str(Path(args.model).expanduser().resolve())
    return args.model, None


# ----------------------------------------------------------------------------------------------------------


def _source_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """generate_candidates options for the candidate source (the store path made absolute for the workers)."""
    from cryspnet_gen.sources.templates import ENV_VAR, resolve_store

    out: dict[str, Any] = {}
    if args.templates or args.source in ("templates", "both"):
        # fail now, not on a worker; the workers get the store's absolute path
        store = resolve_store(Path(args.templates).expanduser().resolve() if args.templates else None)
        if store is None or store.path is None:
            raise WorkflowCLIError(f"--source {args.source} needs --templates STORE or {ENV_VAR}")
        out["templates"] = str(store.path)
    if args.source:
        out["source"] = args.source
    if not args.known:
        out["known"] = False
    return out


@_user_errors
def cmd_submit(args: argparse.Namespace) -> int:
    from cryspnet_gen.workflows.makers import CandidateRelaxMaker, relax_maker_for
    from cryspnet_gen.workflows.manage import submit

    model, model_path = _model_and_path(args)
    maker = CandidateRelaxMaker(
        k=args.k,
        seed=args.seed,
        model=model,
        model_path=model_path,
        max_atoms=args.max_atoms,
        space_groups=args.space_group,
        relax_maker=relax_maker_for(args.relax, steps=args.steps, fmax=args.fmax),
        relax_category=args.relax_category,
        generate_kwargs=_source_kwargs(args),
    )
    try:
        maker.generate_options()  # every generation option checked now, not on a worker
    except (ValueError, TypeError) as exc:
        raise WorkflowCLIError(str(exc)) from None
    with _open(args, force_new=args.force_new) as handle:
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
    if n_added and not _quiet(args):
        print(f"run them with: cryspnet-gen run{_hint(args)}   (or rlaunch/qlaunch on a cluster)")
    return 1 if n_bad else 0


@_user_errors
def cmd_run(args: argparse.Namespace) -> int:
    from cryspnet_gen.workflows.manage import run_local

    verbose = bool(getattr(args, "verbose", False))
    with _open(args) as handle:
        summary = run_local(
            handle,
            formulas=args.formulas or None,
            rerun_fizzled_first=args.rerun_fizzled,
            rerun_lost=args.rerun_lost,
            lost_after=args.lost_after,
            max_jobs=args.max_jobs,
            category=args.category,
            progress=not _quiet(args),
            fw_log_level="INFO" if verbose else "WARNING",
            threads=args.threads,
            tracebacks=verbose,
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
    if summary.fizzled and not _quiet(args):
        print(
            "see the errors with `cryspnet-gen results FORMULA`; rerun with `cryspnet-gen run --rerun-fizzled`"
        )
    if summary.interrupted:
        stopped = f"stopped job(s) {summary.stopped}, READY again; " if summary.stopped else ""
        print(
            f"cryspnet-gen run: interrupted: {stopped}`cryspnet-gen run{_hint(args)}` continues",
            file=sys.stderr,
        )
        return 130
    return 1 if summary.fizzled else 0


@_user_errors
def cmd_status(args: argparse.Namespace) -> int:
    from cryspnet_gen.workflows.manage import store_notes, workflow_status

    with _open(args, readonly=True) as handle:
        rows = workflow_status(handle.launchpad, args.formulas or None)
        notes = [] if _quiet(args) else store_notes(handle, expiration_secs=args.lost_after)
        where = handle.location
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
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
        if handle.busy and not _quiet(args):
            from cryspnet_gen.workflows.errors import describe_holder

            who = describe_holder(handle.busy)
            print(f"note: {who} is writing this store; these are its last saved results", file=sys.stderr)
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


@_user_errors
def cmd_restore(args: argparse.Namespace) -> int:
    from cryspnet_gen.workflows.store import resolve_store_dir, restore_store

    lines, usable = restore_store(
        args.store, wait=args.wait, on_wait=_print_wait(str(resolve_store_dir(args.store)))
    )
    for line in lines:
        print(line)
    if not usable:
        print(
            "cryspnet-gen restore: some files have no good backup: keep the folder for inspection and start a "
            f"new store with `cryspnet-gen submit --force-new{_hint(args)} ...`",
            file=sys.stderr,
        )
        return 1
    return 0


# ----------------------------------------------------------------------------------------------------------


def add_submit(subparsers: Any) -> None:
    p = _new_parser(subparsers, "submit", "+", "chemical formulas, e.g. NaCl Li7La3Zr2O12")
    p.add_argument("-k", type=positive_int, default=3, help="candidates per formula")
    p.add_argument("--relax", choices=["chgnet", "vasp"], default="chgnet", help="relaxer")
    p.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="ionic step cap (default: 500 for chgnet, MP's NSW for vasp)",
    )
    p.add_argument(
        "--fmax",
        type=positive_float,
        default=None,
        help="force criterion, eV/Å (default: 0.1 for chgnet, MP's EDIFFG for vasp)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="structure generation seed")
    add_model_option(p)
    p.add_argument(
        "--max-atoms",
        type=positive_int,
        default=None,
        help="largest candidate cell in atoms (default: the generator's)",
    )
    p.add_argument(
        "--space-group",
        type=space_group_number,
        action="append",
        default=None,
        metavar="N",
        help="generate in this space group (1-230) instead of the predicted ones; repeatable (default: the "
        "predicted groups)",
    )
    p.add_argument(
        "--relax-category",
        default=None,
        metavar="NAME",
        help="FireWorks _category of the relaxation jobs (default: none, any worker)",
    )
    add_source_options(
        p,
        templates_help="template store or prototype library folder the workers can read (default: the "
        "prototype library shipped with cryspnet-gen)",
    )
    _store_options(p)
    p.add_argument(
        "--force-new",
        action="store_true",
        help="start a new embedded store even if the folder holds a damaged one (its files are kept, renamed "
        "*.old-<time>)",
    )
    p.set_defaults(func=cmd_submit)


def add_run(subparsers: Any) -> None:
    p = _new_parser(subparsers, "run", "*", "only these formulas' workflows")
    p.add_argument("--rerun-fizzled", action="store_true", help="run FIZZLED jobs again first")
    p.add_argument(
        "--rerun-lost",
        action="store_true",
        help="MongoDB: first run again the jobs whose runs were lost (FireWorks' detect_lostruns); the "
        "embedded store always does",
    )
    _lost_after_option(p)
    p.add_argument(
        "--max-jobs",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop after N jobs (default: no limit)",
    )
    p.add_argument(
        "--category",
        default=None,
        help="only jobs of this FireWorks _category ('__none__': only uncategorised; default: any)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=DEFAULT_THREADS,
        metavar="N",
        help="torch threads per job (1 is fastest for CHGNet on small cells and on shared machines)",
    )
    _store_options(p)
    p.set_defaults(func=cmd_run)


def add_status(subparsers: Any) -> None:
    p = _new_parser(subparsers, "status", "*", "only these formulas")
    _lost_after_option(p)
    _store_options(p, wait=False)
    p.set_defaults(func=cmd_status)


def add_results(subparsers: Any) -> None:
    p = _new_parser(subparsers, "results", "+", "formulas whose results to show")
    p.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default=None,
        help="write CIFs, summary.csv, results.json to DIR/<label>/ (default: write nothing)",
    )
    p.add_argument("-k", type=positive_int, default=None, help="only workflows with this k (default: any)")
    p.add_argument(
        "--seed", type=non_negative_int, default=None, help="only workflows with this seed (default: any)"
    )
    p.add_argument(
        "--relax",
        choices=["chgnet", "vasp"],
        default=None,
        help="only workflows with this relaxer (default: any)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _store_options(p, wait=False)
    p.set_defaults(func=cmd_results)


def add_restore(subparsers: Any) -> None:
    p = _new_parser(subparsers, "restore", None)
    _store_options(p, launchpad=False)
    p.set_defaults(func=cmd_restore)


def add_subcommands(subparsers: Any) -> None:
    """Add ``submit``, ``run``, ``status``, ``results`` and ``restore`` to the ``cryspnet-gen`` subparsers.

    Parameters
    ----------
    subparsers
        What ``parser.add_subparsers(dest="command", ...)`` returned.
    """
    add_submit(subparsers)
    add_run(subparsers)
    add_status(subparsers)
    add_results(subparsers)
    add_restore(subparsers)


def build_parser() -> argparse.ArgumentParser:
    """A parser with only the workflow subcommands (for ``python -m cryspnet_gen.workflows.cli``)."""
    from cryspnet_gen import __version__

    parser = ArgumentParser(prog="cryspnet-gen", description="cryspnet-gen candidate relaxation workflows")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("-q", "--quiet", action="store_true", help="print less")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
