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
    create_quant_config,
    ddim_sample,
    list_quant_methods,
    load_model,
    load_quantized,
    parse_bits,
    quantize_diffusion,
    save_quantized,
)
from aigclab.diffusion.fid import evaluate, feature_net, frechet_distance
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
