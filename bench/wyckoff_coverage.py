"""How far could learned Wyckoff assignments take CRYSPNet candidates? (issue 19, measured before building it)

For each test formula (and the validation formulas, which would choose), given its true space group: the Wyckoff
assignments (letters per element, the prototype library's structure-type key) that training compounds of the
same space group and anonymous formula use, most frequent first. Reported: how often any training compound has
that (group, anonymous formula) at all, and how often the true assignment is the most frequent one, among the 3
or the 5 most frequent. Training compounds: the shipped prototype library's rows of the ``bench`` split's training
formulas (no validation or test formula, every polymorph); truths: the library's row of each benchmark material
id (the MP entry the benchmark file holds).

Usage::

    python bench/wyckoff_coverage.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict

import pandas as pd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    from cryspnet_gen.data import formula_splits
    from cryspnet_gen.explain.similar import resolve_library
    from cryspnet_gen.sources.templates.prototypes import type_key
    from cryspnet_gen.train import frame_and_features

    t0 = time.perf_counter()
    rows = resolve_library().all_rows
    rows = rows.assign(
        type=[
            type_key(a, int(g), w)
            for a, g, w in zip(rows["anonymous"], rows["space_group"], rows["wyckoff"], strict=True)
        ]
    )
    split = formula_splits(rows["formula"].unique(), "bench", data_dir=args.data_dir)
    train = rows[rows["formula"].map(split) == "train"]
    counts: dict[tuple[int, str], Counter] = defaultdict(Counter)
    for g, a, t in zip(train["space_group"], train["anonymous"], train["type"], strict=True):
        counts[(int(g), a)][t] += 1
    by_id = rows.drop_duplicates("template_id").set_index("template_id")

    frame, _ = frame_and_features("bench", data_dir=args.data_dir, progress=False)
    out = []
    for name in ("val", "test_mp20", "test_mpts52"):
        part = frame[frame["split"] == name]
        n = found = known_key = 0
        rank_hits = Counter()
        for mid in part["material_id"]:
            n += 1
            if mid not in by_id.index:
                continue
            truth = by_id.loc[mid]
            found += 1
            ranked = [
                t
                for t, _ in sorted(
                    counts.get((int(truth["space_group"]), truth["anonymous"]), {}).items(),
                    key=lambda kv: (-kv[1], kv[0]),
                )
            ]
            if ranked:
                known_key += 1
            if truth["type"] in ranked:
                r = ranked.index(truth["type"])
                for k in (1, 3, 5):
                    rank_hits[k] += r < k
        out.append(
            {
                "set": name,
                "formulas": n,
                "truth in library %": 100 * found / n,
                "(group, anonymous) known %": 100 * known_key / max(found, 1),
                "true assignment first %": 100 * rank_hits[1] / max(found, 1),
                "in top 3 %": 100 * rank_hits[3] / max(found, 1),
                "in top 5 %": 100 * rank_hits[5] / max(found, 1),
            }
        )
    print(pd.DataFrame(out).to_markdown(index=False, floatfmt=".1f"))
    print(f"\n{' '.join(sys.argv)}: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
