"""Classification and aggregation of CSP results: why a formula missed, match rates, tables.

:func:`classify` names the first reason of :data:`FAILURE_REASONS` that explains a miss; :func:`summarize`
gives the match rate, RMSE, hit rates, failure counts and timing of a run at one ``k``; :func:`markdown_table`
prints summaries beside the published numbers (:data:`PUBLISHED`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from cryspnet_gen.csp.evaluator import FormulaResult
from cryspnet_gen.csp.matching import CandidateMatch

__all__ = [
    "FAILURE_REASONS",
    "PUBLISHED",
    "classify",
    "markdown_table",
    "skip_kind",
    "summarize",
    "template_coverage",
]

#: Why a formula was not matched, in the order :func:`classify` checks them.
FAILURE_REASONS: tuple[str, ...] = (
    "no candidate built",
    "relaxation failed",
    "true group tried, not built",
    "wrong Bravais lattice",
    "wrong space group",
    "wrong Z",
    "lattice off",
    "Wyckoff arrangement differs",
    "positions off",
    "matched but invalid",
)

#: Published match rates (%) at k=1 and k=20: DiffCSP (Jiao et al., NeurIPS 2023), Table 1.
PUBLISHED: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "mp20": {
        "Random search": (8.73, None),
        "CDVAE": (33.90, 66.95),
        "DiffCSP": (51.49, 77.93),
    },
    "mpts52": {
        "CDVAE": (5.34, 20.79),
        "DiffCSP": (12.19, 34.02),
    },
}


def skip_kind(reason: str) -> str:
    """A short name for why ``generate_candidates`` skipped a pair (from its ``SkippedPair.reason``)."""
    if reason.startswith("composition"):
        return "composition does not fit the Wyckoff positions (Z <= max_atoms)"
    if "time limit" in reason:
        return "time limit"
    if "symmetry check found" in reason:
        return "pyxtal built another group"
    if "atoms too close" in reason:
        return "distance check"
    if "cell too" in reason:
        return "cell too small or thin"
    if "pyxtal failed" in reason:
        return "pyxtal failed"
    return "other"


def _true_group_tried(result: FormulaResult, k: int) -> bool:
    """Whether the walk that made the first ``k`` candidates tried the true group and built nothing in it."""
    if result.true_group_skip is None or result.true_pair_rank is None:
        return False
    if len(result.candidates) < k:
        return True
    return result.true_pair_rank < result.candidates[k - 1].pair_rank


def classify(result: FormulaResult, k: int, *, relaxed: bool = False) -> str:
    """``"matched"`` or the first reason of :data:`FAILURE_REASONS` that explains the miss at ``k``.

    With ``relaxed``, the relaxed candidates are judged (by their relaxed space group) instead of the
    generated ones.
    """
    if relaxed:
        if result.relaxed is None:
            raise ValueError(f"{result.formula}: no relaxed candidates recorded")
        cands = result.relaxed[:k]
        if not cands:
            return "no candidate built"
        if all(c.error is not None for c in cands):
            return "relaxation failed"
    else:
        cands = result.candidates[:k]
        if not cands:
            return "no candidate built"
    if any(c.matched for c in cands):
        return "matched"
    if any(c.rms is not None for c in cands):
        return "matched but invalid"
    right = [c for c in cands if c.space_group == result.space_group]
    if not right:
        if not relaxed and _true_group_tried(result, k):
            return "true group tried, not built"
        if result.bravais not in {c.bravais for c in cands}:
            return "wrong Bravais lattice"
        return "wrong space group"
    right_z = [c for c in right if c.prim_nsites == result.prim_nsites]
    if not right_z:
        return "wrong Z"
    if not any(c.lattice_ok for c in right_z):
        return "lattice off"
    if not any(c.lattice_ok and c.wyckoff_same for c in right_z):
        return "Wyckoff arrangement differs"
    return "positions off"


def _best_rms(cands: Iterable[CandidateMatch]) -> float | None:
    values = [c.rms for c in cands if c.matched and c.rms is not None]
    return min(values) if values else None


def _lowest_energy_matched(cands: Sequence[CandidateMatch]) -> bool:
    """Whether the lowest-energy relaxed candidate matches (k=1 after re-ranking by CHGNet energy)."""
    ok = [c for c in cands if c.error is None and c.energy_per_atom is not None]
    return bool(ok) and min(ok, key=lambda c: c.energy_per_atom or 0.0).matched


def _rank_bucket(rank: int | None) -> str:
    if rank is None:
        return "not modelled"
    if rank == 1:
        return "1"
    if rank <= 5:
        return "2-5"
    if rank <= 20:
        return "6-20"
    return ">20"


def summarize(results: Sequence[FormulaResult], k: int, *, relaxed: bool = False) -> dict[str, Any]:
    """Match rate, mean RMSE, hit rates, failure counts and timing over ``results`` at ``k``.

    Rates are fractions of all formulas (a formula with no candidate counts as a miss). ``rmse`` is the mean
    over matched formulas of the best matching candidate's normalised RMS distance.
    """
    n = len(results)
    outcomes = [classify(r, k, relaxed=relaxed) for r in results]
    rms = [_best_rms((r.relaxed if relaxed else r.candidates)[:k]) for r in results]  # type: ignore[index]
    matched = [x for x in rms if x is not None]
    sg_hit = bravais_hit = 0
    for r in results:
        cands = (r.relaxed if relaxed else r.candidates) or []
        groups = {c.space_group for c in cands[:k]}
        lattices = {c.bravais for c in cands[:k]}
        sg_hit += r.space_group in groups
        bravais_hit += r.bravais in lattices
    failures = Counter(o for o in outcomes if o != "matched")
    by_rank: dict[str, Counter[str]] = {}
    for r, o in zip(results, outcomes, strict=True):
        by_rank.setdefault(_rank_bucket(r.true_pair_rank), Counter())[o] += 1
    skip_kinds = Counter(
        skip_kind(r.true_group_skip or "")
        for r, o in zip(results, outcomes, strict=True)
        if o == "true group tried, not built"
    )
    wrong_z: Counter[str] = Counter()
    for r, o in zip(results, outcomes, strict=True):
        if o == "wrong Z":
            cands = (r.relaxed if relaxed else r.candidates) or []
            sizes = {c.prim_nsites for c in cands[:k] if c.space_group == r.space_group}
            wrong_z["candidate Z smaller" if max(sizes) < r.prim_nsites else "candidate Z larger"] += 1
    seconds = [r.seconds.get("total", 0.0) for r in results]
    parts = ("predict", "templates", "generate", "match", "relax")
    out: dict[str, Any] = {
        "k": k,
        "relaxed": relaxed,
        "n": n,
        "matched": len(matched),
        "match_rate": len(matched) / n if n else math.nan,
        "rmse": float(np.mean(matched)) if matched else math.nan,
        "space_group_hit_rate": sg_hit / n if n else math.nan,
        "bravais_hit_rate": bravais_hit / n if n else math.nan,
        "failures": {reason: failures[reason] for reason in FAILURE_REASONS if failures[reason]},
        "true_group_not_built_because": dict(skip_kinds),
        "wrong_z_direction": dict(wrong_z),
        "outcome_by_true_pair_rank": {
            b: dict(by_rank[b]) for b in ("1", "2-5", "6-20", ">20", "not modelled") if b in by_rank
        },
        "seconds_per_formula": float(np.mean(seconds)) if seconds else math.nan,
        "seconds_median": float(np.median(seconds)) if seconds else math.nan,
        "seconds_by_part": {
            p: float(np.mean([r.seconds.get(p, 0.0) for r in results])) if results else math.nan
            for p in parts
        },
        "candidates_per_formula": float(np.mean([len(r.candidates) for r in results]))
        if results
        else math.nan,
    }
    if relaxed:
        before = [classify(r, k) == "matched" for r in results]
        after = [o == "matched" for o in outcomes]
        rel = [c for r in results for c in (r.relaxed or [])[:k]]
        ok = [c for c in rel if c.error is None]
        out["relaxation"] = {
            "matched_before_and_after": sum(b and a for b, a in zip(before, after, strict=True)),
            "gained": sum(a and not b for b, a in zip(before, after, strict=True)),
            "lost": sum(b and not a for b, a in zip(before, after, strict=True)),
            "structures": len(rel),
            "failed": len(rel) - len(ok),
            "space_group_changed": sum(c.space_group != c.generated_space_group for c in ok),
            "converged": sum(bool(c.converged) for c in ok),
            "mean_steps": float(np.mean([c.n_steps or 0 for c in ok])) if ok else math.nan,
            "lowest_energy_matched": sum(_lowest_energy_matched((r.relaxed or [])[:k]) for r in results),
        }
    return out


def template_coverage(results: Sequence[FormulaResult], store: Any, k: int) -> dict[str, int]:
    """Why template candidates missed: counts over the formulas not matched at ``k``.

    ``no template``: the store has no entry with the formula's anonymous formula; ``no template in the true
    group``: it has some, none in the reference's space group; ``true group ranked below k``: a template in
    the true group exists but no candidate in it is among the first ``k``; ``true group, no match``: a
    candidate in the true group is there and does not match (another structure type of that group, or Z).
    """
    out: Counter[str] = Counter()
    for r in results:
        if any(c.matched for c in r.candidates[:k]):
            out["matched"] += 1
            continue
        rows = store.lookup(r.formula)
        if rows.empty:
            out["no template"] += 1
        elif not (rows["space_group"] == r.space_group).any():
            out["no template in the true group"] += 1
        elif not any(c.space_group == r.space_group for c in r.candidates[:k]):
            out["true group ranked below k"] += 1
        else:
            out["true group, no match"] += 1
    return dict(out)


def _pct(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def markdown_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """A Markdown table of labelled :func:`summarize` outputs (rates in %)."""
    lines = [
        "| run | n | k | match rate (%) | RMSE | space group hit (%) | Bravais hit (%) | s / formula |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, s in rows:
        rmse = "-" if not math.isfinite(s["rmse"]) else f"{s['rmse']:.4f}"
        lines.append(
            f"| {label} | {s['n']} | {s['k']} | {_pct(s['match_rate'])} | {rmse} | "
            f"{_pct(s['space_group_hit_rate'])} | {_pct(s['bravais_hit_rate'])} | "
            f"{s['seconds_per_formula']:.1f} |"
        )
    return "\n".join(lines)
