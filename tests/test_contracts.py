"""Every registry entry, built at its tiny setting, must honour its family's contract.

Each registry kind has one contract function below (decorated with ``@contract(kind)``); a registry
without a contract fails the suite, so a new family cannot land untested.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from aigclab._registry import all_registries
from aigclab.cli import REGISTRY_MODULES

for _module in REGISTRY_MODULES:
    importlib.import_module(_module)

CONTRACTS: dict[str, Callable[[str], None]] = {}


def contract(kind: str) -> Callable[[Callable[[str], None]], Callable[[str], None]]:
    def decorate(fn: Callable[[str], None]) -> Callable[[str], None]:
        CONTRACTS[kind] = fn
        return fn

    return decorate


@contract("degradation")
def _degradation(name: str) -> None:
    from aigclab.degradations import create_degradation

    img = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    before = img.copy()
    deg = create_degradation(name)
    a = deg(img, np.random.default_rng(1))
    b = deg(img, np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    np.testing.assert_array_equal(a, b)  # same seed, same output
    np.testing.assert_array_equal(img, before)  # input not mutated


@contract("augmentation")
def _augmentation(name: str) -> None:
    from aigclab.augment.transforms import DetSample, create_augmentation

    rng = np.random.default_rng(0)
    a, b = (
        DetSample(
            rng.integers(0, 256, (40, 48, 3), dtype=np.uint8),
            np.array([[4, 6, 20, 30]], np.float32),
            np.array([k]),
        )
        for k in (1, 2)
    )
    aug = create_augmentation(name)
    before = a.image.copy()
    outs = [aug(a, b, np.random.default_rng(s)) for s in (1, 1)]
    assert outs[0].image.shape == a.image.shape and outs[0].image.dtype == np.uint8
    assert len(outs[0].boxes) == len(outs[0].labels)
    np.testing.assert_array_equal(outs[0].image, outs[1].image)  # same seed, same output
    np.testing.assert_array_equal(a.image, before)  # input not mutated


@contract("xray-detector")
def _xray_detector(name: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from aigclab.augment.train_det import create_xray_detector

    model = create_xray_detector(name, image_size=48)
    twin = create_xray_detector(name, image_size=48)
    for key, value in model.state_dict().items():
        assert torch.equal(value, twin.state_dict()[key]), key  # seeded init
    images = [torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))]
    target = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])}]
    losses = model(images, target)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(images)[0]
    assert out["boxes"].shape[1] == 4 and len(out["scores"]) == len(out["labels"])
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        save_file(model.state_dict(), f"{tmp}/m.safetensors")
        twin.load_state_dict(load_file(f"{tmp}/m.safetensors"))
    twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(twin(images)[0]["scores"], out["scores"])


@contract("chat-backend")
def _chat_backend(name: str) -> None:
    from llm_server import ScriptedChatServer
    from pydantic import BaseModel

    from aigclab.llm import create_backend, user_message

    class Reply(BaseModel):
        answer: int

    if name == "transformers":
        _local_chat_backend(Reply)
        return
    if name == "llamacpp":
        _fake_llama_backend(Reply)
        return
    server = ScriptedChatServer()
    try:
        server.set_script('```json\n{"answer": 42}\n```')
        backend = create_backend(name, base_url=server.base_url, max_retries=0)
        msgs = [user_message("the answer?", [np.zeros((4, 4, 3), np.uint8)])]
        assert backend.structured(msgs, Reply) == backend.structured(msgs, Reply) == Reply(answer=42)
        assert "42" in backend.complete(msgs)
    finally:
        server.close()


def _local_chat_backend(reply_cls: type) -> None:
    """A tiny random local VLM: deterministic text, and a clear error when it never gives valid JSON."""
    import tempfile

    from tiny_vlm import make_tiny_vlm

    from aigclab.llm import LLMError, create_backend, user_message

    with tempfile.TemporaryDirectory() as tmp:
        backend = create_backend("transformers", model_path=str(make_tiny_vlm(Path(tmp))), max_new_tokens=6)
        msgs = [user_message("the answer ?", [np.zeros((20, 20, 3), np.uint8)])]
        text = backend.complete(msgs)
        assert isinstance(text, str) and text and text == backend.complete(msgs)
        with pytest.raises(LLMError, match="gave no valid Reply after 3 tries"):
            backend.structured(msgs, reply_cls)


def _fake_llama_backend(reply_cls: type) -> None:
    """The in-process llama.cpp backend over a stand-in for llama_cpp.Llama (no model file needed)."""
    from aigclab.llm.llamacpp import LlamaCppBackend, LlamaCppConfig

    class Llama:
        def create_chat_completion(self, messages: list, **kw: object) -> dict:
            text = '```json\n{"answer": 42}\n```'
            return {"choices": [{"message": {"content": text}, "finish_reason": "stop"}], "usage": {}}

    backend = LlamaCppBackend(LlamaCppConfig(model_path="m.gguf"), llama=Llama())
    assert backend.structured([{"role": "user", "content": "?"}], reply_cls) == reply_cls(answer=42)
    assert backend.reply([{"role": "user", "content": "?"}]).finish_reason == "stop"


@contract("game-generator")
def _game_generator(name: str) -> None:
    from llm_server import ScriptedChatServer

    from aigclab.gamegym import create_generator, load_samples

    sample = load_samples(ids=["pong"])[0]
    server = ScriptedChatServer()
    try:
        server.set_script("Here it is:\n```python\n" + sample.code + "```\nEnjoy!")
        options = {"base_url": server.base_url, "max_retries": 0} if name == "chat" else {}
        first = create_generator(name, **options).generate(sample)
        again = create_generator(name, **options).generate(sample)
        assert first.code == again.code and first.sample_id == "pong" and first.error is None
        assert "import pygame" in first.code
        if name != "broken":
            compile(first.code, "game.py", "exec")
    finally:
        server.close()


ENTRIES = sorted((kind, name) for kind, reg in all_registries().items() for name in reg.list())


@pytest.mark.parametrize(("kind", "name"), ENTRIES, ids=[f"{k}:{n}" for k, n in ENTRIES])
def test_registry_entry_honours_contract(kind: str, name: str) -> None:
    assert kind in CONTRACTS, f"registry {kind!r} has no contract in tests/test_contracts.py"
    CONTRACTS[kind](name)


def _tiny_clip(tmp: Path, vocab: int = 100, context: int = 8) -> dict:
    """Weights and config of a tiny open_clip model, made here, standing in for ViT-L/14."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": context, "vocab_size": vocab, "width": 16, "heads": 2, "layers": 1},
    }
    (tmp / "contract-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp / "contract-clip.json")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = open_clip.create_model("contract-clip", pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "contract-clip.safetensors")
    return {
        "model_name": "contract-clip",
        "model_config": str(tmp / "contract-clip.json"),
        "weights": str(tmp / "contract-clip.safetensors"),
    }


def tiny_detector_overrides(name: str, tmp: Path) -> dict:
    """Preset overrides that make registry entry `name` small enough to build and fit in a test."""
    if name.startswith("plada"):  # a small transformer, one epoch
        overrides = {"epochs": 1, "dim": 16, "depth": 1, "heads": 2, "prefix_len": 4, "compress_out": 4}
        if "clip" in name:
            overrides |= {"backbone_kwargs": _tiny_clip(tmp), "patch_size": 32, "layer": "block1"}
        # plada-tiny reads the shipped pretrained mobilenetv2-nsfwjs, as univfd-tiny does
    elif "clip" in name:
        overrides: dict = {
            "backbone_kwargs": _tiny_clip(tmp),
            "patch_size": 32,
            "layer": "pooled" if name.startswith("univfd") else "block1-cls",
        }
    elif name in ("ftnet-tiny", "ftnet-t-tiny", "ftnet-spectrum-tiny", "univfd-tiny"):
        overrides = {}  # training-free or shipped pretrained backbones
    elif name.startswith(("ftnet", "univfd")):
        overrides = {"backbone_kwargs": {"pretrained": False, "preset": "aigclab-tiny-test"}}
    else:
        overrides = {"epochs": 1, "channels": (8, 8, 16, 16)}
    if "ftnet-t" in name:
        overrides["finetune_epochs"] = 2
    if name.startswith("dpgnet"):  # a short labeled run; the CLIP text tower needs CLIP's vocabulary
        overrides = {"epochs": 1, "batch_labeled": 6}
        if "clip" in name:
            clip = _tiny_clip(tmp, vocab=49408, context=16)
            overrides |= {"backbone_kwargs": clip, "layer": "block1", "patch_size": 32, "embed_dim": 16}
    return overrides


@contract("detector")
def _detector(name: str) -> None:
    import tempfile

    from aigclab.detect import create_detector

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0, 1] * 6)
    with tempfile.TemporaryDirectory() as tmp:
        overrides = tiny_detector_overrides(name, Path(tmp))
        det = create_detector(name, **overrides)
        det = det.add_support(images, labels) if name.startswith("ftnet") else det.fit(images, labels)
        scores = det.score(images)
        assert scores.shape == (12,) and np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
        np.testing.assert_allclose(det.score(images), scores)  # deterministic
        det.save(Path(tmp) / "det.safetensors")
        np.testing.assert_allclose(
            type(det).load(Path(tmp) / "det.safetensors").score(images), scores, rtol=1e-5
        )


@contract("generator")
def _generator(name: str) -> None:
    import tempfile

    import torch

    from aigclab.data.zoo import create_generator, load_generator, round_to_fp16, save_generator

    model = round_to_fp16(create_generator(name, preset=f"{name}-tiny"))
    a = model.sample(3, torch.Generator().manual_seed(0))
    b = model.sample(3, torch.Generator().manual_seed(0))
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)  # same seed, same images
    with tempfile.TemporaryDirectory() as tmp:
        save_generator(model, Path(tmp))
        loaded = load_generator(name, root=Path(tmp), preset=f"{name}-tiny")
    np.testing.assert_array_equal(loaded.sample(3, torch.Generator().manual_seed(0)), a)


@contract("backbone")
def _backbone(name: str) -> None:
    import json
    import tempfile

    import torch
    from safetensors.torch import save_file

    from aigclab.nn import create_backbone

    imgs = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        if name == "aigclab-tiny":
            bb = create_backbone(name, pretrained=False, preset="aigclab-tiny-test")
        elif name in ("residual-spectrum", "mobilenetv2-nsfwjs"):
            bb = create_backbone(name)
        elif name == "inceptionv3-nsfwjs":  # its weights are fetched, not shipped
            bb = create_backbone(name, pretrained=False)
        elif name == "timm":
            import timm

            model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{tmp}/w.safetensors")
            bb = create_backbone(
                name, model_name="test_resnet", weights=f"{tmp}/w.safetensors", input_size=32
            )
        else:
            import open_clip

            cfg = {
                "embed_dim": 8,
                "vision_cfg": {"image_size": 32, "layers": 2, "width": 16, "patch_size": 8, "head_width": 8},
                "text_cfg": {"context_length": 4, "vocab_size": 50, "width": 8, "heads": 1, "layers": 1},
            }
            Path(f"{tmp}/contract-bb.json").write_text(json.dumps(cfg))
            open_clip.add_model_config(f"{tmp}/contract-bb.json")
            model = open_clip.create_model("contract-bb", pretrained=None)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{tmp}/w.safetensors")
            bb = create_backbone(name, model_name="contract-bb", weights=f"{tmp}/w.safetensors")
    for layer in sorted({bb.layers[0], bb.layers[-1]}):
        f = bb.features(imgs, layer=layer)
        assert f.ndim == 2 and f.shape[0] == 2 and np.isfinite(f).all()
        np.testing.assert_array_equal(f, bb.features(imgs, layer=layer))
    assert torch.is_grad_enabled()  # features() must not leave grad mode switched off


@contract("diffusion-quant")
def _diffusion_quant(name: str) -> None:
    import torch

    from aigclab.diffusion import create_quant_config, ddim_sample, load_model, quantize_diffusion

    tiny = {"w_bits": 3, "a_bits": 6, "steps": 2, "calib_samples": 2, "omq_samples": 1, "batch_size": 1,
            "calib": "minmax", "omq_group": 0.5}  # fmt: skip
    cfg = create_quant_config(name, **tiny)
    cfg = cfg.model_copy(update={"finetune_steps": min(cfg.finetune_steps, 1), "lora_rank": 1})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_model("tiny")
        runs = [quantize_diffusion(model, cfg) for _ in range(2)]
        images = [ddim_sample(r.model, 2, 2, torch.Generator().manual_seed(0)) for r in runs]
    finally:
        torch.set_num_threads(threads)
    assert images[0].shape == (2, 16, 16, 3) and images[0].dtype == np.uint8
    np.testing.assert_array_equal(images[0], images[1])  # seeded: same config, same model
    assert runs[0].report.total_bytes < runs[0].report.fp32_bytes / 4


@contract("explainer")
def _explainer(name: str) -> None:
    import json
    import tempfile

    from llm_server import ScriptedChatServer
    from test_explain import REFERENCE, _Brightness

    from aigclab.explain import Explanation, create_explainer, explain_image
    from aigclab.llm import LLMError

    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    if name == "cues":
        a = explain_image(img, _Brightness(), create_explainer("cues"), REFERENCE)
        b = explain_image(img, _Brightness(), create_explainer("cues"), REFERENCE)
        assert isinstance(a.explanation, Explanation) and a.explanation == b.explanation
    elif name == "openai":
        server = ScriptedChatServer()
        try:
            server.set_script(
                json.dumps(
                    {"verdict": {"label": "real", "probability": 0.1}, "evidence": [], "summary": "ok"}
                )
            )
            res = explain_image(
                img, _Brightness(), create_explainer("openai", base_url=server.base_url), REFERENCE
            )
            assert res.explanation.verdict.label == "real"
        finally:
            server.close()
    else:
        from tiny_vlm import make_tiny_vlm

        with tempfile.TemporaryDirectory() as tmp:
            explainer = create_explainer(name, model_path=str(make_tiny_vlm(Path(tmp))), max_new_tokens=4)
            with pytest.raises(LLMError, match="gave no valid Explanation"):
                explain_image(img, _Brightness(), explainer, REFERENCE)


@contract("backdoor-task")
def _backdoor_task(name: str) -> None:
    import torch

    from aigclab.security.tasks import load_task, make_model

    data = load_task(name)
    assert (
        data.x_train.dtype == torch.float32
        and 0.0 <= float(data.x_train.min()) <= float(data.x_train.max()) <= 1.0
    )
    assert len(data.x_train) == len(data.y_train) and len(data.x_test) == len(data.y_test)
    assert set(data.y_test.tolist()) == set(range(len(data.classes))) and 0 <= data.target < len(data.classes)
    a, b = make_model(name, seed=3), make_model(name, seed=3)
    x = data.x_test[:4]
    out = a(x)
    assert out.shape == (4, len(data.classes)) and torch.isfinite(out).all()
    torch.testing.assert_close(out, b(x))  # seeded initialisation


@contract("anomaly-model")
def _anomaly_model(name: str) -> None:
    import json
    import tempfile

    from llm_server import ScriptedChatServer

    from aigclab.explain.anomaly_models import create_anomaly_model
    from aigclab.explain.anomreason_mini import render_scene
    from aigclab.explain.quadruples import Quadruple
    from aigclab.explain.reasoner import reasoner_path
    from aigclab.llm import LLMError

    images = [render_scene(s).image for s in (1, 2)]
    if name == "reasoner" and not reasoner_path().is_file():
        pytest.skip("shipped reasoner weights not built")
    if name in ("reasoner", "zero-shot-rule", "cues"):
        model = create_anomaly_model(name)
        a, b = model.predict(images), model.predict(images)
        assert len(a) == 2 and a == b and all(isinstance(q, Quadruple) for p in a for q in p)
    elif name == "openai":
        server = ScriptedChatServer()
        try:
            quad = {
                "name": "clock",
                "phenomenon": "13 marks",
                "reasoning": "12",
                "severity": 3,
                "confidence": 0.8,
            }
            server.set_script(json.dumps({"anomalies": [quad]}))
            out = create_anomaly_model("openai", base_url=server.base_url).predict(images)
            assert [len(p) for p in out] == [1, 1] and out[0][0].severity == 3
        finally:
            server.close()
    else:
        from tiny_vlm import make_tiny_vlm

        with tempfile.TemporaryDirectory() as tmp:
            model = create_anomaly_model(name, model_path=str(make_tiny_vlm(Path(tmp))), max_new_tokens=4)
            with pytest.raises(LLMError, match="gave no valid AnomalyReport"):
                model.predict(images[:1])
