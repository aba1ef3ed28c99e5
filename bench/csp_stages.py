"""CRYSPNet candidates of a CSP benchmark run, by stage and on new structure types (issue 19).

Reads the results of ``bench/csp.py`` runs (``--source cryspnet``, or ``--prerelax``) and prints, for k = 1, 5
and 20 (those the run has):

- the match rate over all formulas;
- the unmatched formulas by the stage that failed, in the issue's terms: *wrong group* (no candidate in the true
  space group: wrong Bravais lattice, wrong group, nothing built), *wrong Z*, *wrong assignment* (the element x
  Wyckoff multiplicity list differs), *right assignment or lattice, no match* (lattice off, positions off);
- the same on the formulas of a *new structure type*: those whose anonymous formula has no structure in the
  reference's space group in the template library (``--templates``, built without the benchmark's validation and
  test formulas), i.e. where no template can be right. Their match rate is the "hidden-style" figure of issue 19.

Usage::

    python bench/csp_stages.py runs/csp/mp20-cryspnet-1000 runs/csp/mpts52-cryspnet-1000 --templates runs/LIB-bench
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

STAGES = {
    "no candidate built": "wrong group",
    "true group tried, not built": "wrong group",
    "wrong Bravais lattice": "wrong group",
    "wrong space group": "wrong group",
    "wrong Z": "wrong Z",
    "Wyckoff arrangement differs": "wrong assignment",
    "lattice off": "right group and Z, no match",
    "positions off": "right group and Z, no match",
    "matched but invalid": "right group and Z, no match",
    "relaxation failed": "wrong group",
}
ORDER = ("matched", "wrong group", "wrong Z", "wrong assignment", "right group and Z, no match")


def read_results(folder: Path) -> list:
    from cryspnet_gen.csp import FormulaResult

    rows: dict[str, FormulaResult] = {}
    for file in sorted(folder.glob("results*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[d["formula"]] = FormulaResult.from_dict(d)
    return list(rows.values())


def new_type(result, store) -> bool:
    """Whether no template of the formula's anonymous formula is in the reference's space group."""
    rows = store.lookup(result.formula)
    return bool(rows.empty or not (rows["space_group"] == result.space_group).any())


def stage_counts(results, k: int) -> Counter:
    from cryspnet_gen.csp import classify

    return Counter(STAGES.get(o, o) for o in (classify(r, k) for r in results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="bench/csp.py output folders")
    parser.add_argument("--templates", required=True, help="template library without the benchmark formulas")
    parser.add_argument(
        "--ks", default="1,5,20", help="k values (default 1,5,20; those above a run's k are left out)"
    )
    args = parser.parse_args(argv)

    from cryspnet_gen.sources.templates import load_store

    store = load_store(args.templates)
    ks = [int(x) for x in args.ks.split(",")]
    print(
        "| run | formulas | k | match % | " + " | ".join(ORDER[1:]) + " | new types | new types matched % |"
    )
    print("|---|--:|--:|--:|" + "--:|" * (len(ORDER) - 1) + "--:|--:|")
    new_rows: list[str] = []
    for folder in args.runs:
        results = read_results(folder)
        if not results:
            print(f"| {folder.name} | 0 | | | | | | | | |")
            continue
        kmax = max(len(r.candidates) for r in results)
        fresh = [r for r in results if new_type(r, store)]
        for k in ks:
            if k > max(kmax, 1) and k != ks[0]:
                continue
            counts = stage_counts(results, k)
            n = len(results)
            hit_new = sum(any(c.matched for c in r.candidates[:k]) for r in fresh)
            cells = " | ".join(str(counts.get(s, 0)) for s in ORDER[1:])
            pct_new = f"{100 * hit_new / len(fresh):.1f} ({hit_new})" if fresh else "-"
            print(
                f"| {folder.name} | {n} | {k} | {100 * counts.get('matched', 0) / n:.1f} | {cells} | "
                f"{len(fresh)} | {pct_new} |"
            )
            if fresh:
                by_stage = stage_counts(fresh, k)
                new_rows.append(
                    f"| {folder.name} | {len(fresh)} | {k} | "
                    + " | ".join(str(by_stage.get(s, 0)) for s in ORDER)
                    + " |"
                )
    if new_rows:
        print("\nNew structure types only (no template of the anonymous formula in the true group):\n")
        print("| run | formulas | k | " + " | ".join(ORDER) + " |")
        print("|---|--:|--:|" + "--:|" * len(ORDER))
        print("\n".join(new_rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
