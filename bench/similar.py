"""Speed of ``similar_materials`` / ``cryspnet-gen similar`` and ``explain``: first use, cold and warm.

- first use: building the known-compound index of the shipped bundle and library in an empty cache folder
  (featurize and predict every known formula; the cost a new user pays once);
- cold: a fresh ``cryspnet-gen similar NaCl`` process with the index cached (interpreter start, imports, bundle
  and library load, index load, one query), median of several runs;
- warm: seconds per formula of ``similar_materials(formula, n=10)`` and of ``explain_formula`` in one process,
  over random MP formulas.

Bars (issue #20): similar <= 0.5 s warm per formula, <= 5 s cold.

Usage::

    python bench/similar.py [--n 200] [--cold-runs 5] [--representation combined]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200, help="formulas timed warm")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--representation", default="combined")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    cache = Path(tempfile.mkdtemp(prefix="cryspnet-gen-similar-bench-"))
    os.environ["CRYSPNET_GEN_CACHE_DIR"] = str(cache)

    from cryspnet_gen.explain import explain_formula, known_compound_index, similar_materials
    from cryspnet_gen.predict import load_predictor

    start = time.perf_counter()
    predictor = load_predictor()
    index = known_compound_index(predictor, representation=args.representation)  # type: ignore[arg-type]
    first_use = time.perf_counter() - start
    print(
        f"first use (empty cache): index of {len(index)} compounds, {index.points.shape[1]} dims, {first_use:.1f} s"
    )
    size = sum(p.stat().st_size for p in (cache / "similar").glob("*.*")) / 1e6
    print(f"cache on disk: {size:.0f} MB")

    formulas = index.table["formula"].sample(n=args.n, random_state=args.seed).tolist()
    similar_materials(formulas[0], 10, representation=args.representation)  # type: ignore[arg-type]
    start = time.perf_counter()
    for formula in formulas:
        similar_materials(formula, 10, representation=args.representation)  # type: ignore[arg-type]
    warm = (time.perf_counter() - start) / len(formulas)
    print(f"similar warm: {1000 * warm:.0f} ms per formula ({len(formulas)} formulas)")
    start = time.perf_counter()
    for formula in formulas[:50]:
        explain_formula(formula)
    print(f"explain warm: {1000 * (time.perf_counter() - start) / 50:.0f} ms per formula (50 formulas)")

    times = []
    for _ in range(args.cold_runs):
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cryspnet_gen.cli",
                "-q",
                "similar",
                "NaCl",
                "--representation",
                args.representation,
            ],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - start)
    print(
        f"similar cold (cached index), median of {len(times)}: {statistics.median(times):.2f} s "
        f"(min {min(times):.2f}, max {max(times):.2f})"
    )
    print(f"command: {' '.join(sys.argv)}")
    shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
