"""Fake quantization: error bounds, STE gradients, calibration, slots, wrappers and packed sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aigclab.quant import (
    Quantizer,
    export_packed,
    pack_codes,
    packed_nbytes,
    quantize_modules,
    quantizing,
    set_slot,
    storage_report,
    unpack_codes,
)


def _data(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * torch.rand(shape[0], *[1] * (len(shape) - 1), generator=g) * 3


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("axis", [None, 0])
def test_error_at_most_half_a_step_inside_the_range(bits: int, symmetric: bool, axis: int | None) -> None:
    x = _data((6, 50), seed=bits)
    q = Quantizer(bits, symmetric, channel_axis=axis, n_channels=6 if axis == 0 else 1)
    q.calibrate(x, "minmax")
    err = (q(x) - x).abs()
    step = q.step().reshape(-1, 1) if axis == 0 else q.step()
    assert bool((err <= step / 2 + 1e-5).all())
    assert torch.equal(q(q(x)), q(x))  # idempotent
    levels = torch.unique(q(x)[0]).numel()
    assert levels <= 2**bits


def test_values_outside_the_range_are_clipped_to_its_ends() -> None:
    q = Quantizer(4)
    q.set_range(torch.tensor([-1.0]), torch.tensor([1.0]))
    out = q(torch.tensor([-10.0, 10.0])).tolist()
    assert out[0] == pytest.approx(-1.0, abs=q.step().item() / 2 + 1e-6)
    assert out[1] == pytest.approx(1.0, abs=q.step().item() / 2 + 1e-6)


def test_ste_passes_gradients_inside_the_range_and_to_step_and_zero_point() -> None:
    q = Quantizer(3)
    q.set_range(torch.tensor([-1.0]), torch.tensor([1.0]))
    x = torch.tensor([-0.7, -0.2, 0.1, 0.55, 5.0], requires_grad=True)
    (q(x) * torch.arange(1.0, 6.0)).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0]))  # identity inside, 0 clipped
    assert q.scale.grad is not None and q.scale.grad.abs().sum() > 0
    assert q.zero_point.grad is not None


def test_mse_calibration_beats_minmax_on_heavy_tails() -> None:
    x = torch.randn(4000, generator=torch.Generator().manual_seed(0)) ** 3
    errors = {}
    for method in ("minmax", "mse"):
        q = Quantizer(4)
        q.calibrate(x, method)  # type: ignore[arg-type]
        errors[method] = (q(x) - x).pow(2).mean().item()
    assert errors["mse"] < 0.8 * errors["minmax"]


def test_per_channel_bits_equal_separate_quantizers_per_group() -> None:
    w = _data((6, 20), seed=3)
    bits = [2, 3, 4, 3, 2, 4]
    mixed = Quantizer(bits, channel_axis=0, n_channels=6)
    mixed.calibrate(w, "minmax")
    for b in (2, 3, 4):
        rows = [i for i, bi in enumerate(bits) if bi == b]
        alone = Quantizer(b, channel_axis=0, n_channels=len(rows))
        alone.calibrate(w[rows], "minmax")
        torch.testing.assert_close(mixed(w)[rows], alone(w[rows]))


def test_slots_are_selected_explicitly() -> None:
    q = Quantizer(4, slots=3)
    for slot, scale in enumerate((1.0, 2.0, 4.0)):
        q.set_range(torch.tensor([-scale]), torch.tensor([scale]), slot=slot)
    x = torch.linspace(-4, 4, 9)
    assert not torch.equal(q(x, slot=0), q(x, slot=2))
    with pytest.raises(ValueError, match="slot"):
        q(x)
    with pytest.raises(IndexError):
        q(x, slot=3)


def test_quant_layers_match_the_float_layer_when_quantization_is_off() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(64, 5)
    )
    x = torch.randn(2, 3, 4, 4)
    ref = net(x)
    layers = quantize_modules(net, lambda name, m: None if name == "2" else (4, 4), act_slots=2)
    assert sorted(layers) == ["0", "4"]
    layers["0"].smooth.copy_(torch.tensor([0.5, 2.0, 3.0]))
    layers["4"].add_lora(3)
    with quantizing(net, False):
        torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=1e-5)
    for layer in layers.values():
        layer.calibrate_weight("minmax")
        assert layer.a_quant is not None
        layer.a_quant.calibrate(torch.randn(100) * 3, "minmax", slot=0)
        layer.a_quant.calibrate(torch.randn(100) * 3, "minmax", slot=1)
    set_slot(net, 1)
    out = net(x)
    assert out.shape == ref.shape and not torch.equal(out, ref)


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack_round_trip(bits: int) -> None:
    codes = np.random.default_rng(bits).integers(0, 2**bits, 1001)
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.nbytes == packed_nbytes(1001, bits) == -(-1001 * bits // 8)
    np.testing.assert_array_equal(unpack_codes(packed, bits, 1001), codes)
    with pytest.raises(ValueError):
        pack_codes(np.array([2**bits]), bits)


def test_storage_report_counts_packed_bits_exactly() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.LayerNorm(32))
    layers = quantize_modules(net, lambda name, m: (3, 8), act_slots=20)
    layers["0"].calibrate_weight("minmax")
    rep = storage_report(net)
    codes = 64 * 32 * 3 // 8  # 3-bit weights
    side = 32 * 4 + 32 * 4  # per-channel fp32 step + int32 zero-point
    acts = 20 * 4 + 20 * 4  # per-step activation step + zero-point
    bias, norm = 32 * 4, 2 * 32 * 4
    assert rep.quantized_bytes == codes + side + acts + bias
    assert rep.total_bytes == rep.quantized_bytes + norm
    assert rep.fp32_bytes == (64 * 32 + 32 + 64) * 4
    assert sum(a.nbytes for a in export_packed(net).values()) == rep.total_bytes


def test_packed_codes_decode_to_the_fake_quantized_weight() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(16, 6))
    layer = quantize_modules(net, lambda name, m: ([2, 3, 4, 3, 2, 4], None))["0"]
    layer.calibrate_weight("mse")
    arrays = export_packed(net)
    assert layer.w_quant is not None
    bits = arrays["0.channel_bits"]
    decoded = np.zeros((6, 16))
    for b in (2, 3, 4):
        rows = np.flatnonzero(bits == b)
        codes = unpack_codes(arrays[f"0.codes_{b}bit"], b, len(rows) * 16).reshape(len(rows), 16)
        step, zero = arrays["0.w_scale"][rows, None], arrays["0.w_zero_point"][rows, None]
        decoded[rows] = (codes - zero) * step
    np.testing.assert_allclose(decoded, layer.quant_weight().detach().numpy(), atol=1e-6)
