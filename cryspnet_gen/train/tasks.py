"""The networks of a bundle, task by task: the rows and targets each trains on and what the manifest records.

Following CRYSPNet (Liang et al., Phys. Rev. Materials 4, 123802, 2020), a bundle holds

- a Bravais-lattice classifier (14 classes) as an ensemble of members, each trained on a bootstrap resample of
  the training rows with minority-class oversampling ("vertical voting"; here the members' softmax
  probabilities are averaged), plus the paper's Metal and Oxide Bravais models trained on those subsets;
- per Bravais lattice, a space-group classifier over the groups of that lattice seen in training (a constant
  when only one group is seen, a frequency prior when too few rows) and a lattice-parameter regressor over
  ``symmetry.PARAMETER_NAMES[bravais]`` trained with log-MSE;
- beyond the paper, a volume-per-atom regressor; every task is an ensemble whose member spread is reported.

Each task is planned as a :class:`TaskPlan`: its manifest section and its parts, each a fixed entry (a
frequency prior, stored parameters, no model) or a :class:`Network` to train. :class:`TaskTrainer` trains any
plan, so the bundle assembly only loops over the tasks.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cryspnet_gen.formula import subset_mask
from cryspnet_gen.nn import ElementAttention, output_range
from cryspnet_gen.symmetry import BRAVAIS_LATTICES, PARAMETER_NAMES, space_groups_of, to_parameters
from cryspnet_gen.train.engine import (
    LossFn,
    Progress,
    ce_loss,
    class_weights,
    log_mse_loss,
    make_classifier,
    make_regressor,
    masked_ce_loss,
    prefixed,
    train_ensemble,
)

if TYPE_CHECKING:
    from cryspnet_gen.nn import Ensemble
    from cryspnet_gen.train.config import TrainConfig
    from cryspnet_gen.train.table import TrainingRows

__all__ = [
    "Network",
    "Part",
    "TaskPlan",
    "TaskTrainer",
    "bravais_subsets",
    "bravais_task",
    "lattice_parameters",
    "lattice_task",
    "space_group_prior",
    "space_group_task",
    "volume_task",
]

logger = logging.getLogger(__name__)

# Added to the logits of groups outside a row's lattice in the shared-trunk space-group model.
_MASKED = -1e4


@dataclass
class Network:
    """One ensemble to train: a classifier, or a regressor when ``output_range`` is given.

    Attributes
    ----------
    key
        Task keys, e.g. ``("lattice", "hR")``: mixed into ``config.seed`` for the ensemble's randomness and,
        joined by ``/``, its label in progress bars and logs.
    n_outputs
        Classes of a classifier, outputs of a regressor.
    hidden
        Hidden widths.
    n_members
        Ensemble size.
    loss
        ``loss(module, x_batch, [target_batch, ...])``.
    targets
        Per-row targets aligned with the features: class indices (a classifier; the shared-trunk space-group
        model adds each row's lattice index) or positive values (a regressor; NaN where unknown).
    train_idx, val_idx
        Rows to train on and validation rows for early stopping.
    sample_weight
        Resampling weight of each training row (oversampling), or None.
    output_range
        ``(lo, hi)`` of a regressor's outputs; None for a classifier.
    """

    key: tuple[str, ...]
    n_outputs: int
    hidden: list[int]
    n_members: int
    loss: LossFn
    targets: list[np.ndarray]
    train_idx: np.ndarray
    val_idx: np.ndarray
    sample_weight: np.ndarray | None = None
    output_range: tuple[np.ndarray, np.ndarray] | None = None


def _task_settings(task: str, config: TrainConfig) -> tuple[list[int], int, float]:
    """Hidden widths, ensemble size and oversampling power (0 for a regressor) of ``task``'s networks."""
    return {
        "bravais": (config.bravais_hidden, config.n_members, config.oversample_power),
        "space_group": (
            config.space_group_hidden,
            config.n_members_space_group,
            config.space_group_oversample_power,
        ),
        "lattice": (config.lattice_hidden, config.n_members_lattice, 0.0),
        "volume": (config.volume_hidden, config.n_members_volume, 0.0),
    }[task]


def _classifier(
    key: tuple[str, ...],
    n_classes: int,
    targets: list[np.ndarray],
    tr: np.ndarray,
    va: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    loss: LossFn = ce_loss,
) -> Network:
    """A classifier of task ``key[0]`` oversampling the rare ``labels`` of its training rows ``tr``."""
    hidden, n_members, power = _task_settings(key[0], config)
    weights = class_weights(labels[tr], power)
    return Network(key, n_classes, hidden, n_members, loss, targets, tr, va, sample_weight=weights)


def _regressor(
    key: tuple[str, ...],
    target: np.ndarray,
    tr: np.ndarray,
    va: np.ndarray,
    out_range: tuple[np.ndarray, np.ndarray],
    config: TrainConfig,
) -> Network:
    """A log-MSE regressor of task ``key[0]`` of the ``(n, k)`` ``target`` with outputs in ``out_range``."""
    hidden, n_members, _ = _task_settings(key[0], config)
    return Network(
        key, target.shape[1], hidden, n_members, log_mse_loss, [target], tr, va, output_range=out_range
    )


@dataclass
class Part:
    """One entry of a task's manifest section: fixed, or completed by training ``network``.

    Attributes
    ----------
    path
        Where the entry goes in the section, e.g. ``("lattices", "mP")``; ``()`` merges it into the section.
    entry
        The fields known before training.
    network
        The ensemble to train (its summary is added to ``entry``), or None.
    file
        Weight file of the network (default: the task's).
    prefix
        Prefix of the network's tensor names in the file.
    """

    path: tuple[str, ...]
    entry: dict[str, Any]
    network: Network | None = None
    file: str | None = None
    prefix: str = ""


@dataclass
class TaskPlan:
    """Everything to train for one task of the bundle and how its manifest section is laid out.

    Attributes
    ----------
    name
        The task's key in the manifest's ``tasks``.
    section
        The task's manifest section before its entries are placed.
    parts
        Entries in manifest order.
    rows
        Training-row counts recorded under ``training`` / ``rows`` in the manifest.
    file
        The task's weight file, written even when no network goes into it; None when each part names its own.
    """

    name: str
    section: dict[str, Any]
    parts: list[Part]
    rows: dict[str, int]
    file: str | None = None

    @property
    def networks(self) -> list[Network]:
        """The networks to train."""
        return [p.network for p in self.parts if p.network is not None]


@dataclass
class TaskTrainer:
    """Trains the networks of :class:`TaskPlan` s on one feature matrix.

    Attributes
    ----------
    X
        All features as a tensor on ``config.device``.
    norm_state
        State dict of the :class:`~cryspnet_gen.nn.Standardizer` fitted on the training rows.
    config
        Hyperparameters.
    progress
        Progress bars to advance, or None.
    """

    X: torch.Tensor
    norm_state: dict[str, torch.Tensor]
    config: TrainConfig
    progress: Progress | None = None

    def train_task(self, plan: TaskPlan, tensors: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
        """Train every network of ``plan``, add their weights to ``tensors`` and return the manifest section."""
        section = copy.deepcopy(plan.section)
        if plan.file is not None:
            tensors.setdefault(plan.file, {})
        for part in plan.parts:
            entry = dict(part.entry)
            if part.network is not None:
                ens, fields = self.train_network(part.network)
                file = part.file or plan.file
                if file is None:
                    raise ValueError(f"{plan.name}: no weight file for network {part.network.key}")
                tensors.setdefault(file, {}).update(prefixed(ens, part.prefix))
                entry.update(fields)
            if not part.path:
                section.update(entry)
                continue
            target = section
            for key in part.path[:-1]:
                target = target[key]
            target[part.path[-1]] = entry
        return section

    def train_network(self, net: Network) -> tuple[Ensemble, dict[str, Any]]:
        """Train one ensemble; return it and its manifest fields (class, arguments, members' summaries)."""
        config = self.config
        n_features = int(self.norm_state["mean"].shape[0])  # X may carry the element encoding after them
        args: dict[str, Any] = {"n_features": n_features, "hidden": net.hidden, "dropout": config.dropout}
        fields: dict[str, Any]
        make: Callable[[], torch.nn.Module]
        if net.output_range is None and config.attention:
            args = {
                "n_features": n_features,
                "n_classes": net.n_outputs,
                "max_elements": config.element_slots,
                "dim": config.attention_dim,
                "rounds": config.attention_rounds,
                "hidden": config.attention_hidden,
                "dropout": config.dropout,
            }
            make = functools.partial(ElementAttention, **args)
            targets = [torch.as_tensor(y, device=config.device) for y in net.targets]
            fields = {"model_class": "ElementAttention"}
            config = config.for_attention()
        elif net.output_range is None:
            make = functools.partial(make_classifier, {**args, "n_classes": net.n_outputs}, self.norm_state)
            targets = [torch.as_tensor(y, device=config.device) for y in net.targets]
            fields = {"model_class": "Classifier"}
        else:
            lo, hi = net.output_range
            args.update(n_outputs=net.n_outputs, scale=config.regressor_scale)
            make = functools.partial(make_regressor, args, self.norm_state, lo, hi)
            targets = [
                torch.as_tensor(np.nan_to_num(y, nan=1.0), dtype=torch.float32, device=config.device)
                for y in net.targets
            ]
            fields = {"range": {"lo": lo.tolist(), "hi": hi.tolist()}, "model_class": "Regressor"}
        ens, infos = train_ensemble(
            make,
            net.loss,
            self.X,
            targets,
            net.train_idx,
            net.val_idx,
            n_members=net.n_members,
            config=config,
            seed_keys=net.key,
            sample_weight=net.sample_weight,
            progress=self.progress,
            desc="/".join(net.key),
        )
        fields.update(
            model_args=ens.members[0].model_args,
            n_members=net.n_members,
            n_train=len(net.train_idx),
            members=infos,
        )
        return ens, fields


# ---------------------------------------------------------------------------------------------------------
# Bravais lattice
# ---------------------------------------------------------------------------------------------------------


def bravais_subsets(rows: TrainingRows, config: TrainConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Training and validation rows of each Bravais model (master and ``config.subset_models``).

    A subset model with fewer than ``config.min_rows`` training rows or a single lattice is skipped.

    Raises
    ------
    ValueError
        When the master model has too few rows or lattices.
    """
    lat_ok = rows.bravais_idx >= 0
    subsets: dict[str, np.ndarray] = {"master": np.ones(len(rows.formulas), dtype=bool)}
    for sub in config.subset_models:
        subsets[sub] = subset_mask(rows.formulas, sub)  # type: ignore[arg-type]
    plan = {}
    for model, mask in subsets.items():
        tr = np.flatnonzero(rows.train & lat_ok & mask)
        if len(np.unique(rows.bravais_idx[tr])) < 2 or len(tr) < config.min_rows:
            if model == "master":
                raise ValueError(f"the master Bravais model needs >= {config.min_rows} rows of >= 2 lattices")
            logger.warning("skipping the %s Bravais model: %d training rows", model, len(tr))
            continue
        plan[model] = (tr, np.flatnonzero(rows.val & lat_ok & mask))
    return plan


def bravais_task(
    rows: TrainingRows, subsets: dict[str, tuple[np.ndarray, np.ndarray]], config: TrainConfig
) -> TaskPlan:
    """One 14-class classifier per Bravais model, each in its own weight file."""
    y = np.maximum(rows.bravais_idx, 0)
    parts = []
    for model, (tr, va) in subsets.items():
        file = f"bravais_{model}.safetensors"
        net = _classifier(("bravais", model), len(BRAVAIS_LATTICES), [y], tr, va, rows.bravais_idx, config)
        entry = {"file": file, "classes": list(BRAVAIS_LATTICES), "oversample_power": config.oversample_power}
        parts.append(Part((model,), entry, net, file=file))
    counts = {f"bravais_{model}": len(tr) for model, (tr, _) in subsets.items()}
    return TaskPlan("bravais", {}, parts, counts)


# ---------------------------------------------------------------------------------------------------------
# space group
# ---------------------------------------------------------------------------------------------------------

SpaceGroupRows = dict[str, tuple[np.ndarray, np.ndarray, list[int]]]


def space_group_task(rows: TrainingRows, config: TrainConfig) -> TaskPlan:
    """Space-group models per lattice (``config.space_group_arch``): networks, shared-trunk heads or priors."""
    sg_ok = rows.space_group > 0
    per_lattice: SpaceGroupRows = {}
    for j, lat in enumerate(BRAVAIS_LATTICES):
        tr = np.flatnonzero(rows.train & sg_ok & (rows.bravais_idx == j))
        va = np.flatnonzero(rows.val & sg_ok & (rows.bravais_idx == j))
        per_lattice[lat] = (tr, va, sorted(int(g) for g in np.unique(rows.space_group[tr])))
    if config.space_group_arch == "per_lattice":
        parts = [
            _space_group_part(lat, tr, va, groups, rows, config)
            for lat, (tr, va, groups) in per_lattice.items()
        ]
    else:
        parts = _shared_space_group_parts(per_lattice, rows, config)
    file = "space_group.safetensors"
    section: dict[str, Any] = {"file": file, "arch": config.space_group_arch, "shared": None, "lattices": {}}
    counts = {"space_group": sum(len(tr) for tr, _, _ in per_lattice.values())}
    return TaskPlan("space_group", section, parts, counts, file=file)


def _space_group_part(
    lat: str, tr: np.ndarray, va: np.ndarray, groups: list[int], rows: TrainingRows, config: TrainConfig
) -> Part:
    """Lattice ``lat``'s own classifier over its groups seen in training, or a prior when too few rows/groups."""
    if len(groups) <= 1 or len(tr) < config.min_rows:
        return Part(("lattices", lat), space_group_prior(lat, groups, rows.space_group[tr]))
    index = {g: i for i, g in enumerate(groups)}
    y = np.asarray([index.get(int(g), 0) for g in rows.space_group])
    # Validation rows of groups unseen in training cannot be scored by the loss.
    va_in = va[np.isin(rows.space_group[va], groups)]
    net = _classifier(("space_group", lat), len(groups), [y], tr, va_in, rows.space_group, config)
    return Part(("lattices", lat), {"kind": "network", "classes": groups}, net, prefix=f"{lat}.")


def _shared_space_group_parts(
    per_lattice: SpaceGroupRows, rows: TrainingRows, config: TrainConfig
) -> list[Part]:
    """One classifier over all groups; lattice ``L``'s head is the slice of logits of ``L``'s groups."""
    heads = {lat: groups for lat, (_, _, groups) in per_lattice.items() if len(groups) > 1}
    parts = [
        Part(("lattices", lat), space_group_prior(lat, groups, rows.space_group[tr]))
        for lat, (tr, _, groups) in per_lattice.items()
        if lat not in heads
    ]
    if not heads:
        return parts
    classes = sorted(g for groups in heads.values() for g in groups)
    column = {g: i for i, g in enumerate(classes)}
    mask = np.full((len(BRAVAIS_LATTICES), len(classes)), _MASKED, dtype=np.float32)
    for lat, groups in heads.items():
        mask[BRAVAIS_LATTICES.index(lat), [column[g] for g in groups]] = 0.0
    tr = np.concatenate([per_lattice[lat][0] for lat in heads])
    va = np.concatenate([per_lattice[lat][1] for lat in heads])
    targets = [np.asarray([column.get(int(g), 0) for g in rows.space_group]), np.maximum(rows.bravais_idx, 0)]
    va = va[np.isin(rows.space_group[va], classes)]
    loss = masked_ce_loss(torch.as_tensor(mask, device=config.device))
    net = _classifier(
        ("space_group", "shared"), len(classes), targets, tr, va, rows.space_group, config, loss
    )
    parts.append(Part(("shared",), {"classes": classes}, net, prefix="shared."))
    for lat, groups in heads.items():
        entry = {
            "kind": "shared",
            "classes": groups,
            "columns": [column[g] for g in groups],
            "n_train": len(per_lattice[lat][0]),
        }
        parts.append(Part(("lattices", lat), entry))
    return parts


def space_group_prior(lat: str, groups: Sequence[int], y: np.ndarray) -> dict[str, Any]:
    """A frequency prior over the groups seen (uniform over all groups of the lattice when none)."""
    if not groups:
        all_groups = [int(g) for g in space_groups_of(lat)]
        return {
            "kind": "prior",
            "classes": all_groups,
            "probabilities": [1.0 / len(all_groups)] * len(all_groups),
            "n_train": 0,
        }
    counts = np.asarray([(y == g).sum() for g in groups], dtype=np.float64)
    return {
        "kind": "prior",
        "classes": list(groups),
        "probabilities": (counts / counts.sum()).tolist(),
        "n_train": len(y),
    }


# ---------------------------------------------------------------------------------------------------------
# lattice parameters and volume
# ---------------------------------------------------------------------------------------------------------


def lattice_parameters(rows: TrainingRows) -> dict[str, np.ndarray]:
    """Per lattice, the ``(n, k)`` parameters (``symmetry.PARAMETER_NAMES``) of its train/val rows, else NaN."""
    n = len(rows.formulas)
    out = {}
    for j, lat in enumerate(BRAVAIS_LATTICES):
        sel = np.flatnonzero(rows.cell_ok & (rows.bravais_idx == j) & (rows.train | rows.val))
        params = np.full((n, len(PARAMETER_NAMES[lat])), np.nan)
        if len(sel):
            params[sel] = np.asarray(to_parameters(lat, rows.cell[sel]), dtype=np.float64).reshape(
                len(sel), -1
            )
        out[lat] = params
    return out


def lattice_task(rows: TrainingRows, params: dict[str, np.ndarray], config: TrainConfig) -> TaskPlan:
    """A log-MSE regressor of the lattice parameters per lattice (stored samples when too few rows)."""
    parts, n_train = [], 0
    for lat, p in params.items():
        good = np.isfinite(p).all(axis=1) & (p > 0).all(axis=1)
        tr, va = np.flatnonzero(good & rows.train), np.flatnonzero(good & rows.val)
        parts.append(_lattice_part(lat, p, tr, va, config))
        n_train += len(tr)
    file = "lattice.safetensors"
    section: dict[str, Any] = {"file": file, "loss": "log-mse", "lattices": {}}
    return TaskPlan("lattice", section, parts, {"lattice": n_train}, file=file)


def _lattice_part(lat: str, params: np.ndarray, tr: np.ndarray, va: np.ndarray, config: TrainConfig) -> Part:
    names = list(PARAMETER_NAMES[lat])
    path = ("lattices", lat)
    if len(tr) == 0:
        return Part(path, {"kind": "none", "parameter_names": names, "n_train": 0})
    if len(tr) < config.min_rows:
        return Part(
            path,
            {"kind": "prior", "parameter_names": names, "samples": params[tr].tolist(), "n_train": len(tr)},
        )
    lo, hi = output_range(params[tr], scale=config.regressor_scale)
    if lat == "hR":
        # from_parameters needs a rhombohedral alpha inside (0, 120) degrees.
        hi[1] = min(hi[1], 119.5)
        lo[1] = min(lo[1], hi[1] - 1.0)
    net = _regressor(("lattice", lat), params, tr, va, (lo, hi), config)
    return Part(path, {"kind": "network", "parameter_names": names}, net, prefix=f"{lat}.")


def volume_task(rows: TrainingRows, config: TrainConfig) -> TaskPlan:
    """A log-MSE regressor of the volume per atom.

    Raises
    ------
    ValueError
        When fewer than 2 training rows have a volume.
    """
    tr = np.flatnonzero(rows.train & rows.volume_ok)
    va = np.flatnonzero(rows.val & rows.volume_ok)
    if len(tr) < 2:
        raise ValueError("the volume regressor needs training rows with volume_per_atom")
    volume_range = output_range(rows.volume[tr], scale=config.regressor_scale)
    net = _regressor(("volume",), rows.volume[:, None], tr, va, volume_range, config)
    file = "volume.safetensors"
    section = {"file": file, "loss": "log-mse", "parameter_names": ["volume_per_atom"]}
    return TaskPlan("volume", section, [Part((), {}, net)], {"volume": len(tr)}, file=file)
