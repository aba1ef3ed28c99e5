"""Training hyperparameters: :class:`TrainConfig` and its named presets (``TrainConfig.preset``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from monty.json import MSONable

__all__ = ["ARCHS", "Arch", "RegressorScale", "SpaceGroupArch", "StopOn", "SubsetModel", "TrainConfig"]

#: The model families of the Bravais and space-group classifiers (lattice parameters and volume are networks in
#: every arch): the paper's MLP ensembles, LightGBM gradient-boosted trees, both stacked with weights chosen on
#: the validation rows, element-attention networks that learn from the composition itself
#: (:class:`cryspnet_gen.nn.ElementAttention`), or those stacked with the trees.
Arch = Literal["cryspnet-mlp", "lightgbm", "stack", "attention", "attention-stack"]
ARCHS: tuple[str, ...] = get_args(Arch)
StopOn = Literal["val", "oob"]
SpaceGroupArch = Literal["per_lattice", "shared_trunk"]
SubsetModel = Literal["metal", "oxide"]
RegressorScale = Literal["log", "linear"]


@dataclass
class TrainConfig(MSONable):
    """Hyperparameters of :func:`cryspnet_gen.train.train_bundle` (stored in the bundle manifest).

    Attributes
    ----------
    bravais_hidden, space_group_hidden, lattice_hidden, volume_hidden
        Hidden widths of each task's MLP (their length is the depth).
    dropout
        Dropout after every hidden block (the paper's 0.1).
    max_epochs, batch_size, max_lr, weight_decay, patience
        AdamW + OneCycleLR over at most ``max_epochs``; early stopping after ``patience`` epochs without a
        lower stopping loss, restoring the best weights.
    n_members, n_members_space_group, n_members_lattice, n_members_volume
        Ensemble sizes (Bravais models use ``n_members``).
    bootstrap
        Train each member on a bootstrap resample of the training rows (bagging).
    oversample_power, space_group_oversample_power
        Minority-class oversampling: a row of a class with ``n_c`` training rows is drawn with weight
        ``n_c ** -power``, so class shares become proportional to ``n_c ** (1 - power)``. The default 0.5
        (inverse-sqrt weights) lifts rare lattices/groups (e.g. oF, aP-like tails) well above their natural
        share without the heavy duplication and prior distortion of full balancing (power 1); 0 disables it.
    regressor_scale
        ``"log"``: regressors squash their output into the training range on a log scale (default, suits
        right-skewed lengths and volumes); ``"linear"``: the paper's linear ``sigmoid x scale``. See
        :class:`cryspnet_gen.nn.Regressor`.
    min_rows
        Lattices with fewer training rows get no network: the space-group model becomes the training
        frequency (a constant with one group) and the lattice model the stored training parameters.
    min_val_rows
        Fewest validation rows for early stopping on them; else out-of-bag rows are used.
    stop_on
        ``"val"``: early stopping on the validation split (the paper's setting; the reported validation
        metrics are then mildly optimistic); ``"oob"``: on each member's out-of-bag rows, leaving the
        validation split untouched.
    space_group_arch
        ``"per_lattice"``: one network per lattice (the paper); ``"shared_trunk"``: one network over all
        training rows whose output layer holds per-lattice heads (the logits of a lattice's groups), trained
        with the softmax restricted to the row's lattice.
    subset_models
        The paper's subset Bravais models to train besides the master model.
    seed
        Base seed (``train_bundle(seed=...)`` overrides it).
    device
        torch device for training (prediction runs on CPU).
    num_threads
        torch intra-op threads during training, restored afterwards (``None`` leaves the setting alone). The
        default 1 is deliberate: at these network sizes a second thread gains little on an idle machine,
        and on a busy 2-core machine it made a training step 10-25x slower (threads waiting for each other).
    deterministic
        Turn on ``torch.use_deterministic_algorithms`` while training.
    quiet
        Hide the progress bars.
    arch
        The classifiers' model family (:data:`ARCHS`): ``"cryspnet-mlp"`` (the paper's networks),
        ``"lightgbm"`` (gradient-boosted trees, :mod:`cryspnet_gen.train.trees`) or ``"stack"`` (both, their
        calibrated probabilities mixed with a weight chosen on the validation rows), ``"attention"``
        (element-attention networks over the weighted set of elements, :class:`cryspnet_gen.nn.ElementAttention`,
        in place of the MLPs) or ``"attention-stack"`` (those stacked with the trees).
    attention_dim, attention_rounds, attention_hidden, element_slots
        The element-attention networks: embedding width, rounds of attention, width of the head and elements
        per formula read (the most abundant ones).
    attention_epochs, attention_batch_size, attention_lr
        Their training schedule (the MLP fields ``max_epochs``, ``batch_size`` and ``max_lr`` for them).
    tree_learning_rate, tree_num_leaves, tree_min_data_in_leaf, tree_feature_fraction
        LightGBM's learning rate, leaves per tree, fewest rows per leaf and share of features per tree.
    tree_max_bin, tree_lambda_l2
        Histogram bins per feature and L2 regularisation of the leaf values.
    tree_max_rounds, tree_early_stopping
        Most boosting rounds, and rounds without a lower validation loss before stopping.
    tree_threads
        LightGBM threads while training (results do not depend on it). The default 1 is deliberate: on a busy
        2-core machine two threads made a small booster 20x slower (OpenMP threads spinning on each other).
    tree_space_group
        ``tree_*`` fields that differ for the space-group boosters, e.g. ``{"tree_num_leaves": 63}`` (smaller
        trees there keep a bundle small); empty: the same as the Bravais boosters.
    tree_subset_models
        Also train trees for the subset Bravais models (``subset_models``); without, the ``stack`` arch keeps
        them as networks and the ``lightgbm`` arch leaves them out.
    calibrate
        Fit a temperature on the validation rows for every Bravais model and one shared by the space-group
        models (:func:`cryspnet_gen.calibration.fit_temperature`); the bundle's probabilities are the
        calibrated ones.
    restore_best
        Keep the weights of the epoch with the lowest stopping loss (default). ``False`` keeps the weights at
        the end of training, i.e. at the end of the one-cycle schedule: classifiers' cross-entropy on held-out
        rows bottoms out early (over-confidence) while their accuracy keeps rising through the annealing phase,
        so with ``patience >= max_epochs`` this trains the whole cycle (on the bench split: Bravais validation
        top-1 0.47 restoring the best loss vs 0.53 at the end of the cycle, single network).
    """

    bravais_hidden: list[int] = field(default_factory=lambda: [512, 256, 128])
    space_group_hidden: list[int] = field(default_factory=lambda: [256, 128])
    lattice_hidden: list[int] = field(default_factory=lambda: [256, 128])
    volume_hidden: list[int] = field(default_factory=lambda: [256, 128])
    dropout: float = 0.1
    max_epochs: int = 60
    batch_size: int = 256
    max_lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 8
    n_members: int = 5
    n_members_space_group: int = 3
    n_members_lattice: int = 3
    n_members_volume: int = 3
    bootstrap: bool = True
    oversample_power: float = 0.5
    space_group_oversample_power: float = 0.5
    min_rows: int = 50
    min_val_rows: int = 20
    regressor_scale: RegressorScale = "log"
    stop_on: StopOn = "val"
    space_group_arch: SpaceGroupArch = "per_lattice"
    subset_models: list[str] = field(default_factory=lambda: ["metal", "oxide"])
    seed: int = 0
    device: str = "cpu"
    num_threads: int | None = 1
    deterministic: bool = True
    quiet: bool = False
    restore_best: bool = True
    arch: Arch = "cryspnet-mlp"
    tree_learning_rate: float = 0.1
    tree_num_leaves: int = 63
    tree_min_data_in_leaf: int = 10
    tree_feature_fraction: float = 0.5
    tree_max_bin: int = 127
    tree_lambda_l2: float = 1.0
    tree_max_rounds: int = 1000
    tree_early_stopping: int = 30
    tree_threads: int = 1
    tree_subset_models: bool = True
    tree_space_group: dict[str, Any] = field(default_factory=dict)
    calibrate: bool = True
    attention_dim: int = 96
    attention_rounds: int = 3
    attention_hidden: int = 256
    element_slots: int = 12
    attention_epochs: int = 12
    attention_batch_size: int = 512
    attention_lr: float = 2e-3

    @property
    def attention(self) -> bool:
        """Whether the classifier networks are element-attention networks."""
        return self.arch in ("attention", "attention-stack")

    @property
    def stacked(self) -> bool:
        """Whether the classifier networks are stacked with trees."""
        return self.arch in ("stack", "attention-stack")

    def for_attention(self) -> TrainConfig:
        """This config with the attention schedule in the MLP fields (what trains an attention network)."""
        return dataclasses.replace(
            self,
            max_epochs=self.attention_epochs,
            batch_size=self.attention_batch_size,
            max_lr=self.attention_lr,
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A named configuration, optionally with fields overridden.

        ``"shipped"``: the recipe of the bundles in ``models/``. ``"attention"``: the element-attention arch as
        scored in docs/evaluation.md. ``"default"``: the dataclass defaults (the paper's
        5-member ensembles, larger; not trained here). ``"fast"``: half-width networks and smaller
        ensembles, for a bench-split run in a fraction of the time on a few CPU cores. ``"tiny"``: a smoke-test
        configuration that trains a whole bundle in seconds (useless predictions).

        Raises
        ------
        ValueError
            For an unknown name.
        """
        # the recipe of the version-1 bundles (networks only): ~25 min per split on 2 busy cores
        shipped_mlp: dict[str, Any] = {
            **_sizes([512, 256, 128], [256, 128], 3, 2),
            "max_epochs": 30,
            "patience": 30,
            "oversample_power": 0.25,
            "space_group_oversample_power": 0.25,
            "restore_best": False,
        }
        presets: dict[str, dict[str, Any]] = {
            "default": {},
            "fast": {**_sizes([256, 128], [128, 64], 3, 2), "max_epochs": 30, "patience": 5},
            "shipped-mlp": shipped_mlp,
            # the v2 recipe: the v1 networks stacked with LightGBM trees for the master Bravais model and the
            # space groups, calibrated (docs/evaluation.md)
            "shipped": {
                **shipped_mlp,
                "arch": "stack",
                # chosen on the validation rows (Bravais master booster alone, docs/evaluation.md):
                # lr 0.2 / 63 leaves 63.5% top-1, lr 0.1 / 255 leaves 64.0%, lr 0.05 / 255 leaves 64.9%
                "tree_learning_rate": 0.05,
                "tree_num_leaves": 255,
                "tree_min_data_in_leaf": 3,
                "tree_max_bin": 255,
                "tree_feature_fraction": 0.4,
                "tree_early_stopping": 30,
                "tree_max_rounds": 1500,
                # the space-group boosters stay small (the v2 bench bundle with the settings above for them
                # too: 56 MB, space group given the lattice 81.3% on validation instead of 80.2%)
                "tree_space_group": {
                    "tree_learning_rate": 0.2,
                    "tree_num_leaves": 63,
                    "tree_min_data_in_leaf": 10,
                    "tree_max_bin": 127,
                    "tree_early_stopping": 20,
                    "tree_max_rounds": 600,
                },
                "tree_subset_models": False,
            },
            # the element-attention arch as scored in docs/evaluation.md: one network per classifier, the
            # space groups as one network with a head per lattice, no metal/oxide models (27 min on 2 cores
            # with --networks-from for the lattice and volume networks)
            "attention": {
                **shipped_mlp,
                "arch": "attention",
                "n_members": 1,
                "n_members_space_group": 1,
                "subset_models": [],
                "space_group_arch": "shared_trunk",
            },
            "tiny": {
                **_sizes([48, 24], [24], 1, 1),
                "max_epochs": 3,
                "patience": 2,
                "tree_max_rounds": 5,
                "tree_num_leaves": 7,
                "attention_dim": 16,
                "attention_rounds": 1,
                "attention_hidden": 16,
                "attention_epochs": 2,
                "attention_batch_size": 64,
            },
        }
        if name not in presets:
            raise ValueError(f"Unknown {name=}; available: {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def for_space_groups(self) -> TrainConfig:
        """This config with the ``tree_space_group`` overrides applied (the space-group boosters' settings)."""
        if not self.tree_space_group:
            return self
        return dataclasses.replace(self, **{**self.tree_space_group, "tree_space_group": {}})

    def __post_init__(self) -> None:
        for name in ("bravais_hidden", "space_group_hidden", "lattice_hidden", "volume_hidden"):
            widths = [int(w) for w in getattr(self, name)]
            if not widths or min(widths) < 1:
                raise ValueError(f"{name} must be a non-empty list of positive widths, got {widths}")
            setattr(self, name, widths)
        self.subset_models = list(self.subset_models)
        if self.stop_on not in get_args(StopOn):
            raise ValueError(f"Unknown stop_on={self.stop_on!r}; choose from {get_args(StopOn)}")
        if self.regressor_scale not in get_args(RegressorScale):
            raise ValueError(
                f"Unknown regressor_scale={self.regressor_scale!r}; choose from {get_args(RegressorScale)}"
            )
        if self.arch not in ARCHS:
            raise ValueError(f"Unknown arch={self.arch!r}; choose from {ARCHS}")
        if self.attention_lr <= 0:
            raise ValueError(f"attention_lr must be > 0, got {self.attention_lr}")
        if self.tree_learning_rate <= 0 or not 0.0 < self.tree_feature_fraction <= 1.0:
            raise ValueError("tree_learning_rate must be > 0 and tree_feature_fraction in (0, 1]")
        for name in ("tree_num_leaves", "tree_max_rounds", "tree_early_stopping", "tree_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.tree_space_group = dict(self.tree_space_group)
        bad_keys = [k for k in self.tree_space_group if not k.startswith("tree_") or k == "tree_space_group"]
        if bad_keys:
            raise ValueError(f"tree_space_group takes tree_* fields only, got {bad_keys}")
        if self.tree_space_group:
            self.for_space_groups()  # checks the values
        if int(self.tree_max_bin) < 2 or self.tree_lambda_l2 < 0:
            raise ValueError(
                f"tree_max_bin must be >= 2 and tree_lambda_l2 >= 0, got {self.tree_max_bin}, {self.tree_lambda_l2}"
            )
        if self.space_group_arch not in get_args(SpaceGroupArch):
            raise ValueError(
                f"Unknown space_group_arch={self.space_group_arch!r}; choose from {get_args(SpaceGroupArch)}"
            )
        bad = [m for m in self.subset_models if m not in get_args(SubsetModel)]
        if bad:
            raise ValueError(f"Unknown subset_models {bad}; choose from {get_args(SubsetModel)}")
        for name in (
            "max_epochs",
            "batch_size",
            "n_members",
            "n_members_space_group",
            "n_members_lattice",
            "n_members_volume",
            "min_rows",
            "patience",
            "attention_dim",
            "attention_rounds",
            "attention_hidden",
            "element_slots",
            "attention_epochs",
            "attention_batch_size",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_lr <= 0 or self.weight_decay < 0:
            raise ValueError("max_lr must be > 0 and weight_decay >= 0")
        if self.oversample_power < 0 or self.space_group_oversample_power < 0:
            raise ValueError("oversampling powers must be >= 0")


def _sizes(
    bravais_hidden: list[int], hidden: list[int], n_members: int, n_members_other: int
) -> dict[str, Any]:
    """Preset fields of the network sizes: ``hidden`` and ``n_members_other`` are those of every task but the
    Bravais models (space group, lattice, volume)."""
    sizes: dict[str, Any] = {"bravais_hidden": bravais_hidden, "n_members": n_members}
    for task in ("space_group", "lattice", "volume"):
        sizes[f"{task}_hidden"] = list(hidden)
        sizes[f"n_members_{task}"] = n_members_other
    return sizes
