"""Detector fidelity: verdicts and calibration, save/load of every registered detector in a fresh process,
user supports against a prior bank, the feature cache key, IVF without neighbours, the bench protocols."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aigclab.detect import FeatureExtractor, create_detector, list_detectors, load_detector
from aigclab.detect.base import Detector
from aigclab.detect.default import choose_band, choose_threshold
from aigclab.detect.ftnet import SupportBank, kernel_scores

RANDOM_BACKBONE = {"pretrained": False, "preset": "aigclab-tiny-test"}
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
LABELS = np.array([0, 1] * 6)


def test_verdicts_use_threshold_and_uncertain_band() -> None:
    det = Detector()
    assert det.verdicts(np.array([0.2, 0.5, 0.7])) == ["real", "fake", "fake"]
    det.threshold, det.band = 0.4, (0.3, 0.5)
    assert det.verdicts(np.array([0.29, 0.31, 0.4, 0.49, 0.5, 0.51])) == [
        "real",
        "uncertain",
        "uncertain",
        "uncertain",
        "fake",
        "fake",
    ]


def test_threshold_and_band_are_chosen_on_held_out_scores() -> None:
    rng = np.random.default_rng(0)
    scores = np.r_[rng.uniform(0.0, 0.35, 50), rng.uniform(0.3, 0.6, 50)]
    labels = np.r_[np.zeros(50), np.ones(50)]
    t = choose_threshold(scores, labels)
    assert 0.3 <= t <= 0.36  # between the classes, not at 0.5
    bal = lambda th: ((scores[labels == 1] >= th).mean() + (scores[labels == 0] < th).mean()) / 2  # noqa: E731
    assert bal(t) == pytest.approx(max(bal(th) for th in np.r_[scores, 2.0]))  # the best on these scores
    noisy = np.r_[rng.uniform(0, 0.6, 100), rng.uniform(0.4, 1.0, 100)]
    y = np.r_[np.zeros(100), np.ones(100)]
    lo, hi = choose_band(noisy, y, 0.5, target_accuracy=0.95)
    real, fake = noisy < lo, noisy >= hi
    assert 0 < lo <= 0.5 <= hi < 1 and 0 < (~real & ~fake).mean() <= 0.5
    assert _decided_balanced_acc(y, real, fake) >= 0.95


def _decided_balanced_acc(y: np.ndarray, real: np.ndarray, fake: np.ndarray) -> float:
    decided = real | fake
    return float(
        ((y[fake] == 1).sum() / (y[decided] == 1).sum() + (y[real] == 0).sum() / (y[decided] == 0).sum()) / 2
    )


def test_band_ends_are_chosen_apart_and_both_verdicts_stay_reachable() -> None:
    # the default's held-out scores: reals bunched below a high threshold, fakes spread above it, overlap.
    # A band centred on the threshold would reach past 1.0 and never answer "fake".
    rng = np.random.default_rng(1)
    scores = np.r_[rng.uniform(0.5, 0.9, 200), rng.uniform(0.7, 1.0, 200)]
    y = np.r_[np.zeros(200), np.ones(200)]
    t = choose_threshold(scores, y)
    lo, hi = choose_band(scores, y, t, target_accuracy=0.99, max_uncertain=0.5)
    real, fake = scores < lo, scores >= hi
    assert lo <= t <= hi and hi - t != t - lo  # not centred
    assert real.any() and fake.any() and (~real & ~fake).mean() <= 0.5
    assert _decided_balanced_acc(y, real, fake) > 0.9  # the decided images are answered well


def _build(name: str, tmp: Path) -> Detector:
    """A small instance of every registry entry, fitted or given supports."""
    from test_contracts import tiny_detector_overrides

    (tmp / name).mkdir()  # each its own local weight files
    det = create_detector(name, **tiny_detector_overrides(name, tmp / name))
    return det.add_support(IMAGES, LABELS) if name.startswith("ftnet") else det.fit(IMAGES, LABELS)


def test_every_registered_detector_loads_in_a_fresh_process(tmp_path: Path) -> None:
    expected = {}
    for i, name in enumerate(list_detectors()):
        det = _build(name, tmp_path)
        det.threshold, det.band = 0.3 + 0.01 * i, (0.2, 0.6 + 0.01 * i)
        det.save(tmp_path / f"{name}.safetensors")
        expected[name] = det.score(IMAGES[:4]).tolist()
    np.save(tmp_path / "images.npy", IMAGES[:4])
    code = (
        "import json, sys, numpy as np; from aigclab.detect import load_detector; d = sys.argv[1]; "
        "x = np.load(d + '/images.npy'); out = {}\n"
        "for n in json.loads(sys.argv[2]):\n"
        "    det = load_detector(f'{d}/{n}.safetensors'); out[n] = [det.score(x).tolist(), det.threshold, det.band]\n"
        "print(json.dumps(out))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), json.dumps(sorted(expected))],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(got) == set(list_detectors())
    for i, name in enumerate(list_detectors()):
        scores, threshold, band = got[name]
        np.testing.assert_allclose(scores, expected[name], rtol=1e-5, err_msg=name)
        assert threshold == pytest.approx(0.3 + 0.01 * i) and band == pytest.approx([0.2, 0.6 + 0.01 * i])


def test_user_supports_move_the_decision_against_a_large_bank() -> None:
    rng = np.random.default_rng(0)
    d = 16
    prior_real = rng.normal(size=(500, d)).astype(np.float32)
    prior_fake = rng.normal(size=(500, d)).astype(np.float32)
    target = rng.normal(size=d).astype(np.float32)  # the user's generator: near one prior real, no fakes
    prior_real[0] = target + 0.3 * rng.normal(size=d)
    user = (target + 0.1 * rng.normal(size=(4, d))).astype(np.float32)
    queries = (target + 0.1 * rng.normal(size=(20, d))).astype(np.float32)
    labels = np.r_[np.zeros(500), np.ones(500)]

    def p_fake(bank: SupportBank) -> np.ndarray:
        lk = bank.log_kernel(queries, 15.0)
        return 1 / (1 + np.exp(lk[:, 0] - lk[:, 1]))

    pooled = SupportBank()
    pooled.add(np.r_[prior_real, prior_fake], labels, "prior")
    before = p_fake(pooled)
    pooled.add(user, np.ones(4), "prior")  # the old behaviour: supports pooled into the bank
    weighted = SupportBank(user_weight=1.0)
    weighted.add(np.r_[prior_real, prior_fake], labels, "prior")
    weighted.add(user, np.ones(4), "user")
    assert (before < 0.5).all()
    assert (p_fake(weighted) > 0.9).all()  # weighted user supports decide
    assert p_fake(weighted).mean() > p_fake(pooled).mean()
    ignored = SupportBank(user_weight=0.0)
    ignored.add(np.r_[prior_real, prior_fake], labels, "prior")
    ignored.add(user, np.ones(4), "user")
    np.testing.assert_allclose(p_fake(ignored), before, rtol=1e-6)


def test_ftnet_saves_both_groups(tmp_path: Path) -> None:
    det = create_detector("ftnet-cnn-tiny", backbone_kwargs=RANDOM_BACKBONE, user_weight=4.0)
    det.add_prior(IMAGES[:8], LABELS[:8]).add_support(IMAGES[8:], LABELS[8:])  # type: ignore[attr-defined]
    det.save(tmp_path / "f.safetensors")
    again = load_detector(tmp_path / "f.safetensors")
    assert len(again.bank) == 12  # type: ignore[attr-defined]
    np.testing.assert_allclose(again.score(IMAGES), det.score(IMAGES), rtol=1e-6)


def test_ivf_without_a_neighbour_gives_no_nan() -> None:
    assert kernel_scores(np.zeros((2, 3)), 15.0, valid=np.zeros((2, 3), bool)).tolist() == [-np.inf, -np.inf]
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(200, 8)).astype(np.float32)
    labels = np.r_[np.zeros(100), np.ones(100)]
    exact, ivf = SupportBank("exact"), SupportBank("ivf", neighbours=200)
    exact.add(keys, labels)
    ivf.add(keys, labels)

    class Empty:  # an IVF search whose probed lists are all empty
        def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            return np.full((len(q), k), -3.4e38, np.float32), np.full((len(q), k), -1)

    ivf._index = {("user", 0): Empty(), ("user", 1): ivf._faiss(("user", 1))}
    q = rng.normal(size=(5, 8)).astype(np.float32)
    lk = ivf.log_kernel(q, 15.0)
    assert np.isfinite(lk).all()
    np.testing.assert_allclose(lk[:, 0], exact.log_kernel(q, 15.0)[:, 0], rtol=1e-5)  # exact fallback


def test_feature_cache_key_includes_backbone_kwargs_and_memory_skips_recompute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = FeatureExtractor(layer="block2", backbone_kwargs=RANDOM_BACKBONE)
    b = FeatureExtractor(layer="block2", backbone_kwargs={**RANDOM_BACKBONE, "epochs": 1})  # same weights
    assert a.key != b.key
    first = a(IMAGES)

    def boom(images: np.ndarray) -> np.ndarray:
        raise AssertionError("recomputed a cached feature")

    monkeypatch.setattr(a, "_compute", boom)
    np.testing.assert_array_equal(a(IMAGES[::-1]), first[::-1])


@pytest.mark.parametrize("protocol", ["few-shot", "cross-generator"])
def test_detect_bench_protocols_run_at_a_tiny_size(protocol: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aigclab.cli import app

    args = ["detect", "bench", "--protocol", protocol, "--quick", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    if protocol == "few-shot":
        res = json.loads((tmp_path / "few-shot.json").read_text())["methods"]
        assert {"univfd-tiny", "univfd-tiny-refit-1shot", "ftnet-1shot"} <= set(res)
        for r in res.values():
            assert {"mean_auc", "mean_ap", "calibrated_acc", "mean_acc", "per_generator"} <= set(r)
            assert 0 <= r["mean_auc"] <= 1 and 0 <= r["calibrated_acc"] <= 1 and len(r["per_generator"]) == 6
        assert "calibrated acc" in (tmp_path / "few-shot.md").read_text()
    else:
        rep = json.loads((tmp_path / "cross-ftnet-tiny.json").read_text())
        assert len(rep["per_generator"]) == 7


DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"


@pytest.fixture(scope="module")
def default_det():  # type: ignore[no-untyped-def]
    from aigclab.detect.default import default_detector

    return default_detector()


def test_shipped_default_ranks_demo_fakes_above_reals(default_det) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    files = sorted(DEMO.glob("*.png"))
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    labels = np.array([f.name.startswith("fake") for f in files])
    probs = default_det.score(images)
    pairs = probs[labels][:, None] > probs[~labels][None, :]
    assert pairs.mean() >= 0.75, dict(zip([f.name for f in files], probs.round(3), strict=True))
    assert default_det.band is not None  # calibrated held-out, saved
    lo, hi = default_det.band
    assert 0 < lo <= default_det.threshold <= hi < 1  # both verdicts reachable: the band stays inside (0, 1)
    verdicts = default_det.verdicts(probs)
    assert set(verdicts) <= {"real", "fake", "uncertain"}


def test_default_decides_multi_patch_images_with_the_band_of_their_count(default_det) -> None:  # type: ignore[no-untyped-def]
    """A 128 px image of 16 test patches (one zoo family, or one held-out photo) is scored as their mean,
    which spreads far less than one patch: only the band calibrated at 16 patches calls the fakes fake."""
    from aigclab.data.mini import fake_set, mini_generators, real_set
    from aigclab.detect.default import patch_counts

    assert sorted(default_det.count_bands) == patch_counts(64) == [1, 2, 4, 8, 16, 32, 64]

    def tile(patches: np.ndarray) -> np.ndarray:
        return np.concatenate([np.concatenate(list(patches[r * 4 : r * 4 + 4]), axis=1) for r in range(4)])

    reals, photos = real_set("test")
    real = [tile(reals.images[photos == n][:16]) for n in sorted(set(photos.tolist()))]
    fake = [tile(fake_set(g, "test").images[:16]) for g in mini_generators()]
    probs, counts = default_det.score_counted(real + fake)
    assert set(counts.tolist()) == {16}
    verdicts = default_det.verdicts(probs, counts)
    assert verdicts[len(real) :] == ["fake"] * len(fake), probs.round(3)
    assert "fake" not in verdicts[: len(real)], probs.round(3)
    assert "uncertain" in default_det.verdicts(
        probs[len(real) :]
    )  # the one-patch band leaves fakes undecided


def test_trained_baselines_are_cached_by_what_their_weights_depend_on(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from aigclab.detect import bench
    from aigclab.detect.baselines import CNNDetector

    small = {"epochs": 1, "channels": (8, 8, 16, 16)}
    first = bench.train_baselines(["cnndet-tiny"], str(tmp_path), max_train=8, **{"cnndet-tiny": small})
    cached = sorted((tmp_path / "trained").glob("*.safetensors"))
    assert len(cached) == 1
    with monkeypatch.context() as m:
        m.setattr(
            CNNDetector, "fit", lambda *a, **k: pytest.fail("trained again instead of reusing the cache")
        )
        again = bench.train_baselines(["cnndet-tiny"], str(tmp_path), max_train=8, **{"cnndet-tiny": small})
        np.testing.assert_allclose(
            again["cnndet-tiny"].score(IMAGES), first["cnndet-tiny"].score(IMAGES), rtol=1e-6
        )
    bench.train_baselines(
        ["cnndet-tiny"], str(tmp_path), max_train=8, **{"cnndet-tiny": {**small, "seed": 1}}
    )
    bench.train_baselines(["cnndet-tiny"], str(tmp_path), max_train=9, **{"cnndet-tiny": small})
    refitted = list((tmp_path / "trained").glob("*.safetensors"))  # other settings, other data
    assert len(refitted) == 3
