"""The evaluation report's figures (confusion matrix, parity plots, reliability diagram) and its Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryspnet_gen import metrics as M
from cryspnet_gen.evaluate.outputs import ModelOutputs
from cryspnet_gen.evaluate.tables import CELL, lattice_index
from cryspnet_gen.symmetry import BRAVAIS_LATTICES, PARAMETER_NAMES, to_parameters

__all__ = ["TEST_NAMES", "render_markdown", "write_plots"]

TEST_NAMES = {"test_mpts52": "MPTS-52 test", "test_mp20": "MP-20 test (binary + ternary part)"}


def write_plots(
    out: Path, split: str, master: ModelOutputs, test: pd.DataFrame, curves: dict[str, dict[str, Any]]
) -> list[str]:
    """Write the confusion matrix, the parity plots and the reliability diagram of one test set; their names."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    y = lattice_index(test["bravais"])
    return [
        _confusion_plot(out, split, master, y),
        _parity_plot(out, split, master, test),
        _reliability_plot(out, split, curves),
    ]


def _save(fig: Any, path: Path, *, dpi: int) -> str:
    """Lay out, write and close a figure; its file name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path.name


def _reliability_plot(out: Path, split: str, curves: dict[str, dict[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, task, title in zip(
        axes, ("bravais", "space_group"), ("Bravais lattice", "space group (end to end)"), strict=True
    ):
        ax.plot([0, 1], [0, 1], "k--", lw=0.7, label="perfect calibration")
        for label, cal in curves.items():
            curve = cal[f"{task}_curve"]
            ax.plot(
                curve["confidence"],
                curve["accuracy"],
                "o-",
                ms=3,
                label=f"{label} (ECE {cal[f'{task}_ece']:.3f})",
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("top-1 confidence (mean of bin)")
        ax.set_ylabel("top-1 accuracy")
        ax.set_title(f"{title}, {TEST_NAMES[split]}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, out / f"reliability_{split}.png", dpi=100)


def _confusion_plot(out: Path, split: str, master: ModelOutputs, y: np.ndarray) -> str:
    import matplotlib.pyplot as plt

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
    return _save(fig, out / f"confusion_{split}.png", dpi=110)


def _parity_plot(out: Path, split: str, master: ModelOutputs, test: pd.DataFrame) -> str:
    import matplotlib.pyplot as plt

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
    return _save(fig, out / f"parity_{split}.png", dpi=100)


def _pct(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}"


def _num(x: Any, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def render_markdown(data: dict[str, Any], plots: dict[str, list[str]] | None = None) -> str:
    """The evaluation report as Markdown (accuracies in %)."""
    plots = plots or {}
    model = data["model"]
    lines = [
        f"# Evaluation of `{model['name']}` {model['version']} (arch `{model.get('arch', 'cryspnet-mlp')}`)",
        "",
        "Trained on the `bench` split (no formula of either test set in training or validation); "
        f"{data['train_rows']} training rows. Accuracies in %. The random baseline guesses with the training "
        "frequencies; the mode baseline always answers the most frequent training classes. The RandomForest "
        "(scikit-learn, 200 trees) and LightGBM (library defaults, early stopping on the validation rows) "
        "baselines are trained in the same command on the same features and split. ECE: expected calibration "
        "error of the top-1 confidence, 15 equal-width bins.",
        "",
    ]
    for split, entry in data["test_sets"].items():
        names = plots.get(split, [])
        lines += [f"## {TEST_NAMES[split]} ({entry['n']} formulas)", ""]
        lines += _side_by_side(data, entry, names)
        lines += _bravais_section(entry, names)
        lines += _space_group_section(entry)
        lines += _lattice_section(entry, names)
        lines += _ablation_section(entry)
    return "\n".join(lines) + "\n"


def _models_of(data: dict[str, Any], entry: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, scores) of every model scored on a test set: the bundle, other bundles, then the baselines."""
    this = {k: entry[k] for k in ("space_group_end_to_end", "calibration")}
    rows = [
        (
            f"this bundle (`{data['model'].get('arch', 'cryspnet-mlp')}`)",
            {"bravais": entry["bravais"]["master"], **this},
        )
    ]
    for label, scores in (entry.get("compare") or {}).items():
        arch = (data.get("compare") or {}).get(label, {}).get("arch")
        rows.append((f"{label} (`{arch}`)" if arch else label, scores))
    for key, label in (("random_forest", "RandomForest"), ("lightgbm", "LightGBM")):
        if entry.get(key):
            rows.append((label, entry[key]))
    return rows


def _side_by_side(data: dict[str, Any], entry: dict[str, Any], names: list[str]) -> list[str]:
    lines = [
        "### All models side by side",
        "",
        "| model | Bravais top-1 | top-2 | SG top-1 | SG top-5 | Bravais ECE | SG ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, s in _models_of(data, entry):
        b, e, c = s["bravais"], s["space_group_end_to_end"], s.get("calibration") or {}
        lines.append(
            f"| {label} | {_pct(b['top1'])} | {_pct(b['top2'])} | {_pct(e['top1'])} | {_pct(e['top5'])} | "
            f"{_num(c.get('bravais_ece'))} | {_num(c.get('space_group_ece'))} |"
        )
    lines.append("")
    lines += [f"![reliability diagram]({n})" for n in names if n.startswith("reliability")]
    return [*lines, ""] if lines[-1] != "" else lines


def _bravais_section(entry: dict[str, Any], names: list[str]) -> list[str]:
    rf, b, n = entry.get("random_forest"), entry["bravais"], entry["n"]
    lines = [
        "### Bravais lattice (Table 2 analogue)",
        "",
        "| model | rows | top-1 | top-2 |",
        "|---|---|---|---|",
    ]
    lines.append(f"| CRYSPNet master | {n} | {_pct(b['master']['top1'])} | {_pct(b['master']['top2'])} |")
    if rf:
        lines.append(
            f"| RandomForest | {n} | {_pct(rf['bravais']['top1'])} | {_pct(rf['bravais']['top2'])} |"
        )
    lines.append(f"| random | {n} | {_pct(b['random']['top1'])} | {_pct(b['random']['top2'])} |")
    lines.append(f"| mode | {n} | {_pct(b['mode']['top1'])} | {_pct(b['mode']['top2'])} |")
    for subset in ("metal", "oxide"):
        if subset in b:
            s, m = b[subset], b[subset]["master_same_rows"]
            lines.append(
                f"| CRYSPNet {subset} (its subset) | {s['n']} | {_pct(s['top1'])} | {_pct(s['top2'])} |"
            )
            lines.append(
                f"| CRYSPNet master (same subset) | {s['n']} | {_pct(m['top1'])} | {_pct(m['top2'])} |"
            )
    lines.append("")
    for name in names:
        if name.startswith("confusion"):
            lines += [f"![Bravais confusion matrix]({name})", ""]
    return lines


def _space_group_section(entry: dict[str, Any]) -> list[str]:
    rf = entry.get("random_forest")
    end = entry["space_group_end_to_end"]
    lines = ["### Space group (Table 3 analogue)", ""]
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
    return lines


def _lattice_section(entry: dict[str, Any], names: list[str]) -> list[str]:
    lines = ["", "### Lattice parameters (Table 4 analogue, given the true lattice)", ""]
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
    for name in names:
        if name.startswith("parity"):
            lines += [f"![parity plots]({name})", ""]
    return lines


def _ablation_section(entry: dict[str, Any]) -> list[str]:
    if not entry.get("ablation"):
        return []
    lines = [
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
    return [*lines, ""]
