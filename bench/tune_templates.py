"""Tune the template score weights (cryspnet_gen.sources.templates.TemplateScoring) on validation formulas.

Usage (from the repository root)::

    python bench/tune_templates.py --templates runs/templates/mp-bench            # 300 + 200 formulas
    python bench/tune_templates.py --templates STORE --n-mp20 50 --n-mpts52 0 --n-cryspnet 0   # quick look

Formulas come from the MP-20 and MPTS-52 *validation* files, restricted to those in the ``bench`` split's
validation part (so the ``cryspnet-bench`` model never trained on them); test formulas are never used. Each
formula's own templates are left out (leave-one-out: the store holds every MP formula but the test ones).

For every weight setting of a grid, the template options are ranked; each distinct option (de-duplication key)
(one template row with one element mapping) is built once and matched against the reference with the CSP matcher, and match@k (k = 1, 5, 20) is computed from
the ranking. Then the CRYSPNet candidates of ``--n-cryspnet`` of the MP-20 formulas are generated (k=20) and
matched, and the offset that places them in the merged list is chosen. Prints the grid and the best setting as
Markdown; StructureMatcher de-duplication across options is ignored here (the ranking is what is tuned).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

GRIDS = {
    "wide": {
        "w_model": (0.5, 1.0),
        "w_substitution": (0.0, 0.5, 1.0, 2.0),
        "w_prevalence": (0.0, 0.25, 0.5, 1.0),
        "p_floor": (1e-4, 1e-3),
    },
    # around the best of "wide" (which sat on its edge: w_model 0.5, w_substitution 2, w_prevalence 0)
    "fine": {
        "w_model": (0.25, 0.5),
        "w_substitution": (2.0, 3.0, 4.0),
        "w_prevalence": (0.0, 0.1),
        "p_floor": (1e-3, 1e-2),
    },
    # after a new symmetry model (cryspnet-bench version 2, calibrated): how much weight its probabilities earn
    "model-weight": {
        "w_model": (0.25, 0.5, 1.0, 2.0),
        "w_substitution": (1.0, 2.0, 4.0),
        "w_prevalence": (0.0, 0.25),
        "p_floor": (1e-3,),
    },
}
OFFSETS = (-8.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 2.0)
KS = (1, 5, 20)


def _val_references(name: str, n: int, seed: int) -> list[Any]:
    from cryspnet_gen.csp import load_test_set, sample_references
    from cryspnet_gen.data import assign_splits, read_test_formulas

    refs = load_test_set(name)
    split = assign_splits([r.formula for r in refs], "bench", test_formulas=read_test_formulas())
    refs = [r for r in refs if split[r.formula] == "val"]
    return sample_references(refs, n, seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--templates", required=True, help="template store (built without test formulas)")
    parser.add_argument("--n-mp20", type=int, default=300)
    parser.add_argument("--n-mpts52", type=int, default=200)
    parser.add_argument("--n-cryspnet", type=int, default=100, help="MP-20 formulas with CRYSPNet candidates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", choices=tuple(GRIDS), default="wide", help="weight grid (default wide)")
    parser.add_argument("--out", type=Path, default=Path("runs/tune-templates"))
    args = parser.parse_args(argv)

    import numpy as np
    from tqdm.auto import tqdm

    from cryspnet_gen.csp import make_matcher, match_rms
    from cryspnet_gen.formula import formula_unit
    from cryspnet_gen.generate import generate_candidates
    from cryspnet_gen.predict import load_predictor
    from cryspnet_gen.sources.templates import TemplateScoring, build_option, load_store, rank_options
    from cryspnet_gen.sources.templates.scoring import pair_probabilities

    store = load_store(args.templates)
    predictor = load_predictor("cryspnet-bench")
    matcher = make_matcher()
    sets = [("mp20_val", args.n_mp20), ("mpts52_val", args.n_mpts52)]
    refs = [(name, r) for name, n in sets if n > 0 for r in _val_references(name, n, args.seed)]
    preds = dict(
        zip(
            [r.formula for _, r in refs],
            predictor.predict([r.formula for _, r in refs], top_bravais=14, top_space_groups=230),
            strict=True,
        )
    )
    grid = GRIDS[args.grid]
    settings = [TemplateScoring(**dict(zip(grid, v, strict=True))) for v in itertools.product(*grid.values())]
    # per formula: for each setting the ranked keys (top 20) with scores; per key whether it matches
    ranked: dict[str, list[list[tuple[Any, float]]]] = {}
    matched: dict[str, dict[Any, bool]] = {}
    start = time.perf_counter()
    for _name, ref in tqdm(refs, desc="templates", unit="formula"):
        pred = preds[ref.formula]
        target = formula_unit(ref.formula, 400).amounts
        probs, _, _ = pair_probabilities(pred)
        ranked[ref.formula] = []
        cache = matched.setdefault(ref.formula, {})
        for scoring in settings:
            opts = rank_options(store, target, probs, scoring, exclude_formulas={ref.formula}, limit=20)
            # an option is one template row with one mapping: templates of one structure type differ in
            # their lattice ratios and free coordinates, so each is built and matched on its own
            ranked[ref.formula].append([((o.row, o.mapping), o.score) for o in opts])
            for o in opts:
                if (o.row, o.mapping) not in cache:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        structure, _sg = build_option(store, o, pred.volume_per_atom)
                        cache[(o.row, o.mapping)] = match_rms(structure, ref.structure, matcher) is not None
    template_seconds = (time.perf_counter() - start) / max(len(refs), 1)

    def rate(formulas: list[str], i: int, k: int) -> float:
        return float(np.mean([any(matched[f][key] for key, _ in ranked[f][i][:k]) for f in formulas]))

    by_set = {name: [r.formula for nm, r in refs if nm == name] for name, _ in sets}
    rows = []
    for i, scoring in enumerate(settings):
        row = {"setting": scoring}
        for name, formulas in by_set.items():
            for k in KS:
                row[f"{name}@{k}"] = rate(formulas, i, k) if formulas else float("nan")
        row["objective"] = float(
            np.nanmean([row[f"{name}@{k}"] for name in by_set for k in (1, 20) if by_set[name]])
        )
        rows.append(row)
    rows.sort(key=lambda r: -r["objective"])
    best_i = settings.index(rows[0]["setting"])
    best = rows[0]["setting"]

    # CRYSPNet candidates for the offset
    # CRYSPNet candidates do not depend on the template weights: kept in the output folder and reused
    cache_file = args.out / "cryspnet.json"
    cryspnet: dict[str, list[tuple[float, bool]]] = (
        {f: [tuple(x) for x in v] for f, v in json.loads(cache_file.read_text()).items()}
        if cache_file.is_file()
        else {}
    )
    mp20 = [r for nm, r in refs if nm == "mp20_val"][: args.n_cryspnet]
    todo = [r for r in mp20 if r.formula not in cryspnet]
    for ref in tqdm(todo, desc="cryspnet k=20", unit="formula"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                cands = generate_candidates(
                    ref.formula,
                    20,
                    predictor=predictor,
                    max_atoms=80,
                    timeout=20,
                    timeout_per_group=5,
                    source="cryspnet",
                )
            except Exception:  # a formula without CRYSPNet candidates keeps the template list only
                cands = []
        cryspnet[ref.formula] = [
            (c.probability, match_rms(c.structure, ref.structure, matcher) is not None) for c in cands
        ]
    cryspnet = {r.formula: cryspnet[r.formula] for r in mp20}
    args.out.mkdir(parents=True, exist_ok=True)
    if todo:
        cache_file.write_text(json.dumps(cryspnet))
    offset_rows = []
    for offset in OFFSETS:
        sc = TemplateScoring(**{**best.__dict__, "cryspnet_offset": offset})
        res = {}
        for k in KS:
            hits = []
            for f, cands in cryspnet.items():
                pool = [(s, matched[f][key]) for key, s in ranked[f][best_i]]
                pool += [(sc.cryspnet_score(p), m) for p, m in cands]
                pool.sort(key=lambda x: -x[0])
                hits.append(any(m for _, m in pool[:k]))
            res[f"mp20_val@{k}"] = float(np.mean(hits)) if hits else float("nan")
        res["objective"] = (res["mp20_val@1"] + res["mp20_val@20"]) / 2
        offset_rows.append((offset, res))
    only_templates = {
        k: float(np.mean([any(matched[f][key] for key, _ in ranked[f][best_i][:k]) for f in cryspnet]))
        if cryspnet
        else float("nan")
        for k in KS
    }
    only_cryspnet = {
        k: float(np.mean([any(m for _, m in cands[:k]) for cands in cryspnet.values()]))
        if cryspnet
        else float("nan")
        for k in KS
    }

    lines = [
        f"# Template score tuning on validation formulas ({', '.join(f'{len(v)} {nm}' for nm, v in by_set.items())})",
        "",
        f"store {store.path} ({len(store)} templates); {template_seconds:.2f} s per formula for the template grid",
        "",
        "| w_model | w_substitution | w_prevalence | p_floor | "
        + " | ".join(f"{nm} @{k}" for nm in by_set for k in KS)
        + " | objective |",
        "|" + "---:|" * (5 + len(by_set) * len(KS)),
    ]
    for row in rows[:15]:
        s = row["setting"]
        cells = [f"{100 * row[f'{nm}@{k}']:.1f}" for nm in by_set for k in KS]
        lines.append(
            f"| {s.w_model} | {s.w_substitution} | {s.w_prevalence} | {s.p_floor:g} | "
            + " | ".join(cells)
            + f" | {100 * row['objective']:.1f} |"
        )
    lines += [
        "",
        f"CRYSPNet offset on {len(cryspnet)} MP-20 validation formulas (templates alone: "
        + ", ".join(f"@{k} {100 * v:.1f}" for k, v in only_templates.items())
        + "; CRYSPNet alone: "
        + ", ".join(f"@{k} {100 * v:.1f}" for k, v in only_cryspnet.items())
        + "):",
        "",
        "| offset | " + " | ".join(f"@{k}" for k in KS) + " |",
        "|---:|" + "---:|" * len(KS),
    ]
    for offset, res in offset_rows:
        lines.append(f"| {offset:g} | " + " | ".join(f"{100 * res[f'mp20_val@{k}']:.1f}" for k in KS) + " |")
    best_offset = (
        max(offset_rows, key=lambda r: (r[1]["objective"], -abs(r[0] + 3)))[0]
        if cryspnet
        else best.cryspnet_offset
    )
    lines += ["", f"best: {TemplateScoring(**{**best.__dict__, 'cryspnet_offset': best_offset})}"]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"tuning-{args.grid}.md").write_text(text)
    (args.out / f"tuning-{args.grid}.json").write_text(
        json.dumps(
            {
                "grid": [
                    {**r["setting"].__dict__, **{k: v for k, v in r.items() if k != "setting"}} for r in rows
                ],
                "offsets": [{"offset": o, **r} for o, r in offset_rows],
            },
            indent=1,
        )
    )
    print(text)
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
