"""Time and terminal noise of ``generate_candidates(formula, k, relax="chgnet")`` per torch thread count.

Usage (from the repository root)::

    python bench/relax_threads.py                       # LiFePO4, k=3, threads 1 and 2
    python bench/relax_threads.py --formula NaCl --threads 1 2 4 --steps 100

Each setting runs in a fresh process (as a user's script would), with the shipped model and the default
candidate sources; the time is the whole call (prediction, candidates, relaxation), and the lines are everything
the call wrote to stdout and stderr apart from the progress bar.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = """
import json, sys, time
from cryspnet_gen import generate_candidates
formula, k, threads, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
start = time.perf_counter()
cands = generate_candidates(formula, k=k, relax="chgnet", relax_steps=steps,
                            threads=None if threads == "none" else int(threads))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "sources": [c.source for c in cands], "sites": [len(c.structure) for c in cands],
                  "energies": [c.energy_per_atom for c in cands]}), file=sys.__stdout__)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--formula", default="LiFePO4", help="formula (default LiFePO4)")
    ap.add_argument("--k", type=int, default=3, help="candidates (default 3)")
    ap.add_argument(
        "--threads", nargs="+", default=["1", "2"], help="thread counts, or 'none' for torch's default"
    )
    ap.add_argument(
        "--steps", type=int, default=300, help="relaxation step cap (default 300, the library default)"
    )
    args = ap.parse_args()
    print("| threads | seconds | lines written | candidates (source, atoms) | load average at start |")
    print("|---|---:|---:|---|---|")
    for threads in args.threads:
        load = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, args.formula, str(args.k), threads, str(args.steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - start
        lines = [
            ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip() and not ln.startswith("{")
        ]
        lines = [ln for ln in lines if "relaxing (CHGNet)" not in ln]  # the progress bar (stderr, \r-updated)
        result = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("{")))
        cands = ", ".join(f"{s} {n}" for s, n in zip(result["sources"], result["sites"], strict=True))
        print(
            f"| {threads} | {result['seconds']:.1f} (process {wall:.1f}) | {len(lines)} | {cands} | {load:.1f} |"
        )
        for line in lines[:5]:
            print(f"    {line[:150]}")


if __name__ == "__main__":
    main()
