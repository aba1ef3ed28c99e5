"""CSP benchmark: is the true structure among a formula's k candidates? (DiffCSP's match rate and RMSE.)

Usage (from the repository root)::

    python bench/csp.py --set mp20                  # 1,000 sampled MP-20 test formulas, k=20 (k=1 = first candidate)
    python bench/csp.py --set mpts52                # the same for MPTS-52
    python bench/csp.py --set mp20 --relax          # 100 formulas, top 5 relaxed with CHGNet (200 steps) vs unrelaxed
    python bench/csp.py --set mp20 --quick          # 50 formulas, for development
    python bench/csp.py --set mp20 --summary-only   # re-read the results and print the tables
    python bench/csp.py --set mp20 --source templates --templates STORE   # template candidates (k=1, 5, 20)
    python bench/csp.py --set mp20 --source both --templates STORE        # merged; reuses the saved CRYSPNet ones

Each test set is deduplicated by reduced formula (lowest energy above hull) and put in a seeded random order;
the first ``--n`` formulas are evaluated with the benchmark bundle ``cryspnet-bench`` (no test formula in its
training or validation data). Results go line by line to ``results.jsonl`` in the output folder
(``runs/csp/<set>-k<k>-seed<seed>[-relax<steps>][-quick]`` by default): a rerun skips the formulas already done,
and a larger ``--n`` extends the same sample. ``summary.json`` and ``summary.md`` are rewritten at the end (and
on Ctrl-C). ``--max-minutes`` stops starting new formulas after that long, leaving a valid, smaller random
sample. ``--shard I/M`` evaluates every M-th formula from the I-th (0-based), for running M processes on one
folder. Every candidate is also saved (``candidates*.jsonl``, ``Candidate.as_dict()``), so that ``--source both``
merges the CRYSPNet candidates of an earlier run with the same settings (``--reuse FOLDER``; by default the
matching ``runs/csp/<set>-k20-seed<seed>``) instead of generating them again, counting their generation time.
The template store must not contain test formulas: build it with ``cryspnet-gen templates build --from
../shared/data --exclude-test-sets --out STORE``. See ``cryspnet_gen.csp`` for the metric.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "cryspnet-bench"
QUICK_N = 50


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--set",
        choices=("mp20", "mpts52", "mp20_val", "mpts52_val"),
        default="mp20",
        help="test set (default mp20); the *_val sets are for choosing settings, never for reported numbers",
    )
    parser.add_argument("--n", type=int, help="formulas (default 1000; 100 with --relax; 50 with --quick)")
    parser.add_argument("--k", type=int, help="candidates per formula (default 20; 5 with --relax)")
    parser.add_argument("--relax", action="store_true", help="relax the k candidates with CHGNet and compare")
    parser.add_argument("--relax-steps", type=int, default=200, help="CHGNet step cap (default 200)")
    parser.add_argument(
        "--prerelax",
        choices=("chgnet",),
        help="pre-relax a pool of CRYSPNet structures with CHGNet (symmetry kept) and keep the k of lowest energy",
    )
    parser.add_argument(
        "--prerelax-pool", type=int, help="structures pre-relaxed per formula (default 4 x k)"
    )
    parser.add_argument("--prerelax-steps", type=int, default=50, help="step cap per pre-relaxation (50)")
    parser.add_argument(
        "--prerelax-timeout", type=float, default=60.0, help="pre-relaxation seconds per formula (60)"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_N} formulas, separate output folder")
    parser.add_argument("--out", type=Path, help="output folder (default runs/csp/<set>-k<k>-seed<seed>...)")
    parser.add_argument("--seed", type=int, default=0, help="sample order and generate_candidates seed")
    parser.add_argument("--data-dir", help="data folder (default $CRYSPNET_GEN_DATA_DIR or ../shared/data)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model bundle, a shipped name or a folder (default {DEFAULT_MODEL})",
    )
    parser.add_argument("--timeout", type=float, default=20.0, help="generation seconds per formula (20)")
    parser.add_argument("--timeout-per-group", type=float, default=5.0, help="seconds per space group (5)")
    parser.add_argument(
        "--max-atoms",
        type=int,
        help="largest conventional cell built (default: 4 x the set's largest reference cell, at most 200: "
        "80 for MP-20, 200 for MPTS-52)",
    )
    parser.add_argument(
        "--max-minutes", type=float, help="stop starting new formulas after this many minutes"
    )
    parser.add_argument(
        "--z-rule",
        choices=("smallest", "prior"),
        default="smallest",
        help="Z tried first by CRYSPNet candidates",
    )
    parser.add_argument(
        "--wyckoff",
        choices=("auto", "random", "prior"),
        default="auto",
        help="orbits of CRYSPNet candidates (auto: the bundle's Wyckoff prior when it has one)",
    )
    parser.add_argument(
        "--template-ranking",
        choices=("auto", "learned", "score"),
        default="auto",
        help="order of template options (auto: the bundle's learned ranker when it has one, else the score)",
    )
    parser.add_argument("--shard", default="0/1", help="I/M: evaluate formulas I, I+M, I+2M, ... (0/1)")
    parser.add_argument(
        "--no-save-candidates",
        dest="save_candidates",
        action="store_false",
        help="do not write the candidate structures to candidates*.jsonl (they are kept by default so that "
        "other candidate sources can be merged with them later without regenerating)",
    )
    parser.add_argument(
        "--source",
        choices=("cryspnet", "templates", "both"),
        default="cryspnet",
        help="candidate source (default cryspnet); templates/both need --templates",
    )
    parser.add_argument(
        "--templates",
        help="template store folder (default $CRYSPNET_GEN_TEMPLATES); build one without the test formulas: "
        "cryspnet-gen templates build --from ../shared/data --exclude-test-sets --out STORE",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        help="with --source both or --prerelax: a cryspnet run folder whose saved candidates (same settings) are "
        "used instead of generating them again (default for both: the matching runs/csp/<set>-k<k>-seed<seed> "
        "folder)",
    )
    parser.add_argument("--summary-only", action="store_true", help="only summarise the results on disk")
    parser.add_argument("-v", "--verbose", action="store_true", help="log generation details")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = QUICK_N if args.quick else (100 if args.relax else 1000)
    if args.k is None:
        args.k = 5 if args.relax else 20
    if args.source != "cryspnet" and not args.templates:
        args.templates = os.environ.get("CRYSPNET_GEN_TEMPLATES")
        if not args.templates:
            parser.error(f"--source {args.source} needs --templates STORE (or $CRYSPNET_GEN_TEMPLATES)")
    try:
        shard, shards = (int(x) for x in args.shard.split("/"))
        if not 0 <= shard < shards:
            raise ValueError
    except ValueError:
        parser.error(f"--shard must be I/M with 0 <= I < M, got {args.shard!r}")
    args.shard_index, args.shards = shard, shards
    return args


def _settings(args: argparse.Namespace) -> Any:
    from cryspnet_gen.csp import TEST_SETS, CspSettings

    max_atoms = args.max_atoms or min(4 * TEST_SETS[args.set].max_sites, 200)
    return CspSettings(
        k=args.k,
        seed=args.seed,
        max_atoms=max_atoms,
        timeout=args.timeout,
        timeout_per_group=args.timeout_per_group,
        relax_top=args.k if args.relax else 0,
        relax_steps=args.relax_steps,
        source=args.source,
        templates=None if args.templates is None else str(Path(args.templates).resolve()),
        z_rule=args.z_rule,
        wyckoff=args.wyckoff,
        template_ranking=args.template_ranking,
        prerelax=args.prerelax,
        prerelax_pool=args.prerelax_pool,
        prerelax_steps=args.prerelax_steps,
        prerelax_timeout=args.prerelax_timeout,
    )


def _out_dir(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return Path(args.out)
    name = f"{args.set}-k{args.k}-seed{args.seed}"
    if args.source != "cryspnet":
        name += f"-{args.source}"
    if args.relax:
        name += f"-relax{args.relax_steps}"
    if args.prerelax:
        name += f"-prerelax{args.prerelax_pool or 4 * args.k}x{args.prerelax_steps}"
    if args.quick:
        name += "-quick"
    return Path("runs") / "csp" / name


def _check_config(out: Path, config: dict[str, Any]) -> None:
    path = out / "config.json"
    if path.exists():
        old = json.loads(path.read_text())
        # settings added after a run was started take their default values for it
        from cryspnet_gen.csp import CspSettings

        old["settings"] = {**dataclasses.asdict(CspSettings()), **old.get("settings", {})}
        keys = ("set", "model", "bundle_version", "settings", "template_scoring")
        diff = [key for key in keys if old.get(key) != config.get(key)]
        if diff:
            sys.exit(
                f"{out} holds results of a run with other options ({', '.join(diff)}: {[old.get(k) for k in diff]} "
                f"vs {[config.get(k) for k in diff]}); pass another --out or remove the folder"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=1) + "\n")


def _read_results(out: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    for file in sorted(out.glob("results*.jsonl")):
        with open(file, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill: that formula is redone
                    continue
                done[row["formula"]] = row
    return done


def _summarise(args: argparse.Namespace, out: Path, formulas: list[str], config: dict[str, Any]) -> str:
    from cryspnet_gen.csp import PUBLISHED, TEST_SETS, FormulaResult, markdown_table, summarize

    done = _read_results(out)
    rows = []
    for f in formulas:
        if f in done:
            rows.append(FormulaResult.from_dict(done[f]))
    loads = [float(done[f]["load1"]) for f in formulas if f in done and "load1" in done[f]]
    label = TEST_SETS[args.set].label
    what = {"cryspnet": "generated", "templates": "templates", "both": "both"}[args.source]
    if args.relax:
        specs = [(f"{what}", 1, False), (f"{what}", args.k, False), (f"{what} CHGNet-relaxed", args.k, True)]
    else:
        ks = {1, args.k} if args.source == "cryspnet" else {1, 5, 20, args.k}
        specs = [(what, k, False) for k in sorted(ks) if k <= args.k]
    summaries = [(f"{what} k={k}", summarize(rows, k, relaxed=relaxed)) for what, k, relaxed in specs]
    if args.source != "cryspnet" and rows:
        from cryspnet_gen.csp import template_coverage
        from cryspnet_gen.sources.templates import load_store

        store = load_store(args.templates)
        for _name, s in summaries:
            if not s["relaxed"]:
                s["template_coverage"] = template_coverage(rows, store, s["k"])
                s["matched_by_source"] = dict(
                    Counter(
                        next(c.source for c in r.candidates[: s["k"]] if c.matched)
                        for r in rows
                        if any(c.matched for c in r.candidates[: s["k"]])
                    )
                )
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = {
        "date": now,
        "set": args.set,
        "label": label,
        "n_sampled": len(formulas),
        "n_done": len(rows),
        "load_average_1min": {"mean": sum(loads) / len(loads), "max": max(loads)} if loads else None,
        "config": config,
        "summaries": {name: s for name, s in summaries},
        "published_match_rate_k1_k20": PUBLISHED.get(args.set, {}),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [
        f"# CSP benchmark: {label}",
        "",
        f"{now}; {len(rows)} of {len(formulas)} sampled formulas done; bundle {config['model']} "
        f"{config['bundle_version']}; settings {config['settings']}; machine {config['machine']}; 1-min load "
        f"average while running: {summary['load_average_1min']}",
        "",
        markdown_table(summaries),
        "",
    ]
    for name, s in summaries:
        lines.append(
            f"- {name}: failures {s['failures']}; outcome by model rank of the true (lattice, group)"
        )
        lines.append(f"  pair {s['outcome_by_true_pair_rank']}; seconds by part {s['seconds_by_part']}")
        lines.append(
            f"  true group not built because {s['true_group_not_built_because']}; wrong Z: "
            f"{s['wrong_z_direction']}; candidates per formula {s['candidates_per_formula']:.1f}"
        )
        if "relaxation" in s:
            lines.append(f"  relaxation {s['relaxation']}")
        if "template_coverage" in s:
            lines.append(
                f"  template coverage {s['template_coverage']}; matched by source {s['matched_by_source']}"
            )
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def _saved_candidates(args: argparse.Namespace, formulas: list[str]) -> dict[str, Any]:
    """CRYSPNet candidates of an earlier cryspnet run with the same generation settings (for --source both, and
    for --prerelax with --reuse: the pool is the first ones of them)."""
    if args.source != "both" and not (args.prerelax and args.reuse):
        return {}
    from cryspnet_gen.generate import Candidate

    folder = args.reuse or Path("runs") / "csp" / f"{args.set}-k{max(args.k, 20)}-seed{args.seed}"
    needed = _settings(args).generate_options().pool_size
    if not folder.is_dir():
        print(f"no earlier cryspnet run in {folder}: generating CRYSPNet candidates", file=sys.stderr)
        return {}
    old = json.loads((folder / "config.json").read_text())["settings"]
    mine = dataclasses.asdict(_settings(args))
    defaults = dataclasses.asdict(
        type(_settings(args))()
    )  # settings added later: runs before them had the default
    keys = ("seed", "model", "max_atoms", "timeout", "timeout_per_group", "z_rule", "wyckoff")
    if any(old.get(key, defaults[key]) != mine.get(key) for key in keys) or old.get("k", 0) < needed:
        sys.exit(
            f"{folder} was generated with other settings ({ {key: old.get(key) for key in keys} }); pass --reuse"
        )
    wanted = set(formulas)
    seconds = {
        f: float(row["seconds"]["generate"]) for f, row in _read_results(folder).items() if f in wanted
    }
    saved: dict[str, Any] = {}
    for file in sorted(folder.glob("candidates*.jsonl")):
        with open(file, encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if row["formula"] in wanted and row["formula"] in seconds:
                    cands = [Candidate.from_dict(c) for c in row["candidates"]]
                    saved[row["formula"]] = (cands, seconds[row["formula"]])
    print(
        f"reusing the CRYSPNet candidates of {len(saved)} of {len(wanted)} formulas from {folder}",
        file=sys.stderr,
    )
    return saved


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    # One thread per process (set before numpy loads): pyxtal, spglib and CHGNet on small cells gain nothing
    # from more on a shared machine.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        logging.getLogger("cryspnet_gen.generate").setLevel(logging.ERROR)
    from cryspnet_gen.cli.common import load_predictor_for
    from cryspnet_gen.csp import CspEvaluator, load_test_set, sample_references

    started = time.monotonic()
    settings = _settings(args)
    predictor = load_predictor_for(args)
    config = {
        "set": args.set,
        "model": args.model,
        "bundle_version": getattr(predictor, "version", ""),
        "settings": dataclasses.asdict(settings),
        "seed": args.seed,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    if args.source != "cryspnet":
        from cryspnet_gen.sources.templates import TemplateScoring, load_store

        config["template_scoring"] = dataclasses.asdict(TemplateScoring())
        config["template_store"] = {
            key: load_store(args.templates).manifest.get(key)
            for key in ("description", "n_templates", "created")
        }
    out = _out_dir(args)
    _check_config(out, config)
    references = sample_references(load_test_set(args.set, args.data_dir), args.n, args.seed)
    formulas = [r.formula for r in references]
    if args.summary_only:
        print(_summarise(args, out, formulas, config))
        return

    done = _read_results(out)
    todo = [
        (i, r)
        for i, r in enumerate(references)
        if i % args.shards == args.shard_index and r.formula not in done
    ]
    print(
        f"{args.set}: {len(references)} sampled formulas, {len(done)} already done in {out}, {len(todo)} to do "
        f"(shard {args.shard_index}/{args.shards}); k={args.k}, settings {settings}",
        file=sys.stderr,
    )
    evaluator = CspEvaluator(predictor, settings, saved=_saved_candidates(args, [r.formula for _, r in todo]))
    if todo:
        seconds = evaluator.prepare([r.formula for _, r in todo])
        print(f"batched prediction of {len(todo)} formulas: {seconds:.1f} s", file=sys.stderr)
    from tqdm.auto import tqdm

    suffix = "" if args.shards == 1 else f"-shard{args.shard_index}of{args.shards}"
    matched = failed = 0
    stopped = None
    bar = tqdm(todo, desc=f"csp {args.set} k={args.k}", unit="formula")
    try:
        with open(out / f"results{suffix}.jsonl", "a", encoding="utf-8") as fh:
            for n_done, (i, ref) in enumerate(bar):
                if args.max_minutes is not None and time.monotonic() - started > 60 * args.max_minutes:
                    stopped = f"--max-minutes {args.max_minutes:g} reached after {n_done} formulas"
                    break
                try:
                    result = evaluator.evaluate(ref)
                except Exception as exc:  # a broken reference must not end a long run; it is listed
                    failed += 1
                    with open(out / "errors.jsonl", "a", encoding="utf-8") as err:
                        err.write(
                            json.dumps({"formula": ref.formula, "error": f"{type(exc).__name__}: {exc}"})
                        )
                        err.write("\n")
                    continue
                if args.save_candidates:
                    with open(out / f"candidates{suffix}.jsonl", "a", encoding="utf-8") as cf:
                        row = {
                            "formula": ref.formula,
                            "candidates": [c.as_dict() for c in evaluator.last_candidates],
                        }
                        cf.write(json.dumps(row) + "\n")
                fh.write(json.dumps({"index": i, "load1": os.getloadavg()[0], **result.to_dict()}) + "\n")
                fh.flush()
                matched += any(c.matched for c in (result.relaxed or result.candidates))
                bar.set_postfix_str(f"{ref.formula}: matched {matched}/{n_done + 1}")
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        bar.close()
    if stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
    if failed:
        print(f"{failed} formulas could not be evaluated: see {out / 'errors.jsonl'}", file=sys.stderr)
    print(_summarise(args, out, formulas, config))


if __name__ == "__main__":
    main()
