"""Evaluation report: the CRYSPNet paper's tables on the ``bench`` split's test sets, next to baselines.

For each test set (MPTS-52 test and MP-20 test, reported separately):

- Table 2 analogue: Bravais top-1 / top-2 for the master, metal and oxide models (the last two on their own
  subsets, with the master model on the same subset beside them), vs the *random* (training frequencies) and
  *mode* baselines and a RandomForest; a confusion-matrix plot.
- Table 3 analogue: space-group top-1 / top-3 per Bravais lattice given the true lattice, vs random; end-to-end
  space-group top-1 / top-5 with the joint probability P(lattice) x P(group | lattice) over all 230 groups.
- Table 4 analogue: log-MSE and R² per lattice parameter per lattice (given the true lattice); parity plots.
- Fig. 6 analogue: R² of the conventional-cell volume built from the parameters of the predicted top-1 lattice,
  for rows whose lattice was right and for rows whose lattice was wrong; and R² of the volume-per-atom model.

The RandomForest (scikit-learn, 200 trees, same features and split) is the model a user would otherwise pick.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryspnet_gen import metrics as M
from cryspnet_gen.symmetry import (
    BRAVAIS_LATTICES,
    CELL_PARAMETERS,
    PARAMETER_NAMES,
    conventional_volume,
    from_parameters,
    space_groups_of,
    to_parameters,
)

logger = logging.getLogger(__name__)

CELL = CELL_PARAMETERS
TEST_SPLITS = ("test_mpts52", "test_mp20")
TEST_NAMES = {"test_mpts52": "MPTS-52 test", "test_mp20": "MP-20 test (binary + ternary part)"}
ALL_GROUPS = np.arange(1, 231)


# ----------------------------------------------------------------------------------------------------------
# probability matrices


def joint_space_group_proba(
    p_lattice: np.ndarray, conditional: Mapping[str, tuple[Sequence[int], np.ndarray]]
) -> np.ndarray:
    """``(n, 230)`` joint P(lattice) x P(group | lattice); column ``g - 1`` is space group ``g``."""
    out = np.zeros((len(p_lattice), 230))
    for j, bravais in enumerate(BRAVAIS_LATTICES):
        groups, proba = conditional[bravais]
        out[:, np.asarray(groups) - 1] += p_lattice[:, j : j + 1] * proba
    return out


@dataclass
class ModelOutputs:
    """What a model says about a set of rows, as arrays."""

    p_lattice: np.ndarray
    """(n, 14) in BRAVAIS_LATTICES order"""
    conditional: dict[str, tuple[list[int], np.ndarray]]
    """bravais -> (groups, (n, len(groups)) P(group | bravais))"""
    params: dict[str, np.ndarray] = field(default_factory=dict)
    """bravais -> (n, k) predicted parameters (ensemble mean)"""
    volume_per_atom: np.ndarray | None = None

    @property
    def joint(self) -> np.ndarray:
        return joint_space_group_proba(self.p_lattice, self.conditional)


def predictor_outputs(predictor: Any, X: np.ndarray, *, model: str = "master") -> ModelOutputs:
    """Run every network of a :class:`~cryspnet_gen.predict.Predictor` on a feature matrix."""
    p_lattice, _ = predictor.bravais_probabilities(X, model=model)
    conditional, params = {}, {}
    for bravais in BRAVAIS_LATTICES:
        groups, proba, _ = predictor.space_group_probabilities(X, bravais)
        conditional[bravais] = (groups, proba)
        members = predictor.lattice_parameter_members(X, bravais)
        with warnings.catch_warnings():  # a lattice without a regressor is all NaN: that is expected
            warnings.simplefilter("ignore", RuntimeWarning)
            params[bravais] = np.nanmean(members, axis=0)
    vpa, _ = predictor.volume_per_atom(X)
    return ModelOutputs(p_lattice, conditional, params, vpa)


class RandomForestBaseline:
    """Bravais lattice and per-lattice space-group RandomForests on the same features and split."""

    def __init__(self, *, n_estimators: int = 200, seed: int = 0, n_jobs: int | None = None) -> None:
        self.n_estimators = n_estimators
        self.seed = seed
        self.n_jobs = n_jobs or os.cpu_count() or 1
        self.bravais: Any = None
        self.space_group: dict[str, Any] = {}

    def _forest(self) -> Any:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=self.n_estimators, random_state=self.seed, n_jobs=self.n_jobs
        )

    def fit(self, X: np.ndarray, bravais: Sequence[str], space_group: Sequence[int]) -> RandomForestBaseline:
        X = np.nan_to_num(np.asarray(X, dtype=np.float32))
        lattices = np.asarray(bravais)
        groups = np.asarray(space_group)
        self.bravais = self._forest().fit(X, lattices)
        for lattice in BRAVAIS_LATTICES:
            rows = lattices == lattice
            if rows.any():
                self.space_group[lattice] = self._forest().fit(X[rows], groups[rows])
        return self

    def outputs(self, X: np.ndarray) -> ModelOutputs:
        X = np.nan_to_num(np.asarray(X, dtype=np.float32))
        p = np.zeros((len(X), len(BRAVAIS_LATTICES)))
        proba = self.bravais.predict_proba(X)
        for j, cls in enumerate(self.bravais.classes_):
            p[:, BRAVAIS_LATTICES.index(cls)] = proba[:, j]
        conditional = {}
        for lattice in BRAVAIS_LATTICES:
            groups = list(space_groups_of(lattice))
            cond = np.full((len(X), len(groups)), 1.0 / len(groups))
            forest = self.space_group.get(lattice)
            if forest is not None:
                cond[:] = 0.0
                proba = forest.predict_proba(X)
                for j, g in enumerate(forest.classes_):
                    cond[:, groups.index(int(g))] = proba[:, j]
            conditional[lattice] = (groups, cond)
        return ModelOutputs(p, conditional)


# ----------------------------------------------------------------------------------------------------------
# tables


def _lattice_index(bravais: Sequence[str]) -> np.ndarray:
    return np.array([BRAVAIS_LATTICES.index(b) for b in bravais])


def bravais_table(out: ModelOutputs, y: np.ndarray) -> dict[str, float]:
    return {"top1": M.topk_accuracy(out.p_lattice, y, 1), "top2": M.topk_accuracy(out.p_lattice, y, 2)}


def baseline_bravais(
    train_bravais: Sequence[str], y: np.ndarray, *, seed: int = 0
) -> dict[str, dict[str, float]]:
    freq = M.class_frequencies(list(train_bravais), BRAVAIS_LATTICES)
    return {
        "random": {
            "top1": M.random_topk(freq, y, 1, seed=seed),
            "top2": M.random_topk(freq, y, 2, seed=seed),
        },
        "mode": {"top1": M.mode_topk(freq, y, 1), "top2": M.mode_topk(freq, y, 2)},
    }


def space_group_tables(
    out: ModelOutputs,
    test: pd.DataFrame,
    train: pd.DataFrame,
    *,
    seed: int = 0,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-lattice top-1/top-3 given the true lattice (with the random baseline), and end-to-end top-1/top-5."""
    per: dict[str, dict[str, float]] = {}
    for bravais in BRAVAIS_LATTICES:
        rows = (test["bravais"] == bravais).to_numpy()
        if not rows.any():
            continue
        groups, proba = out.conditional[bravais]
        index = {g: i for i, g in enumerate(groups)}
        y = np.array([index.get(int(g), -1) for g in test.loc[rows, "space_group"]])
        freq = M.class_frequencies(
            list(train.loc[train["bravais"] == bravais, "space_group"].astype(int)), groups
        )
        per[bravais] = {
            "n": int(rows.sum()),
            "top1": M.topk_accuracy(proba[rows], y, 1),
            "top3": M.topk_accuracy(proba[rows], y, 3),
            "random_top1": M.random_topk(freq, y, 1, seed=seed),
            "random_top3": M.random_topk(freq, y, 3, seed=seed),
        }
    y_all = test["space_group"].to_numpy(dtype=int) - 1
    joint = out.joint
    end = {"top1": M.topk_accuracy(joint, y_all, 1), "top5": M.topk_accuracy(joint, y_all, 5)}
    return per, end


def lattice_tables(out: ModelOutputs, test: pd.DataFrame) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-lattice parameter metrics given the true lattice, and the paper's Fig. 6 volume comparison."""
    per: dict[str, Any] = {}
    cells = test[list(CELL)].to_numpy(dtype=float)
    known = np.isfinite(cells).all(axis=1)
    for bravais in BRAVAIS_LATTICES:
        rows = (test["bravais"] == bravais).to_numpy() & known
        if rows.sum() < 2 or bravais not in out.params:
            continue
        truth = to_parameters(bravais, cells[rows])
        pred = out.params[bravais][rows]
        ok = np.isfinite(pred).all(axis=1)
        entry: dict[str, Any] = {"n": int(ok.sum())}
        for j, name in enumerate(PARAMETER_NAMES[bravais]):
            entry[name] = {
                "log_mse": M.log_mse(truth[ok, j], pred[ok, j]),
                "r2": M.r2_score(truth[ok, j], pred[ok, j]),
            }
        per[bravais] = entry
    # Fig. 6: volume from the predicted top-1 lattice's parameters
    top = np.argmax(out.p_lattice, axis=1)
    y = _lattice_index(test["bravais"])
    v_true = np.array([conventional_volume(c) if np.isfinite(c).all() else np.nan for c in cells])
    v_pred = np.full(len(test), np.nan)
    for j, bravais in enumerate(BRAVAIS_LATTICES):
        rows = top == j
        if rows.any() and bravais in out.params:
            params = out.params[bravais][rows]
            v_pred[rows] = [
                conventional_volume(from_parameters(bravais, p)) if np.isfinite(p).all() else np.nan
                for p in params
            ]
    ok = np.isfinite(v_true) & np.isfinite(v_pred)
    right = ok & (top == y)
    wrong = ok & (top != y)
    volume: dict[str, Any] = {
        "cell_volume_r2_correct_lattice": M.r2_score(v_true[right], v_pred[right]),
        "cell_volume_r2_wrong_lattice": M.r2_score(v_true[wrong], v_pred[wrong]),
        "n_correct": int(right.sum()),
        "n_wrong": int(wrong.sum()),
    }
    if out.volume_per_atom is not None:
        vpa = test["volume_per_atom"].to_numpy(dtype=float)
        good = np.isfinite(vpa)
        volume["volume_per_atom_r2"] = M.r2_score(vpa[good], out.volume_per_atom[good])
        volume["volume_per_atom_mape"] = float(np.mean(np.abs(out.volume_per_atom[good] / vpa[good] - 1)))
    return per, volume


# ----------------------------------------------------------------------------------------------------------
# the report


@dataclass
class EvaluationReport:
    """Metrics (JSON-serialisable ``data``) and the Markdown report built from them."""

    data: dict[str, Any]
    markdown: str

    def write(self, out_dir: str | os.PathLike[str]) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(self.data, indent=2, default=float))
        (out / "evaluation.md").write_text(self.markdown)
        return out


def evaluate(
    predictor: Any,
    frame: pd.DataFrame,
    X: np.ndarray,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    random_forest: bool = True,
    rf_trees: int = 200,
    ablation: dict[str, Any] | None = None,
    seed: int = 0,
) -> EvaluationReport:
    """Evaluate a bundle trained on the ``bench`` split.

    Parameters
    ----------
    predictor
        The model under test (a :class:`~cryspnet_gen.predict.Predictor`).
    frame, X
        The ``bench`` training frame (:func:`cryspnet_gen.data.training_frame`) and its feature matrix; ``train``
        rows fit the baselines, test rows are scored.
    out_dir
        Where to write ``evaluation.md``, ``evaluation.json`` and the PNG plots (nothing written when None).
    random_forest
        Also train and score the RandomForest baseline.
    ablation
        Optional ``{label policy: Predictor}`` trained on other labels, scored on the same test sets.
    """
    from cryspnet_gen.formula import subset_mask

    good = np.isfinite(X).all(axis=1)
    train = frame[(frame["split"] == "train").to_numpy() & good]
    X_train = X[train.index.to_numpy()]
    rf = None
    rf_seconds = None
    if random_forest:
        start = time.perf_counter()
        rf = RandomForestBaseline(n_estimators=rf_trees, seed=seed).fit(
            X_train, train["bravais"], train["space_group"]
        )
        rf_seconds = time.perf_counter() - start
        logger.info("RandomForest baseline trained in %.0f s", rf_seconds)

    data: dict[str, Any] = {
        "model": {"name": predictor.name, "version": predictor.version},
        "train_rows": len(train),
        "random_forest": {"n_estimators": rf_trees, "train_seconds": rf_seconds} if rf else None,
        "test_sets": {},
    }
    plots: dict[str, list[str]] = {}
    for split in TEST_SPLITS:
        rows = (frame["split"] == split).to_numpy() & good
        if not rows.any():
            continue
        test = frame[rows].reset_index(drop=True)
        Xt = X[rows]
        y = _lattice_index(test["bravais"])
        master = predictor_outputs(predictor, Xt)
        entry: dict[str, Any] = {"n": len(test), "bravais": {"master": bravais_table(master, y)}}
        entry["bravais"].update(baseline_bravais(train["bravais"], y, seed=seed))
        for subset in ("metal", "oxide"):
            if subset not in predictor.bravais_models:
                continue
            mask = subset_mask(test["formula"], subset)
            if not mask.any():
                continue
            sub = ModelOutputs(predictor.bravais_probabilities(Xt[mask], model=subset)[0], {})
            entry["bravais"][subset] = {
                "n": int(mask.sum()),
                **bravais_table(sub, y[mask]),
                "master_same_rows": bravais_table(ModelOutputs(master.p_lattice[mask], {}), y[mask]),
            }
        per, end = space_group_tables(master, test, train, seed=seed)
        entry["space_group_given_lattice"] = per
        entry["space_group_end_to_end"] = end
        entry["lattice"], entry["volume"] = lattice_tables(master, test)
        if rf is not None:
            rf_out = rf.outputs(Xt)
            rf_per, rf_end = space_group_tables(rf_out, test, train, seed=seed)
            entry["random_forest"] = {
                "bravais": bravais_table(rf_out, y),
                "space_group_given_lattice": {
                    k: {"top1": v["top1"], "top3": v["top3"]} for k, v in rf_per.items()
                },
                "space_group_end_to_end": rf_end,
            }
        if ablation:
            entry["ablation"] = {}
            for policy, other in ablation.items():
                out = predictor_outputs(other, Xt)
                _, other_end = space_group_tables(out, test, train, seed=seed)
                entry["ablation"][policy] = {
                    "bravais": bravais_table(out, y),
                    "space_group_end_to_end": other_end,
                }
        data["test_sets"][split] = entry
        if out_dir is not None:
            plots[split] = _plots(Path(out_dir), split, master, test, y)
    report = EvaluationReport(data, render_markdown(data, plots))
    if out_dir is not None:
        report.write(out_dir)
    return report


# ----------------------------------------------------------------------------------------------------------
# plots and Markdown


def _plots(out: Path, split: str, master: ModelOutputs, test: pd.DataFrame, y: np.ndarray) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    names = []
    cm = M.confusion_matrix(y, np.argmax(master.p_lattice, axis=1), len(BRAVAIS_LATTICES))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(14), BRAVAIS_LATTICES, rotation=90)
    ax.set_yticks(range(14), BRAVAIS_LATTICES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Bravais lattice, {TEST_NAMES[split]}")
    for i in range(14):
        for j in range(14):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    cm[i, j],
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="w" if norm[i, j] > 0.5 else "k",
                )
    fig.colorbar(im, ax=ax, label="fraction of true row")
    fig.tight_layout()
    name = f"confusion_{split}.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    names.append(name)

    cells = test[list(CELL)].to_numpy(dtype=float)
    panels = [
        (b, j, n) for b in BRAVAIS_LATTICES for j, n in enumerate(PARAMETER_NAMES[b]) if b in master.params
    ]
    ncol = 6
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.4 * ncol, 2.3 * nrow))
    for ax, (bravais, j, pname) in zip(axes.ravel(), panels, strict=False):
        rows = (test["bravais"] == bravais).to_numpy() & np.isfinite(cells).all(axis=1)
        if rows.sum() == 0:
            ax.set_axis_off()
            continue
        truth = to_parameters(bravais, cells[rows])[:, j]
        pred = master.params[bravais][rows, j]
        ax.scatter(truth, pred, s=3, alpha=0.4)
        lo, hi = np.nanmin([truth.min(), np.nanmin(pred)]), np.nanmax([truth.max(), np.nanmax(pred)])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.7)
        ax.set_title(f"{bravais} {pname} (n={rows.sum()})", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_axis_off()
    fig.suptitle(f"Lattice parameters given the true lattice, {TEST_NAMES[split]} (x: true, y: predicted)")
    fig.tight_layout()
    name = f"parity_{split}.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    names.append(name)
    return names


def _pct(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}"


def _num(x: Any, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def render_markdown(data: dict[str, Any], plots: dict[str, list[str]] | None = None) -> str:
    """The evaluation report as Markdown (accuracies in %)."""
    plots = plots or {}
    lines = [
        f"# Evaluation of `{data['model']['name']}` {data['model']['version']}",
        "",
        "Trained on the `bench` split (no formula of either test set in training or validation); "
        f"{data['train_rows']} training rows. Accuracies in %. The random baseline guesses with the training "
        "frequencies; the mode baseline always answers the most frequent training classes; the RandomForest has "
        "200 trees on the same features and split.",
        "",
    ]
    for split, entry in data["test_sets"].items():
        rf = entry.get("random_forest")
        b = entry["bravais"]
        lines += [
            f"## {TEST_NAMES[split]} ({entry['n']} formulas)",
            "",
            "### Bravais lattice (Table 2 analogue)",
            "",
        ]
        lines += ["| model | rows | top-1 | top-2 |", "|---|---|---|---|"]
        lines.append(
            f"| CRYSPNet master | {entry['n']} | {_pct(b['master']['top1'])} | {_pct(b['master']['top2'])} |"
        )
        if rf:
            lines.append(
                f"| RandomForest | {entry['n']} | {_pct(rf['bravais']['top1'])} | {_pct(rf['bravais']['top2'])} |"
            )
        lines.append(f"| random | {entry['n']} | {_pct(b['random']['top1'])} | {_pct(b['random']['top2'])} |")
        lines.append(f"| mode | {entry['n']} | {_pct(b['mode']['top1'])} | {_pct(b['mode']['top2'])} |")
        for subset in ("metal", "oxide"):
            if subset in b:
                s = b[subset]
                lines.append(
                    f"| CRYSPNet {subset} (its subset) | {s['n']} | {_pct(s['top1'])} | {_pct(s['top2'])} |"
                )
                m = s["master_same_rows"]
                lines.append(
                    f"| CRYSPNet master (same subset) | {s['n']} | {_pct(m['top1'])} | {_pct(m['top2'])} |"
                )
        lines.append("")
        for name in plots.get(split, []):
            if name.startswith("confusion"):
                lines += [f"![Bravais confusion matrix]({name})", ""]
        lines += ["### Space group (Table 3 analogue)", ""]
        end = entry["space_group_end_to_end"]
        lines += ["End to end (joint P(lattice) x P(group | lattice) over all 230 groups):", ""]
        lines += [
            "| model | top-1 | top-5 |",
            "|---|---|---|",
            f"| CRYSPNet | {_pct(end['top1'])} | {_pct(end['top5'])} |",
        ]
        if rf:
            re_ = rf["space_group_end_to_end"]
            lines.append(f"| RandomForest | {_pct(re_['top1'])} | {_pct(re_['top5'])} |")
        for policy, abl in (entry.get("ablation") or {}).items():
            ae = abl["space_group_end_to_end"]
            lines.append(f"| CRYSPNet, labels `{policy}` | {_pct(ae['top1'])} | {_pct(ae['top5'])} |")
        lines += ["", "Given the true Bravais lattice:", ""]
        lines += [
            "| lattice | n | top-1 | top-3 | random top-1 | random top-3 | RF top-1 | RF top-3 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for bravais, s in entry["space_group_given_lattice"].items():
            r = rf["space_group_given_lattice"].get(bravais, {}) if rf else {}
            lines.append(
                f"| {bravais} | {s['n']} | {_pct(s['top1'])} | {_pct(s['top3'])} | {_pct(s['random_top1'])} | "
                f"{_pct(s['random_top3'])} | {_pct(r.get('top1'))} | {_pct(r.get('top3'))} |"
            )
        lines += ["", "### Lattice parameters (Table 4 analogue, given the true lattice)", ""]
        lines += ["| lattice | n | parameter | log-MSE | R² |", "|---|---|---|---|---|"]
        for bravais, s in entry["lattice"].items():
            for pname in PARAMETER_NAMES[bravais]:
                lines.append(
                    f"| {bravais} | {s['n']} | {pname} | {_num(s[pname]['log_mse'], 4)} | {_num(s[pname]['r2'])} |"
                )
        v = entry["volume"]
        lines += [
            "",
            "Cell volume from the predicted top-1 lattice's parameters (Fig. 6 analogue): "
            f"R² = {_num(v['cell_volume_r2_correct_lattice'])} where the lattice was right (n={v['n_correct']}), "
            f"{_num(v['cell_volume_r2_wrong_lattice'])} where it was wrong (n={v['n_wrong']}). "
            f"Volume per atom model: R² = {_num(v.get('volume_per_atom_r2'))}, "
            f"mean absolute relative error {_pct(v.get('volume_per_atom_mape'))}%.",
            "",
        ]
        for name in plots.get(split, []):
            if name.startswith("parity"):
                lines += [f"![parity plots]({name})", ""]
        if entry.get("ablation"):
            lines += [
                "### Label ablation",
                "",
                "| labels | Bravais top-1 | top-2 | SG top-1 | SG top-5 |",
                "|---|---|---|---|---|",
            ]
            for policy, abl in entry["ablation"].items():
                bb, ae = abl["bravais"], abl["space_group_end_to_end"]
                lines.append(
                    f"| `{policy}` | {_pct(bb['top1'])} | {_pct(bb['top2'])} | {_pct(ae['top1'])} | {_pct(ae['top5'])} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"
