"""A 2-D map of known compounds in a bundle's representation, its clusters and what each cluster holds.

The points (:mod:`cryspnet_gen.explain.representation`) of a seeded sample of known compounds are reduced to 50
dimensions by PCA and laid out in 2-D by t-SNE (scikit-learn, Barnes-Hut, PCA initialisation); HDBSCAN then
finds the groups of compounds the map puts together (density clusters; compounds in no dense group are
noise). Each cluster is summarised by its size, its dominant lattices and space groups, its most common
elements and anonymous formulas, and three example formulas; the figure colours the points by Bravais lattice
and numbers the largest clusters. The CRYSPNet paper did the same (t-SNE + DBSCAN) with its networks' last hidden
layer; here the representation is whichever :func:`cryspnet_gen.explain.similar` uses, named in the report.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryspnet_gen.symmetry import BRAVAIS_LATTICES, space_group_symbol

__all__ = ["MaterialMap", "material_map"]

logger = logging.getLogger(__name__)

_ELEMENT = re.compile(r"([A-Z][a-z]?)")


@dataclass
class MaterialMap:
    """2-D coordinates of a sample of known compounds, their cluster labels (-1: noise) and the summaries."""

    table: pd.DataFrame
    """the sampled compounds (``formula, space_group, bravais, anonymous``...) with ``x, y, cluster``"""
    clusters: pd.DataFrame
    settings: dict[str, Any]

    def plot(self, path: str | Path, *, label_clusters: int = 25) -> Path:
        """Write the map as a PNG: points coloured by lattice, the largest clusters numbered."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(9.5, 8))
        cmap = plt.get_cmap("tab20")
        # the strong colours of tab20 first, then its light ones: neighbouring lattices do not share a hue
        colours = [cmap(i) for i in (*range(0, 20, 2), 1, 3, 5, 7)]
        for j, bravais in enumerate(BRAVAIS_LATTICES):
            rows = self.table[self.table["bravais"] == bravais]
            ax.scatter(rows["x"], rows["y"], s=1.5, color=colours[j], label=bravais, alpha=0.6, linewidths=0)
        for _, c in self.clusters.head(label_clusters).iterrows():
            ax.annotate(
                str(c["cluster"]),
                (c["x"], c["y"]),
                fontsize=8,
                weight="bold",
                ha="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0},
            )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            f"{len(self.table)} known compounds, t-SNE of the {self.settings['representation']} representation; "
            f"numbers: HDBSCAN clusters",
            fontsize=9,
        )
        ax.legend(markerscale=6, fontsize=7, ncol=2, loc="upper right", title="Bravais lattice")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def material_map(
    table: pd.DataFrame,
    points: np.ndarray,
    *,
    sample: int = 20000,
    seed: int = 0,
    perplexity: float = 30.0,
    min_cluster_size: int = 40,
    representation: str = "",
) -> MaterialMap:
    """Lay out a seeded sample of ``table`` (with its ``points``) in 2-D and cluster it.

    Parameters
    ----------
    table
        Known compounds with ``formula``, ``space_group``, ``bravais`` and ``anonymous`` columns.
    points
        Their representation, one row each.
    sample
        Compounds drawn (all when fewer).
    seed
        Seed of the draw, PCA and t-SNE.
    perplexity, min_cluster_size
        t-SNE perplexity; the smallest HDBSCAN cluster.
    representation
        Name of the representation, for the figure and the report.
    """
    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if len(table) != len(points):
        raise ValueError(f"{len(table)} compounds but {len(points)} points")
    if len(table) < 3:
        raise ValueError("a material map needs at least 3 compounds")
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(table))[: min(sample, len(table))])
    sub = table.iloc[keep].reset_index(drop=True).copy()
    P = np.asarray(points, dtype=np.float64)[keep]
    start = time.perf_counter()
    n_comp = min(50, P.shape[1], len(P) - 1)
    reduced = PCA(n_components=n_comp, random_state=seed).fit_transform(P) if P.shape[1] > n_comp else P
    xy = TSNE(
        n_components=2,
        perplexity=min(perplexity, (len(P) - 1) / 3),
        init="pca",
        learning_rate="auto",
        random_state=seed,
    ).fit_transform(reduced)
    tsne_seconds = time.perf_counter() - start
    labels = HDBSCAN(min_cluster_size=min(min_cluster_size, max(2, len(P) // 3)), copy=True).fit_predict(xy)
    sub["x"], sub["y"], sub["cluster"] = xy[:, 0], xy[:, 1], labels
    clusters = summarise_clusters(sub)
    logger.info(
        "material map of %d compounds: t-SNE %.0f s, %d clusters", len(sub), tsne_seconds, len(clusters)
    )
    settings = {
        "compounds": len(sub),
        "of": len(table),
        "seed": seed,
        "perplexity": perplexity,
        "min_cluster_size": min_cluster_size,
        "representation": representation,
        "tsne_seconds": round(tsne_seconds, 1),
        "clustered_fraction": float((labels >= 0).mean()),
    }
    return MaterialMap(sub, clusters, settings)


def _share(counter: Counter, n: int, top: int, fmt: Any = str) -> str:
    """The ``top`` most common values with their share, ties in value order (so the text is reproducible)."""
    common = sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))[:top]
    return ", ".join(f"{fmt(k)} {100 * v / n:.0f}%" for k, v in common)


def summarise_clusters(points: pd.DataFrame) -> pd.DataFrame:
    """One row per cluster (largest first, renumbered 1..): size, dominant lattices and groups, chemistry."""
    rows = []
    for label, members in points[points["cluster"] >= 0].groupby("cluster"):
        n = len(members)
        elements = Counter(e for f in members["formula"] for e in set(_ELEMENT.findall(f)))
        centre = members[["x", "y"]].median().to_numpy()
        nearest = np.argsort(((members[["x", "y"]].to_numpy() - centre) ** 2).sum(axis=1), kind="stable")[:3]
        rows.append(
            {
                "label": int(label),
                "size": n,
                "lattices": _share(Counter(members["bravais"]), n, 2),
                "space groups": _share(
                    Counter(members["space_group"]), n, 2, lambda g: f"{space_group_symbol(int(g))} ({g})"
                ),
                "elements": ", ".join(
                    f"{e} {100 * c / n:.0f}%"
                    for e, c in sorted(elements.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
                ),
                "anonymous": _share(Counter(members["anonymous"]), n, 2),
                "examples": ", ".join(members["formula"].iloc[nearest]),
                "x": float(centre[0]),
                "y": float(centre[1]),
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(
            columns=["cluster", "size", "lattices", "space groups", "elements", "anonymous", "examples"]
        )
    frame = frame.sort_values(["size", "label"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )
    frame.insert(0, "cluster", np.arange(1, len(frame) + 1))
    renumber = dict(zip(frame["label"], frame["cluster"], strict=True))
    points["cluster"] = [renumber.get(int(c), -1) for c in points["cluster"]]
    return frame.drop(columns="label")
