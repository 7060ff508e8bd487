"""Detector training, mAP evaluation, save/load, and the `aigclab augment xray` CLI end to end (tiny)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aigclab.augment.coco import simulate_split, to_samples
from aigclab.augment.train_det import (
    TrainConfig,
    create_xray_detector,
    evaluate,
    load_detector,
    save_detector,
    train,
)
from aigclab.augment.xray_sim import XraySimConfig
from aigclab.cli import app
from aigclab.errors import ConfigError, DataError

TINY_SIM = XraySimConfig.from_preset("aigclab.augment", "xray-tiny")
DATA = to_samples(simulate_split(TINY_SIM, 4, seed=0, split="train"), "vendor-a")


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("detector", ["faster-rcnn-tiny", "fcos-tiny"])
def test_a_tiny_training_run_updates_weights_and_evaluates(detector: str) -> None:
    cfg = TrainConfig.from_preset("aigclab.augment", "train-tiny", detector=detector)
    initial = create_xray_detector(detector, seed=cfg.seed, image_size=64).state_dict()
    losses: list[float] = []
    model, timing = train(cfg, DATA, log=lambda step, loss: losses.append(loss))
    assert len(losses) == cfg.steps and all(math.isfinite(v) for v in losses)
    changed = [not torch.equal(initial[k], v) for k, v in model.state_dict().items() if v.is_floating_point()]
    assert any(changed)
    assert timing["augment_ms_per_image"] >= 0.0
    metrics = evaluate(model, DATA[:2])
    assert set(metrics) == {"map", "map50"} and all(0.0 <= v <= 1.0 for v in metrics.values())


def test_evaluate_gives_full_marks_to_a_perfect_detector() -> None:
    class Oracle(torch.nn.Module):
        def forward(self, images):
            return [
                {
                    "boxes": torch.as_tensor(s.boxes),
                    "scores": torch.ones(len(s.labels)),
                    "labels": torch.as_tensor(s.labels),
                }
                for s in DATA[: len(images)]
            ]

    assert evaluate(Oracle(), DATA, batch_size=len(DATA)) == {"map": 1.0, "map50": 1.0}


def test_same_seed_same_model_and_safetensors_round_trip(tmp_path) -> None:
    cfg = TrainConfig.from_preset("aigclab.augment", "train-tiny")
    a, _ = train(cfg, DATA)
    b, _ = train(cfg, DATA)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    save_detector(a, cfg, tmp_path)
    loaded, loaded_cfg = load_detector(tmp_path)
    assert loaded_cfg == cfg
    a.eval()
    images = [torch.from_numpy(DATA[0].image).permute(2, 0, 1).float() / 255]
    with torch.no_grad():
        torch.testing.assert_close(a(images)[0]["scores"], loaded(images)[0]["scores"])
    with pytest.raises(ConfigError, match=r"model\.safetensors"):
        load_detector(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="at least 2"):
        train(cfg, DATA[:1])


def test_cli_build_train_eval_end_to_end(tmp_path) -> None:
    runner = CliRunner()
    data, model, report = tmp_path / "data", tmp_path / "model", tmp_path / "eval.json"
    result = runner.invoke(
        app,
        ["augment", "xray", "build", str(data), "--preset", "xray-tiny", "--n-train", "4", "--n-test", "2"],
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in data.iterdir()} == {"train", "test-vendor-a", "test-vendor-b", "sim_config.json"}
    coco = json.loads((data / "train" / "annotations.json").read_text())
    assert len(coco["images"]) == 4 and len(coco["categories"]) == 5
    result = runner.invoke(
        app,
        [
            "augment",
            "xray",
            "train",
            str(data),
            str(model),
            "--preset",
            "train-tiny",
            "--augmentation",
            "bgm-log",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (model / "model.safetensors").is_file()
    result = runner.invoke(
        app, ["augment", "xray", "eval", str(model), str(data / "test-vendor-b"), "--out", str(report)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(report.read_text())
    assert metrics["augmentation"] == "bgm-log" and 0.0 <= metrics["map50"] <= 1.0
    result = runner.invoke(app, ["augment", "xray", "eval", str(model), str(tmp_path / "nowhere")])
    assert isinstance(result.exception, DataError) and "annotations.json" in str(result.exception)
    assert np.isfinite(metrics["map"])


@pytest.mark.parametrize("detector", ["fcos-tiny", "faster-rcnn-tiny"])
def test_short_run_lowers_the_loss_and_detects_training_objects(detector: str) -> None:
    """Overfit 4 scans: the loss falls and the training-set mAP50 rises above zero (a broken loss,
    swapped labels or frozen weights would leave it at zero)."""
    cfg = TrainConfig(detector=detector, augmentation="none", steps=60, batch_size=4, lr=3e-3, image_size=64)
    losses: list[float] = []
    checkpoints: list[int] = []
    model, _ = train(
        cfg, DATA, log=lambda step, loss: losses.append(loss), every=30,
        on_checkpoint=lambda step, m: checkpoints.append(step),
    )  # fmt: skip
    assert checkpoints == [30, 60] and model.training
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    assert evaluate(model, DATA)["map50"] > 0.0


def test_paired_seeds_share_minibatches_flips_and_zooms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs that differ only in the mixing transform see the same scans, donors and geometry."""
    from aigclab.augment.transforms import DetectionAugment

    seen: list[tuple] = []
    original = DetectionAugment.apply

    def spy(self, params, sample, donor):  # type: ignore[no-untyped-def]
        seen.append((id(sample.image), id(donor.image), params.flip, params.scale, params.mix is None))
        return original(self, params, sample, donor)

    monkeypatch.setattr(DetectionAugment, "apply", spy)
    runs = {}
    for aug in ("none", "bgm", "cutmix"):
        seen.clear()
        train(TrainConfig(detector="fcos-tiny", augmentation=aug, steps=3, batch_size=4, image_size=64), DATA)
        runs[aug] = list(seen)
    geometry = {aug: [s[:4] for s in r] for aug, r in runs.items()}
    assert geometry["none"] == geometry["bgm"] == geometry["cutmix"]
    assert not all(s[4] for s in runs["bgm"])  # bgm really mixed some of them
