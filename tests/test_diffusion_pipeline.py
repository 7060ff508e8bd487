"""The quantization pipeline, save/load, FID and the CLI, on a tiny random UNet (no weights needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from typer.testing import CliRunner

from aigclab.cli import app
from aigclab.diffusion import (
    QuantResult,
    create_quant_config,
    ddim_sample,
    distillation_error,
    list_quant_methods,
    load_model,
    load_quantized,
    parse_bits,
    quantize_diffusion,
    save_quantized,
)
from aigclab.diffusion.fid import FeatureNet, evaluate, feature_net, frechet_distance, memoized
from aigclab.errors import AigclabError, ConfigError


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny UNet is slower on two contended threads than on one
    yield
    torch.set_num_threads(before)


TINY = {"steps": 3, "calib_samples": 4, "batch_size": 2, "lora_rank": 2, "omq_samples": 2}


@pytest.fixture(scope="module")
def tiny_mpq():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = load_model("tiny")
    cfg = create_quant_config("mpq-dm", w_bits=2, a_bits=4, finetune_steps=3, **TINY)
    return model, quantize_diffusion(model, cfg)


def test_methods_and_bit_settings() -> None:
    assert list_quant_methods() == ["efficientdm", "mpq-dm", "omq-only", "trd-only", "uniform"]
    assert parse_bits("w3a4") == (3, 4)
    with pytest.raises(ConfigError, match="W<bits>A<bits>"):
        parse_bits("4bit")
    cfg = create_quant_config("omq-only")
    assert cfg.omq and not cfg.trd and cfg.finetune_steps > 0


def test_mpq_dm_quantizes_edges_at_8_bits_and_keeps_the_mean_bit_width(tiny_mpq) -> None:  # type: ignore[no-untyped-def]
    model, result = tiny_mpq
    layers = result.layers
    for name in ("conv_in", "conv_out"):
        assert set(layers[name].w_quant.bits.tolist()) == {8}
    inner = [layer for name, layer in layers.items() if name not in ("conv_in", "conv_out")]
    assert all(layer.w_quant.bits.float().mean().item() == 2.0 for layer in inner)
    assert all(layer.a_quant.slots == 3 for layer in inner)
    assert len(result.losses) == 3 and all(step["trd"] > 0 for step in result.losses)
    assert result.report.total_bytes < result.report.fp32_bytes / 6
    assert not any(isinstance(m, type(inner[0])) for m in model.unet.modules())  # the teacher is untouched


def test_trd_trains_lora_and_activation_steps(tiny_mpq) -> None:  # type: ignore[no-untyped-def]
    _, result = tiny_mpq
    lora_b = [layer.lora_b for layer in result.layers.values()]
    assert any(b.abs().sum() > 0 for b in lora_b)  # B starts at zero; training moved it


def test_omq_is_applied_smoothing_and_the_chosen_split(tiny_mpq) -> None:  # type: ignore[no-untyped-def]
    _, result = tiny_mpq
    inner = {n: m for n, m in result.layers.items() if n not in ("conv_in", "conv_out")}
    assert set(result.omq_k) == set(inner)
    assert any(bool((layer.smooth != 1).any()) for layer in inner.values())
    for name, layer in inner.items():  # the layer holds the split that won the search
        bits = layer.w_quant.bits
        assert int((bits == 3).sum()) == int((bits == 1).sum()) == result.omq_k[name]
        errors = result.omq_errors[name]
        assert errors[result.omq_k[name]] == min(errors.values())
    assert any(k > 0 for k in result.omq_k.values())  # mixed precision is active somewhere


def _tiny(method: str, **kw):  # type: ignore[no-untyped-def]
    return quantize_diffusion(load_model("tiny"), create_quant_config(method, **{**TINY, **kw}))


def _eps_error(model, result: QuantResult) -> float:  # type: ignore[no-untyped-def]
    noise = torch.randn((4, *model.shape), generator=torch.Generator().manual_seed(11))
    return distillation_error(model, result.model.unet, noise, TINY["steps"]) / float(noise.numel() / 4)


def test_w8a8_stays_close_to_full_precision_and_w2a4_does_not() -> None:
    model = load_model("tiny")
    noise = torch.randn((4, *model.shape), generator=torch.Generator().manual_seed(11))
    scale = distillation_error(model, model.unet, noise, 3)
    assert scale == 0.0
    w8a8 = _tiny("uniform", w_bits=8, a_bits=8)
    w2a4 = _tiny("uniform", w_bits=2, a_bits=4)
    e8, e2 = _eps_error(model, w8a8), _eps_error(model, w2a4)
    # per-element squared error of the noise prediction (unit variance): W8A8 is almost exact
    assert e8 < 1e-3 and e2 > 30 * e8
    for layer in w8a8.layers.values():  # every activation step was calibrated, per sampling step
        assert layer.a_quant is not None and not torch.equal(
            layer.a_quant.scale, torch.ones_like(layer.a_quant.scale)
        )


def test_finetuning_lowers_the_distillation_error_on_held_out_noise() -> None:
    model = load_model("tiny")
    before = _tiny("efficientdm", w_bits=2, a_bits=4, finetune_steps=0)
    after = _tiny("efficientdm", w_bits=2, a_bits=4, finetune_steps=12)
    assert _eps_error(model, after) < 0.95 * _eps_error(model, before)  # seeded: 0.051 -> 0.046
    mse = [step["mse"] for step in after.losses]
    assert np.mean(mse[-4:]) < np.mean(mse[:4])


def test_the_trd_term_reaches_the_student_in_the_pipeline() -> None:
    """With the student's features detached (as in the released code) TRD would change nothing."""
    with_trd = _tiny("trd-only", w_bits=2, a_bits=4, finetune_steps=2, trd_weight=1e3)
    without = _tiny("trd-only", w_bits=2, a_bits=4, finetune_steps=2, trd=False)
    assert all(step["trd"] > 0 for step in with_trd.losses)
    moved = [
        not torch.equal(a.lora_b, b.lora_b)
        for a, b in zip(with_trd.layers.values(), without.layers.values(), strict=True)
    ]
    assert any(moved)


def test_feature_hooks_are_removed_even_when_a_step_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import aigclab.diffusion.quantize as quantize

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setattr(quantize, "trd_loss", broken)
    model = load_model("tiny")
    with pytest.raises(RuntimeError, match="boom"):
        quantize_diffusion(
            model, create_quant_config("trd-only", w_bits=4, a_bits=8, finetune_steps=1, **TINY)
        )
    assert all(not m._forward_hooks for m in model.unet.modules())


def test_paper_switches_run_linear_decay_scale_aware_rates_and_a_step_per_denoising_step() -> None:
    result = _tiny(
        "trd-only", w_bits=2, a_bits=4, finetune_steps=4, keep_first=3, lr_schedule="linear",
        lora_lr_mode="scale-aware", step_every_denoise=True, window=2,
    )  # fmt: skip
    assert len(result.losses) == 4
    # 3-step trajectories, window 2: TRD closes the window at step 1 and at the last step (2)
    assert [s["trd"] > 0 for s in result.losses] == [False, True, True, False]
    for name in ("conv_in", "time_embedding.linear_1", "time_embedding.linear_2", "conv_out"):
        assert set(result.layers[name].w_quant.bits.tolist()) == {8}


def test_quantized_sampling_is_deterministic_and_survives_save_load(tiny_mpq, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, result = tiny_mpq
    a = ddim_sample(result.model, 4, 3, torch.Generator().manual_seed(1))
    b = ddim_sample(result.model, 4, 3, torch.Generator().manual_seed(1))
    fp = ddim_sample(model, 4, 3, torch.Generator().manual_seed(1))
    assert a.shape == (4, 16, 16, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, fp)
    save_quantized(result, tmp_path)
    loaded, cfg = load_quantized(tmp_path)
    assert cfg == result.config
    np.testing.assert_array_equal(ddim_sample(loaded, 4, 3, torch.Generator().manual_seed(1)), a)


def test_uniform_ptq_runs_without_finetuning() -> None:
    result = quantize_diffusion(
        load_model("tiny"), create_quant_config("uniform", w_bits=4, a_bits=8, **TINY)
    )
    assert result.losses == [] and result.omq_k == {}
    assert all(layer.lora_a is None for layer in result.layers.values())
    images = ddim_sample(result.model, 2, 3, torch.Generator().manual_seed(0))
    assert images.shape == (2, 16, 16, 3)


def test_fid_matches_an_independent_frechet_distance() -> None:
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (80, 16, 16, 3), dtype=np.uint8)
    fake = np.clip(real.astype(int) + 60, 0, 255).astype(np.uint8)
    net = feature_net("random-cnn")
    fr = net(torch.from_numpy(real).permute(0, 3, 1, 2)).double().numpy()
    ff = net(torch.from_numpy(fake).permute(0, 3, 1, 2)).double().numpy()
    c1, c2 = np.cov(fr, rowvar=False), np.cov(ff, rowvar=False)
    ref = ((fr.mean(0) - ff.mean(0)) ** 2).sum() + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(real, fake, net) == pytest.approx(ref, rel=1e-3)
    scores = evaluate(real, fake, net)
    assert scores["fid"] > 1 and 0 <= scores["precision"] <= 1 and 0 <= scores["recall"] <= 1
    with pytest.raises(AigclabError, match="unknown feature network"):
        feature_net("vgg")


def test_memoized_features_embed_each_batch_once_and_keep_the_fid() -> None:
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    fake = rng.integers(0, 200, (40, 16, 16, 3), dtype=np.uint8)
    base = feature_net("random-cnn")
    calls = []
    counting = FeatureNet(lambda x: calls.append(len(x)) or base(x), base.num_features, base.name)
    net = memoized(counting)
    first = evaluate(real, fake, net)
    n_calls = len(calls)
    assert evaluate(real, fake, net) == first and len(calls) == n_calls == 2  # real and fake, once each
    assert first["fid"] == pytest.approx(evaluate(real, fake, base)["fid"], rel=1e-6)


def test_cli_quantize_then_sample_writes_a_grid(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "q"
    args = ["diffusion", "quantize", str(out), "--model", "tiny", "--method", "uniform", "--bits", "W4A8"]
    res = runner.invoke(app, [*args, "--steps", "2", "--calib-samples", "2"])
    assert res.exit_code == 0, res.output
    assert "bytes packed" in res.output and (out / "packed.safetensors").is_file()
    grid = tmp_path / "grid.png"
    res = runner.invoke(
        app,
        [
            "diffusion",
            "sample",
            str(grid),
            "--model",
            "tiny",
            "--quantized",
            str(out),
            "--steps",
            "2",
            "--n",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output
    from PIL import Image

    assert Image.open(grid).size == (2 * 18 + 2, 2 * 18 + 2)
    res = runner.invoke(app, ["diffusion", "sample", str(grid), "--model", "tiny", "--quantized", str(out)])
    assert isinstance(res.exception, AigclabError) and "--steps 2" in str(res.exception)


@pytest.mark.parametrize("name", ["ddpm", "ldm"])
def test_zoo_models_load_with_their_saved_config_and_quantize(name: str, tmp_path: Path) -> None:
    from aigclab.data.zoo import create_generator, save_generator

    save_generator(create_generator(name, preset=f"{name}-tiny"), tmp_path)
    model = load_model(name, tmp_path)
    cfg = create_quant_config("uniform", w_bits=4, a_bits=8, **TINY)
    result = quantize_diffusion(model, cfg)
    images = ddim_sample(model, 2, 3, torch.Generator().manual_seed(0), unet=result.model.unet)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    with pytest.raises(AigclabError, match="weights config"):
        load_model(name, tmp_path / "missing")
