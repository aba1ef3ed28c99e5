"""Prediction speed: formulas/second end to end, and cold start of ``cryspnet-gen predict``.

Warm throughput is measured for our pipeline (fast featurizer + every network, top-2 lattices x top-3 groups)
and, in the same run, for the reference pipeline shape of the original CRYSPNet code: matminer's featurizers
followed by the same networks. Cold start is the wall time of a fresh ``cryspnet-gen predict NaCl`` process
(interpreter start, imports, bundle load and checksum, one prediction), median of several runs.

Bars (issue #3): >= 2,000 formulas/s warm; cold start <= 5 s.

Usage::

    python bench/predict.py [--model-path DIR] [--n 10000] [--reference-n 1000] [--cold-runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _formulas(data_dir: Path, n: int, seed: int) -> list[str]:
    lattice = pd.read_csv(
        data_dir / "mp2025_topology" / "lattice.csv.gz", usecols=["formula"], keep_default_na=False
    )
    unique = lattice["formula"].drop_duplicates()
    return unique.sample(n=min(n, len(unique)), random_state=seed).tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-path", default=None, help="bundle folder (default: the shipped default bundle)"
    )
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    )
    parser.add_argument("--n", type=int, default=10_000, help="formulas for the warm measurement")
    parser.add_argument("--reference-n", type=int, default=1_000, help="formulas for the matminer reference")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from cryspnet_gen.featurize import clear_caches, parse_composition, reference_featurize
    from cryspnet_gen.predict import load_predictor

    predictor = load_predictor(path=args.model_path) if args.model_path else load_predictor()
    formulas = _formulas(Path(args.data_dir), args.n, args.seed)
    print(
        f"bundle {predictor.name} {predictor.version}; {len(formulas)} distinct MP formulas; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{predictor.num_threads}"
    )

    predictor.predict(formulas[:200])  # warm up: element tables, torch kernels
    clear_caches()
    start = time.perf_counter()
    preds = predictor.predict(formulas, top_bravais=2, top_space_groups=3)
    ours = time.perf_counter() - start
    n_err = sum(p.error is not None for p in preds)
    rate = len(formulas) / ours
    print(
        f"ours      : {len(formulas)} formulas in {ours:.2f} s = {rate:,.0f} formulas/s ({n_err} bad formulas)"
    )

    ref_formulas = formulas[: args.reference_n]
    start = time.perf_counter()
    rows, kept = [], []
    for formula in ref_formulas:
        try:
            rows.append(reference_featurize(parse_composition(formula)))
            kept.append(formula)
        except ValueError:
            continue
    predictor.predict_features(np.vstack(rows).astype(np.float32), kept, top_bravais=2, top_space_groups=3)
    ref = time.perf_counter() - start
    ref_rate = len(ref_formulas) / ref
    print(
        f"reference : matminer featurizers + the same networks: {len(ref_formulas)} formulas in {ref:.2f} s "
        f"= {ref_rate:,.0f} formulas/s"
    )
    print(
        f"speed-up  : {rate / ref_rate:.0f}x   (bar: >= 2,000 formulas/s warm: {'PASS' if rate >= 2000 else 'FAIL'})"
    )

    cmd = [sys.executable, "-m", "cryspnet_gen.cli", "predict", "NaCl"]
    if args.model_path:
        cmd += ["--model-path", args.model_path]
    times = []
    for _ in range(args.cold_runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
    cold = statistics.median(times)
    print(
        f"cold start: `cryspnet-gen predict NaCl` median {cold:.2f} s over {len(times)} runs "
        f"(min {min(times):.2f}, max {max(times):.2f}; bar <= 5 s: {'PASS' if cold <= 5 else 'FAIL'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
