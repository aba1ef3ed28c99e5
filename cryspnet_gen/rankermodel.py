"""The learned template ranker's model (issue 18): a LightGBM booster that scores template options.

A template option is one known structure with one element mapping onto the query formula (see
:mod:`cryspnet_gen.sources.templates.scoring`); the booster maps the option's features (named in ``features``, in
order; computed by :mod:`cryspnet_gen.sources.templates.ranker`) to a raw score, and ``platt`` (a, b) turns the raw
score into the probability that the substituted structure matches the formula's true structure,
``P = 1 / (1 + exp(-(a * raw + b)))``, fitted on held-out formulas. ``cryspnet`` (a, b) does the same for a
CRYSPNet candidate from ``log P(lattice, group)``, so that both sources are ranked on one scale, log P(match).

The model is one JSON document (the booster in LightGBM's text format inside it), stored gzipped in a model
bundle under the ``template_ranker`` key like the Z and Wyckoff priors: sha256-checked by
:func:`cryspnet_gen.bundle.read_part_text`, never pickled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["RANKER_FORMAT", "RANKER_VERSION", "RankerModelError", "TemplateRankerModel"]

RANKER_FORMAT = "cryspnet-gen template ranker"
RANKER_VERSION = 1


class RankerModelError(ValueError):
    """A template ranker document that cannot be read or does not fit this version of cryspnet-gen."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50.0, 50.0)))


@dataclass
class TemplateRankerModel:
    """A trained template ranker: booster text, feature names, calibration and provenance.

    Parameters
    ----------
    model_text
        The booster in LightGBM's text format.
    features
        Feature names in the booster's column order (:data:`cryspnet_gen.sources.templates.ranker.FEATURES`).
    depth
        How many options, in the order of the hand-weighted score, the ranker re-scores; the rest follow them.
    platt
        ``(a, b)``: P(match) = sigmoid(a * raw + b) for a template option.
    cryspnet
        ``(a, b)``: P(match) = sigmoid(a * log P(lattice, group) + b) for a CRYSPNet candidate.
    cryspnet_offset
        Added to a CRYSPNet candidate's log P(match) where it is merged with template options (0: compare the
        two calibrated probabilities as they are; negative: a CRYSPNet structure needs a clearer lead to go
        before a template). Chosen on validation formulas.
    meta
        Provenance and metrics (training formulas, objective, validation figures), shown in READMEs.
    """

    model_text: str
    features: tuple[str, ...]
    depth: int = 40
    platt: tuple[float, float] = (1.0, 0.0)
    cryspnet: tuple[float, float] = (1.0, -4.0)
    cryspnet_offset: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    _booster: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def booster(self) -> Any:
        """The LightGBM booster (LightGBM's C library, loaded on first use)."""
        if self._booster is None:
            from cryspnet_gen.lgbm_native import NativeBooster, NativeLightGBMError

            try:
                self._booster = NativeBooster(self.model_text)
            except NativeLightGBMError as exc:
                raise RankerModelError(f"the template ranker's booster cannot be read ({exc})") from exc
            if self._booster.num_feature != len(self.features):
                raise RankerModelError(
                    f"the template ranker's booster uses {self._booster.num_feature} features, its document "
                    f"names {len(self.features)}"
                )
        return self._booster

    def raw_scores(self, X: np.ndarray) -> np.ndarray:
        """The booster's raw score per option row of ``X`` (``n x len(features)``)."""
        if len(X) == 0:
            return np.zeros(0)
        X = np.asarray(X, dtype=np.float64)
        masked = self.meta.get("masked_features")
        if masked:  # an ablation model: these columns were missing values in training
            X = np.where(np.isin(np.asarray(self.features), list(masked))[None, :], np.nan, X)
        return self.booster.predict(X, raw_score=True, num_threads=1).reshape(-1)

    def match_probability(self, X: np.ndarray) -> np.ndarray:
        """Calibrated P(match) of each option row."""
        a, b = self.platt
        return _sigmoid(a * self.raw_scores(X) + b)

    def cryspnet_probability(self, probability: float) -> float:
        """Calibrated P(match) of a CRYSPNet candidate with P(lattice, group) = ``probability``."""
        a, b = self.cryspnet
        return float(_sigmoid(np.asarray(a * math.log(max(probability, 1e-12)) + b)))

    def cryspnet_score(self, probability: float) -> float:
        """log P(match) of a CRYSPNet candidate plus ``cryspnet_offset``: the scale template candidates are scored
        on with this ranker."""
        return math.log(max(self.cryspnet_probability(probability), 1e-12)) + self.cryspnet_offset

    def to_json(self) -> str:
        """The document stored in a bundle."""
        return json.dumps(
            {
                "format": RANKER_FORMAT,
                "version": RANKER_VERSION,
                "features": list(self.features),
                "depth": int(self.depth),
                "platt": [float(x) for x in self.platt],
                "cryspnet": [float(x) for x in self.cryspnet],
                "cryspnet_offset": float(self.cryspnet_offset),
                "meta": self.meta,
                "model": self.model_text,
            }
        )

    @classmethod
    def from_json(cls, text: str, where: str = "template ranker") -> TemplateRankerModel:
        """Read a document written by :meth:`to_json`.

        Raises
        ------
        RankerModelError
            Naming ``where`` and what is wrong.
        """
        try:
            doc = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise RankerModelError(f"{where} is not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != RANKER_FORMAT:
            raise RankerModelError(f"{where} is not a {RANKER_FORMAT} document")
        version = doc.get("version")
        if not isinstance(version, int) or version > RANKER_VERSION:
            raise RankerModelError(
                f"{where} has version {version!r}; this cryspnet-gen reads up to {RANKER_VERSION}: upgrade it"
            )
        try:
            model = cls(
                model_text=str(doc["model"]),
                features=tuple(str(f) for f in doc["features"]),
                depth=int(doc["depth"]),
                platt=(float(doc["platt"][0]), float(doc["platt"][1])),
                cryspnet=(float(doc["cryspnet"][0]), float(doc["cryspnet"][1])),
                cryspnet_offset=float(doc.get("cryspnet_offset", 0.0)),
                meta=dict(doc.get("meta") or {}),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise RankerModelError(f"{where} lacks or mangles an entry ({exc!r})") from exc
        if model.depth <= 0 or not model.features:
            raise RankerModelError(f"{where} has no features or a depth of {model.depth}")
        return model
