"""Prediction with LightGBM's C library directly, without importing the ``lightgbm`` Python package.

``import lightgbm`` imports scikit-learn when it is installed (1.4 s of a 5 s cold start on 2 cores); predicting
from a text model needs four functions of ``lib_lightgbm``, which this module calls through :mod:`ctypes`. The
library is the one the installed ``lightgbm`` wheel ships (found without importing the package); training still
uses the package.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NativeBooster", "NativeLightGBMError", "library_path"]

_C_API_DTYPE_FLOAT64 = 1
_C_API_PREDICT_NORMAL = 0
_C_API_PREDICT_RAW_SCORE = 1

_LIB: Any = None


class NativeLightGBMError(RuntimeError):
    """The LightGBM library is missing or refused a call (its message attached)."""


def library_path() -> Path:
    """``lib_lightgbm`` of the installed ``lightgbm`` wheel (``LIGHTGBM_LIB`` overrides)."""
    override = os.environ.get("LIGHTGBM_LIB")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("lightgbm")
    if spec is None or not spec.submodule_search_locations:
        raise NativeLightGBMError("lightgbm is not installed: pip install lightgbm (or cryspnet-gen[all])")
    for folder in spec.submodule_search_locations:
        for name in (
            "lib/lib_lightgbm.so",
            "lib/lib_lightgbm.dylib",
            "lib/lib_lightgbm.dll",
            "lib_lightgbm.so",
        ):
            if (Path(folder) / name).is_file():
                return Path(folder) / name
    raise NativeLightGBMError(f"lib_lightgbm not found in {list(spec.submodule_search_locations)}")


def _lib() -> Any:
    global _LIB
    if _LIB is None:
        try:
            lib = ctypes.cdll.LoadLibrary(str(library_path()))
        except OSError as exc:
            raise NativeLightGBMError(f"cannot load lib_lightgbm ({exc})") from exc
        lib.LGBM_GetLastError.restype = ctypes.c_char_p
        _LIB = lib
    return _LIB


def _check(code: int) -> None:
    if code != 0:
        raise NativeLightGBMError(_lib().LGBM_GetLastError().decode(errors="replace"))


class NativeBooster:
    """A LightGBM booster loaded from its text model, for prediction only.

    Parameters
    ----------
    text
        The model in LightGBM's text format.
    """

    def __init__(self, text: str) -> None:
        lib = _lib()
        self._handle = ctypes.c_void_p()
        iterations = ctypes.c_int(0)
        _check(
            lib.LGBM_BoosterLoadModelFromString(
                text.encode(), ctypes.byref(iterations), ctypes.byref(self._handle)
            )
        )
        out = ctypes.c_int(0)
        _check(lib.LGBM_BoosterGetNumClasses(self._handle, ctypes.byref(out)))
        self.num_class = int(out.value)
        _check(lib.LGBM_BoosterGetNumFeature(self._handle, ctypes.byref(out)))
        self.num_feature = int(out.value)

    def predict(self, X: np.ndarray, *, raw_score: bool = False, num_threads: int = 1) -> np.ndarray:
        """``(n, num_class)`` probabilities (raw margins with ``raw_score``) in float64."""
        data = np.ascontiguousarray(X, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.num_feature:
            raise ValueError(f"expected (n, {self.num_feature}) features, got {data.shape}")
        n = data.shape[0]
        out = np.empty(n * self.num_class, dtype=np.float64)
        out_len = ctypes.c_int64(0)
        _check(
            _lib().LGBM_BoosterPredictForMat(
                self._handle,
                data.ctypes.data_as(ctypes.c_void_p),
                ctypes.c_int(_C_API_DTYPE_FLOAT64),
                ctypes.c_int32(n),
                ctypes.c_int32(self.num_feature),
                ctypes.c_int(1),  # row major
                ctypes.c_int(_C_API_PREDICT_RAW_SCORE if raw_score else _C_API_PREDICT_NORMAL),
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(-1),  # every iteration the text model holds
                ctypes.c_char_p(f"num_threads={int(num_threads)}".encode()),
                ctypes.byref(out_len),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        if out_len.value != out.size:
            raise NativeLightGBMError(f"LightGBM returned {out_len.value} values for {out.size}")
        return out.reshape(n, self.num_class)

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value and _LIB is not None:
            _LIB.LGBM_BoosterFree(handle)
