"""Ranking candidates from several sources into one list.

Every candidate gets a log-scale score: template candidates carry theirs; a CRYSPNet candidate is scored on the
same scale by the scorer the template options were ranked with: with the hand-weighted score
(:class:`~cryspnet_gen.sources.templates.TemplateScoring`) ``w_model x log P(pair) + cryspnet_offset``; with the
learned ranker (:class:`~cryspnet_gen.rankermodel.TemplateRankerModel`) log P(match), from a logistic fit of how
often CRYSPNet candidates of that P(pair) matched on validation formulas, the scale of its template scores. :func:`merge_candidates`
sorts by score and drops duplicates; :func:`cryspnet_needed` tells the orchestrator when generating CRYSPNet
structures cannot change the top ``k``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from cryspnet_gen.rankermodel import TemplateRankerModel
from cryspnet_gen.records import Candidate, CandidateList
from cryspnet_gen.sources.templates.scoring import TemplateScoring

Scorer = TemplateScoring | TemplateRankerModel

__all__ = ["cryspnet_needed", "merge_candidates"]


def cryspnet_needed(from_templates: Sequence[Candidate], k: int, scoring: Scorer | None = None) -> bool:
    """Whether CRYSPNet candidates could enter the top ``k`` of a merged list with these template candidates.

    A CRYSPNet candidate scores at most ``cryspnet_score(1.0)``; when ``k`` template candidates all score higher,
    generating CRYSPNet structures cannot change the merged list, and "both" skips it.
    """
    scoring = scoring or TemplateScoring()
    if len(from_templates) < k:
        return True
    best_possible = scoring.cryspnet_score(1.0)
    return min(c.score if c.score is not None else -math.inf for c in from_templates[:k]) <= best_possible


def merge_candidates(
    lists: Sequence[Sequence[Candidate]],
    k: int,
    *,
    scoring: Scorer | None = None,
    formula: str = "",
) -> CandidateList:
    """One ranked list of at most ``k`` from several sources, highest score first, without duplicates.

    A candidate without ``score`` (CRYSPNet's) is scored by ``scoring.cryspnet_score`` (default
    :class:`TemplateScoring`: ``w_model x log P(pair) + cryspnet_offset``). Duplicates (same
    group and size, ``StructureMatcher().fit``) keep the better-scored one. Ranks are renumbered from 1; each
    candidate's rank within its source stays in ``notes``.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    scoring = scoring or TemplateScoring()
    pool = []
    for cands in lists:
        for c in cands:
            score = c.score if c.score is not None else scoring.cryspnet_score(c.probability)
            pool.append((score, c))
    pool.sort(key=lambda sc: -sc[0])
    matcher = StructureMatcher()
    out: list[Candidate] = []
    for score, c in pool:
        if len(out) >= k:
            break
        if any(
            o.space_group == c.space_group
            and len(o.structure) == len(c.structure)
            and matcher.fit(o.structure, c.structure)
            for o in out
        ):
            continue
        out.append(
            dataclasses.replace(
                c,
                rank=len(out) + 1,
                score=float(score),
                notes=[*c.notes, f"rank {c.rank} among the {c.source} candidates"],
            )
        )
    skipped = [s for cands in lists for s in getattr(cands, "skipped", [])]
    stops = [getattr(cands, "stop_reason", None) for cands in lists]
    stop = None if len(out) >= k else "; ".join(s for s in stops if s) or None
    return CandidateList(out, formula=formula, skipped=skipped, stop_reason=stop)
