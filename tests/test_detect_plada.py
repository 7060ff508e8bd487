"""PLADA: gradient reversal, seeded prefix pool, ODA centres, training, save/load and the CLI round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from aigclab.cli import app
from aigclab.data.mini import MiniSplit, load_mini
from aigclab.detect import Trainable, create_detector, load_detector
from aigclab.detect.plada import PLADA, GradientReversal, PLADAConfig, PLADANet, oda_loss

TINY = {
    "dim": 16,
    "depth": 2,
    "heads": 2,
    "pool_size": 4,
    "prefix_len": 4,
    "compress_out": 4,
    "batch_size": 32,
}


@pytest.fixture(scope="module")
def data() -> MiniSplit:
    """48 real and 48 DCGAN training patches."""
    train = load_mini("train", generators=["dcgan"])
    rng = np.random.default_rng(0)
    real = rng.choice(np.flatnonzero(train.labels == 0), 48, replace=False)
    fake = rng.choice(np.flatnonzero(train.labels == 1), 48, replace=False)
    return train.subset(np.concatenate([real, fake]))


@pytest.fixture(scope="module")
def trained(data: MiniSplit) -> PLADA:
    det = create_detector("plada-tiny", **TINY, epochs=6, paired_ratio=0.5, lr=3e-3)
    assert isinstance(det, PLADA) and isinstance(det, Trainable)
    det.train_on(data, seed=0, log=lambda _m: None)
    return det


def test_gradient_reversal_flips_and_scales_the_gradient() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    y = GradientReversal.apply(x, 0.5)
    torch.testing.assert_close(y, x)  # identity forward
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * w)


def test_prefix_pool_sampling_is_seeded() -> None:
    net = PLADANet(PLADAConfig(**(TINY | {"pool_size": 8})), tokens=16, in_dim=8)
    labels = torch.tensor([0.0, 1.0] * 50)
    draw = lambda seed: net.pick_prefixes(labels, torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4))
    assert set(draw(3).tolist()) == set(range(8))  # the whole pool is used
    beam = PLADANet(PLADAConfig(**(TINY | {"pool_size": 8, "pool_sampling": "beam"})), tokens=16, in_dim=8)
    ids = beam.pick_prefixes(labels, torch.Generator().manual_seed(0))
    assert (ids[labels == 0] < 4).all() and (ids[labels == 1] >= 4).all()


def test_test_time_prefix_is_the_pool_average() -> None:
    torch.manual_seed(0)
    net = PLADANet(PLADAConfig(**TINY), tokens=16, in_dim=8).eval()
    with torch.no_grad():
        net.prefix_pool[:, :, 1].normal_()  # values start at zero; make them matter
        x = torch.randn(3, 16, 8)
        averaged, _, _ = net(x)
        mean = net.prefix_pool.mean(1, keepdim=True).clone()
        net.prefix_pool.copy_(mean.expand_as(net.prefix_pool))
        single, _, _ = net(x, torch.tensor([0, 2, 3]))
    torch.testing.assert_close(averaged, single)


def test_oda_uses_separate_centres_for_raw_and_compressed_views() -> None:
    feats = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0])
    compressed = torch.tensor([False, False, True, True])
    expected = 1 / (1 + 5.0) + 1 / (1 + 1.0)  # raw centres 5 apart, compressed centres 1 apart
    assert float(oda_loss(feats, labels, compressed)) == pytest.approx(expected)
    assert float(oda_loss(feats[:2], labels[:2], compressed[:2])) == pytest.approx(1 / 6)  # one part only


def test_tiny_plada_loss_falls_and_it_separates_training_data(trained: PLADA, data: MiniSplit) -> None:
    first, last = trained.history[0], trained.history[-1]
    assert last["tf"] < first["tf"] and last["loss"] < first["loss"]
    assert last["oda"] < first["oda"]  # centres move apart
    scores = trained.score(data.images)
    assert scores[data.labels == 1].mean() > scores[data.labels == 0].mean()


def test_training_is_seeded(data: MiniSplit, trained: PLADA) -> None:
    again = create_detector("plada-tiny", **TINY, epochs=6, paired_ratio=0.5, lr=3e-3)
    again.train_on(data, seed=0, log=lambda _m: None)  # type: ignore[attr-defined]
    np.testing.assert_allclose(again.score(data.images[:20]), trained.score(data.images[:20]), atol=1e-6)


def test_ablation_without_b2e_has_no_prefixes_or_compression_head() -> None:
    det = create_detector("plada-tiny", **TINY, b2e=False)
    names = {n for n, _ in det.net.named_parameters()}  # type: ignore[attr-defined]
    assert not any(n.startswith(("prefix_pool", "cmp_head")) or "comp" in n for n in names)
    assert det.net.prompts.shape[1] == 0  # type: ignore[attr-defined]


def test_saved_plada_loads_and_scores_identically(trained: PLADA, data: MiniSplit, tmp_path: Path) -> None:
    trained.save(tmp_path / "plada.safetensors")
    loaded = load_detector(tmp_path / "plada.safetensors")
    assert isinstance(loaded, PLADA) and loaded.config == trained.config
    np.testing.assert_array_equal(loaded.score(data.images), trained.score(data.images))
    big = np.concatenate([data.images[0], data.images[50]], axis=1)  # 32x64: scored as two patches
    assert loaded.score([big])[0] == pytest.approx(trained.score(data.images[[0, 50]]).mean())


def test_untrained_plada_refuses_to_score() -> None:
    with pytest.raises(Exception, match="not trained"):
        create_detector("plada-tiny", **TINY).score(np.zeros((2, 32, 32, 3), np.uint8))


def test_train_command_then_main_job(data: MiniSplit, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    for i, (img, label) in enumerate(zip(data.images, data.labels, strict=True)):
        sub = folder / ("fake/dcgan" if label else "real")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(sub / f"{i}.png")
    model = tmp_path / "plada.safetensors"
    sets = [x for k, v in (TINY | {"epochs": 1}).items() for x in ("--set", f"{k}={json.dumps(v)}")]
    runner = CliRunner()
    result = runner.invoke(
        app, ["detect", "train", "plada-tiny", "--data", str(folder), "--out", str(model), *sets]
    )
    assert result.exit_code == 0, result.output
    assert "n_paired=19" in result.output  # 20% of 96
    out = tmp_path / "scores.jsonl"
    result = runner.invoke(app, ["detect", str(folder / "real"), "--detector", str(model), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 48


def test_default_preset_reads_one_nsfwjs_token_per_jpeg_block(data: MiniSplit) -> None:
    det = create_detector("plada-tiny", **TINY)
    assert (det.config.backbone, det.config.layer) == ("mobilenetv2-nsfwjs", "block5")  # type: ignore[attr-defined]
    tokens = det.tokens(data.images[:2])  # type: ignore[attr-defined]
    assert tokens.shape == (2, 16, 32 * 3 * 3)  # 96 px: 12x12 map of 32 channels -> 4x4 tokens of 8x8 pixels
    assert det.grid == 4  # type: ignore[attr-defined]


def test_plada_reads_tokens_of_a_backbone_with_forward_maps(data: MiniSplit) -> None:
    det = create_detector(
        "plada-tiny",
        **TINY,
        epochs=1,
        backbone="mobilenetv2-nsfwjs",
        backbone_kwargs={"input_size": 64},
        layer="block5",
    )
    tokens = det.tokens(data.images[:3])  # type: ignore[attr-defined]
    assert tokens.shape == (3, 16, 32 * 2 * 2)  # 8x8 map of 32 channels -> 4x4 tokens
    det.fit(data.images, data.labels)
    assert np.isfinite(det.score(data.images[:4])).all()
