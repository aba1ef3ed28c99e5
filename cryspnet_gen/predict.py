"""Predictions: formulas -> Bravais lattice, space group, lattice parameters, volume (:class:`Predictor`).

A :class:`Predictor` holds a trained bundle (see :mod:`cryspnet_gen.bundle` for the folder format and its
integrity checks) and ranks every (lattice, space group) pair of a formula; its results are the records of
:mod:`cryspnet_gen.records` (:class:`Prediction`). :func:`load_predictor` loads a shipped bundle by name or any
bundle folder, cached per folder. The feature labels are checked against
:func:`cryspnet_gen.featurize.feature_labels` on load.

torch is imported inside the functions that need it, so :class:`Prediction` can be used (e.g. deserialised by
jobflow) without loading torch.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np

from cryspnet_gen.bundle import (
    DEFAULT_BUNDLE,
    MANIFEST,
    RETRAIN_HINT,
    BundleError,
    available_bundles,
    bundles_root,
    read_bundle,
    read_part_text,
    read_tree_texts,
)
from cryspnet_gen.formula import BravaisModel, subset_mask
from cryspnet_gen.records import LatticePrediction, Prediction
from cryspnet_gen.runtime import forward_moved, torch_threads

if TYPE_CHECKING:
    import os

    import torch

    from cryspnet_gen.nn import Ensemble
    from cryspnet_gen.trees import TreeClassifier

__all__ = [
    "DEFAULT_BUNDLE",
    "BundleError",
    "Prediction",
    "Predictor",
    "available_bundles",
    "load_predictor",
    "predict_all_pairs",
    "predictor_for",
]

# Names that lived here before the layout split; ``from cryspnet_gen.predict import save_bundle`` keeps working.
_MOVED = {
    "cryspnet_gen.bundle": (
        "FORMAT_NAME",
        "FORMAT_VERSION",
        "MANIFEST",
        "WeightsDtype",
        "read_bundle",
        "read_manifest",
        "save_bundle",
        "write_test_metrics",
    ),
    "cryspnet_gen.formula": ("BravaisModel", "is_metal", "is_oxide", "subset_mask"),
    "cryspnet_gen.records": ("LatticePrediction", "RankedGroup", "predictions_to_dataframe"),
}

__getattr__ = forward_moved("cryspnet_gen.predict", _MOVED)


logger = logging.getLogger(__name__)

# Rows pushed through a network at once: bounds the activations' memory on large batches.
_CHUNK = 16384


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


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class _ClassTask:
    """A space-group or Bravais model: a network ensemble, a columns slice of a shared one, or a prior.

    ``temperature`` (fitted on validation rows when the bundle was trained, 1 for older bundles) calibrates
    the mean probabilities (:func:`cryspnet_gen.calibration.apply_temperature`).
    """

    def __init__(
        self,
        classes: Sequence[Any],
        *,
        ensemble: Ensemble | None = None,
        columns: np.ndarray | None = None,
        probabilities: Sequence[float] | None = None,
        temperature: float = 1.0,
    ) -> None:
        self.classes = list(classes)
        self.ensemble = ensemble
        self.columns = columns
        self.probabilities = None if probabilities is None else np.asarray(probabilities, dtype=np.float64)
        self.temperature = float(temperature)

    def raw_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread over the members, before calibration."""
        if self.ensemble is None:
            assert self.probabilities is not None
            mean = np.broadcast_to(self.probabilities, (len(X), len(self.classes))).copy()
            return mean, np.zeros_like(mean)
        logits = _run_ensemble(self.ensemble, X)
        if self.columns is not None:
            logits = logits[..., self.columns]
        p = _softmax(logits.astype(np.float64))
        return p.mean(axis=0), p.std(axis=0)

    def proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated mean probabilities ``(n, k)`` and the members' spread."""
        mean, std = self.raw_proba(X)
        if self.temperature != 1.0:
            from cryspnet_gen.calibration import apply_temperature

            mean = apply_temperature(mean, self.temperature)
        return mean, std


class _TreeTask(_ClassTask):
    """A gradient-boosted tree classifier (one model: no spread)."""

    def __init__(
        self, classes: Sequence[Any], model: TreeClassifier, *, n_features: int, temperature: float = 1.0
    ) -> None:
        super().__init__(classes, temperature=temperature)
        self.model = model
        self.n_features = int(n_features)

    def raw_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = self.model.proba(X[:, : self.n_features])  # without the element encoding, if any
        return mean, np.zeros_like(mean)


class _StackTask(_ClassTask):
    """A weighted mean of other class models' calibrated probabilities (weights chosen on validation)."""

    def __init__(
        self,
        classes: Sequence[Any],
        parts: Sequence[_ClassTask],
        weights: Sequence[float],
        *,
        temperature: float = 1.0,
    ) -> None:
        super().__init__(classes, temperature=temperature)
        self.parts = list(parts)
        self.weights = [float(w) for w in weights]

    def raw_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = np.zeros((len(X), len(self.classes)))
        std = np.zeros_like(mean)
        for part, w in zip(self.parts, self.weights, strict=True):
            if w == 0.0:
                continue
            m, s = part.proba(X)
            mean += w * m
            std += w * s
        return mean, std


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


def _read_prior(kind: Any, text: str | None, what: str) -> Any:
    """``kind.from_json(text)`` (None for None), a :class:`BundleError` naming ``what`` when unreadable."""
    if text is None:
        return None
    try:
        return kind.from_json(text)
    except ValueError as exc:
        raise BundleError(f"{what} unreadable ({exc}); {RETRAIN_HINT}") from exc


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
    trees
        Tree file name -> LightGBM model text (:func:`cryspnet_gen.bundle.read_tree_texts`), for bundles whose
        classifiers are trees or stacks.
    z_prior, wyckoff_prior, template_ranker
        The bundle's Z prior, Wyckoff prior and learned template ranker as JSON
        (:func:`cryspnet_gen.bundle.read_part_text`), if it has them.

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
        trees: dict[str, str] | None = None,
        z_prior: str | None = None,
        wyckoff_prior: str | None = None,
        template_ranker: str | None = None,
    ) -> None:
        from cryspnet_gen.rankermodel import TemplateRankerModel
        from cryspnet_gen.symmetry import BRAVAIS_LATTICES, PARAMETER_NAMES, space_groups_of
        from cryspnet_gen.wyckoffprior import WyckoffPrior
        from cryspnet_gen.zprior import ZPrior

        self.manifest = manifest
        self.path = None if path is None else Path(path)
        self.name: str = manifest["name"]
        self.version: str = str(manifest["version"])
        self.feature_labels: list[str] = list(manifest["features"]["labels"])
        #: Elements per formula in the element encoding that follows the features in the classifiers' input
        #: (:func:`cryspnet_gen.formula.element_encoding`); 0 for bundles without an element-attention model.
        self.element_slots: int = int(manifest["features"].get("element_slots", 0))
        #: torch intra-op threads while predicting, restored afterwards (None: leave torch's setting). The
        #: networks are small: one thread runs them about as fast as several on an idle machine, and 20x faster
        #: than two on a busy 2-core machine, where OpenMP threads wait for each other.
        self.num_threads: int | None = 1
        self.bravais_lattices: tuple[str, ...] = tuple(BRAVAIS_LATTICES)
        where = self.path if self.path is not None else f"bundle {self.name!r}"
        #: Z per (space group, formula) counted on the bundle's training rows, and the Wyckoff assignments of its
        #: training formulas (None for bundles without them; :mod:`cryspnet_gen.zprior`,
        #: :mod:`cryspnet_gen.wyckoffprior`).
        self.z_prior: ZPrior | None = _read_prior(ZPrior, z_prior, f"{where}: Z prior")
        self.wyckoff_prior: WyckoffPrior | None = _read_prior(
            WyckoffPrior, wyckoff_prior, f"{where}: Wyckoff prior"
        )
        #: The learned ranker of template options trained on this bundle's probabilities (issue 18; None for
        #: bundles without one: the template source then uses the hand-weighted score).
        self.template_ranker: TemplateRankerModel | None = _read_prior(
            TemplateRankerModel, template_ranker, f"{where}: template ranker"
        )
        if check_features:
            self._check_features(where)
        tasks = manifest["tasks"]

        self._trees = dict(trees or {})
        self._tensors = tensors
        self._bravais: dict[str, _ClassTask] = {}
        for model, entry in tasks["bravais"].items():
            classes = entry["classes"]
            if list(classes) != list(BRAVAIS_LATTICES):
                raise BundleError(f"{where}: Bravais model {model!r} has classes {classes}, expected the 14")
            self._bravais[model] = self._class_task(entry, tensors, entry.get("file"), "", where)

        sg_task = tasks["space_group"]
        self._shared = None
        if sg_task.get("shared") is not None:
            self._shared = self._ensemble(sg_task["shared"], tensors, sg_task["file"], "shared.", where)
        self._space_group: dict[str, _ClassTask] = {}
        for lat in BRAVAIS_LATTICES:
            entry = sg_task["lattices"].get(lat)
            if entry is None:
                groups = list(space_groups_of(lat))
                entry = {
                    "kind": "prior",
                    "classes": groups,
                    "probabilities": [1.0 / len(groups)] * len(groups),
                }
            self._space_group[lat] = self._class_task(entry, tensors, sg_task.get("file"), f"{lat}.", where)

        lat_task = tasks["lattice"]
        self._lattice: dict[str, _RegressionTask] = {}
        for lat in BRAVAIS_LATTICES:
            names = list(PARAMETER_NAMES[lat])
            entry = lat_task["lattices"].get(lat)
            if entry is not None and list(entry["parameter_names"]) != names:
                raise BundleError(
                    f"{where}: lattice {lat} parameters {entry['parameter_names']} differ from this "
                    f"cryspnet-gen's {names}; {RETRAIN_HINT}"
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

    def _class_task(
        self,
        entry: dict[str, Any],
        tensors: dict[str, dict[str, torch.Tensor]],
        file: str | None,
        prefix: str,
        where: object,
    ) -> _ClassTask:
        """The class model of one manifest entry (``kind``: network (the default), shared, prior, lightgbm or
        stack)."""
        kind = entry.get("kind", "network")
        classes = entry["classes"]
        temperature = float(entry.get("temperature", 1.0))
        if kind == "prior":
            return _ClassTask(classes, probabilities=entry["probabilities"], temperature=temperature)
        if kind == "network":
            file = entry.get("file", file)
            if file is None:
                raise BundleError(f"{where}: network entry {prefix or 'bravais'} names no weight file")
            ens = self._ensemble(entry, tensors, file, prefix, where)
            return _ClassTask(classes, ensemble=ens, temperature=temperature)
        if kind == "shared":
            if self._shared is None:
                raise BundleError(f"{where}: space group {prefix} refers to a missing shared network")
            cols = np.asarray(entry["columns"], dtype=np.int64)
            return _ClassTask(classes, ensemble=self._shared, columns=cols, temperature=temperature)
        if kind == "lightgbm":
            from cryspnet_gen.trees import TreeClassifier, TreeModelError

            name = entry.get("tree_file")
            if name not in self._trees:
                raise BundleError(f"{where}: tree file {name} is not listed in the manifest; {RETRAIN_HINT}")
            try:
                model = TreeClassifier(
                    self._trees[name], n_classes=len(classes), n_features=len(self.feature_labels)
                )
            except TreeModelError as exc:
                raise BundleError(f"{where}: tree file {name}: {exc}; {RETRAIN_HINT}") from exc
            return _TreeTask(classes, model, n_features=len(self.feature_labels), temperature=temperature)
        if kind == "stack":
            parts = [self._class_task(part, tensors, file, prefix, where) for part in entry["parts"]]
            if any(list(part.classes) != list(classes) for part in parts):
                raise BundleError(
                    f"{where}: the parts of stacked model {prefix or 'bravais'} differ in classes"
                )
            return _StackTask(classes, parts, entry["weights"], temperature=temperature)
        raise BundleError(
            f"{where}: unknown class model kind {kind!r} ({prefix or 'bravais'}); {RETRAIN_HINT}"
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
            raise BundleError(f"{where}: weight file {file} is not listed in the manifest; {RETRAIN_HINT}")
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
                f"{RETRAIN_HINT}"
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

    def model_inputs(self, X: np.ndarray, formulas: Sequence[object]) -> np.ndarray:
        """What this bundle's classifiers read: the features ``X``, followed by the element encoding of
        ``formulas`` when the bundle has an element-attention model (``X`` itself otherwise, or when it already
        carries the encoding). Pass the result wherever the methods below take ``X``."""
        arr = np.asarray(X, dtype=np.float32)
        if not self.element_slots or arr.ndim != 2 or arr.shape[1] != len(self.feature_labels):
            return arr
        if len(formulas) != len(arr):
            raise ValueError(f"{len(arr)} feature rows for {len(formulas)} formulas")
        from cryspnet_gen.formula import element_encoding

        return np.hstack([arr, element_encoding(list(formulas), self.element_slots)])

    def _features(self, X: np.ndarray, *, classifiers: bool = False) -> np.ndarray:
        """``X`` checked: the features, or the features and the element encoding (:meth:`model_inputs`), which
        the classifiers of an element-attention bundle need (``classifiers=True``)."""
        arr = np.asarray(X, dtype=np.float32)
        n = len(self.feature_labels)
        widths = (n, n + 2 * self.element_slots) if self.element_slots else (n,)
        if arr.ndim != 2 or arr.shape[1] not in widths:
            raise ValueError(
                f"expected features of shape (n, {' or '.join(map(str, widths))}), got {arr.shape}"
            )
        if classifiers and arr.shape[1] != widths[-1]:
            raise ValueError(
                f"bundle {self.name!r} has an element-attention model, which reads the formulas: pass "
                f"predictor.model_inputs(X, formulas) instead of the features alone"
            )
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
        with torch_threads(self.num_threads):
            return self._bravais_model(model).proba(self._features(X, classifiers=True))

    def space_group_probabilities(
        self, X: np.ndarray, bravais: str
    ) -> tuple[list[int], np.ndarray, np.ndarray]:
        """``(groups, mean, std)``: P(group | ``bravais``) over that lattice's modelled groups."""
        task = self._space_group[self._check_bravais(bravais)]
        with torch_threads(self.num_threads):
            mean, std = task.proba(self._features(X, classifiers=True))
        return [int(g) for g in task.classes], mean, std

    def space_group_classes(self, bravais: str) -> list[int]:
        """The space groups ``bravais``'s model ranks (its columns in :meth:`space_group_probabilities`)."""
        return [int(g) for g in self._space_group[self._check_bravais(bravais)].classes]

    def feature_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each feature over the bundle's training rows, ``(d,)`` each.

        They are the volume network's standardization buffers (every bundle has that network), so they need no
        data folder.
        """
        member = self._volume_members()[0]
        return (
            member.standardizer.mean.detach().cpu().numpy().astype(np.float64),
            member.standardizer.std.detach().cpu().numpy().astype(np.float64),
        )

    def hidden_representation(self, X: np.ndarray) -> np.ndarray:
        """The volume networks' last hidden layer, members side by side: ``(n, sum of widths)``.

        It is the one learned representation every bundle has for every compound (the classifiers may be trees
        or subset networks); :mod:`cryspnet_gen.explain` compares it with feature space.
        """
        import torch

        X = self._features(X)
        members = []
        with torch_threads(self.num_threads), torch.no_grad():
            for member in self._volume_members():
                chunks = [
                    member.trunk(member.standardizer(torch.as_tensor(X[start : start + _CHUNK]))).numpy()
                    for start in range(0, max(len(X), 1), _CHUNK)
                ]
                members.append(np.concatenate(chunks))
        return np.concatenate(members, axis=1)

    def _volume_members(self) -> list[Any]:
        ensemble = self._volume.ensemble
        assert ensemble is not None  # a bundle always has a volume network
        return list(ensemble.members)

    def lattice_parameter_members(self, X: np.ndarray, bravais: str) -> np.ndarray:
        """Per-member lattice parameters ``(n_members, n, k)`` for ``bravais`` (NaN when not modelled)."""
        task = self._lattice[self._check_bravais(bravais)]
        X = self._features(X)
        with torch_threads(self.num_threads):
            members = task.members(X)
        if members is None:
            return np.full((1, len(X), len(task.names)), np.nan)
        return np.asarray(members)

    def volume_per_atom(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Volume per atom (Å^3) ensemble mean and std, ``(n,)`` each."""
        with torch_threads(self.num_threads):
            members = self._volume.members(self._features(X))
        assert members is not None
        return members[..., 0].mean(axis=0), members[..., 0].std(axis=0)

    def entry_probabilities(self, entry: dict[str, Any], X: np.ndarray, *, prefix: str = "") -> np.ndarray:
        """Probabilities ``(n, k)`` of a class-model manifest entry of this bundle, before the entry's own
        temperature (the parts of a stack keep theirs): what training fits stacking weights and temperatures
        on.

        Parameters
        ----------
        entry
            A Bravais-model or space-group entry (``kind`` network, shared, prior, lightgbm or stack).
        X
            Features.
        prefix
            The tensor-name prefix of a space-group network, ``"<lattice>."``.
        """
        file = self.manifest["tasks"]["space_group"].get("file")
        task = self._class_task(entry, self._tensors, entry.get("file", file), prefix, self.name)
        with torch_threads(self.num_threads):
            return task.raw_proba(self._features(X, classifiers=True))[0]

    def _check_bravais(self, bravais: str) -> str:
        if bravais not in self.bravais_lattices:
            raise ValueError(f"Unknown {bravais=}; choose from {self.bravais_lattices}")
        return bravais

    def _formula_types(self, formulas: Sequence[str], good: np.ndarray) -> list[tuple[str, int] | None]:
        """``(anonymous formula, atoms per formula unit)`` of each good row, what the Z prior ranks by (None
        elsewhere, and for every row without a Z prior)."""
        if self.z_prior is None:
            return [None] * len(formulas)
        from cryspnet_gen.formula import formula_unit

        types: list[tuple[str, int] | None] = []
        for formula, ok in zip(formulas, good, strict=True):
            try:
                fu = formula_unit(formula, 10_000) if ok else None
            except ValueError:
                fu = None
            types.append(None if fu is None else (fu.anonymous, fu.n_atoms))
        return types

    def _z_ranking(self, kind: tuple[str, int] | None, groups: Sequence[int]) -> list[list[int]]:
        if self.z_prior is None or kind is None:
            return []
        return [self.z_prior.ranking_of(int(g), *kind) for g in groups]

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
        X = self._features(self.model_inputs(X, formulas), classifiers=True)
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

        with torch_threads(self.num_threads):
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

        types = self._formula_types(formulas, good)
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
                        z_ranking=self._z_ranking(types[i], d["groups"][r]),
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


@functools.lru_cache(maxsize=8)
def _load_cached(resolved: str, stamp: tuple[int, int]) -> Predictor:
    # ``stamp`` (the manifest's mtime and size) makes a bundle rewritten in place load afresh.
    manifest, tensors = read_bundle(resolved)
    predictor = Predictor(
        manifest,
        tensors,
        path=resolved,
        trees=read_tree_texts(resolved, manifest),
        z_prior=read_part_text(resolved, manifest, "z_prior"),
        wyckoff_prior=read_part_text(resolved, manifest, "wyckoff_prior"),
        template_ranker=read_part_text(resolved, manifest, "template_ranker"),
    )
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
    root = bundles_root()
    assert root is not None
    return _load_folder(root / name)


def predictor_for(model: Predictor | str | os.PathLike[str] | None = None) -> Predictor:
    """A predictor from what a user gives: a loaded :class:`Predictor`, a shipped bundle's name, a bundle folder,
    or None (the shipped default)."""
    if isinstance(model, Predictor):
        return model
    if model is None or str(model) in available_bundles():
        return load_predictor(None if model is None else str(model))
    return load_predictor(path=model)


def _load_folder(folder: Path) -> Predictor:
    resolved = folder.resolve()
    try:
        st = (resolved / MANIFEST).stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = (0, 0)  # read_manifest raises the clear error
    return _load_cached(str(resolved), stamp)


def predict_all_pairs(
    predictor: Predictor | None, formulas: Sequence[str], model: BravaisModel = "master"
) -> list[Prediction]:
    """Predictions with every Bravais lattice and every modelled space group, so that a walk over the ranked
    (lattice, group) pairs can go on as far as it needs. ``predictor=None`` loads the shipped default."""
    if predictor is None:
        predictor = load_predictor()
    return predictor.predict(list(formulas), top_bravais=14, top_space_groups=230, model=model)
