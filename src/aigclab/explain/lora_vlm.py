"""LoRA fine-tuning of a local Hugging Face vision-language model on quadruple annotations.

For users who have a VLM folder (Qwen2-VL, LLaVA, ...; nothing is downloaded). Each training example is
the one-call ``anomreason`` prompt (`anomaly_models.anomreason_messages`) with the image, and the target
is the ground truth as ``AnomalyReport`` JSON; the loss is the language-model cross-entropy on the
target tokens only (prompt tokens are masked with -100). Low-rank adapters (peft) are trained on the
attention projections; the base weights stay frozen. The adapter is saved under ``OUT/adapter`` and,
with ``merge`` (default), the merged model and its processor are saved in ``OUT`` itself, so that
``aigclab explain IMG --anomaly-model transformers --model OUT`` (or the ``transformers`` chat backend)
uses it directly.

Needs the optional extra ``aigclab[lora]`` (peft).

Example:
    >>> from aigclab.explain.lora_vlm import LoraTrainConfig, finetune_vlm  # doctest: +SKIP
    >>> finetune_vlm("/models/qwen2-vl-2b", examples, "tuned", LoraTrainConfig(steps=200))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aigclab._config import Config
from aigclab.errors import ConfigError
from aigclab.explain.anomaly_models import anomreason_messages
from aigclab.explain.quadruples import AnomalyReport, Quadruple

__all__ = ["LoraTrainConfig", "finetune_vlm", "load_examples"]


class LoraTrainConfig(Config):
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lr: float = 1e-3
    steps: int = 100
    seed: int = 0
    device: str = "cpu"
    merge: bool = True


def load_examples(jsonl: Path) -> list[tuple[np.ndarray, list[Quadruple]]]:
    """(image, quadruples) pairs from a quadruple JSONL; relative image paths are read beside the file."""
    from aigclab.explain.quadruples import read_quadruples
    from aigclab.io import load_image

    out = []
    for rec in read_quadruples(jsonl):
        path = Path(rec.image)
        out.append((load_image(path if path.is_absolute() else jsonl.parent / path), rec.anomalies))
    return out


def _encode(processor: Any, image: np.ndarray, quads: list[Quadruple]) -> dict[str, Any]:
    from aigclab.llm.local_hf import to_hf_conversation

    conv = to_hf_conversation(anomreason_messages(image))
    target = AnomalyReport(anomalies=quads).model_dump_json(exclude_none=True)
    kw: dict[str, Any] = {"tokenize": True, "return_dict": True, "return_tensors": "pt"}
    prompt = processor.apply_chat_template(conv, add_generation_prompt=True, **kw)
    full = processor.apply_chat_template(
        [*conv, {"role": "assistant", "content": [{"type": "text", "text": target}]}], **kw
    )
    n_prompt = prompt["input_ids"].shape[1]
    if full["input_ids"].shape[1] <= n_prompt:
        raise ConfigError(
            "the model's chat template drops the assistant answer; cannot build a training target"
        )
    labels = full["input_ids"].clone()
    labels[:, :n_prompt] = -100
    return dict(full) | {"labels": labels}


def finetune_vlm(
    model_dir: str | Path,
    examples: list[tuple[np.ndarray, list[Quadruple]]],
    out_dir: str | Path,
    cfg: LoraTrainConfig | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Train LoRA adapters for `cfg.steps` steps (one example per step, cycling); returns the losses."""
    import torch

    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("LoRA fine-tuning needs peft: pip install 'aigclab[lora]'") from None
    from transformers import AutoModelForImageTextToText, AutoProcessor

    cfg = cfg or LoraTrainConfig()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not model_dir.is_dir():
        raise ConfigError(f"{model_dir}: not a local model directory (nothing is downloaded)")
    if not examples:
        raise ConfigError("no training examples")
    torch.manual_seed(cfg.seed)
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    base = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True).to(cfg.device)  # type: ignore[arg-type]
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
    )
    model = get_peft_model(base, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    order = np.random.default_rng(cfg.seed).permutation(len(examples))
    losses = []
    model.train()
    for step in range(cfg.steps):
        image, quads = examples[int(order[step % len(examples)])]
        batch = {k: v.to(cfg.device) for k, v in _encode(processor, image, quads).items()}
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log and (step + 1) % max(1, cfg.steps // 10) == 0:
            log(f"step {step + 1}/{cfg.steps} loss {np.mean(losses[-10:]):.4f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir / "adapter"))
    if cfg.merge:
        model.merge_and_unload().save_pretrained(out_dir)  # type: ignore[operator]
        processor.save_pretrained(out_dir)
    return {
        "losses": losses,
        "trainable_params": int(sum(p.numel() for p in params)),
        "total_params": int(sum(p.numel() for p in model.parameters())),
    }
