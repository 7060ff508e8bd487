"""MPQ-DM pieces: bit allocation, kurtosis, smoothing, the k search and the TRD loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aigclab.diffusion.mpq import (
    choose_k,
    kurtosis_per_channel,
    mixed_bits,
    omq_candidates,
    relation_map,
    smoothing_factors,
    trd_loss,
)
from aigclab.quant import Quantizer, quantize_modules


@pytest.mark.parametrize("n", [2, 3, 10, 33, 64])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_bit_allocation_keeps_the_mean_bit_width_exactly(n: int, bits: int) -> None:
    kurt = torch.rand(n, generator=torch.Generator().manual_seed(n))
    for k in range(n // 2 + 1):
        alloc = mixed_bits(kurt, k, bits)
        assert alloc.sum().item() == n * bits  # mean exactly N, in integers
        assert (alloc == bits + 1).sum() == k and (alloc == bits - 1).sum() == k
    with pytest.raises(ValueError):
        mixed_bits(kurt, n // 2 + 1, bits)


def test_kurtosis_ranks_the_outlier_channel_first_and_matches_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, 3, 3, generator=g)
    w[5, 0, 1, 1] = 25.0  # one outlier weight
    kurt = kurtosis_per_channel(w)
    flat = w.reshape(8, -1).numpy().astype(np.float64)
    ref = ((flat - flat.mean(1, keepdims=True)) ** 4).mean(1) / flat.std(1, ddof=1) ** 4
    np.testing.assert_allclose(kurt.numpy(), ref, rtol=1e-4)
    assert int(kurt.argmax()) == 5
    assert mixed_bits(kurt, 1, 3)[5] == 4


def test_candidates_are_groups_of_a_tenth_up_to_half() -> None:
    assert omq_candidates(64, 0.1, 0.5) == [0, 6, 12, 18, 24, 30]
    assert omq_candidates(3, 0.1, 0.5) == [0, 1]


def test_smoothing_moves_activation_outliers_into_the_weights_without_changing_the_output() -> None:
    g = torch.Generator().manual_seed(1)
    lin = nn.Linear(6, 4)
    x = torch.randn(50, 6, generator=g)
    x[:, 2] *= 40  # an outlier input channel
    layer = quantize_modules(nn.Sequential(lin), lambda n, m: (4, 4))["0"]
    s = smoothing_factors(x.abs().amax(0), layer.weight)
    assert int(s.argmax()) == 2
    layer.smooth.copy_(s)
    layer.quantize = False
    torch.testing.assert_close(layer(x), nn.functional.linear(x, lin.weight, lin.bias), atol=1e-4, rtol=1e-4)
    sx = layer.smoothed_input(x).abs().amax(0)
    assert sx.max() / sx.min() < x.abs().amax(0).max() / x.abs().amax(0).min()


def test_choose_k_picks_the_least_output_error_and_k0_is_uniform() -> None:
    g = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(4, 20, 3, padding=1)
    with torch.no_grad():
        conv.weight[:3] *= torch.rand(3, 4, 3, 3, generator=g) ** 8 * 30  # heavy-tailed channels
    layer = quantize_modules(nn.Sequential(conv), lambda n, m: (3, None))["0"]
    x = torch.randn(4, 4, 8, 8, generator=g)
    k, errors = choose_k(layer, x, bits=3, a_bits=None, candidates=[0, 2, 4], calib="minmax")
    assert errors[k] == min(errors.values()) and set(errors) == {0, 2, 4}
    assert layer.w_quant is not None and layer.w_quant.bits.sum() == 20 * 3
    uniform = Quantizer(3, channel_axis=0, n_channels=20)
    uniform.calibrate(conv.weight, "minmax")
    ref = nn.functional.conv2d(x, uniform(conv.weight), conv.bias, padding=1)
    exact = nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    assert errors[0] == pytest.approx(nn.functional.mse_loss(ref, exact).item(), rel=1e-4)


def test_relation_map_is_a_cosine_similarity() -> None:
    f = torch.randn(2, 5, 3, 3, generator=torch.Generator().manual_seed(3))
    s = relation_map(f)
    assert s.shape == (2, 9, 9)
    torch.testing.assert_close(torch.diagonal(s, dim1=1, dim2=2), torch.ones(2, 9))
    a, b = f[0, :, 0, 1], f[0, :, 2, 2]
    assert s[0, 1, 8].item() == pytest.approx((a @ b / a.norm() / b.norm()).item(), rel=1e-5)


def test_trd_is_zero_for_equal_features_and_trains_the_student() -> None:
    g = torch.Generator().manual_seed(4)
    teacher = [torch.randn(2, 8, 4, 4, generator=g) for _ in range(2)]
    equal = [t.clone().requires_grad_(True) for t in teacher]
    assert trd_loss(equal, teacher).item() == pytest.approx(0.0, abs=1e-5)
    student = [(t + 0.5 * torch.randn(t.shape, generator=g)).requires_grad_(True) for t in teacher]
    teacher_leaf = [t.clone().requires_grad_(True) for t in teacher]
    loss = trd_loss(student, teacher_leaf)
    assert loss.item() > 0
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher_leaf)  # the teacher is a fixed target


def test_trd_averages_features_over_the_window() -> None:
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(1, 4, 3, 3, generator=g), torch.randn(1, 4, 3, 3, generator=g)
    assert trd_loss([a, b], [(a + b) / 2]).item() == pytest.approx(0.0, abs=1e-5)
    assert trd_loss([a], [b]).item() > 0
