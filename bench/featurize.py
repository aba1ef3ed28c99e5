"""Benchmark: formulas per second of the fast featurizer vs matminer's MultipleFeaturizer.

Both featurize the same N distinct formulas, drawn with a fixed seed from the formulas of the real data
(``mp2025_topology/lattice.csv.gz`` and ``dara_symmetry_labels/cod_filtered_info_2024_flat.csv.gz``) that
:func:`cryspnet_gen.featurize.parse_composition` accepts. Timings are wall clock, from formula strings to a
matrix: matminer's include building the pymatgen Compositions it needs. One-off setup (element tables,
featurizer construction) is timed separately and left out of both rates. The fast path starts each repeat with
empty per-formula caches, so its rate does not profit from repeats; matminer runs once.

Usage::

    python bench/featurize.py [--data-dir DIR] [--n 10000] [--matminer-n N] [--seed 0] [--repeats 3] [--check]

The bar is a ratio of at least 50. ``--check`` also compares every value with matminer's (1e-6 relative, the
boolean column exactly) and exits non-zero on a mismatch.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import cryspnet_gen.featurize as fz
from cryspnet_gen.config import DATA_DIR_ENV, resolve_data_dir

BAR = 50.0
REPO_ROOT = Path(__file__).resolve().parents[1]


def load_formulas(data_dir: Path, n: int, seed: int) -> list[str]:
    """N distinct accepted formulas from MP and COD, drawn with ``seed``."""
    # keep_default_na=False: the formula "NaN" (sodium nitride) is not a missing value
    mp = pd.read_csv(
        data_dir / "mp2025_topology" / "lattice.csv.gz", usecols=["formula"], keep_default_na=False
    )
    cod = pd.read_csv(
        data_dir / "dara_symmetry_labels" / "cod_filtered_info_2024_flat.csv.gz",
        usecols=["formula"],
        keep_default_na=False,
    )
    pool = sorted(set(mp["formula"]) | set(cod["formula"]))
    accepted = fz.featurize(pool).ok
    pool = [f for f, ok in zip(pool, accepted, strict=True) if ok]
    fz.clear_caches()
    if n > len(pool):
        raise SystemExit(f"--n {n} is more than the {len(pool)} distinct accepted formulas")
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=None, help=f"data folder (default ${DATA_DIR_ENV} or ../shared/data)"
    )
    parser.add_argument("--n", type=int, default=10_000, help="number of formulas (default 10000)")
    parser.add_argument("--matminer-n", type=int, default=None, help="time matminer on the first N only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="fast-path repeats (median reported)")
    parser.add_argument("--check", action="store_true", help="verify agreement with matminer")
    args = parser.parse_args(argv)

    data_arg = args.data_dir
    if data_arg is None and not os.environ.get(DATA_DIR_ENV):
        data_arg = REPO_ROOT.parent / "shared" / "data"
    data_dir = resolve_data_dir(data_arg)

    from importlib.metadata import version

    from matminer.featurizers.base import MultipleFeaturizer
    from pymatgen.core import Composition

    print(f"date       {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"machine    {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(
        f"versions   python {platform.python_version()}, numpy {np.__version__}, matminer {version('matminer')}, "
        f"pymatgen {version('pymatgen')}"
    )

    t0 = time.perf_counter()
    labels = fz.feature_labels()
    fz._tables()  # element tables, built once per process
    setup_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        multi = MultipleFeaturizer(fz.matminer_featurizers(), iterate_over_entries=True)
    multi.set_n_jobs(1)
    setup_matminer = time.perf_counter() - t0

    formulas = load_formulas(data_dir, args.n, args.seed)
    n_mm = len(formulas) if args.matminer_n is None else min(args.matminer_n, len(formulas))
    n_fractional = sum("." in f for f in formulas)
    print(
        f"formulas   {len(formulas)} distinct ({n_fractional} fractional), seed {args.seed}, from {data_dir}"
    )
    print(f"features   {len(labels)}")
    print(
        f"setup      fast path {setup_fast:.2f} s (labels + element tables), matminer {setup_matminer:.2f} s"
    )

    times, cpu_times = [], []
    for _ in range(args.repeats):
        fz.clear_caches()
        t0, c0 = time.perf_counter(), time.process_time()
        feats = fz.featurize(formulas)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    n_bad = int((~feats.ok).sum())
    if n_bad:
        print(f"error      the fast path rejected {n_bad} bench formulas", file=sys.stderr)
        return 1
    fast_time = statistics.median(times)
    fast_rate = len(formulas) / fast_time
    fast_cpu_rate = len(formulas) / statistics.median(cpu_times)
    runs = ", ".join(f"{t:.3f}" for t in times)
    print(
        f"fast       {fast_rate:12,.0f} formulas/s  ({len(formulas)} in {fast_time:.3f} s, median of runs {runs} s; "
        f"{fast_cpu_rate:,.0f}/s by CPU time)"
    )

    subset = formulas[:n_mm]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0, c0 = time.perf_counter(), time.process_time()
        comps = [Composition(f) for f in subset]
        t_parse = time.perf_counter() - t0
        rows = multi.featurize_many(comps, ignore_errors=False, pbar=False)
        t_total = time.perf_counter() - t0
        mm_cpu_rate = n_mm / (time.process_time() - c0)
    mm_rate = n_mm / t_total
    note = "" if n_mm == len(formulas) else f"  [subset: first {n_mm} of the {len(formulas)}]"
    print(
        f"matminer   {mm_rate:12,.0f} formulas/s  ({n_mm} in {t_total:.1f} s, of which "
        f"{t_parse:.2f} s building Compositions; {mm_cpu_rate:,.0f}/s by CPU time){note}"
    )
    ratio = fast_rate / mm_rate
    verdict = "PASS" if ratio >= BAR else "FAIL"
    print(
        f"ratio      {ratio:12,.1f} x  (bar >= {BAR:.0f}x: {verdict}; by CPU time "
        f"{fast_cpu_rate / mm_cpu_rate:,.1f} x)"
    )
    status = 0 if ratio >= BAR else 1

    if args.check:
        reference = np.array(
            [
                [float(v) for v in row] + [float(len(c.element_composition))]
                for row, c in zip(rows, comps, strict=True)
            ]
        )
        got = feats.matrix[:n_mm].astype(np.float64)
        boolean = labels.index("compound possible")
        exact = np.array_equal(got[:, boolean], reference[:, boolean])
        close = np.isclose(got, reference, rtol=1e-6, atol=1e-7)
        scale = np.maximum(np.abs(reference), 1e-300)
        worst = float(np.max(np.abs(got - reference) / scale, where=np.abs(reference) > 1e-6, initial=0.0))
        ok = bool(exact and close.all())
        print(
            f"check      {'OK' if ok else 'MISMATCH'}: {n_mm} x {len(labels)} values, max relative difference "
            f"{worst:.2e} (float32 output), 'compound possible' {'identical' if exact else 'DIFFERS'}"
        )
        if not ok:
            for r, c in np.argwhere(~close)[:10]:
                print(f"  {subset[r]!r} {labels[c]!r}: {got[r, c]!r} vs matminer {reference[r, c]!r}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
