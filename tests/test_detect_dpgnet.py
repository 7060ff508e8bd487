"""DPGNet: pseudo-label selection, what trains and what stays frozen, and a tiny run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from aigclab.cli import app
from aigclab.data.mini import fake_set, real_set
from aigclab.detect import create_detector, load_detector
from aigclab.detect.dpgnet import (
    DPGNet,
    DPGNetConfig,
    FeatureBank,
    curriculum_threshold,
    select_pseudo_labels,
)
from aigclab.errors import AigclabError, ConfigError


def _unit(x: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32)
    return t / t.norm(dim=1, keepdim=True)


def test_pseudo_label_selector_keeps_only_confident_bank_agreed_labels() -> None:
    """Two feature clusters; the detector is confidently wrong on 10 images and unsure on 10 more."""
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:2] * 4.0
    truth = np.repeat([0, 1], 50)
    feats = _unit(centres[truth] + rng.normal(size=(100, 8)))
    prob = np.where(truth == 1, 0.95, 0.05)
    prob[[0, 1, 2, 3, 4, 50, 51, 52, 53, 54]] = [0.97] * 5 + [0.03] * 5  # confidently wrong
    prob[[5, 6, 7, 8, 9, 55, 56, 57, 58, 59]] = [0.4] * 5 + [0.6] * 5  # right but unsure
    prob_t = torch.as_tensor(prob, dtype=torch.float32)
    bank = FeatureBank(size=20, neighbours=5)
    bank.refresh(feats, prob_t)
    assert set(bank.feats) == {0, 1} and all(len(b) == 20 for b in bank.feats.values())
    pseudo, keep = select_pseudo_labels(prob_t, feats, bank, threshold=0.85)
    verdict_precision = float((pseudo.numpy() == truth).mean())
    kept_precision = float((pseudo[keep].numpy() == truth[keep.numpy()]).mean())
    assert verdict_precision == pytest.approx(0.9)
    assert kept_precision == 1.0  # every confident mistake is vetoed by the bank
    assert int(keep.sum()) == 80  # 100 - 10 wrong (bank veto) - 10 unsure (threshold)
    _, keep_low = select_pseudo_labels(prob_t, feats, bank, threshold=0.55)
    assert int(keep_low.sum()) == 90  # a lower threshold lets the unsure-but-right ones in


def test_threshold_anneals_over_the_first_adaptation_epoch() -> None:
    cfg = DPGNetConfig()
    assert curriculum_threshold(cfg, 1, 0.0) == pytest.approx(0.85)
    assert curriculum_threshold(cfg, 1, 0.5) == pytest.approx(0.775)
    assert curriculum_threshold(cfg, 1, 1.0) == pytest.approx(0.7)
    assert curriculum_threshold(cfg, 3, 0.0) == pytest.approx(0.7)


@pytest.fixture(scope="module")
def mini_data() -> dict[str, np.ndarray]:
    real, _ = real_set("train")
    rng = np.random.default_rng(0)
    r = real.images[rng.permutation(len(real))[:48]]
    dc, ddpm = fake_set("dcgan", "train").images[:24], fake_set("ddpm", "train").images[:24]
    return {
        "x": np.concatenate([r[:24], dc]),
        "y": np.repeat([0, 1], 24),
        "unlabeled": np.concatenate([r[24:], ddpm]),
    }


def _tiny(**overrides: object) -> DPGNet:
    kw = {"epochs": 2, "batch_labeled": 16, "batch_unlabeled": 16, "bank_size": 8} | overrides
    return create_detector("dpgnet-tiny", **kw)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def trained(mini_data: dict[str, np.ndarray]) -> tuple[DPGNet, dict, dict, dict]:
    det = _tiny()
    before = {k: v.detach().clone() for k, v in det.model.state_dict().items()}
    history = det.adapt(mini_data["x"], mini_data["y"], mini_data["unlabeled"], log=lambda _: None)
    after = det.model.state_dict()
    return det, before, after, history


def test_only_prompts_projection_heads_and_norms_train(trained: tuple) -> None:
    det, before, after, history = trained
    changed = {
        k for k in before if before[k].dtype.is_floating_point and not torch.equal(before[k], after[k])
    }
    trainable = {n for n, p in det.model.named_parameters() if p.requires_grad}
    modules = dict(det.model.named_modules())
    in_backbone = {n for n in trainable if n.startswith("backbone.")}
    assert in_backbone and all(
        isinstance(modules[n.rsplit(".", 1)[0]], torch.nn.BatchNorm2d) for n in in_backbone
    )
    assert all(
        n.startswith(("head.", "classifier.", "text_proj.")) or n == "text.ctx"
        for n in trainable - in_backbone
    )
    text_encoder = [k for k in before if k.startswith("text.encoder.")]
    assert len(text_encoder) > 50 and not changed & set(text_encoder)  # MiniLM frozen
    convs = {f"{n}.weight" for n, m in modules.items() if isinstance(m, torch.nn.Conv2d)}
    norms = {f"{n}.weight" for n, m in modules.items() if isinstance(m, torch.nn.BatchNorm2d)}
    assert convs and not changed & convs  # conv weights frozen
    assert {"text.ctx", "text_proj.weight", "classifier.2.weight"} <= changed
    assert any(k.startswith("backbone.") and k.endswith("running_mean") for k in changed)
    assert changed & norms  # BN affine parameters trained
    adapt = history["epochs"][1]
    assert adapt["phase"] == "adapt" and adapt["seen"] == 3 * 16
    assert len(adapt["pseudo_index"]) == len(adapt["pseudo_label"]) <= adapt["seen"]
    assert set(adapt["loss"]) == {"cls", "aux", "distill"} | ({"pseudo"} if adapt["pseudo_index"] else set())


def test_training_is_deterministic(trained: tuple, mini_data: dict[str, np.ndarray]) -> None:
    det = trained[0]
    again = _tiny()
    again.adapt(mini_data["x"], mini_data["y"], mini_data["unlabeled"], log=lambda _: None)
    np.testing.assert_allclose(again.score(mini_data["x"]), det.score(mini_data["x"]), rtol=1e-5)


def test_saved_detector_loads_and_aigclab_detect_uses_it(
    trained: tuple, mini_data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    det = trained[0]
    det.save(tmp_path / "m.safetensors")
    loaded = load_detector(tmp_path / "m.safetensors")
    assert isinstance(loaded, DPGNet)
    np.testing.assert_allclose(loaded.score(mini_data["x"]), det.score(mini_data["x"]), rtol=1e-5)
    images = tmp_path / "images"
    images.mkdir()
    picks = mini_data["unlabeled"][[0, 1, 40, 41]]
    for i, img in enumerate(picks):
        Image.fromarray(img).save(images / f"{i}.png")
    out = tmp_path / "res.jsonl"
    args = ["detect", str(images), "--detector", str(tmp_path / "m.safetensors"), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = sorted((json.loads(x) for x in out.read_text().splitlines()), key=lambda r: r["file"])
    np.testing.assert_allclose([r["probability"] for r in rows], det.score(picks), atol=1e-4)


def test_tensors_that_do_not_fit_are_a_clear_error(trained: tuple, tmp_path: Path) -> None:
    trained[0].save(tmp_path / "m.safetensors")
    cfg = json.loads((tmp_path / "m.json").read_text()) | {"embed_dim": 64}
    (tmp_path / "m.json").write_text(json.dumps(cfg))
    with pytest.raises(AigclabError, match=r"m\.safetensors: tensors do not fit"):
        load_detector(tmp_path / "m.safetensors")


def test_backbone_without_normalisation_layers_is_refused() -> None:
    with pytest.raises(ConfigError, match="no normalisation layers"):
        create_detector("dpgnet-tiny", backbone="residual-spectrum", layer="spectrum")


def test_clip_text_tower_with_local_open_clip_weights(
    tmp_path: Path, mini_data: dict[str, np.ndarray]
) -> None:
    import open_clip
    from safetensors.torch import save_file

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    }
    (tmp_path / "dpg-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "dpg-clip.json")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = open_clip.create_model("dpg-clip", pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    clip = {"model_name": "dpg-clip", "weights": str(tmp_path / "w.safetensors"),
            "model_config": str(tmp_path / "dpg-clip.json")}  # fmt: skip
    det = create_detector(
        "dpgnet-clip-l14", backbone_kwargs=clip, layer="block2", patch_size=32, embed_dim=16,
        epochs=2, batch_labeled=16, batch_unlabeled=16, bank_size=8,
    )  # fmt: skip
    assert det.model.text.dim == 16
    before = {k: v.clone() for k, v in det.model.state_dict().items() if k.startswith("text.")}
    det.adapt(mini_data["x"], mini_data["y"], mini_data["unlabeled"], log=lambda _: None)
    after = det.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"text.ctx"}  # the CLIP text encoder stays frozen
    trainable_visual = {n for n, p in det.model.backbone.named_parameters() if p.requires_grad}
    assert trainable_visual and all(".ln" in n or "norm" in n for n in trainable_visual)
    scores = det.score(mini_data["x"])
    assert np.isfinite(scores).all()
    det.save(tmp_path / "clip.safetensors")
    np.testing.assert_allclose(
        load_detector(tmp_path / "clip.safetensors").score(mini_data["x"]), scores, rtol=1e-5
    )


def test_aigclab_detect_train_with_an_unlabeled_folder(
    mini_data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """`aigclab detect train dpgnet-tiny --labeled DIR --unlabeled DIR` then `aigclab detect --detector`."""
    for name, imgs in (("real", mini_data["x"][:12]), ("fake/dcgan", mini_data["x"][24:36])):
        (tmp_path / "lab" / name).mkdir(parents=True)
        for i, img in enumerate(imgs):
            Image.fromarray(img).save(tmp_path / "lab" / name / f"{i}.png")
    (tmp_path / "unl").mkdir()
    for i, img in enumerate(mini_data["unlabeled"][::4]):
        Image.fromarray(img).save(tmp_path / "unl" / f"{i}.png")
    (tmp_path / "unl" / "broken.png").write_bytes(b"not an image")
    model = tmp_path / "m.safetensors"
    runner = CliRunner()
    args = ["detect", "train", "dpgnet-tiny", "--labeled", str(tmp_path / "lab"), "--unlabeled",
            str(tmp_path / "unl"), "--out", str(model), "--set", "epochs=2", "--set", "batch_labeled=8"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "broken.png" in result.output and "kept_share" in result.output
    out = tmp_path / "res.jsonl"
    result = runner.invoke(
        app, ["detect", str(tmp_path / "unl"), "--detector", str(model), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sum("probability" in r for r in rows) == 12 and sum("skipped" in r for r in rows) == 1
