from __future__ import annotations

import numpy as np
import pytest
import torch

from cryspnet_gen.nn import Classifier, Ensemble, Regressor, Standardizer, build_module, output_range


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def test_classifier_shapes_and_rebuild_from_model_args():
    torch.manual_seed(0)
    net = Classifier(n_features=7, n_classes=5, hidden=[16, 8], dropout=0.1).eval()
    x = torch.randn(11, 7)
    assert net(x).shape == (11, 5)
    # depth/widths follow `hidden`: Linear -> BatchNorm1d -> ReLU -> Dropout per block
    linears = [m for m in net.trunk.layers if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [16, 8]
    clone = build_module("Classifier", net.model_args).eval()
    clone.load_state_dict(net.state_dict())
    torch.testing.assert_close(clone(x), net(x))


def test_build_module_unknown_name():
    with pytest.raises(ValueError, match="Unknown model_class"):
        build_module("Transformer", {})


def test_regressor_output_stays_inside_range_even_for_extreme_inputs():
    torch.manual_seed(1)
    net = (
        Regressor(n_features=4, n_outputs=3, hidden=[8]).set_range([1.0, 50.0, 2.0], [2.0, 130.0, 9.0]).eval()
    )
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(50.0)  # saturate the sigmoid
        out = net(torch.randn(200, 4) * 1e4)
    assert out.shape == (200, 3)
    assert torch.all(out >= net.lo) and torch.all(out <= net.hi)
    assert {"lo", "hi"} <= set(net.state_dict())


def test_regressor_rejects_inverted_range():
    with pytest.raises(ValueError, match="hi must exceed"):
        Regressor(n_features=2, n_outputs=1).set_range([2.0], [1.0])


def test_output_range_widens_and_stays_positive():
    targets = np.array([[3.0, 90.0, 5.0], [5.0, 120.0, 5.0], [4.0, np.nan, 5.0]])
    lo, hi = output_range(targets, margin=0.1, scale="linear")
    np.testing.assert_allclose(lo[:2], [2.8, 87.0])
    np.testing.assert_allclose(hi[:2], [5.2, 123.0])
    # a constant column still gets a non-empty range around its value
    assert lo[2] < 5.0 < hi[2]
    # a wide span never pushes the lower end to zero or below
    lo2, _ = output_range(np.array([[0.1], [100.0]]), scale="linear")
    assert lo2[0] > 0


def test_output_range_log_scale_widens_by_a_factor():
    lo, hi = output_range(np.array([[1.0, 7.0], [100.0, 7.0]]), margin=0.1, scale="log")
    np.testing.assert_allclose([lo[0], hi[0]], [100**-0.1, 100**1.1])
    np.testing.assert_allclose([lo[1], hi[1]], [7 / 1.1, 7 * 1.1])


@pytest.mark.parametrize("scale", ["log", "linear"])
def test_regressor_midpoint_per_scale(scale):
    net = Regressor(n_features=2, n_outputs=1, hidden=[4], scale=scale).set_range([1.0], [100.0]).eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
        out = float(net(torch.zeros(1, 2))[0, 0])
    assert out == pytest.approx(10.0 if scale == "log" else 50.5, rel=1e-5)
    assert build_module("Regressor", net.model_args).scale == scale


def test_log_scale_needs_positive_range():
    with pytest.raises(ValueError, match="lo > 0"):
        Regressor(n_features=2, n_outputs=1, scale="log").set_range([0.0], [1.0])


def test_standardizer_is_nan_safe_and_stored_in_state_dict():
    x = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, 2.0], [np.nan, 5.0, 4.0]], dtype=np.float32)
    st = Standardizer(n_features=3).fit(x)
    np.testing.assert_allclose(st.mean.numpy(), [2.0, 5.0, 3.0])
    np.testing.assert_allclose(st.std.numpy(), [1.0, 1.0, 1.0])  # constant column -> std 1
    out = st(torch.from_numpy(x))
    assert torch.isfinite(out).all()
    assert out[0, 2] == 0 and out[2, 0] == 0  # NaN -> the mean
    assert set(st.state_dict()) == {"mean", "std"}


def test_network_state_dict_holds_the_normaliser():
    net = Classifier(n_features=3, n_classes=2, hidden=[4])
    net.standardizer.fit(np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 6.0]]))
    state = net.state_dict()
    np.testing.assert_allclose(state["standardizer.mean"].numpy(), [1.0, 2.0, 4.0])
    other = Classifier(**net.model_args)
    other.load_state_dict(state)
    np.testing.assert_allclose(other.standardizer.std.numpy(), [1.0, 1.0, 2.0])


def test_ensemble_stacks_members():
    torch.manual_seed(2)
    ens = Ensemble([Classifier(n_features=3, n_classes=4, hidden=[5]) for _ in range(3)]).eval()
    out = ens(torch.randn(6, 3))
    assert out.shape == (3, 6, 4)
    assert not torch.allclose(out[0], out[1])  # independent initialisations
    with pytest.raises(ValueError):
        Ensemble([])
