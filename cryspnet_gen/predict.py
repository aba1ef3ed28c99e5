"""Trained bundles and predictions: formulas -> Bravais lattice, space group, lattice parameters, volume.

A *bundle* is a folder::

    <name>/
      manifest.json              name, version, format version, network arguments, class lists, parameter
                                 names and ranges, feature labels + featurizer settings, package versions,
                                 sha256 of each weight file, training split, validation (and test) metrics
      bravais_master.safetensors Bravais-lattice ensembles (also bravais_metal / bravais_oxide when trained)
      space_group.safetensors    per-lattice space-group ensembles, tensors named "<lattice>.members.<i>...."
      lattice.safetensors        per-lattice lattice-parameter ensembles
      volume.safetensors         volume-per-atom ensemble
      README.md                  generated from the manifest

Weights load with :func:`safetensors.torch.load_file` (no unpickling); every file is checked against the
manifest's sha256 and the feature labels against :func:`cryspnet_gen.featurize.feature_labels`.

torch is imported inside the functions that need it, so :class:`Prediction` can be used (e.g. deserialised by
jobflow) without loading torch.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import functools
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
from monty.json import MSONable

if TYPE_CHECKING:
    import os

    import pandas as pd
    import torch

    from cryspnet_gen.nn import Ensemble

__all__ = [
    "DEFAULT_BUNDLE",
    "FORMAT_VERSION",
    "BundleError",
    "LatticePrediction",
    "Prediction",
    "Predictor",
    "RankedGroup",
    "available_bundles",
    "is_metal",
    "is_oxide",
    "load_predictor",
    "predictions_to_dataframe",
    "read_bundle",
    "save_bundle",
    "subset_mask",
    "write_test_metrics",
]

logger = logging.getLogger(__name__)

DEFAULT_BUNDLE = "cryspnet-mp-v1"
FORMAT_NAME = "cryspnet-gen-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

BravaisModel = Literal["master", "metal", "oxide"]
WeightsDtype = Literal["float32", "float16"]

# Rows pushed through a network at once: bounds the activations' memory on large batches.
_CHUNK = 16384
_RETRAIN_HINT = "reinstall cryspnet-gen (for a shipped bundle) or retrain it with `cryspnet-gen train`"


class BundleError(ValueError):
    """A model bundle is missing, corrupt, truncated, or does not match this code or featurizer."""


# ---------------------------------------------------------------------------------------------------------
# chemistry helpers (the paper's Metal and Oxide subsets)
# ---------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=65536)
def _element_symbols(formula: str) -> frozenset[str]:
    from cryspnet_gen.featurize import parse_composition

    # The featurizer's parser, so that "a formula" means the same everywhere (it raises ValueError).
    return frozenset(el.symbol for el in parse_composition(formula).elements)


def is_oxide(formula: str) -> bool:
    """Whether ``formula`` contains oxygen (the paper's Oxide subset).

    Raises
    ------
    ValueError
        If the formula cannot be parsed.
    """
    return "O" in _element_symbols(formula)


@functools.lru_cache(maxsize=256)
def _is_metal_element(symbol: str) -> bool:
    from pymatgen.core import Element

    el = Element(symbol)
    return bool(
        el.is_alkali
        or el.is_alkaline
        or el.is_transition_metal
        or el.is_post_transition_metal
        or el.is_lanthanoid
        or el.is_actinoid
    )


def is_metal(formula: str) -> bool:
    """Whether every element of ``formula`` is a metal (the paper's Metal subset).

    Metals are the alkali, alkaline-earth, transition, post-transition, lanthanoid and actinoid elements as
    pymatgen's :class:`~pymatgen.core.Element` classifies them (metalloids such as Si, Ge, Sb are not).

    Raises
    ------
    ValueError
        If the formula cannot be parsed.
    """
    return all(_is_metal_element(s) for s in _element_symbols(formula))


def subset_mask(formulas: Iterable[str], subset: BravaisModel) -> np.ndarray:
    """Boolean mask of the formulas in a Bravais model's domain (unparseable formulas are False)."""
    if subset not in get_args(BravaisModel):
        raise ValueError(f"Unknown {subset=}; choose from {get_args(BravaisModel)}")
    test = {"master": lambda f: True, "metal": is_metal, "oxide": is_oxide}[subset]
    out = []
    for f in formulas:
        try:
            out.append(bool(test(f)))
        except ValueError:
            out.append(False)
    return np.asarray(out, dtype=bool)


# ---------------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------------


@dataclass
class LatticePrediction(MSONable):
    """What a bundle says about one Bravais lattice for one formula.

    Attributes
    ----------
    bravais
        Pearson symbol of the lattice, e.g. ``"cF"``.
    probability, probability_std
        Ensemble mean and std of P(lattice).
    space_groups
        The most likely space groups of this lattice, most likely first.
    space_group_probabilities, space_group_std
        P(group | lattice), ensemble mean and std, aligned with ``space_groups``.
    parameters, parameters_std
        Lattice parameters named as in ``symmetry.PARAMETER_NAMES[bravais]`` (Å, degrees), ensemble mean
        and std; ``None`` values when the bundle has no regressor for this lattice.
    cell, cell_std
        Full conventional cell ``[a, b, c, alpha, beta, gamma]`` (hR in hexagonal axes) from
        ``symmetry.from_parameters``, and its std across ensemble members; ``None`` when unknown.
    """

    bravais: str
    probability: float
    probability_std: float = 0.0
    space_groups: list[int] = field(default_factory=list)
    space_group_probabilities: list[float] = field(default_factory=list)
    space_group_std: list[float] = field(default_factory=list)
    parameters: dict[str, float | None] = field(default_factory=dict)
    parameters_std: dict[str, float | None] = field(default_factory=dict)
    cell: list[float] | None = None
    cell_std: list[float] | None = None


@dataclass
class RankedGroup(MSONable):
    """One (Bravais lattice, space group) hypothesis with its joint probability and cell."""

    bravais: str
    space_group: int
    probability: float
    bravais_probability: float
    space_group_probability: float
    cell: list[float] | None = None
    cell_std: list[float] | None = None


@dataclass
class Prediction(MSONable):
    """Predictions of one bundle for one formula (ensemble mean and std throughout).

    Attributes
    ----------
    formula
        The input formula as given.
    model
        The Bravais model used: ``"master"``, ``"metal"`` or ``"oxide"``.
    bundle, bundle_version
        Name and version of the bundle.
    bravais_probabilities, bravais_std
        P(lattice) for all 14 lattices, keyed in ``symmetry.BRAVAIS_LATTICES`` order.
    lattices
        Details for the ``top_bravais`` most likely lattices, most likely first.
    volume_per_atom, volume_per_atom_std
        Predicted volume per atom (Å^3).
    error
        Why the formula could not be predicted; ``None`` for a good input.
    """

    formula: str
    model: str = "master"
    bundle: str = ""
    bundle_version: str = ""
    bravais_probabilities: dict[str, float] = field(default_factory=dict)
    bravais_std: dict[str, float] = field(default_factory=dict)
    lattices: list[LatticePrediction] = field(default_factory=list)
    volume_per_atom: float | None = None
    volume_per_atom_std: float | None = None
    error: str | None = None

    def bravais_ranking(self) -> list[tuple[str, float]]:
        """All Bravais lattices with P(lattice), most likely first (empty for an error row)."""
        return sorted(self.bravais_probabilities.items(), key=lambda kv: -kv[1])

    def ranked_groups(self) -> list[RankedGroup]:
        """The predicted (lattice, space group) pairs with joint probability and cell, most likely first."""
        out = [
            RankedGroup(
                bravais=lat.bravais,
                space_group=int(sg),
                probability=lat.probability * p,
                bravais_probability=lat.probability,
                space_group_probability=p,
                cell=None if lat.cell is None else list(lat.cell),
                cell_std=None if lat.cell_std is None else list(lat.cell_std),
            )
            for lat in self.lattices
            for sg, p in zip(lat.space_groups, lat.space_group_probabilities, strict=True)
        ]
        return sorted(out, key=lambda g: -g.probability)

    def space_group_ranking(self) -> list[tuple[int, float]]:
        """Joint P(lattice) x P(group | lattice) over the predicted pairs, most likely first.

        With ``predict(..., top_bravais=14, top_space_groups=230)`` every pair is present and the
        probabilities sum to about 1.
        """
        return [(g.space_group, g.probability) for g in self.ranked_groups()]

    def lattice(self, bravais: str) -> LatticePrediction:
        """The details predicted for ``bravais``.

        Raises
        ------
        KeyError
            If ``bravais`` was not among the lattices predicted (raise ``top_bravais``).
        """
        for lat in self.lattices:
            if lat.bravais == bravais:
                return lat
        have = [lat.bravais for lat in self.lattices]
        raise KeyError(f"{bravais!r} not predicted for {self.formula!r} (have {have}); raise top_bravais")

    def lattice_parameters(self, bravais: str, *, std: bool = False) -> dict[str, float | None]:
        """Lattice parameters (or their std) predicted for ``bravais``, named per ``PARAMETER_NAMES``."""
        lat = self.lattice(bravais)
        return dict(lat.parameters_std if std else lat.parameters)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per predicted (lattice, space group) pair; see :func:`predictions_to_dataframe`."""
        return predictions_to_dataframe([self])


_CELL = ("a", "b", "c", "alpha", "beta", "gamma")


def predictions_to_dataframe(preds: Sequence[Prediction]) -> pd.DataFrame:
    """Flatten predictions: one row per (formula, lattice, space group), most likely first per formula.

    Columns: ``index`` (position of the formula in ``preds``), ``formula``, ``model``, ``bravais``,
    ``bravais_probability``, ``space_group``, ``space_group_probability`` (given the lattice),
    ``probability`` (joint), ``rank``, the cell ``a b c alpha beta gamma`` and ``*_std``,
    ``volume_per_atom`` and its std, ``error``. An error row keeps its place with NaN values.
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for i, p in enumerate(preds):
        base = {"index": i, "formula": p.formula, "model": p.model}
        vol = {
            "volume_per_atom": np.nan if p.volume_per_atom is None else p.volume_per_atom,
            "volume_per_atom_std": np.nan if p.volume_per_atom_std is None else p.volume_per_atom_std,
            "error": p.error,
        }
        groups = p.ranked_groups()
        if not groups:
            rows.append({**base, "bravais": None, "space_group": pd.NA, "rank": pd.NA, **vol})
            continue
        for rank, g in enumerate(groups, start=1):
            cell = g.cell if g.cell is not None else [np.nan] * 6
            cell_std = g.cell_std if g.cell_std is not None else [np.nan] * 6
            rows.append(
                {
                    **base,
                    "bravais": g.bravais,
                    "bravais_probability": g.bravais_probability,
                    "space_group": g.space_group,
                    "space_group_probability": g.space_group_probability,
                    "probability": g.probability,
                    "rank": rank,
                    **dict(zip(_CELL, cell, strict=True)),
                    **{f"{k}_std": v for k, v in zip(_CELL, cell_std, strict=True)},
                    **vol,
                }
            )
    columns = [
        "index",
        "formula",
        "model",
        "bravais",
        "bravais_probability",
        "space_group",
        "space_group_probability",
        "probability",
        "rank",
        *_CELL,
        *(f"{k}_std" for k in _CELL),
        "volume_per_atom",
        "volume_per_atom_std",
        "error",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    frame["space_group"] = frame["space_group"].astype("Int64")
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


# ---------------------------------------------------------------------------------------------------------
# bundle files
# ---------------------------------------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that shape a bundle's weights and features."""
    out: dict[str, str | None] = {}
    for dist in ("torch", "numpy", "pymatgen", "matminer", "cryspnet-gen"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _storage_tensors(tensors: dict[str, torch.Tensor], dtype: WeightsDtype) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies; with float16 only the Linear weight matrices are halved.

    Biases, batch-norm statistics, normalisers and output ranges stay float32: they are a tiny share of the
    bytes and the normalisers hold values (e.g. melting points) whose float16 rounding would shift inputs.
    """
    import torch

    out = {}
    for key, t in tensors.items():
        t = t.detach().to("cpu")
        if dtype == "float16" and t.is_floating_point() and t.ndim == 2:
            t = t.to(torch.float16)
        elif t.is_floating_point():
            t = t.to(torch.float32)
        out[key] = t.contiguous().clone()
    return out


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def save_bundle(
    path: str | os.PathLike[str],
    manifest: dict[str, Any],
    tensors: dict[str, dict[str, torch.Tensor]],
    *,
    weights_dtype: WeightsDtype = "float16",
    overwrite: bool = False,
) -> Path:
    """Write a bundle folder: one safetensors file per entry of ``tensors``, the manifest and a README.

    Parameters
    ----------
    path
        The bundle folder (created).
    manifest
        Everything but ``format``, ``format_version``, ``weights`` and ``packages``, which are filled here.
    tensors
        File name -> tensor name -> tensor.
    weights_dtype
        ``"float16"`` halves the Linear weight matrices (the bulk of the bytes); other tensors stay float32.
    overwrite
        Replace an existing bundle at ``path``.

    Returns
    -------
    Path
        The bundle folder.
    """
    from safetensors.torch import save_file

    if weights_dtype not in get_args(WeightsDtype):
        raise ValueError(f"Unknown {weights_dtype=}; choose from {get_args(WeightsDtype)}")
    folder = Path(path)
    if (folder / MANIFEST).exists() and not overwrite:
        raise FileExistsError(f"{folder / MANIFEST} exists; pass overwrite=True or choose another folder")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # written last: its presence marks a complete bundle

    out = copy.deepcopy(manifest)
    out["format"] = FORMAT_NAME
    out["format_version"] = FORMAT_VERSION
    out.setdefault("created", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    out.setdefault("packages", package_versions())
    out["weights"] = {}
    for file_name, tdict in tensors.items():
        if "/" in file_name or not file_name.endswith(".safetensors"):
            raise ValueError(f"weight file names must be plain '*.safetensors' names, got {file_name!r}")
        target = folder / file_name
        save_file(_storage_tensors(tdict, weights_dtype), str(target), metadata={"format": "pt"})
        target.chmod(0o644)  # safetensors writes 0600; shipped bundles must be readable by every user
        out["weights"][file_name] = {
            "sha256": _sha256(target),
            "bytes": target.stat().st_size,
            "dtype": weights_dtype,
        }
    out = _jsonable(out)
    (folder / MANIFEST).write_text(json.dumps(out, indent=1) + "\n")
    (folder / "README.md").write_text(render_readme(out))
    logger.info("wrote bundle %s (%d weight files)", folder, len(tensors))
    return folder


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a bundle's ``manifest.json`` (format name and version).

    Raises
    ------
    BundleError
        If the manifest is missing, unreadable, or of an unknown format or a newer format version.
    """
    folder = Path(path)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise BundleError(
            f"{mpath} not found: {folder} is not a cryspnet-gen bundle (a folder with manifest.json and "
            f"*.safetensors weights); {_RETRAIN_HINT}"
        )
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{mpath} is not valid JSON ({exc}); {_RETRAIN_HINT}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{mpath} is not a {FORMAT_NAME} manifest; {_RETRAIN_HINT}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"{mpath} has bundle format version {version!r}, but this cryspnet-gen reads up to "
            f"{FORMAT_VERSION}: upgrade cryspnet-gen or retrain the bundle with `cryspnet-gen train`"
        )
    for key in ("name", "version", "features", "tasks", "weights"):
        if key not in manifest:
            raise BundleError(f"{mpath} lacks the {key!r} entry; {_RETRAIN_HINT}")
    return manifest


def read_bundle(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Read a bundle's manifest and weights, verifying every file's sha256 first.

    Returns
    -------
    tuple
        ``(manifest, tensors)`` with ``tensors[file_name][tensor_name]`` in float32.

    Raises
    ------
    BundleError
        Naming the file that is missing, corrupt or truncated.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    manifest = read_manifest(folder)
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    for file_name, info in manifest["weights"].items():
        target = folder / file_name
        if not target.is_file():
            raise BundleError(f"weight file {target} is missing; {_RETRAIN_HINT}")
        size = target.stat().st_size
        if info.get("bytes") is not None and size != info["bytes"]:
            raise BundleError(
                f"weight file {target} has {size} bytes but the manifest expects {info['bytes']} "
                f"(truncated or replaced); {_RETRAIN_HINT}"
            )
        if _sha256(target) != info.get("sha256"):
            raise BundleError(
                f"weight file {target} is corrupt or was modified (sha256 does not match {MANIFEST}); "
                f"{_RETRAIN_HINT}"
            )
        try:
            loaded = load_file(str(target))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BundleError(f"weight file {target} cannot be read ({exc}); {_RETRAIN_HINT}") from exc
        tensors[file_name] = {k: (v.float() if v.is_floating_point() else v) for k, v in loaded.items()}
    return manifest, tensors


def write_test_metrics(path: str | os.PathLike[str], metrics: dict[str, Any] | None) -> Path:
    """Store test metrics in a bundle's manifest and regenerate its README; the weights are untouched.

    Parameters
    ----------
    path
        The bundle folder.
    metrics
        JSON-serialisable metrics (e.g. from :mod:`cryspnet_gen.evaluate`), or None to clear them.

    Returns
    -------
    Path
        The manifest file.
    """
    folder = Path(path)
    manifest = read_manifest(folder)
    manifest.setdefault("metrics", {})["test"] = _jsonable(metrics)
    target = folder / MANIFEST
    tmp = target.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(target)
    (folder / "README.md").write_text(render_readme(manifest))
    return target


def render_readme(manifest: dict[str, Any]) -> str:
    """A human-readable README for a bundle, generated from its manifest."""
    m = manifest
    lines = [
        f"# {m.get('name')} (version {m.get('version')})",
        "",
        "Trained cryspnet-gen bundle: chemical formula -> Bravais lattice, space group, lattice parameters and",
        "volume per atom (a re-implementation of CRYSPNet, Liang et al., Phys. Rev. Materials 4, 123802, 2020).",
        "Generated from `manifest.json`; do not edit by hand.",
        "",
        "## Data",
        "",
        f"- training split: `{m.get('split')}`; labels: `{m.get('labels', 'unknown')}`",
        f"- created: {m.get('created')}; seed: {m.get('training', {}).get('seed')}",
        f"- features: {len(m.get('features', {}).get('labels', []))} composition features "
        f"(labels and featurizer settings in the manifest)",
    ]
    rows = m.get("training", {}).get("rows", {})
    if rows:
        lines.append("- training rows: " + ", ".join(f"{k}: {v}" for k, v in rows.items()))
    lines += ["", "## Networks", ""]
    tasks = m.get("tasks", {})
    for name, entry in tasks.get("bravais", {}).items():
        lines.append(
            f"- Bravais `{name}`: {entry.get('n_members')} members, hidden {entry['model_args']['hidden']}, "
            f"{entry.get('n_train')} training rows"
        )
    for task in ("space_group", "lattice"):
        kinds: dict[str, list[str]] = {}
        for lat, entry in tasks.get(task, {}).get("lattices", {}).items():
            kinds.setdefault(entry["kind"], []).append(lat)
        desc = "; ".join(f"{k}: {' '.join(v)}" for k, v in kinds.items())
        arch = tasks.get(task, {}).get("arch")
        lines.append(f"- {task.replace('_', ' ')}{f' ({arch})' if arch else ''}: {desc}")
    if "volume" in tasks:
        v = tasks["volume"]
        lines.append(f"- volume per atom: {v.get('n_members')} members, hidden {v['model_args']['hidden']}")
    metrics = m.get("metrics", {})
    lines += ["", "## Validation metrics", ""]
    val = metrics.get("validation") or {}
    for name, met in val.get("bravais", {}).items():
        lines.append(
            f"- Bravais `{name}`: top-1 {_fmt(met.get('top1'))}, top-2 {_fmt(met.get('top2'))} (n={met.get('n')})"
        )
    sg = val.get("space_group", {})
    if sg:
        lines.append(f"- space group given the true lattice: top-1 {_fmt(sg.get('top1'))} (n={sg.get('n')})")
        lines += ["", "| lattice | n | space-group top-1 | lattice-parameter R² |", "|---|---|---|---|"]
        lat_metrics = val.get("lattice", {}).get("per_lattice", {})
        for lat, met in sg.get("per_lattice", {}).items():
            r2 = lat_metrics.get(lat, {}).get("r2", {})
            r2s = ", ".join(f"{k} {_fmt(v)}" for k, v in r2.items()) or "-"
            lines.append(f"| {lat} | {met.get('n')} | {_fmt(met.get('top1'))} | {r2s} |")
        lines.append("")
    vol = val.get("volume", {})
    if vol:
        lines.append(
            f"- volume per atom: R² {_fmt(vol.get('r2'))}, MAE {_fmt(vol.get('mae'))} Å³ (n={vol.get('n')})"
        )
    test = metrics.get("test")
    lines += [
        "",
        "## Test metrics",
        "",
        "```",
        json.dumps(test, indent=1) if test else "not evaluated yet",
        "```",
    ]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from cryspnet_gen.predict import load_predictor",
        f'predictor = load_predictor(path="path/to/{m.get("name")}")',
        'predictor.predict(["LiMnO2"], top_bravais=2, top_space_groups=3)',
        "```",
        "",
        "## Retrain",
        "",
        f"`cryspnet-gen train --split {m.get('split')} --out DIR` (see `cryspnet-gen train --help`); the",
        "training configuration used here is stored under `train_config` in the manifest.",
        "",
        "## Files",
        "",
        "| file | bytes | dtype | sha256 |",
        "|---|---|---|---|",
    ]
    for fname, info in m.get("weights", {}).items():
        lines.append(f"| {fname} | {info.get('bytes')} | {info.get('dtype')} | `{info.get('sha256')}` |")
    lines += ["", "Package versions: " + ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items()), ""]
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


# ---------------------------------------------------------------------------------------------------------
# the predictor
# ---------------------------------------------------------------------------------------------------------


def _run_ensemble(ens: Ensemble, X: np.ndarray) -> np.ndarray:
    """Member outputs ``(n_members, n, k)`` as float32 numpy, in chunks of rows."""
    import torch

    outs = []
    with torch.inference_mode():
        for start in range(0, max(len(X), 1), _CHUNK):
            xb = torch.from_numpy(np.ascontiguousarray(X[start : start + _CHUNK], dtype=np.float32))
            outs.append(ens(xb).numpy())
    return np.concatenate(outs, axis=1) if len(X) else outs[0][:, :0]


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads (``None``: leave them)."""
    if n is None:
        yield
        return
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class _ClassTask:
    """A space-group or Bravais model: a network ensemble, a columns slice of a shared one, or a prior."""

    def __init__(
        self,
        classes: Sequence[Any],
        *,
        ensemble: Ensemble | None = None,
        columns: np.ndarray | None = None,
        probabilities: Sequence[float] | None = None,
    ) -> None:
        self.classes = list(classes)
        self.ensemble = ensemble
        self.columns = columns
        self.probabilities = None if probabilities is None else np.asarray(probabilities, dtype=np.float64)

    def proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.ensemble is None:
            assert self.probabilities is not None
            mean = np.broadcast_to(self.probabilities, (len(X), len(self.classes))).copy()
            return mean, np.zeros_like(mean)
        logits = _run_ensemble(self.ensemble, X)
        if self.columns is not None:
            logits = logits[..., self.columns]
        p = _softmax(logits.astype(np.float64))
        return p.mean(axis=0), p.std(axis=0)


class _RegressionTask:
    """A regressor ensemble, or a prior made of a few stored training targets (treated as members)."""

    def __init__(
        self, names: Sequence[str], *, ensemble: Ensemble | None = None, samples: np.ndarray | None = None
    ) -> None:
        self.names = list(names)
        self.ensemble = ensemble
        self.samples = samples

    def members(self, X: np.ndarray) -> np.ndarray | None:
        if self.ensemble is not None:
            return _run_ensemble(self.ensemble, X).astype(np.float64)
        if self.samples is not None and len(self.samples):
            return np.broadcast_to(self.samples[:, None, :], (len(self.samples), len(X), len(self.names)))
        return None


def _cells(bravais: str, params: np.ndarray) -> np.ndarray:
    """``symmetry.from_parameters`` over rows ``(n, k) -> (n, 6)``, vectorised when it allows."""
    from cryspnet_gen.symmetry import from_parameters

    flat = np.asarray(params, dtype=np.float64)
    if len(flat) == 0:
        return np.zeros((0, 6))
    try:
        out = np.asarray(from_parameters(bravais, flat), dtype=np.float64)
        if out.shape == (len(flat), 6):
            return out
    except (ValueError, TypeError, IndexError):
        pass
    return np.asarray([np.asarray(from_parameters(bravais, row), dtype=np.float64) for row in flat])


def _none_if_nan(values: Iterable[float]) -> list[float | None]:
    return [None if not math.isfinite(v) else float(v) for v in values]


class Predictor:
    """The networks of one bundle, ready to predict.

    Build it with :func:`load_predictor`; ``Predictor(manifest, tensors)`` is for bundles held in memory.

    Parameters
    ----------
    manifest
        The bundle manifest (see the module docstring).
    tensors
        File name -> tensor name -> tensor, as returned by :func:`read_bundle`.
    path
        Where the bundle was read from, for messages.
    check_features
        Compare the manifest's feature labels with :func:`cryspnet_gen.featurize.feature_labels`.

    Raises
    ------
    BundleError
        If the weights do not fit the manifest or the feature labels differ.
    """

    def __init__(
        self,
        manifest: dict[str, Any],
        tensors: dict[str, dict[str, torch.Tensor]],
        *,
        path: str | os.PathLike[str] | None = None,
        check_features: bool = True,
    ) -> None:
        from cryspnet_gen.symmetry import BRAVAIS_LATTICES, PARAMETER_NAMES, space_groups_of

        self.manifest = manifest
        self.path = None if path is None else Path(path)
        self.name: str = manifest["name"]
        self.version: str = str(manifest["version"])
        self.feature_labels: list[str] = list(manifest["features"]["labels"])
        #: torch intra-op threads while predicting, restored afterwards (None: leave torch's setting). The
        #: networks are small: one thread runs them about as fast as several on an idle machine, and 20x faster
        #: than two on a busy 2-core machine, where OpenMP threads wait for each other.
        self.num_threads: int | None = 1
        self.bravais_lattices: tuple[str, ...] = tuple(BRAVAIS_LATTICES)
        where = self.path if self.path is not None else f"bundle {self.name!r}"
        if check_features:
            self._check_features(where)
        tasks = manifest["tasks"]

        self._bravais: dict[str, _ClassTask] = {}
        for model, entry in tasks["bravais"].items():
            classes = entry["classes"]
            if list(classes) != list(BRAVAIS_LATTICES):
                raise BundleError(f"{where}: Bravais model {model!r} has classes {classes}, expected the 14")
            ens = self._ensemble(entry, tensors, entry["file"], "", where)
            self._bravais[model] = _ClassTask(classes, ensemble=ens)

        sg_task = tasks["space_group"]
        shared = None
        if sg_task.get("shared") is not None:
            shared = self._ensemble(sg_task["shared"], tensors, sg_task["file"], "shared.", where)
        self._space_group: dict[str, _ClassTask] = {}
        for lat in BRAVAIS_LATTICES:
            entry = sg_task["lattices"].get(lat)
            if entry is None or entry["kind"] == "prior":
                groups = entry["classes"] if entry else list(space_groups_of(lat))
                probs = entry["probabilities"] if entry else [1.0 / len(groups)] * len(groups)
                self._space_group[lat] = _ClassTask(groups, probabilities=probs)
            elif entry["kind"] == "network":
                ens = self._ensemble(entry, tensors, sg_task["file"], f"{lat}.", where)
                self._space_group[lat] = _ClassTask(entry["classes"], ensemble=ens)
            elif entry["kind"] == "shared":
                if shared is None:
                    raise BundleError(f"{where}: space group of {lat} refers to a missing shared network")
                cols = np.asarray(entry["columns"], dtype=np.int64)
                self._space_group[lat] = _ClassTask(entry["classes"], ensemble=shared, columns=cols)
            else:
                raise BundleError(f"{where}: unknown space-group model kind {entry['kind']!r} for {lat}")

        lat_task = tasks["lattice"]
        self._lattice: dict[str, _RegressionTask] = {}
        for lat in BRAVAIS_LATTICES:
            names = list(PARAMETER_NAMES[lat])
            entry = lat_task["lattices"].get(lat)
            if entry is not None and list(entry["parameter_names"]) != names:
                raise BundleError(
                    f"{where}: lattice {lat} parameters {entry['parameter_names']} differ from this "
                    f"cryspnet-gen's {names}; {_RETRAIN_HINT}"
                )
            if entry is None or entry["kind"] == "none":
                self._lattice[lat] = _RegressionTask(names)
            elif entry["kind"] == "prior":
                samples = np.asarray(entry["samples"], dtype=np.float64).reshape(-1, len(names))
                self._lattice[lat] = _RegressionTask(names, samples=samples)
            elif entry["kind"] == "network":
                ens = self._ensemble(entry, tensors, lat_task["file"], f"{lat}.", where)
                self._lattice[lat] = _RegressionTask(names, ensemble=ens)
            else:
                raise BundleError(f"{where}: unknown lattice model kind {entry['kind']!r} for {lat}")

        vol = tasks["volume"]
        self._volume = _RegressionTask(
            ["volume_per_atom"], ensemble=self._ensemble(vol, tensors, vol["file"], "", where)
        )

    # -- construction helpers ------------------------------------------------------------------------

    def _check_features(self, where: object) -> None:
        from cryspnet_gen.featurize import feature_labels

        current = list(feature_labels())
        if current != self.feature_labels:
            diff = next(
                (i for i, (a, b) in enumerate(zip(current, self.feature_labels, strict=False)) if a != b),
                min(len(current), len(self.feature_labels)),
            )
            first = (
                f"first difference at position {diff}: bundle "
                f"{self.feature_labels[diff] if diff < len(self.feature_labels) else '<end>'!r} vs featurizer "
                f"{current[diff] if diff < len(current) else '<end>'!r}"
            )
            raise BundleError(
                f"{where}: the bundle was trained on {len(self.feature_labels)} features that differ from "
                f"this featurizer's {len(current)} ({first}); the installed featurizer (matminer/pymatgen "
                f"versions or settings) no longer matches: retrain the bundle with `cryspnet-gen train` or "
                f"install the package versions listed in its manifest"
            )

    @staticmethod
    def _ensemble(
        entry: dict[str, Any],
        tensors: dict[str, dict[str, torch.Tensor]],
        file: str,
        prefix: str,
        where: object,
    ) -> Ensemble:
        from cryspnet_gen.nn import Ensemble, build_module

        if file not in tensors:
            raise BundleError(f"{where}: weight file {file} is not listed in the manifest; {_RETRAIN_HINT}")
        try:
            members = [
                build_module(entry["model_class"], entry["model_args"]) for _ in range(entry["n_members"])
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: bad network arguments for {file}:{prefix} ({exc})") from exc
        ens = Ensemble(members)
        full = f"{prefix}members."
        state = {k[len(prefix) :]: v for k, v in tensors[file].items() if k.startswith(full)}
        try:
            ens.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BundleError(
                f"{where}: weights in {file} (prefix {prefix!r}) do not fit the manifest's networks: {exc}; "
                f"{_RETRAIN_HINT}"
            ) from exc
        return ens.eval()

    # -- properties --------------------------------------------------------------------------------------

    @property
    def bravais_models(self) -> tuple[str, ...]:
        """The Bravais models this bundle holds (``master`` always; ``metal``/``oxide`` when trained)."""
        return tuple(self._bravais)

    @property
    def metrics(self) -> dict[str, Any]:
        """Validation (and test, once evaluated) metrics from the manifest."""
        return dict(self.manifest.get("metrics", {}))

    def __repr__(self) -> str:
        return f"Predictor(name={self.name!r}, version={self.version!r}, path={str(self.path)!r})"

    # -- vectorised building blocks (features in, arrays out) ---------------------------------------------

    def _features(self, X: np.ndarray) -> np.ndarray:
        arr = np.asarray(X, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != len(self.feature_labels):
            raise ValueError(f"expected features of shape (n, {len(self.feature_labels)}), got {arr.shape}")
        return arr

    def _bravais_model(self, model: str) -> _ClassTask:
        if model not in get_args(BravaisModel):
            raise ValueError(f"Unknown {model=}; choose from {get_args(BravaisModel)}")
        if model not in self._bravais:
            raise ValueError(
                f"bundle {self.name!r} has no {model!r} Bravais model; available: {self.bravais_models}"
            )
        return self._bravais[model]

    def bravais_probabilities(
        self, X: np.ndarray, *, model: BravaisModel = "master"
    ) -> tuple[np.ndarray, np.ndarray]:
        """P(lattice) ensemble mean and std, ``(n, 14)`` each, columns in ``BRAVAIS_LATTICES`` order."""
        with _torch_threads(self.num_threads):
            return self._bravais_model(model).proba(self._features(X))

    def space_group_probabilities(
        self, X: np.ndarray, bravais: str
    ) -> tuple[list[int], np.ndarray, np.ndarray]:
        """``(groups, mean, std)``: P(group | ``bravais``) over that lattice's modelled groups."""
        task = self._space_group[self._check_bravais(bravais)]
        with _torch_threads(self.num_threads):
            mean, std = task.proba(self._features(X))
        return [int(g) for g in task.classes], mean, std

    def lattice_parameter_members(self, X: np.ndarray, bravais: str) -> np.ndarray:
        """Per-member lattice parameters ``(n_members, n, k)`` for ``bravais`` (NaN when not modelled)."""
        task = self._lattice[self._check_bravais(bravais)]
        X = self._features(X)
        with _torch_threads(self.num_threads):
            members = task.members(X)
        if members is None:
            return np.full((1, len(X), len(task.names)), np.nan)
        return np.asarray(members)

    def volume_per_atom(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Volume per atom (Å^3) ensemble mean and std, ``(n,)`` each."""
        with _torch_threads(self.num_threads):
            members = self._volume.members(self._features(X))
        assert members is not None
        return members[..., 0].mean(axis=0), members[..., 0].std(axis=0)

    def _check_bravais(self, bravais: str) -> str:
        if bravais not in self.bravais_lattices:
            raise ValueError(f"Unknown {bravais=}; choose from {self.bravais_lattices}")
        return bravais

    # -- the public entry point ----------------------------------------------------------------------

    def predict(
        self,
        formulas: str | Iterable[str],
        *,
        top_bravais: int = 2,
        top_space_groups: int = 3,
        model: BravaisModel = "master",
    ) -> list[Prediction]:
        """Predict Bravais lattice, space groups, lattice parameters and volume for each formula.

        Parameters
        ----------
        formulas
            One formula or many; one :class:`Prediction` per input, in order. A formula that cannot be
            featurized gives a Prediction with ``error`` set instead of failing the batch.
        top_bravais
            Number of most likely lattices to detail (1-14).
        top_space_groups
            Number of most likely space groups per detailed lattice (>= 1; 230 means all).
        model
            The Bravais model: ``"master"`` (all compounds), ``"metal"`` or ``"oxide"`` (the paper's subset
            models, for formulas in their domain).

        Returns
        -------
        list[Prediction]
        """
        from cryspnet_gen.featurize import featurize

        formula_list = [formulas] if isinstance(formulas, str) else list(formulas)
        self._check_options(top_bravais, top_space_groups, model)
        feats = featurize(formula_list)
        if list(feats.labels) != self.feature_labels:
            raise BundleError(f"featurize() returned labels that differ from bundle {self.name!r}'s")
        # featurize also takes pymatgen Compositions; it reports every input as a formula string
        names = [str(f) for f in getattr(feats, "formulas", formula_list)]
        return self.predict_features(
            feats.matrix,
            names,
            errors=feats.errors,
            top_bravais=top_bravais,
            top_space_groups=top_space_groups,
            model=model,
        )

    def _check_options(self, top_bravais: int, top_space_groups: int, model: str) -> None:
        self._bravais_model(model)
        if not 1 <= int(top_bravais) <= len(self.bravais_lattices):
            raise ValueError(f"top_bravais must be in 1..{len(self.bravais_lattices)}, got {top_bravais}")
        if int(top_space_groups) < 1:
            raise ValueError(f"top_space_groups must be >= 1, got {top_space_groups}")

    def predict_features(
        self,
        X: np.ndarray,
        formulas: Sequence[str],
        *,
        errors: Sequence[str | None] | None = None,
        top_bravais: int = 2,
        top_space_groups: int = 3,
        model: BravaisModel = "master",
    ) -> list[Prediction]:
        """:meth:`predict` on precomputed features ``X`` aligned with ``formulas``.

        Rows with an error, or with no finite feature, give error Predictions.
        """
        self._check_options(top_bravais, top_space_groups, model)
        X = self._features(X)
        n = len(formulas)
        if len(X) != n:
            raise ValueError(f"{len(X)} feature rows for {n} formulas")
        errs: list[str | None] = list(errors) if errors is not None else [None] * n
        if len(errs) != n:
            raise ValueError(f"{len(errs)} errors for {n} formulas")
        finite_any = np.isfinite(X).any(axis=1)
        for i in range(n):
            if errs[i] is None and not finite_any[i]:
                errs[i] = "featurization gave no finite feature"
        good = np.asarray([e is None for e in errs], dtype=bool)
        gidx = np.flatnonzero(good)
        Xg = X[gidx]
        lattices = self.bravais_lattices
        if model != "master" and len(gidx):
            out_of_domain = int((~subset_mask([formulas[int(i)] for i in gidx], model)).sum())
            if out_of_domain:
                logger.warning(
                    "%d of %d formulas are outside the %r model's domain", out_of_domain, len(gidx), model
                )

        with _torch_threads(self.num_threads):
            pb_mean, pb_std = self._bravais_model(model).proba(Xg)
        order = np.argsort(-pb_mean, axis=1, kind="stable")[:, :top_bravais]
        vol_mean, vol_std = self.volume_per_atom(Xg) if len(gidx) else (np.zeros(0), np.zeros(0))

        # One pass per network over the rows that need that lattice.
        detail: dict[int, dict[str, Any]] = {}
        for j, lat in enumerate(lattices):
            rows = np.flatnonzero((order == j).any(axis=1))
            if not len(rows):
                continue
            Xs = Xg[rows]
            groups, sg_mean, sg_std = self.space_group_probabilities(Xs, lat)
            k = min(int(top_space_groups), len(groups))
            sg_order = np.argsort(-sg_mean, axis=1, kind="stable")[:, :k]
            members = self.lattice_parameter_members(Xs, lat)
            p_mean, p_std = members.mean(axis=0), members.std(axis=0)
            if np.isfinite(members).all():
                m_, r_, k_ = members.shape
                member_cells = _cells(lat, members.reshape(m_ * r_, k_)).reshape(m_, r_, 6)
                cell = _cells(lat, p_mean)
                cell_std = member_cells.std(axis=0)
            else:
                cell = cell_std = np.full((len(rows), 6), np.nan)
            pos = np.full(len(gidx), -1)
            pos[rows] = np.arange(len(rows))
            garr = np.asarray(groups)
            detail[j] = {
                "pos": pos,
                "groups": np.take_along_axis(np.broadcast_to(garr, sg_mean.shape), sg_order, 1).tolist(),
                "sg_mean": np.take_along_axis(sg_mean, sg_order, 1).tolist(),
                "sg_std": np.take_along_axis(sg_std, sg_order, 1).tolist(),
                "names": self._lattice[lat].names,
                "p_mean": p_mean.tolist(),
                "p_std": p_std.tolist(),
                "cell": cell.tolist(),
                "cell_std": cell_std.tolist(),
                "finite": (np.isfinite(cell).all(axis=1) & np.isfinite(cell_std).all(axis=1)).tolist(),
            }

        out: list[Prediction] = []
        meta: dict[str, Any] = {"model": model, "bundle": self.name, "bundle_version": self.version}
        pb_mean_l, pb_std_l, order_l = pb_mean.tolist(), pb_std.tolist(), order.tolist()
        g = 0
        for i in range(n):
            if not good[i]:
                out.append(Prediction(formula=formulas[i], error=errs[i], **meta))
                continue
            lat_preds = []
            for j in order_l[g]:
                d = detail[j]
                r = d["pos"][g]
                lat_preds.append(
                    LatticePrediction(
                        bravais=lattices[j],
                        probability=pb_mean_l[g][j],
                        probability_std=pb_std_l[g][j],
                        space_groups=[int(s) for s in d["groups"][r]],
                        space_group_probabilities=d["sg_mean"][r],
                        space_group_std=d["sg_std"][r],
                        parameters=dict(zip(d["names"], _none_if_nan(d["p_mean"][r]), strict=True)),
                        parameters_std=dict(zip(d["names"], _none_if_nan(d["p_std"][r]), strict=True)),
                        cell=d["cell"][r] if d["finite"][r] else None,
                        cell_std=d["cell_std"][r] if d["finite"][r] else None,
                    )
                )
            out.append(
                Prediction(
                    formula=formulas[i],
                    bravais_probabilities=dict(zip(lattices, pb_mean_l[g], strict=True)),
                    bravais_std=dict(zip(lattices, pb_std_l[g], strict=True)),
                    lattices=lat_preds,
                    volume_per_atom=float(vol_mean[g]),
                    volume_per_atom_std=float(vol_std[g]),
                    **meta,
                )
            )
            g += 1
        return out


# ---------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------


def _bundles_root() -> Path | None:
    try:
        root = resources.files("cryspnet_gen.bundles")
    except ModuleNotFoundError:
        return None
    path = Path(str(root))
    return path if path.is_dir() else None


def available_bundles() -> list[str]:
    """Names of the bundles shipped in ``cryspnet_gen.bundles`` (folders holding a manifest.json)."""
    root = _bundles_root()
    if root is None:
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file())


@functools.lru_cache(maxsize=8)
def _load_cached(resolved: str, stamp: tuple[int, int]) -> Predictor:
    # ``stamp`` (the manifest's mtime and size) makes a bundle rewritten in place load afresh.
    manifest, tensors = read_bundle(resolved)
    predictor = Predictor(manifest, tensors, path=resolved)
    logger.info("loaded %r", predictor)
    return predictor


def load_predictor(name: str | None = None, *, path: str | os.PathLike[str] | None = None) -> Predictor:
    """Load a bundle (cached per resolved folder).

    Parameters
    ----------
    name
        A bundle shipped with cryspnet-gen; ``None`` means :data:`DEFAULT_BUNDLE`.
    path
        A bundle folder anywhere (wins over ``name``).

    Raises
    ------
    ValueError
        For an unknown ``name``.
    BundleError
        If the bundle is absent, corrupt, or does not match the featurizer.
    """
    if path is not None:
        return _load_folder(Path(path).expanduser())
    available = available_bundles()
    if name is None:
        if DEFAULT_BUNDLE not in available:
            raise BundleError(
                f"the default bundle {DEFAULT_BUNDLE!r} is not installed (available: {available or 'none'}); "
                f"train one with `cryspnet-gen train --out DIR` and load it with load_predictor(path=DIR/NAME)"
            )
        name = DEFAULT_BUNDLE
    if name not in available:
        raise ValueError(f"Unknown {name=}; available: {available}")
    root = _bundles_root()
    assert root is not None
    return _load_folder(root / name)


def _load_folder(folder: Path) -> Predictor:
    resolved = folder.resolve()
    try:
        st = (resolved / MANIFEST).stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = (0, 0)  # read_manifest raises the clear error
    return _load_cached(str(resolved), stamp)
