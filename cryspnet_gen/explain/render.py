"""Figures and Markdown of the interpretability report (:func:`cryspnet_gen.explain.report.interpret`).

The functions take the :class:`~cryspnet_gen.explain.report.InterpretReport` without importing its module
(the report module calls this one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cryspnet_gen.bundle import jsonable
from cryspnet_gen.explain.families import FAMILIES

__all__ = ["importance_figure", "write_report"]

_OUTPUT_TITLES = {
    "bravais": "Bravais lattice",
    "space_group": "space group given the lattice",
    "volume": "volume per atom",
}
_UNITS = {
    "bravais": "drop of mean log-likelihood (nats)",
    "space_group": "drop of mean log-likelihood (nats)",
    "volume": "rise of MSE of log volume",
}


def importance_figure(features: dict[str, pd.DataFrame], path: Path, *, top: int = 20) -> Path:
    """The paper's Fig. 5: the ``top`` features per output, bars coloured by property family, spread as error
    bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cmap = plt.get_cmap("tab20")
    colours = {name: cmap(i) for i, name in enumerate(FAMILIES)}
    outputs = list(features)
    fig, axes = plt.subplots(1, len(outputs), figsize=(5.2 * len(outputs), 0.28 * top + 1.8))
    axes = [axes] if len(outputs) == 1 else list(axes)
    used: set[str] = set()
    for ax, output in zip(axes, outputs, strict=True):
        table = features[output].head(top).iloc[::-1]
        used.update(table["family"])
        ax.barh(
            range(len(table)),
            table["importance"],
            xerr=table["std"],
            color=[colours[f] for f in table["family"]],
            error_kw={"lw": 0.8},
        )
        ax.set_yticks(range(len(table)), table["label"], fontsize=7)
        ax.set_xlabel(_UNITS.get(output, "score drop"), fontsize=8)
        ax.set_title(_OUTPUT_TITLES.get(output, output), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    handles = [Patch(color=colours[f], label=f) for f in FAMILIES if f in used]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _markdown_table(frame: pd.DataFrame, floatfmt: str = ".1f") -> list[str]:
    return [frame.to_markdown(index=False, floatfmt=floatfmt), ""]


def _importance_section(report: Any, figure: str | None) -> list[str]:
    imp = report.importance
    lines = [
        "## Permutation feature importance",
        "",
        f"{imp.settings['n_rows']} validation compounds the bundle did not train on, each feature shuffled "
        f"{imp.settings['n_repeats']} times (seed {imp.settings['seed']}); importance = drop of the mean "
        "log-likelihood of the true class (Bravais; space group given the true lattice, every lattice's model on "
        "its own compounds) or rise of the mean squared error of log volume, ± the spread over shuffles.",
        "",
    ]
    if figure:
        lines += [f"![permutation importance]({figure})", ""]
    fam = pd.DataFrame(
        {_OUTPUT_TITLES.get(o, o): imp.families[o]["importance"] for o in imp.families}
    ).reindex([f for f in FAMILIES if f in imp.families[next(iter(imp.families))].index])
    fam.index.name = "property family (all its columns shuffled together)"
    lines += [fam.reset_index().to_markdown(index=False, floatfmt=".3f"), ""]
    for output, table in imp.features.items():
        top = table.head(10).reset_index()[["label", "family", "importance", "std"]]
        lines += [
            f"Top 10 features, {_OUTPUT_TITLES.get(output, output)} (baseline score {imp.baseline[output]:.3f}):",
            "",
        ]
        lines += _markdown_table(top, ".4f")
    return lines


def _neighbour_section(report: Any) -> list[str]:
    if report.neighbours.empty:
        return []
    return [
        "## Which representation finds compounds of the same structure",
        "",
        f"For validation compounds (others than those above), the nearest of the {report.model['train']} training "
        "compounds (ground states of the prototype library) in each representation: how often it has the "
        "query's lattice, space group and structure type (anonymous formula + space group + Wyckoff letters), "
        "and how often the type is among the 5 nearest (%). `features`: standardized features; `hidden`: the "
        "volume networks' last hidden layer; `weighted`: standardized features scaled by the square root of "
        "their Bravais + space-group importance share (measured above); `predictions`: square roots of the "
        "joint space-group probabilities; `combined`: `weighted` and `predictions` side by side, blocks of "
        "equal total variance (what `cryspnet-gen similar` uses).",
        "",
        *_markdown_table(report.neighbours),
    ]


def _map_section(report: Any, figure: str | None) -> list[str]:
    m = report.material_map
    if m is None:
        return []
    s = m.settings
    lines = [
        "## Material map",
        "",
        f"{s['compounds']} training compounds (seeded sample of {s['of']}), `{s['representation']}` representation, PCA to 50 "
        f"dimensions, then t-SNE (scikit-learn, perplexity {s['perplexity']:g}, {s['tsne_seconds']:.0f} s); "
        f"HDBSCAN (min cluster size {s['min_cluster_size']}) on the map puts {100 * s['clustered_fraction']:.0f}% "
        f"of the compounds in {len(m.clusters)} clusters. Colours: Bravais lattice; numbers: the largest clusters.",
        "",
    ]
    if figure:
        lines += [f"![material map]({figure})", ""]
    shown = m.clusters.drop(columns=["x", "y"]).head(25)
    lines += [f"The {len(shown)} largest clusters:", "", shown.to_markdown(index=False), ""]
    return lines


def render(report: Any, figures: dict[str, str]) -> str:
    """The report as Markdown, linking the figures by name."""
    model = report.model
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in report.timings.items())
    lines = [
        f"# Interpretability of `{model['name']}` {model['version']} (split `{model['split']}`)",
        "",
        f"Known compounds: ground states of the prototype library, split as the bundle's training was: "
        f"{model['train']} training compounds (the map, the neighbours), {model['importance_rows']} + "
        f"{model['queries']} validation compounds (importance, neighbour queries). Time: {timings}.",
        "",
    ]
    lines += _importance_section(report, figures.get("importance"))
    lines += _neighbour_section(report)
    lines += _map_section(report, figures.get("map"))
    return "\n".join(lines) + "\n"


def write_report(report: Any, out: Path) -> list[str]:
    """Write ``interpretability.md``, ``interpretability.json``, ``importance.png`` and ``material_map.png``."""
    out.mkdir(parents=True, exist_ok=True)
    figures = {"importance": importance_figure(report.importance.features, out / "importance.png").name}
    if report.material_map is not None:
        figures["map"] = report.material_map.plot(out / "material_map.png").name
    (out / "interpretability.json").write_text(json.dumps(jsonable(report.to_dict()), indent=1))
    (out / "interpretability.md").write_text(render(report, figures))
    return ["interpretability.md", "interpretability.json", *figures.values()]
