"""Detectors on a randomly initialised backbone: FTNet maths, indexes, FTNet-T, baselines, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aigclab.detect import FeatureExtractor, FTNet, create_detector, to_patches
from aigclab.detect.baselines import npr_residual
from aigclab.detect.ftnet import SupportBank, kernel_scores
from aigclab.errors import AigclabError

RANDOM_BACKBONE = {"pretrained": False, "preset": "aigclab-tiny-test"}
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)


def _ftnet(**kw) -> FTNet:
    return create_detector("ftnet-cnn-tiny", backbone_kwargs=RANDOM_BACKBONE, **kw)  # type: ignore[return-value]


def test_one_plus_one_support_is_exact_nearest_neighbour() -> None:
    det = _ftnet()
    support, labels = IMAGES[:2], np.array([0, 1])
    det.add_support(support, labels)
    scores = det.score(IMAGES[2:])
    # brute-force reference: cosine similarity to each support, nearest wins
    f = det.extractor(IMAGES)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    sims = f[2:] @ f[:2].T
    np.testing.assert_array_equal(scores >= 0.5, sims[:, 1] >= sims[:, 0])
    expected = 1 / (1 + np.exp(-15 * (sims[:, 1] - sims[:, 0])))
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_k_shot_is_a_kernel_weighted_vote() -> None:
    sims = np.array([[0.9, 0.5, 0.1]])
    beta = 4.0
    expected = np.log(np.exp(-beta * 0.1) + np.exp(-beta * 0.5) + np.exp(-beta * 0.9))
    assert kernel_scores(sims, beta)[0] == pytest.approx(expected)
    # far-away queries do not underflow to 0/0
    assert np.isfinite(kernel_scores(np.array([[-1.0, -1.0]]), 500.0)).all()


@pytest.mark.parametrize("index", ["flat", "hnsw", "ivf"])
def test_faiss_indexes_match_exact_search(index: str) -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(40, 16))
    which = rng.integers(0, 40, 4000)
    feats = (centres[which] + 0.15 * rng.normal(size=(4000, 16))).astype(np.float32)
    labels = (which % 2).astype(int)  # each cluster belongs to one class
    queries = (centres[rng.integers(0, 40, 200)] + 0.15 * rng.normal(size=(200, 16))).astype(np.float32)
    exact, approx = SupportBank("exact"), SupportBank(index, neighbours=200)
    exact.add(feats, labels)
    approx.add(feats, labels)
    e, a = exact.log_kernel(queries, 15.0), approx.log_kernel(queries, 15.0)
    decide = lambda lk: lk[:, 1] > lk[:, 0]  # noqa: E731
    assert (decide(a) == decide(e)).mean() >= 0.98
    # the nearer class's kernel mass sits in its nearest keys; the farther class's sum is truncated
    assert np.median(np.abs(a.max(axis=1) - e.max(axis=1))) < 0.05
    assert (a <= e + 1e-5).all()  # a truncated kernel sum never exceeds the full one
    if index == "flat":  # with as many neighbours as keys, the flat index is exact
        full = SupportBank("flat", neighbours=4000)
        full.add(feats, labels)
        np.testing.assert_allclose(full.log_kernel(queries, 15.0), e, atol=1e-4)


def test_scoring_needs_both_classes() -> None:
    det = _ftnet().add_support(IMAGES[:3], np.array([0, 0, 0]))
    with pytest.raises(AigclabError, match="at least one real and one fake"):
        det.score(IMAGES[3:5])


def test_ftnet_t_fits_its_support_and_round_trips(tmp_path: Path) -> None:
    support, labels = IMAGES[:8], np.array([0, 1] * 4)
    plain = _ftnet(beta=4.0).add_support(support, labels)
    tuned = _ftnet(beta=4.0, finetune_epochs=30, finetune_lr=0.01).add_support(support, labels)
    assert tuned.adapter is not None
    p_plain, p_tuned = plain.score(support), tuned.score(support)
    margin = lambda p: np.where(labels == 1, p, 1 - p).mean()  # noqa: E731
    assert margin(p_tuned) > margin(p_plain)
    tuned.save(tmp_path / "ftnet.safetensors")
    again = FTNet.load(tmp_path / "ftnet.safetensors")
    np.testing.assert_allclose(again.score(IMAGES[8:12]), tuned.score(IMAGES[8:12]), rtol=1e-6)


def test_large_images_are_scored_as_patch_averages() -> None:
    det = _ftnet().add_support(IMAGES[:2], np.array([0, 1]))
    big = RNG.integers(0, 256, (70, 100, 3), dtype=np.uint8)
    patches = to_patches(big, 32)
    assert patches.shape == (6, 32, 32, 3)
    np.testing.assert_allclose(det.score([big]), [det.score(patches).mean()])
    assert to_patches(big[:20, :20], 32).shape == (1, 32, 32, 3)  # too small: upscaled


def test_feature_cache_hits_disk_and_keys_by_layer(tmp_path: Path) -> None:
    fx = FeatureExtractor(layer="block2", cache_dir=tmp_path, backbone_kwargs=RANDOM_BACKBONE)
    a = fx(IMAGES[:5])
    files = sorted((tmp_path / fx.key).glob("*.npy"))
    assert len(files) == 5
    np.testing.assert_allclose(fx(IMAGES[:5]), a)
    fx2 = FeatureExtractor(layer="block3", cache_dir=tmp_path, backbone_kwargs=RANDOM_BACKBONE)
    assert fx2.key != fx.key
    fx2(IMAGES[:2])
    assert len(list((tmp_path / fx2.key).glob("*.npy"))) == 2


def _toy_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reals: smooth random fields; fakes: nearest-upsampled noise (a blocky up-sampling trace)."""
    rng = np.random.default_rng(seed)
    smooth = np.repeat(np.repeat(rng.integers(60, 200, (n, 8, 8, 3)), 4, 1), 4, 2).astype(np.float64)
    smooth += rng.normal(0, 6, smooth.shape)
    blocky = np.repeat(np.repeat(rng.integers(0, 256, (n, 16, 16, 3)), 2, 1), 2, 2).astype(np.float64)
    images = np.clip(np.concatenate([smooth, blocky]), 0, 255).astype(np.uint8)
    return images, np.r_[np.zeros(n), np.ones(n)].astype(int)


@pytest.mark.parametrize("name", ["cnndet-tiny", "npr-tiny"])
def test_cnn_baselines_learn_a_separable_toy_task(name: str, tmp_path: Path) -> None:
    x, y = _toy_data(48, 0)
    xt, yt = _toy_data(24, 1)
    det = create_detector(
        name, epochs=4, batch_size=16, lr=3e-3, channels=(8, 8, 16, 16), blur_prob=0.0, jpeg_prob=0.0
    )
    acc = ((det.fit(x, y).score(xt) >= 0.5) == yt).mean()
    assert acc >= 0.9
    det.save(tmp_path / "d.safetensors")
    again = type(det).load(tmp_path / "d.safetensors")
    np.testing.assert_allclose(again.score(xt[:4]), det.score(xt[:4]), rtol=1e-6)


def test_linear_probe_fits_and_round_trips(tmp_path: Path) -> None:
    x, y = _toy_data(40, 0)
    det = create_detector(
        "univfd-tiny", backbone="aigclab-tiny", backbone_kwargs=RANDOM_BACKBONE, c=100.0, layer="block2"
    ).fit(x, y)
    xt, yt = _toy_data(20, 1)
    assert ((det.score(xt) >= 0.5) == yt).mean() >= 0.8
    det.save(tmp_path / "p.safetensors")
    np.testing.assert_allclose(type(det).load(tmp_path / "p.safetensors").score(xt[:3]), det.score(xt[:3]))


def test_npr_residual_vanishes_on_nearest_upsampled_images() -> None:
    import torch

    low = torch.rand(2, 3, 8, 8)
    up = torch.nn.functional.interpolate(low, scale_factor=2.0, mode="nearest")
    assert npr_residual(up).abs().max() == 0
    assert npr_residual(torch.rand(2, 3, 16, 16)).abs().max() > 0


def test_ray_feature_extraction_matches_local() -> None:
    pytest.importorskip("ray")
    local = FeatureExtractor(layer="block2", backbone_kwargs=RANDOM_BACKBONE, batch_size=8)
    remote = FeatureExtractor(
        layer="block2", backbone_kwargs=RANDOM_BACKBONE, batch_size=8, engine="ray", workers=2
    )
    np.testing.assert_allclose(remote(IMAGES), local(IMAGES), rtol=1e-5, atol=1e-6)


def test_support_centring_subtracts_the_bank_mean() -> None:
    feats = np.random.default_rng(3).normal(2.0, 1.0, (10, 6)).astype(np.float32)
    labels = np.array([0, 1] * 5)
    bank = SupportBank("exact", center="support")
    bank.add(feats, labels)
    centred = feats - feats.mean(axis=0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    np.testing.assert_allclose(bank.keys[1], centred[labels == 1], atol=1e-6)
    q = np.random.default_rng(4).normal(2.0, 1.0, (3, 6)).astype(np.float32)
    sims = bank.prepare(q) @ centred.T
    expected = kernel_scores(sims[:, labels == 1], 50.0) - kernel_scores(sims[:, labels == 0], 50.0)
    lk = bank.log_kernel(q, 50.0)
    np.testing.assert_allclose(lk[:, 1] - lk[:, 0], expected, atol=1e-4)
