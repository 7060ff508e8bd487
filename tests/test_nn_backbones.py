"""Backbones: the embedded CNN's layers, training determinism, and timm/open_clip from local weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from aigclab.errors import AigclabError, ConfigError
from aigclab.nn import create_backbone, list_backbones
from aigclab.nn.tiny import TinyConfig, save_tiny, train_tiny

IMGS = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)


def _save(module: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, path)
    return path


def test_registry_lists_the_backbones():
    assert list_backbones() == [
        "aigclab-tiny", "inceptionv3-nsfwjs", "mobilenetv2-nsfwjs", "open-clip", "residual-spectrum", "timm"]  # fmt: skip


def test_residual_spectrum_is_zero_free_of_structure_and_sees_checkerboards():
    flat = np.full((1, 32, 32, 3), 128, np.uint8)
    board = flat.copy()
    board[0, ::2, ::2] += 20
    bb = create_backbone("residual-spectrum")
    f_flat, f_board = bb.features(flat, layer="spectrum"), bb.features(board, layer="spectrum")
    assert f_flat.shape == (1, 32 * 17) and np.allclose(f_flat, np.log(1e-3), atol=1e-4)  # no residual at all
    assert f_board.max() > f_flat.max() + 5


def test_tiny_layers_have_the_documented_widths():
    bb = create_backbone("aigclab-tiny")
    widths = {layer: bb.features(IMGS, layer=layer).shape for layer in bb.layers}
    assert widths == {
        "block1": (6, 16),
        "block2": (6, 32),
        "block3": (6, 64),
        "block4": (6, 128),
        "pooled": (6, 128),
    }
    assert bb.logits(IMGS).shape == (6,)
    with pytest.raises(AigclabError, match="no layer 'block9'"):
        bb.features(IMGS, layer="block9")


def test_tiny_training_is_repeatable_and_round_trips(tmp_path):
    labels = np.array([0, 1] * 3)
    cfg = TinyConfig.from_preset("aigclab.nn", "aigclab-tiny-test")
    a = train_tiny(IMGS, labels, cfg, log=lambda _: None)
    b = train_tiny(IMGS, labels, cfg, log=lambda _: None)
    np.testing.assert_array_equal(a.logits(IMGS), b.logits(IMGS))
    path = save_tiny(a, tmp_path / "bb.safetensors")
    loaded = create_backbone("aigclab-tiny", weights=path)
    np.testing.assert_array_equal(loaded.features(IMGS, layer="block2"), a.features(IMGS, layer="block2"))


def test_timm_backbone_from_local_weights(tmp_path):
    import timm

    model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    path = _save(model, tmp_path / "resnet.safetensors")
    bb = create_backbone("timm", model_name="test_resnet", weights=path, input_size=32)
    assert bb.layers[-1] == "pooled" and len(bb.layers) >= 4
    with torch.no_grad():
        expected = model.eval()(bb.preprocess(IMGS)).numpy()
    np.testing.assert_allclose(bb.features(IMGS), expected, rtol=1e-5, atol=1e-6)
    assert bb.features(IMGS, layer="block2").shape[0] == 6
    with pytest.raises(ConfigError, match="do not fit"):
        create_backbone("timm", model_name="test_convnext", weights=path)
    with pytest.raises(ConfigError, match="safetensors"):
        create_backbone("timm", model_name="test_resnet", weights=tmp_path / "resnet.pth")


def test_open_clip_backbone_from_local_weights_and_config(tmp_path):
    import open_clip

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 16, "heads": 2, "layers": 1},
    }
    config = tmp_path / "aigclab-test-clip.json"
    config.write_text(json.dumps(cfg))
    open_clip.add_model_config(config)
    model = open_clip.create_model("aigclab-test-clip", pretrained=None)
    path = _save(model, tmp_path / "clip.safetensors")
    bb = create_backbone("open-clip", model_name="aigclab-test-clip", weights=path, model_config=config)
    assert bb.layers == ("block1", "block2", "block3", "block1-cls", "block2-cls", "block3-cls", "pooled")
    with torch.no_grad():
        expected = model.eval().encode_image(bb.preprocess(IMGS)).numpy()
    np.testing.assert_allclose(bb.features(IMGS), expected, rtol=1e-5, atol=1e-6)
    assert bb.features(IMGS, layer="block2").shape == (6, 32)
    with torch.no_grad():  # FTNet's feature: the class token after a middle block, before ln_post
        tokens = model.visual.forward_intermediates(
            bb.preprocess(IMGS), indices=[1], intermediates_only=True, output_extra_tokens=True
        )
    cls = tokens["image_intermediates_prefix"][0][:, 0].numpy()
    np.testing.assert_allclose(bb.features(IMGS, layer="block2-cls"), cls, rtol=1e-5, atol=1e-6)
