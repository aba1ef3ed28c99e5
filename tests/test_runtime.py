"""Process settings: torch and BLAS threads inside a block, restored after it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryspnet_gen.runtime import torch_threads


def _blas_threads() -> list[int]:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    np.dot(np.ones((4, 4)), np.ones((4, 4)))  # BLAS loaded
    return [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]


def test_threads_are_set_inside_and_restored_after():
    before_torch, before_blas = torch.get_num_threads(), _blas_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
        assert (
            _blas_threads() == before_blas
        )  # predictions leave BLAS alone (threadpoolctl costs ~2 ms a block)
    with torch_threads(1, blas=True):
        assert torch.get_num_threads() == 1
        assert all(n == 1 for n in _blas_threads())  # relaxations: one BLAS thread too
    assert torch.get_num_threads() == before_torch and _blas_threads() == before_blas
