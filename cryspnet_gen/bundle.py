"""Bundle folders: manifest, weight files, integrity checks, README rendering.

A *bundle* is a folder::

    <name>/
      manifest.json              name, version, format version, network arguments, class lists, parameter
                                 names and ranges, feature labels + featurizer settings, package versions,
                                 sha256 of each weight file, training split, validation (and test) metrics
      bravais_master.safetensors Bravais-lattice ensembles (also bravais_metal / bravais_oxide when trained)
      space_group.safetensors    per-lattice space-group ensembles, tensors named "<lattice>.members.<i>...."
      lattice.safetensors        per-lattice lattice-parameter ensembles
      volume.safetensors         volume-per-atom ensemble
      *.lgb.txt.gz               gradient-boosted tree classifiers (LightGBM's text model format, gzipped;
                                 plain ``*.lgb.txt`` also loads), when the bundle's arch has them (listed
                                 under ``trees`` in the manifest)
      README.md                  generated from the manifest

Weights load with :func:`safetensors.torch.load_file` and trees from their text (no unpickling); every file is
checked against the manifest's sha256 first. Shipped bundles live in the package ``cryspnet_gen.bundles`` (the repository's ``models/``).
"""

from __future__ import annotations

import copy
import datetime
import gzip
import hashlib
import json
import logging
import math
import zlib
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    import os

    import torch

__all__ = [
    "DEFAULT_BUNDLE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "RETRAIN_HINT",
    "TREE_SUFFIX",
    "BundleError",
    "available_bundles",
    "bundles_root",
    "file_sha256",
    "jsonable",
    "package_versions",
    "read_bundle",
    "read_manifest",
    "read_part_text",
    "read_tree_texts",
    "render_readme",
    "save_bundle",
    "storage_tensors",
    "update_manifest",
    "write_part",
    "write_test_metrics",
    "write_z_prior",
]

logger = logging.getLogger(__name__)

DEFAULT_BUNDLE = "cryspnet-mp-v2"
FORMAT_NAME = "cryspnet-gen-bundle"
FORMAT_VERSION = 2  # 2: tree files and calibration temperatures (version-1 bundles still load)
MANIFEST = "manifest.json"
RETRAIN_HINT = "reinstall cryspnet-gen (for a shipped bundle) or retrain it with `cryspnet-gen train`"

WeightsDtype = Literal["float32", "float16"]

#: Suffix of the tree model files written by training (LightGBM's text format, gzipped: a third of the bytes).
TREE_SUFFIX = ".lgb.txt.gz"
#: Suffixes a bundle's tree files may have.
TREE_SUFFIXES = (".lgb.txt", ".lgb.txt.gz")


class BundleError(ValueError):
    """A model bundle is missing, corrupt, truncated, or does not match this code or featurizer."""


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that shape a bundle's weights and features."""
    out: dict[str, str | None] = {}
    for dist in ("torch", "numpy", "pymatgen", "matminer", "cryspnet-gen"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def storage_tensors(tensors: dict[str, torch.Tensor], dtype: WeightsDtype) -> dict[str, torch.Tensor]:
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


def jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
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
    trees: dict[str, str] | None = None,
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
    trees
        File name (``*.lgb.txt``, or ``*.lgb.txt.gz`` to store it gzipped) -> tree model text, listed with its
        sha256 under ``trees``.

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
        save_file(storage_tensors(tdict, weights_dtype), str(target), metadata={"format": "pt"})
        target.chmod(0o644)  # safetensors writes 0600; shipped bundles must be readable by every user
        out["weights"][file_name] = {
            "sha256": file_sha256(target),
            "bytes": target.stat().st_size,
            "dtype": weights_dtype,
        }
    if trees:
        out["trees"] = {}
        for file_name, text in trees.items():
            if "/" in file_name or not file_name.endswith(TREE_SUFFIXES):
                raise ValueError(f"tree file names must be plain '*{TREE_SUFFIX}' names, got {file_name!r}")
            target = folder / file_name
            data = text.encode()
            if file_name.endswith(".gz"):  # mtime 0: the same model gives the same bytes and sha256
                data = gzip.compress(data, compresslevel=9, mtime=0)
            target.write_bytes(data)
            target.chmod(0o644)
            out["trees"][file_name] = {"sha256": file_sha256(target), "bytes": target.stat().st_size}
    out = jsonable(out)
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
            f"*.safetensors weights); {RETRAIN_HINT}"
        )
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{mpath} is not valid JSON ({exc}); {RETRAIN_HINT}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{mpath} is not a {FORMAT_NAME} manifest; {RETRAIN_HINT}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"{mpath} has bundle format version {version!r}, but this cryspnet-gen reads up to "
            f"{FORMAT_VERSION}: upgrade cryspnet-gen or retrain the bundle with `cryspnet-gen train`"
        )
    for key in ("name", "version", "features", "tasks", "weights"):
        if key not in manifest:
            raise BundleError(f"{mpath} lacks the {key!r} entry; {RETRAIN_HINT}")
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
        target = _verified(folder, file_name, info, "weight file")
        try:
            loaded = load_file(str(target))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BundleError(f"weight file {target} cannot be read ({exc}); {RETRAIN_HINT}") from exc
        tensors[file_name] = {k: (v.float() if v.is_floating_point() else v) for k, v in loaded.items()}
    return manifest, tensors


def _verified(folder: Path, file_name: str, info: dict[str, Any], kind: str) -> Path:
    """``folder / file_name`` after checking its size and sha256 against the manifest's ``info``."""
    target = folder / file_name
    if not target.is_file():
        raise BundleError(f"{kind} {target} is missing; {RETRAIN_HINT}")
    size = target.stat().st_size
    if info.get("bytes") is not None and size != info["bytes"]:
        raise BundleError(
            f"{kind} {target} has {size} bytes but the manifest expects {info['bytes']} "
            f"(truncated or replaced); {RETRAIN_HINT}"
        )
    if file_sha256(target) != info.get("sha256"):
        raise BundleError(
            f"{kind} {target} is corrupt or was modified (sha256 does not match {MANIFEST}); {RETRAIN_HINT}"
        )
    return target


def read_tree_texts(path: str | os.PathLike[str], manifest: dict[str, Any]) -> dict[str, str]:
    """The tree model texts a bundle lists under ``trees`` (none for network-only bundles), sha256-checked.

    Raises
    ------
    BundleError
        Naming the file that is missing, corrupt or not text.
    """
    folder = Path(path)
    texts: dict[str, str] = {}
    for file_name, info in (manifest.get("trees") or {}).items():
        target = _verified(folder, file_name, info, "tree file")
        try:
            data = target.read_bytes()
            texts[file_name] = (gzip.decompress(data) if file_name.endswith(".gz") else data).decode()
        except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
            raise BundleError(f"tree file {target} cannot be read ({exc}); {RETRAIN_HINT}") from exc
    return texts


def update_manifest(path: str | os.PathLike[str], key: str, value: Any) -> Path:
    """Set one top-level manifest entry of a bundle (atomically) and regenerate its README; weights untouched.

    Returns
    -------
    Path
        The manifest file.
    """
    folder = Path(path)
    manifest = read_manifest(folder)
    manifest[key] = jsonable(value)
    target = folder / MANIFEST
    tmp = target.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(target)
    (folder / "README.md").write_text(render_readme(manifest))
    return target


def read_part_text(path: str | os.PathLike[str], manifest: dict[str, Any], key: str) -> str | None:
    """The gzipped JSON part a bundle lists under ``key`` (``z_prior``, ``wyckoff_prior``), sha256-checked; None
    for bundles without it.

    Raises
    ------
    BundleError
        If the file is missing, corrupt or not gzipped text.
    """
    info = manifest.get(key)
    if not info:
        return None
    kind = {"z_prior": "Z prior", "wyckoff_prior": "Wyckoff prior"}.get(key, key.replace("_", " "))
    target = _verified(Path(path), str(info.get("file", f"{key}.json.gz")), info, kind)
    try:
        return gzip.decompress(target.read_bytes()).decode()
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise BundleError(f"{kind} {target} cannot be read ({exc}); {RETRAIN_HINT}") from exc


def write_part(path: str | os.PathLike[str], key: str, text: str, *, source: str) -> Path:
    """Store a gzipped JSON part in a bundle (``<key>.json.gz``), then its sha256 and ``source`` (which rows it
    counts) in the manifest under ``key``."""
    folder = Path(path)
    read_manifest(folder)  # a bundle, before anything is written
    file_name = f"{key}.json.gz"
    target = folder / file_name
    tmp = target.with_name(file_name + ".tmp")
    tmp.write_bytes(gzip.compress(text.encode(), mtime=0))
    tmp.replace(target)
    info = {
        "file": file_name,
        "sha256": file_sha256(target),
        "bytes": target.stat().st_size,
        "source": source,
    }
    return update_manifest(folder, key, info)


def write_z_prior(path: str | os.PathLike[str], text: str, *, source: str) -> Path:
    """Store a Z prior (:class:`cryspnet_gen.zprior.ZPrior` JSON) in a bundle (:func:`write_part`)."""
    return write_part(path, "z_prior", text, source=source)


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
    stored = dict(read_manifest(Path(path)).get("metrics") or {})
    stored["test"] = jsonable(metrics)
    return update_manifest(path, "metrics", stored)


_SPLIT_TEXT = {
    "bench": "no formula of the MPTS-52 or MP-20 test sets in training or validation: for benchmarks",
    "full": "all the data, test formulas included: the shipped default",
}


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
        f"- training split: `{m.get('split')}` ({_SPLIT_TEXT.get(str(m.get('split')), 'see the manifest')}); "
        f"labels: `{m.get('labels', 'unknown')}`",
        "- built from Materials Project structures (CC BY 4.0: A. Jain et al., APL Materials 1, 011002, 2013; "
        "https://materialsproject.org), plus COD labels (CC0) for the `mp+cod` and `experimental` label policies; "
        "models trained on them are shared with this attribution",
        f"- created: {m.get('created')}; seed: {m.get('training', {}).get('seed')}",
        f"- features: {len(m.get('features', {}).get('labels', []))} composition features "
        f"(labels and featurizer settings in the manifest)",
    ]
    rows = m.get("training", {}).get("rows", {})
    if rows:
        lines.append("- training rows: " + ", ".join(f"{k}: {v}" for k, v in rows.items()))
    arch = m.get("train_config", {}).get("arch", "cryspnet-mlp")
    lines += ["", "## Models", "", f"- classifier arch: `{arch}`"]
    tasks = m.get("tasks", {})
    for name, entry in tasks.get("bravais", {}).items():
        lines.append(f"- Bravais `{name}`: {_describe_class_model(entry)}")
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
    calibration = m.get("calibration")
    if calibration:
        temps = ", ".join(f"{k} {_fmt(v)}" for k, v in calibration.get("bravais", {}).items())
        per = list((calibration.get("space_group_per_lattice") or {}).values())
        sg = _fmt(calibration.get("space_group"))
        if per:
            sg = (
                _fmt(per[0])
                if _fmt(min(per)) == _fmt(max(per))
                else f"{_fmt(min(per))}-{_fmt(max(per))} per lattice"
            )
        lines.append(
            f"- calibration (temperatures fitted on the validation rows): Bravais {temps}; space groups {sg}"
        )
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
    lines += _feature_weights_section(m)
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
    ]
    lines += _files_section(m)
    return "\n".join(lines)


def _feature_weights_section(m: dict[str, Any]) -> list[str]:
    weights = m.get("feature_weights")
    if not weights:
        return []
    return [
        "",
        "## Feature weights (similar materials)",
        "",
        f"`feature_weights` in the manifest: {weights.get('method', 'permutation importance')} on "
        f"{weights.get('n_rows', '?')} validation compounds, {weights.get('n_repeats', '?')} shuffles each; "
        "`cryspnet-gen similar` compares compounds in the standardized features scaled by them, beside the "
        "predicted space-group distribution "
        "(written by `cryspnet-gen interpret --save-weights`).",
    ]


def _files_section(m: dict[str, Any]) -> list[str]:
    lines = ["", "## Files", "", "| file | bytes | dtype | sha256 |", "|---|---|---|---|"]
    for fname, info in m.get("weights", {}).items():
        lines.append(f"| {fname} | {info.get('bytes')} | {info.get('dtype')} | `{info.get('sha256')}` |")
    for fname, info in (m.get("trees") or {}).items():
        lines.append(f"| {fname} | {info.get('bytes')} | LightGBM text | `{info.get('sha256')}` |")
    wyckoff, z_prior, ranker = m.get("wyckoff_prior"), m.get("z_prior"), m.get("template_ranker")
    for part in (wyckoff, z_prior, ranker):
        if part:
            lines.append(
                f"| {part.get('file')} | {part.get('bytes')} | JSON (gzip) | `{part.get('sha256')}` |"
            )
    if z_prior:
        lines += [
            "",
            f"`{z_prior.get('file')}`: how many formula units per conventional cell (Z) known crystals have, per "
            f"space group and formula type, counted on {z_prior.get('source')} (Materials Project data, CC BY "
            "4.0); predictions list them per group (`z_ranking`) and CRYSPNet candidates try the most frequent "
            'compatible Z first with `z_rule="prior"` (`cryspnet-gen data z-prior`).',
        ]
    if wyckoff:
        lines += [
            "",
            f"`{wyckoff.get('file')}`: the Wyckoff orbits (letters per element) known crystals of each space group "
            f"and formula type occupy, counted on {wyckoff.get('source')} (Materials Project data, CC BY 4.0); "
            'CRYSPNet candidates place atoms on them first (`wyckoff="auto"`, the default; `cryspnet-gen data '
            "z-prior`).",
        ]
    if ranker:
        lines += [
            "",
            f"`{ranker.get('file')}`: the learned ranker of template options (a LightGBM model in its text format "
            "inside a JSON document, with its calibration): the probability that a known structure, substituted "
            "and scaled, is the formula's true structure; the template source ranks by it by default "
            f'(`template_ranking="auto"`). Trained on {ranker.get("source")} (Materials Project data, CC BY 4.0; '
            "`cryspnet-gen templates train-ranker`).",
        ]
    lines += ["", "Package versions: " + ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items()), ""]
    return lines


def _describe_class_model(entry: dict[str, Any]) -> str:
    kind = entry.get("kind", "network")
    if kind == "lightgbm":
        return (
            f"LightGBM, {entry.get('best_iteration')} boosting rounds, {entry.get('n_train')} training rows"
        )
    if kind == "stack":
        parts = " + ".join(
            f"{w:.1f} x ({_describe_class_model(p)})"
            for p, w in zip(entry["parts"], entry["weights"], strict=True)
        )
        return f"stack of {parts}"
    args = entry.get("model_args", {})
    if entry.get("model_class") == "ElementAttention":
        return (
            f"{entry.get('n_members')} element-attention networks (embedding {args.get('dim')}, "
            f"{args.get('rounds')} rounds), {entry.get('n_train')} training rows"
        )
    return f"{entry.get('n_members')} networks, hidden {args.get('hidden')}, {entry.get('n_train')} training rows"


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def bundles_root() -> Path | None:
    try:
        root = resources.files("cryspnet_gen.bundles")
    except ModuleNotFoundError:
        return None
    path = Path(str(root))
    return path if path.is_dir() else None


def available_bundles() -> list[str]:
    """Names of the model bundles shipped in ``cryspnet_gen.bundles`` (folders holding a manifest.json with
    ``tasks``; the prototype library that ships beside them is not a model)."""
    root = bundles_root()
    if root is None:
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file() and _is_model(p / MANIFEST))


def _is_model(manifest: Path) -> bool:
    try:
        return "tasks" in json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
