"""Training the learned template ranker (issue 18): labelled options, the booster, its calibration.

Labels
    For each formula, its template options (:func:`~cryspnet_gen.sources.templates.rank_options`, the formula's own
    entries left out, every polymorph) in the order of the hand-weighted score, the first ``depth`` of them; each
    is substituted and volume-scaled as the template source builds it and labelled 1 when it matches the
    formula's true structure under the benchmark's ``StructureMatcher`` (:func:`~cryspnet_gen.csp.match_rms`).
    The true structure of a training formula is its lowest-energy entry in the store; for the benchmark's
    validation formulas, the validation file's structure.

Training formulas
    The ``bench`` split's validation part (a seeded 10% of the formulas of no benchmark test set), without any
    formula of the MP-20 or MPTS-52 validation or test files. The symmetry bundle never trained on them (it used
    them for early stopping and temperature scaling only), so P(lattice, group) has the confidence it has on new
    formulas; on the bundle's own training formulas it would be over-confident and the ranker would learn to
    trust it too much.

Model
    LightGBM with a ``binary`` or ``lambdarank`` objective (queries: formulas), early-stopped on the validation
    table; Platt scaling of its raw score on the validation table turns it into P(match).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryspnet_gen.csp.matching import make_matcher, match_rms, reduced_cell
from cryspnet_gen.formula import formula_unit
from cryspnet_gen.rankermodel import TemplateRankerModel
from cryspnet_gen.sources.templates.ranker import FEATURES, features_without, option_features
from cryspnet_gen.sources.templates.scoring import (
    TemplateScoring,
    build_option,
    pair_probabilities,
    rank_options,
)

if TYPE_CHECKING:
    import pandas as pd
    from pymatgen.core import Structure

    from cryspnet_gen.predict import Predictor
    from cryspnet_gen.records import Prediction
    from cryspnet_gen.sources.templates.store import TemplateStore

__all__ = [
    "RankerData",
    "fit_ranker",
    "label_options",
    "match_at_k",
    "store_reference",
    "training_formulas",
]

logger = logging.getLogger(__name__)

KS = (1, 5, 20)


def training_formulas(
    store: TemplateStore, n: int | None, *, seed: int = 0, max_sites: int = 52, data_dir: Any = None
) -> list[str]:
    """Up to ``n`` seeded formulas of the ``bench`` split's validation part that are in no benchmark
    validation or test file, have a template of their anonymous formula besides their own, and a lowest-energy
    entry of at most ``max_sites`` sites."""
    from cryspnet_gen.data import formula_splits
    from cryspnet_gen.sources.templates.prototype_build import benchmark_formulas

    frame = store.frame
    formulas = sorted(set(frame["formula"].astype(str)))
    split = formula_splits(formulas, "bench", data_dir=data_dir)
    banned = benchmark_formulas(data_dir)
    counts = frame.groupby("anonymous")["formula"].nunique()
    ground = frame.sort_values("e_above_hull").drop_duplicates("formula").set_index("formula")
    keep = [
        f
        for f in formulas
        if split[f] == "val"
        and _featurisable(f)
        and f not in banned
        and counts.get(ground.at[f, "anonymous"], 0) > 1
        and int(ground.at[f, "nsites"]) <= max_sites
    ]
    rng = np.random.default_rng(seed)
    rng.shuffle(keep)
    return keep if n is None else keep[:n]


def _featurisable(formula: str) -> bool:
    """Whether CRYSPNet can predict for ``formula`` (not, e.g., for a noble gas)."""
    try:
        formula_unit(formula, 1000)
    except ValueError:
        return False
    return True


def store_reference(store: TemplateStore, formula: str) -> Structure | None:
    """The lowest-energy entry of ``formula`` in the store as a structure (None if the store has none)."""
    from pymatgen.core import Lattice, Structure

    rows = store.known(formula)
    if len(rows) == 0:
        return None
    lattice, numbers, frac = store.row_cell(rows.iloc[0])
    species: list[Any] = [int(z) for z in numbers]
    return Structure(Lattice(lattice), species, frac)


@dataclass
class RankerData:
    """Labelled options: ``X`` (``n x len(FEATURES)``), ``y`` (1 = matches), ``query`` (formula index per row),
    ``kept`` (the built structure kept the template's group, so the template source would offer it) and the
    formulas, in order."""

    X: np.ndarray
    y: np.ndarray
    query: np.ndarray
    kept: np.ndarray
    formulas: list[str]

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        frame = pd.DataFrame(self.X, columns=list(FEATURES))
        frame["label"] = self.y
        frame["kept"] = self.kept
        frame["formula"] = np.asarray(self.formulas, dtype=object)[self.query] if len(self.query) else []
        return frame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> RankerData:
        formulas = list(dict.fromkeys(frame["formula"].astype(str)))
        index = {f: i for i, f in enumerate(formulas)}
        return cls(
            X=frame[list(FEATURES)].to_numpy(dtype=np.float64),
            y=frame["label"].to_numpy(dtype=np.int64),
            query=np.asarray([index[f] for f in frame["formula"].astype(str)], dtype=np.int64),
            kept=frame["kept"].to_numpy(dtype=bool),
            formulas=formulas,
        )


# state shared with forked workers (set before the pool starts; never pickled)
_WORK: dict[str, Any] = {}


def _label_one(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    store: TemplateStore = _WORK["store"]
    formula, reference = _WORK["items"][i]
    prediction: Prediction = _WORK["predictions"][i]
    depth: int = _WORK["depth"]
    empty = (np.zeros((0, len(FEATURES))), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
    if reference is None or getattr(prediction, "error", None):
        return empty
    try:
        target = formula_unit(formula, 1000).amounts
    except ValueError as exc:  # e.g. a noble gas: no features, so no options; the other formulas go on
        logger.warning("skipping %s: %s", formula, exc)
        return empty
    probs, _, _ = pair_probabilities(prediction)
    options = rank_options(store, target, probs, TemplateScoring(), exclude_formulas={formula}, limit=depth)
    if not options:
        return empty
    X = option_features(store, target, options, prediction)
    matcher = make_matcher()
    ref_reduced = reduced_cell(reference)
    y = np.zeros(len(options), dtype=np.int64)
    kept = np.zeros(len(options), dtype=bool)
    groups = store.space_groups
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j, option in enumerate(options):
            try:
                structure, sg = build_option(store, option, prediction.volume_per_atom)
                kept[j] = sg == int(groups[option.row])
                rms = match_rms(structure, reference, matcher, reduced=(reduced_cell(structure), ref_reduced))
            except Exception as exc:  # a template that cannot be built or compared is a non-match
                logger.debug("%s option %d: %s", formula, j, exc)
                continue
            y[j] = int(rms is not None)
    return X, y, kept


def label_options(
    items: Sequence[tuple[str, Structure | None]],
    store: TemplateStore,
    predictor: Predictor,
    *,
    depth: int = 30,
    workers: int = 1,
    progress: bool = False,
) -> RankerData:
    """Labelled options of each ``(formula, true structure)`` (see the module docstring)."""
    import multiprocessing

    formulas = [f for f, _ in items]
    predictions = predictor.predict(formulas, top_bravais=14, top_space_groups=230)
    _WORK.update(store=store, items=list(items), predictions=predictions, depth=depth)
    try:
        indices = range(len(items))
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                results = list(_progress(pool.map(_label_one, indices, chunksize=4), len(items), progress))
        else:
            results = list(_progress(map(_label_one, indices), len(items), progress))
    finally:
        _WORK.clear()
    X = [r[0] for r in results]
    return RankerData(
        X=np.concatenate(X) if X else np.zeros((0, len(FEATURES))),
        y=np.concatenate([r[1] for r in results]) if results else np.zeros(0, dtype=np.int64),
        query=np.concatenate([np.full(len(r[1]), i, dtype=np.int64) for i, r in enumerate(results)])
        if results
        else np.zeros(0, dtype=np.int64),
        kept=np.concatenate([r[2] for r in results]) if results else np.zeros(0, dtype=bool),
        formulas=formulas,
    )


def _progress(it: Any, total: int, show: bool, desc: str = "label options") -> Any:
    if not show:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="formula")


def match_at_k(data: RankerData, scores: np.ndarray, ks: Sequence[int] = KS) -> dict[int, float]:
    """Share of the formulas with a matching option among the ``k`` best-scored options the template source
    would offer (``kept``), over all formulas of ``data`` (one without options counts as a miss)."""
    hits = {k: 0 for k in ks}
    order = np.lexsort((-scores, data.query))
    q, y, kept = data.query[order], data.y[order], data.kept[order]
    starts = np.searchsorted(q, np.arange(len(data.formulas)))
    ends = np.searchsorted(q, np.arange(len(data.formulas)), side="right")
    for s, e in zip(starts, ends, strict=True):
        labels = y[s:e][kept[s:e]]
        for k in ks:
            hits[k] += int(labels[:k].any())
    n = max(len(data.formulas), 1)
    return {k: hits[k] / n for k in ks}


def _platt(raw: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Logistic fit of ``y`` on ``raw`` (a, b)."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        return 1.0, 0.0
    lr = LogisticRegression(C=1e4, max_iter=1000).fit(raw.reshape(-1, 1), y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def fit_ranker(
    train: RankerData,
    val: RankerData,
    *,
    objective: str = "binary",
    features: Sequence[str] = FEATURES,
    depth: int = 30,
    seed: int = 0,
    num_leaves: int = 31,
    learning_rate: float = 0.05,
    max_rounds: int = 2000,
    meta: dict[str, Any] | None = None,
) -> TemplateRankerModel:
    """A booster on ``train``, early-stopped on ``val`` (log loss for ``binary``, NDCG@5 for ``lambdarank``),
    Platt-scaled on ``val``. ``features``: a subset of :data:`FEATURES` for ablations (the others are given to
    the booster as missing values, so the model still reads every feature column)."""
    import lightgbm as lgb

    from cryspnet_gen.trees import compact_model_text

    if objective not in ("binary", "lambdarank"):
        raise ValueError(f"Unknown {objective=}; choose 'binary' or 'lambdarank'")
    unknown = sorted(set(features) - set(FEATURES))
    if unknown:
        raise ValueError(f"unknown ranker feature(s) {unknown}; choose from {list(FEATURES)}")
    mask = np.asarray([f in set(features) for f in FEATURES])

    def masked(X: np.ndarray) -> np.ndarray:
        return np.where(mask[None, :], X, np.nan)

    def dataset(d: RankerData, reference: Any = None) -> Any:
        order = np.argsort(d.query, kind="stable")
        group = np.bincount(d.query[order], minlength=len(d.formulas))
        return lgb.Dataset(
            masked(d.X[order]),
            d.y[order],
            group=group[group > 0] if objective == "lambdarank" else None,
            reference=reference,
            free_raw_data=False,
        )

    params = {
        "objective": objective,
        "learning_rate": learning_rate,
        "num_leaves": num_leaves,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "verbosity": -1,
        "metric": "binary_logloss" if objective == "binary" else "ndcg",
    }
    if objective == "lambdarank":
        params["eval_at"] = [1, 5]
    train_set = dataset(train)
    val_set = dataset(val, reference=train_set)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=max_rounds,
        valid_sets=[val_set],
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    text = compact_model_text(booster.model_to_string(num_iteration=booster.best_iteration))
    model = TemplateRankerModel(model_text=text, features=tuple(FEATURES), depth=depth)
    if not mask.all():
        # an ablation model reads every column, the dropped ones as missing values, at prediction time too
        model.meta["masked_features"] = [f for f in FEATURES if f not in set(features)]
    raw = model.raw_scores(val.X)
    model.platt = _platt(raw, val.y)
    model.meta = {
        **model.meta,
        **(meta or {}),
        "objective": objective,
        "rounds": int(booster.best_iteration or booster.current_iteration()),
        "features_used": [f for f in FEATURES if f in set(features)],
        "train_formulas": len(train.formulas),
        "train_options": len(train.y),
        "seed": seed,
    }
    return model


def score_options(model: TemplateRankerModel, data: RankerData) -> np.ndarray:
    """log P(match) of each option row."""
    return np.log(np.maximum(model.match_probability(data.X), 1e-12))


def hand_scores(data: RankerData) -> np.ndarray:
    """The hand-weighted score of each option row (the order the options came in)."""
    return data.X[:, FEATURES.index("hand_score")]


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_cryspnet_calibration(probabilities: np.ndarray, matched: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` with P(match) = sigmoid(a log p + b) for CRYSPNet candidates of pair probability ``p``."""
    x = np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), 1e-12))
    return _platt(x, np.asarray(matched, dtype=np.int64))


# ---------------------------------------------------------------------------------------------------------
# the whole recipe (``cryspnet-gen templates train-ranker``)
# ---------------------------------------------------------------------------------------------------------

VALIDATION_SETS = ("mp20_val", "mpts52_val")


def benchmark_pool(store: TemplateStore, data_dir: Any = None) -> TemplateStore:
    """``store`` without any formula of the benchmark validation and test files (the pool labels are made
    from: no benchmark formula reaches the ranker's training data, whatever store is given)."""
    from cryspnet_gen.sources.templates.prototype_build import benchmark_formulas

    banned = benchmark_formulas(data_dir)
    rows = getattr(store, "all_rows", store.frame)  # a prototype library keeps every row beside its templates
    keep = ~rows["formula"].isin(banned).to_numpy()
    if keep.all():
        return store
    return type(store)(rows.loc[keep].reset_index(drop=True), path=store.path, manifest=store.manifest)


def validation_items(
    n_per_set: dict[str, int], *, seed: int = 0, data_dir: Any = None
) -> dict[str, list[tuple[str, Structure]]]:
    """Seeded formulas of the MP-20 / MPTS-52 validation files that are in the ``bench`` split's validation part
    (the ``cryspnet-bench`` symmetry model never trained on them), with the file's structure."""
    from cryspnet_gen.csp.references import load_test_set, sample_references
    from cryspnet_gen.data import assign_splits, read_test_formulas

    tests = read_test_formulas(data_dir)
    out: dict[str, list[tuple[str, Structure]]] = {}
    for name, n in n_per_set.items():
        if n <= 0:
            continue
        refs = load_test_set(name, data_dir)
        split = assign_splits([r.formula for r in refs], "bench", test_formulas=tests)
        refs = sample_references([r for r in refs if split[r.formula] == "val"], n, seed)
        out[name] = [(r.formula, r.structure) for r in refs]
    return out


def cached_labels(
    path: Any,
    items: Sequence[tuple[str, Structure | None]],
    store: TemplateStore,
    predictor: Predictor,
    *,
    depth: int,
    workers: int,
    progress: bool,
) -> RankerData:
    """:func:`label_options`, read from ``path`` (parquet, with the formula list beside it as JSON) when it was
    made for the same formulas, else made and written there."""
    import json

    import pandas as pd

    target = Path(path)
    listing = target.with_suffix(".formulas.json")
    formulas = [f for f, _ in items]
    if target.is_file() and listing.is_file():
        try:
            if json.loads(listing.read_text()) == formulas:
                data = RankerData.from_frame(pd.read_parquet(target))
                index = {f: i for i, f in enumerate(formulas)}
                data.query = np.asarray([index[f] for f in np.asarray(data.formulas)[data.query]])
                data.formulas = formulas
                return data
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("%s: unreadable label cache (%s); labelling again", target, exc)
    data = label_options(items, store, predictor, depth=depth, workers=workers, progress=progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    data.to_frame().to_parquet(tmp)
    tmp.replace(target)
    listing.write_text(json.dumps(formulas))
    return data


def cryspnet_calibration_data(
    items: Sequence[tuple[str, Structure]], predictor: Predictor, *, k: int = 10, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """P(lattice, group) and matched (0/1) of the CRYSPNet candidates of each ``(formula, structure)``."""
    from cryspnet_gen.generate import generate_candidates

    probabilities: list[float] = []
    matched: list[int] = []
    matcher = make_matcher()
    for formula, reference in _progress(items, len(items), progress, "CRYSPNet candidates"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                cands = generate_candidates(
                    formula, k, predictor=predictor, source="cryspnet", max_atoms=80, timeout=30
                )
            except Exception as exc:  # a formula without CRYSPNet candidates adds nothing
                logger.debug("%s: no CRYSPNet candidates (%s)", formula, exc)
                continue
        for c in cands:
            probabilities.append(float(c.probability))
            matched.append(int(match_rms(c.structure, reference, matcher) is not None))
    return np.asarray(probabilities), np.asarray(matched, dtype=np.int64)


def subset(data: RankerData, formulas: Sequence[str]) -> RankerData:
    """The rows of ``data`` whose formula is in ``formulas`` (all of them counted, in that order)."""
    index = {f: i for i, f in enumerate(data.formulas)}
    wanted = [index[f] for f in formulas if f in index]
    remap = np.full(len(data.formulas), -1, dtype=np.int64)
    remap[wanted] = np.arange(len(wanted))
    rows = remap[data.query] >= 0
    return RankerData(
        X=data.X[rows],
        y=data.y[rows],
        query=remap[data.query[rows]],
        kept=data.kept[rows],
        formulas=[data.formulas[i] for i in wanted],
    )


@dataclass
class RankerReport:
    """What :func:`train_template_ranker` made: the chosen model, every model tried, their validation figures
    (``rows``: ranking name -> set name -> {k: match rate}) and a Markdown summary."""

    model: TemplateRankerModel
    models: dict[str, TemplateRankerModel]
    rows: dict[str, dict[str, dict[int, float]]]
    markdown: str


def _objective_of(rates: dict[str, dict[int, float]]) -> float:
    """Mean of match@1 and match@20 over the validation sets (the template score was tuned on the same)."""
    return float(np.mean([(r[1] + r[20]) / 2 for r in rates.values()]))


def train_template_ranker(
    store: TemplateStore,
    predictor: Predictor,
    out_dir: Any,
    *,
    n: int | None = 4000,
    depth: int = 30,
    objectives: Sequence[str] = ("binary", "lambdarank"),
    validation: dict[str, int] | None = None,
    n_cryspnet: int = 100,
    workers: int = 1,
    seed: int = 0,
    without: Sequence[str] = (),
    cryspnet_offset: float = 0.0,
    data_dir: Any = None,
    progress: bool = False,
) -> RankerReport:
    """The whole recipe: labels (cached in ``out_dir``), one booster per objective (early stopping and Platt
    scaling on the last 10% of the training formulas), the choice between them on the benchmark validation
    formulas (mean of match@1 and match@20), and the CRYSPNet calibration on ``n_cryspnet`` MP-20 validation
    formulas. ``without``: feature groups or features left out (see ``features_without``);
    ``cryspnet_offset``: see :class:`TemplateRankerModel`. Writes
    ``template_ranker.json`` and ``report.md`` into ``out_dir``."""
    import time

    features = features_without(without)  # an unknown name fails before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    validation = dict(validation or {"mp20_val": 300, "mpts52_val": 200})
    started = time.perf_counter()
    pool = benchmark_pool(store, data_dir)
    formulas = training_formulas(pool, n, seed=seed, data_dir=data_dir)
    if len(formulas) < 20:
        raise ValueError(f"only {len(formulas)} training formulas in {store.path}: a ranker needs hundreds")
    items = [(f, store_reference(pool, f)) for f in formulas]
    tag = f"n{len(formulas)}-d{depth}-s{seed}"
    labels: dict[str, Any] = {"depth": depth, "workers": workers, "progress": progress}
    train_all = cached_labels(out / f"labels-train-{tag}.parquet", items, pool, predictor, **labels)
    cut = max(int(0.9 * len(formulas)), 1)
    fit_part, stop_part = subset(train_all, formulas[:cut]), subset(train_all, formulas[cut:])
    vals = {
        name: cached_labels(
            out / f"labels-{name}-n{len(its)}-d{depth}-s{seed}.parquet", its, pool, predictor, **labels
        )
        for name, its in validation_items(validation, seed=seed, data_dir=data_dir).items()
    }
    label_seconds = time.perf_counter() - started
    rows: dict[str, dict[str, dict[int, float]]] = {
        "hand-weighted score": {name: match_at_k(d, hand_scores(d)) for name, d in vals.items()}
    }
    models: dict[str, TemplateRankerModel] = {}
    fit_seconds: dict[str, float] = {}
    left_out = [f for f in FEATURES if f not in set(features)]
    meta = {
        "trained_on": (
            (f"features: all but {', '.join(left_out)}; " if left_out else "")
            + f"{len(fit_part.formulas)} formulas of the bench split's validation part (in no MP-20 / MPTS-52 "
            f"validation or test file), {len(stop_part.formulas)} more for early stopping and Platt scaling; "
            f"options from the template store {Path(str(store.path)).name} without benchmark formulas, each formula's own entries left out"
        ),
        "symmetry_model": f"{predictor.name} {predictor.version}",
        "positives": int(train_all.y.sum()),
        "options": len(train_all.y),
    }
    for objective in objectives:
        t0 = time.perf_counter()
        model = fit_ranker(
            fit_part, stop_part, objective=objective, features=features, depth=depth, seed=seed, meta=meta
        )
        fit_seconds[objective] = time.perf_counter() - t0
        models[objective] = model
        rows[f"learned ({objective})"] = {
            name: match_at_k(d, score_options(model, d)) for name, d in vals.items()
        }
    best = max(models, key=lambda o: _objective_of(rows[f"learned ({o})"]) if vals else 0.0)
    model = models[best]
    model.meta["validation"] = {
        name: {str(k): v for k, v in rates.items()} for name, rates in rows[f"learned ({best})"].items()
    }
    model.meta["validation_hand_score"] = {
        name: {str(k): v for k, v in rates.items()} for name, rates in rows["hand-weighted score"].items()
    }
    model.cryspnet_offset = float(cryspnet_offset)
    calibration = _calibrate_cryspnet(
        model, out, predictor, n_cryspnet, seed=seed, data_dir=data_dir, progress=progress
    )
    lines = [
        f"# Template ranker ({predictor.name} {predictor.version}, {store.path})",
        "",
        f"training: {meta['trained_on']}; {meta['options']} options, {meta['positives']} matching; labels "
        f"{label_seconds:.0f} s, fit " + ", ".join(f"{o} {s:.0f} s" for o, s in fit_seconds.items()),
        "",
        "| ranking | " + " | ".join(f"{name} @{k}" for name in vals for k in KS) + " | objective |",
        "|---|" + "---:|" * (len(vals) * len(KS) + 1),
    ]
    for name, rates in rows.items():
        cells = [f"{100 * rates[s][k]:.1f}" for s in vals for k in KS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * _objective_of(rates):.1f} |")
    lines += ["", f"chosen: {best} ({model.meta.get('rounds')} rounds, depth {depth})"]
    if calibration:
        lines += ["", calibration]
    markdown = "\n".join(lines) + "\n"
    (out / "template_ranker.json").write_text(model.to_json())
    (out / "report.md").write_text(markdown)
    return RankerReport(model=model, models=models, rows=rows, markdown=markdown)


def _calibrate_cryspnet(
    model: TemplateRankerModel,
    out: Path,
    predictor: Predictor,
    n_cryspnet: int,
    *,
    seed: int,
    data_dir: Any,
    progress: bool,
) -> str:
    """Fit ``model.cryspnet`` on the CRYSPNet candidates of ``n_cryspnet`` MP-20 validation formulas (cached in
    ``out``); the report's line about it ("" when there are none)."""
    import json

    mp20 = validation_items({"mp20_val": n_cryspnet}, seed=seed, data_dir=data_dir).get("mp20_val", [])
    if not mp20:
        return ""
    cache = out / f"cryspnet-calibration-n{len(mp20)}-s{seed}.json"
    if cache.is_file():
        pm = json.loads(cache.read_text())
    else:
        p, m = cryspnet_calibration_data(mp20, predictor, progress=progress)
        pm = {"p": p.tolist(), "matched": m.tolist()}
        cache.write_text(json.dumps(pm))
    p, m = np.asarray(pm["p"]), np.asarray(pm["matched"])
    model.cryspnet = fit_cryspnet_calibration(p, m)
    model.meta["cryspnet_calibration"] = (
        f"{len(p)} CRYSPNet candidates of {len(mp20)} MP-20 validation formulas, {int(m.sum())} matched"
    )
    return (
        f"CRYSPNet candidates: P(match) = sigmoid({model.cryspnet[0]:.3f} log P(pair) + "
        f"{model.cryspnet[1]:.3f}) from {len(p)} candidates of {len(mp20)} MP-20 validation formulas "
        f"({int(m.sum())} matched); offset {model.cryspnet_offset:+g} where merged with templates"
    )
