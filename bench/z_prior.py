"""Formula units per conventional cell (Z) given the formula and the true space group: rules vs a learned prior.

Issue 19 asks for top-1/top-3 Z accuracy given the true group on both test sets. The learned prior counts, over
the ``bench`` split's training rows (no validation or test formula), how often each Z occurs for a space group
and anonymous formula, backing off to (space group, atoms per formula unit) and to the space group alone; it ranks
the Wyckoff-compatible Z values (:func:`cryspnet_gen.sources.cryspnet.cells.compatible`, up to the atom limit) by
those counts, the smallest first among ties. The rule in use ranks them smallest first. Validation rows choose;
test rows are reported once.

Usage::

    python bench/z_prior.py [--max-atoms 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import pandas as pd

from cryspnet_gen.zprior import ZPrior


def _score(rows: pd.DataFrame, prior: ZPrior, max_atoms: int) -> dict[str, dict[str, float]]:
    from cryspnet_gen.formula import formula_unit
    from cryspnet_gen.sources.cryspnet.cells import compatible

    hits: dict[str, Counter] = {"smallest compatible": Counter(), "learned prior": Counter()}
    n = seen = 0
    for formula, group, z in zip(rows["formula"], rows["space_group"], rows["z"], strict=True):
        try:
            fu = formula_unit(formula, max_atoms)
        except ValueError:
            continue
        g, z = int(group), int(z)
        n += 1
        options = [
            c for c in range(1, max_atoms // fu.n_atoms + 1) if compatible(g, tuple(k * c for k in fu.counts))
        ]
        if z not in options:
            continue
        seen += 1
        for name, order in (("smallest compatible", options), ("learned prior", prior.order(g, fu, options))):
            rank = order.index(z)
            for k in (1, 2, 3):
                hits[name][k] += rank < k
    out = {name: {f"top-{k}": 100 * c[k] / max(n, 1) for k in (1, 2, 3)} for name, c in hits.items()}
    out["_"] = {"rows": n, "reachable": 100 * seen / max(n, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-atoms", type=int, default=200)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    from cryspnet_gen.train import frame_and_features

    t0 = time.perf_counter()
    frame, _ = frame_and_features("bench", data_dir=args.data_dir, progress=False)
    train = frame[(frame["split"] == "train").to_numpy() & frame["z"].notna().to_numpy()]
    prior = ZPrior.from_rows(train["formula"], train["space_group"].astype(int), train["z"].astype(int))
    rows = []
    for split in ("val", "test_mp20", "test_mpts52"):
        scores = _score(frame[frame["split"] == split], prior, args.max_atoms)
        info = scores.pop("_")
        for name, s in scores.items():
            rows.append(
                {
                    "set": split,
                    "rows": info["rows"],
                    "rule": name,
                    **s,
                    "true Z reachable %": info["reachable"],
                }
            )
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f"))
    print(f"\n{' '.join(sys.argv)}: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
