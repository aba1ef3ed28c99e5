"""Benchmark ``generate_candidates``: cold (fresh process) and warm (second call in one process) times.

Usage::

    python bench/generate.py                        # the shipped default bundle (load_predictor())
    python bench/generate.py --model-path DIR       # any trained bundle folder
    python bench/generate.py --no-cold --repeats 3  # warm times only, best of 3

*cold* is the wall time of a fresh Python process that imports cryspnet_gen, loads the bundle and makes the
candidates of one formula; *first* is the first call in the benchmark process (model already loaded, pyxtal
and caches not yet warm for that formula); *warm* is a later call with the same arguments in the same process
(best of ``--repeats``). Results go to docs/benchmarks.md; the target is LLZO k=3 <= 3 s warm.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from typing import Any

CASES: list[tuple[str, int]] = [
    ("Li7La3Zr2O12", 3),
    ("NaCl", 3),
    ("SrTiO3", 3),
    ("LiFePO4", 3),
    ("Cu2ZnSnS4", 3),
    ("La1.8Sr0.2CuO4", 3),
]


def _load(model_path: str | None) -> Any:
    from cryspnet_gen.predict import BundleError, load_predictor

    try:
        return load_predictor(path=model_path) if model_path else load_predictor()
    except (BundleError, ValueError) as exc:
        where = f"--model-path {model_path}" if model_path else "the default bundle (load_predictor())"
        sys.exit(
            f"bench/generate.py needs a trained bundle, but {where} could not be loaded:\n  {exc}\n"
            f"Train one with `cryspnet-gen train --out DIR` and pass --model-path DIR/NAME."
        )


def _run(predictor: Any, formula: str, k: int, seed: int) -> dict[str, Any]:
    from cryspnet_gen.generate import GenerationError, generate_candidates

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cands = generate_candidates(formula, k=k, seed=seed, predictor=predictor)
            groups = [c.space_group for c in cands]
            sites = [c.nsites for c in cands]
            error = None
        except GenerationError as exc:
            groups, sites, error = [], [], str(exc)
    return {"seconds": time.perf_counter() - start, "groups": groups, "sites": sites, "error": error}


def _child(args: argparse.Namespace) -> None:
    """Cold run: everything from imports to candidates in this fresh process; prints one JSON line."""
    t0 = time.perf_counter()
    import cryspnet_gen.generate  # noqa: F401 - timed import

    t1 = time.perf_counter()
    predictor = _load(args.model_path)
    t2 = time.perf_counter()
    result = _run(predictor, args.child, args.k, args.seed)
    result.update(import_s=t1 - t0, load_s=t2 - t1)
    print(json.dumps(result))


def _cold(formula: str, k: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        formula,
        "--k",
        str(k),
        "--seed",
        str(args.seed),
    ]
    if args.model_path:
        cmd += ["--model-path", args.model_path]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"cold run of {formula} failed:\n{proc.stderr.strip()}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-path", help="a trained bundle folder (default: load_predictor())")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="warm calls per formula (best is reported)")
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process (cold) runs")
    parser.add_argument("--formulas", nargs="+", help="formulas to time instead of the default set (k=3)")
    parser.add_argument("--k", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return

    cases = [(f, 3) for f in args.formulas] if args.formulas else CASES
    t0 = time.perf_counter()
    predictor = _load(args.model_path)
    load_s = time.perf_counter() - t0
    import pyxtal

    import cryspnet_gen

    print(f"# generate_candidates benchmark: bundle {predictor.name} {predictor.version}")
    print(
        f"# {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"cryspnet-gen {cryspnet_gen.__version__}, pyxtal {pyxtal.__version__}; seed {args.seed}; "
        f"import + load in this process {load_s:.2f} s"
    )
    print()
    print("| formula | k | built | space groups | sites | cold (s) | first call (s) | warm (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for formula, k in cases:
        cold = None if args.no_cold else _cold(formula, k, args)
        first = _run(predictor, formula, k, args.seed)
        warm = min(
            (_run(predictor, formula, k, args.seed) for _ in range(max(args.repeats, 1))),
            key=lambda r: r["seconds"],
        )
        if warm["groups"] != first["groups"]:
            print(f"<!-- {formula}: warm run built {warm['groups']}, first run {first['groups']} -->")
        cold_s = "-" if cold is None else f"{cold['wall_s']:.2f}"
        groups = " ".join(map(str, warm["groups"])) or f"none ({warm['error']})"
        sites = " ".join(map(str, warm["sites"])) or "-"
        print(
            f"| {formula} | {k} | {len(warm['groups'])} | {groups} | {sites} | {cold_s} | "
            f"{first['seconds']:.2f} | {warm['seconds']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
