"""Benchmark the prototype library: size, cold load, look-up time, and the default path's generation time.

Usage::

    python bench/prototypes.py                          # the shipped library (prototypes-mp-v1)
    python bench/prototypes.py --library DIR            # any library or store folder

*cold load* is a fresh Python process that imports cryspnet_gen and opens the library (sha256 check included);
*look-up* is ranking every (template, element mapping) option of a formula's anonymous formula plus the
known-compound look-up, warm (median over the formulas); *generate* times ``generate_candidates(f, k=3)`` with
the default source (known / templates first, CRYSPNet when needed) in a fresh process (cold) and again in the
same process (warm). Targets (issue 16): load <= 1 s cold, look-up <= 20 ms, LLZO k=3 <= 3 s warm and <= 8 s
cold, library <= 25 MB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

FORMULAS = [
    "Li7La3Zr2O12",
    "NaCl",
    "SrTiO3",
    "LiFePO4",
    "Cu2ZnSnS4",
    "MgAl2O4",
    "CsPbI3",
    "GaN",
    "BaTiO3",
    "Ca3Co4O9",
]

_COLD_LOAD = """
import sys, time
t = time.perf_counter()
from cryspnet_gen.sources.templates import load_store, shipped_library
lib = load_store(sys.argv[1]) if sys.argv[1] != "-" else shipped_library()
print(time.perf_counter() - t)
"""

_COLD_GENERATE = """
import sys, time, warnings
t = time.perf_counter()
from cryspnet_gen import generate_candidates
warnings.simplefilter("ignore")
cands = generate_candidates(sys.argv[1], k=3)
print(time.perf_counter() - t, ",".join(c.source for c in cands))
"""


def _median_subprocess(code: str, arg: str, runs: int) -> tuple[float, str]:
    times, extra = [], ""
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, check=True)
        first, *rest = out.stdout.split()
        times.append(float(first))
        extra = " ".join(rest)
    return statistics.median(times), extra


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--library", default="-", help="library or store folder (default: the shipped library)"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="fresh processes per cold measurement (default 3)"
    )
    args = parser.parse_args()

    from cryspnet_gen.formula import formula_unit
    from cryspnet_gen.sources.templates import TemplateScoring, load_store, rank_options, shipped_library
    from cryspnet_gen.sources.templates.substitution import substitution_matrix

    library = load_store(args.library) if args.library != "-" else shipped_library()
    assert library is not None, "no shipped library"
    size = sum(p.stat().st_size for p in Path(library.path).iterdir() if p.is_file()) / 1e6
    cold, _ = _median_subprocess(_COLD_LOAD, args.library, args.runs)
    substitution_matrix()
    lookups = []
    for f in FORMULAS:
        fu = formula_unit(f, 200)
        rank_options(library, fu.amounts, {}, TemplateScoring())  # first use builds the formula's arrays
        library.known(fu.reduced_formula)
        start = time.perf_counter()
        rank_options(library, fu.amounts, {}, TemplateScoring())
        library.known(fu.reduced_formula)
        lookups.append(1000 * (time.perf_counter() - start))
    gen_cold, sources = _median_subprocess(_COLD_GENERATE, "Li7La3Zr2O12", args.runs)
    import warnings

    from cryspnet_gen import generate_candidates

    warnings.simplefilter("ignore")
    generate_candidates("Li7La3Zr2O12", k=3)
    start = time.perf_counter()
    generate_candidates("Li7La3Zr2O12", k=3)
    gen_warm = time.perf_counter() - start
    result = {
        "library": str(library.path),
        "rows": len(getattr(library, "all_rows", library.frame)),
        "prototypes": len(library),
        "size_mb": round(size, 2),
        "cold_load_s": round(cold, 2),
        "lookup_ms_median": round(statistics.median(lookups), 1),
        "lookup_ms_max": round(max(lookups), 1),
        "llzo_k3_cold_s": round(gen_cold, 2),
        "llzo_k3_warm_s": round(gen_warm, 2),
        "llzo_sources": sources,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
