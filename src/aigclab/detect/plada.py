"""PLADA: compression-robust detection of images shared on social networks (arXiv 2506.20548).

PLADA ("Pay Less Attention to Deceptive Artifacts") has two parts, both here:

- **B2E, Block Effect Eraser**: dual-stage attention against JPEG block effects. Learnable prompt tokens
  follow the class token; every transformer block has a pool of learnable key/value prefixes; each
  training sample draws one pool entry (``pool_sampling="random"``, seeded, or ``"beam"``: real samples
  from the first half of the pool, fakes from the second), and at test the pool is averaged. Stage 1
  ("residual guidance") adds the queries' attention over the prefix to the block's attention. Stage 2, in
  the first `compress_blocks` blocks: Conv1d token compressors (all tokens -> `compress_out`, one global
  and one per head) summarise the block's output, and these summaries rescale the prefix keys (per head)
  and values (global) before a second attention over ``[rescaled prefix; tokens]``. A compressed-vs-raw
  head behind a gradient-reversal layer (strength `grl_alpha`) pushes the features to stop encoding
  compression.
- **ODA, Open Data Aggregation**: training mixes paired images (raw + a compressed twin, a
  `paired_ratio` share of the data) with unpaired ones (raw only, as in the released data loader), and
  adds ``1 / (1 + ||mu_fake - mu_real||)`` for the uncompressed and for the compressed views of the batch,
  pulling real and fake feature centres apart. The released code computes both centre pairs from the
  same mask (the unpaired samples), so its two terms are equal; we follow the paper: uncompressed centres
  from the raw views, compressed centres from the compressed twins.

Where this differs from the released code (CLIP ViT-L/14 with B2E inside its 24 blocks):

- The blocks are a small transformer of our own, trained here, over the token map of a frozen backbone
  (``layer``: for ``plada-tiny``, block5 of the shipped pretrained ``mobilenetv2-nsfwjs`` at 96 px, whose
  12x12 map of a 32 px patch regroups into 4x4 tokens, one per 8x8 JPEG block; it beat the embedded
  ``aigclab-tiny`` block2/block3 maps under JPEG on held-out training-family images, see
  ``benchmarks/detect_compression.py --validate``; a middle block of CLIP ViT-L/14 from local open_clip
  weights for ``plada-clip-l14``; ``aigclab-tiny`` blocks via ``backbone=``). All of its weights train
  (nothing of it is pretrained); the backbone stays frozen, as CLIP's MLPs are in the paper.
- Tokens are computed once per training view (the paper's data are pre-compressed too); random
  horizontal flips act on the token grid. The Gaussian-blur augmentation is left out.
- Adam at a fixed learning rate for a fixed number of epochs (no early stopping).

Example:
    >>> from aigclab.detect import create_detector
    >>> det = create_detector("plada-tiny", epochs=1)  # doctest: +SKIP
    >>> det.fit(train_images, train_labels).score(test_images)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from aigclab.detect.base import DETECTORS, Detector, FeatureConfig, restore_decision, save_tensors
from aigclab.errors import AigclabError, ConfigError

if TYPE_CHECKING:
    from aigclab.data.mini import MiniSplit

__all__ = [
    "PLADA",
    "B2EAttention",
    "GradientReversal",
    "PLADAConfig",
    "PLADANet",
    "oda_loss",
    "paired_views",
    "token_map",
]


class PLADAConfig(FeatureConfig):
    layer: str = "block3"  # the backbone layer whose token map feeds the transformer
    token_grid: int | None = 4  # regroup the map into this grid of tokens (space-to-depth), None keeps it
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    b2e: bool = True  # prompts, prefix pool, token compression and the reversed compression head
    prompts: int = 2
    pool_size: int = 8
    prefix_len: int = 8
    compress_blocks: int = 2
    compress_out: int = 16
    pool_sampling: Literal["random", "beam"] = "random"
    grl_alpha: float = 1.0
    oda: bool = True  # the real/fake centre-separation loss
    paired_ratio: float = 0.2  # share of training images given a compressed twin
    compressions: tuple[str, ...] = (
        "jpeg:quality=30-100",
    )  # each twin draws one (aigclab.degradations specs)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 1e-4
    seed: int = 0


class GradientReversal(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient by ``-alpha``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.neg() * ctx.alpha, None


def token_map(backbone: nn.Module, x: torch.Tensor, layer: str, grid: int | None = None) -> torch.Tensor:
    """(N, T, C) tokens of a backbone's `layer` map: a CNN block's grid or a ViT block's patch tokens.

    With `grid`, the (N, C, H, W) map is regrouped by space-to-depth into grid x grid tokens of
    C * (H / grid)^2 channels; on 32-pixel patches ``grid=4`` makes one token per 8x8 JPEG block.
    """
    fmap = _feature_map(backbone, x, layer)
    if grid is not None:
        side = fmap.shape[-1]
        if side % grid or fmap.shape[-2] != side:
            raise ConfigError(
                f"PLADA token_grid {grid} does not divide the {tuple(fmap.shape[-2:])} map of {layer}"
            )
        fmap = F.pixel_unshuffle(fmap, side // grid)
    return fmap.flatten(2).transpose(1, 2)


def _feature_map(backbone: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    from aigclab.nn.adapters import OpenClipBackbone
    from aigclab.nn.tiny import TinyCNN

    forward_maps = getattr(backbone, "forward_maps", None)
    if callable(forward_maps):  # backbones that expose unpooled maps (e.g. mobilenetv2-nsfwjs)
        return forward_maps(x, [layer])[layer]
    index = int(layer.removeprefix("block").removesuffix("-cls")) if layer.startswith("block") else 0
    if isinstance(backbone, TinyCNN) and 1 <= index <= len(backbone.blocks):
        h = backbone.stem(x)
        for block in backbone.blocks[:index]:
            h = block(h)
        return h
    if isinstance(backbone, OpenClipBackbone) and index >= 1:
        res = backbone.visual.forward_intermediates(
            x, indices=[index - 1], intermediates_only=True, stop_early=True
        )
        return res["image_intermediates"][0]
    raise ConfigError(
        f"PLADA reads 'blockN' token maps of aigclab-tiny, open-clip or a backbone with forward_maps, not {layer!r}"
    )


class B2EAttention(nn.Module):
    """Multi-head self-attention with PLADA's prefix guidance (stage 1) and token compression (stage 2)."""

    def __init__(self, dim: int, heads: int, tokens: int = 0, compress_out: int = 0, mlp_ratio: float = 2.0):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.compress = compress_out > 0
        if self.compress:
            self.norm = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(
                nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim)
            )
            self.global_comp = nn.Conv1d(tokens, compress_out, 1)
            self.local_comps = nn.ModuleList(nn.Conv1d(tokens, compress_out, 1) for _ in range(heads))
            for conv in (self.global_comp, *self.local_comps):
                nn.init.uniform_(conv.weight, -1.0, 1.0)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """`x` (B, T, D); `prefix` (B, 2, L, D) keys and values, or None (plain attention)."""
        b, t, d = x.shape
        q, k, v = (self._split(z) for z in self.qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, Hd)
        if prefix is not None:
            pk, pv = prefix[:, 0], prefix[:, 1]
            out = out + F.scaled_dot_product_attention(q, self._split(pk), self._split(pv))
            if self.compress:
                flat = out.transpose(1, 2).reshape(b, t, d)
                summary = self.mlp(self.norm(x + flat))
                global_feat = self.global_comp(summary).mean(dim=1)  # (B, D)
                local_feat = torch.cat(
                    [comp(out[:, h]).mean(dim=1) for h, comp in enumerate(self.local_comps)], dim=-1
                )  # (B, D), head by head
                keys = torch.cat([pk * local_feat[:, None], x], dim=1)
                values = torch.cat([pv * global_feat[:, None], x], dim=1)
                out = out + F.scaled_dot_product_attention(q, self._split(keys), self._split(values))
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, tokens: int, compress_out: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = B2EAttention(dim, heads, tokens, compress_out, mlp_ratio)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, prefix: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), prefix)
        return x + self.mlp(self.norm2(x))


class _GatedHead(nn.Module):
    """The released code's attention-gate block (``Conv2d1x1``) followed by a linear logit."""

    def __init__(self, dim: int):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(dim, dim // 2), nn.Linear(dim // 2, dim), nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        score = F.softmax(self.fc2(F.leaky_relu(self.fc1(x))), dim=-1)
        out = self.fc3(x)
        return F.leaky_relu(out + score * out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.head(f).squeeze(-1), f


class PLADANet(nn.Module):
    """Token projection, [CLS; prompts; tokens] through B2E blocks, real/fake and compression heads."""

    def __init__(self, config: PLADAConfig, tokens: int, in_dim: int):
        super().__init__()
        c = config
        self.config = c
        self.embed = nn.Linear(in_dim, c.dim)
        self.pos = nn.Parameter(torch.randn(1, tokens, c.dim) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, c.dim))
        n_prompts = c.prompts if c.b2e else 0
        self.prompts = nn.Parameter(torch.randn(1, n_prompts, c.dim) * 0.02)
        seq = 1 + n_prompts + tokens
        self.blocks = nn.ModuleList(
            _Block(c.dim, c.heads, c.mlp_ratio, seq, c.compress_out if c.b2e and i < c.compress_blocks else 0)
            for i in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim)
        self.tf_head = _GatedHead(c.dim)
        if c.b2e:
            pool = torch.zeros(c.depth, c.pool_size, 2, c.prefix_len, c.dim)
            nn.init.uniform_(pool[:, :, 0], -1.0, 1.0)  # keys uniform, values zero (as released)
            self.prefix_pool = nn.Parameter(pool)
            self.cmp_head = _GatedHead(c.dim)

    def pick_prefixes(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One pool entry per training sample (seeded): uniform, or by class half ("beam")."""
        n, pool = len(labels), self.config.pool_size
        if self.config.pool_sampling == "random":
            return torch.randint(0, pool, (n,), generator=generator)
        half = pool // 2
        draw = torch.randint(0, half, (n,), generator=generator)
        return draw + half * (labels > 0.5).long()

    def forward(
        self, tokens: torch.Tensor, pool_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Real/fake logits, their gated features (for ODA) and the pre-head feature (for the compression head).

        `pool_ids` (B,) picks each sample's prefix set; None averages the pool (test time).
        """
        b = tokens.shape[0]
        x = self.embed(tokens) + self.pos
        x = torch.cat([self.cls.expand(b, -1, -1), self.prompts.expand(b, -1, -1), x], dim=1)
        for i, block in enumerate(self.blocks):
            prefix = None
            if self.config.b2e:
                pool = self.prefix_pool[i]
                prefix = (
                    pool[pool_ids]
                    if pool_ids is not None
                    else pool.mean(0, keepdim=True).expand(b, -1, -1, -1)
                )
            x = block(x, prefix)
        feat = self.norm(x[:, 0])
        logits, tf_feat = self.tf_head(feat)
        return logits, tf_feat, feat


def oda_loss(features: torch.Tensor, labels: torch.Tensor, compressed: torch.Tensor) -> torch.Tensor:
    """Sum over the uncompressed and the compressed views of 1 / (1 + L2 distance of fake and real centres)."""
    total = features.new_zeros(())
    for part in (~compressed, compressed):
        real, fake = features[part & (labels < 0.5)], features[part & (labels > 0.5)]
        if len(real) and len(fake):
            total = total + 1.0 / (1.0 + torch.linalg.vector_norm(fake.mean(0) - real.mean(0)))
    return total


def paired_views(
    images: np.ndarray, paired_ratio: float, compressions: tuple[str, ...], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """ODA's pairing: indices of the `paired_ratio` share given a twin, and their compressed twins.

    Each twin draws one of `compressions` (degradation specs); everything is seeded by `seed`, so a
    baseline trained on ``images + twins`` sees exactly PLADA's training views.
    """
    from aigclab.data.mini import compress

    n = len(images)
    paired = np.sort(np.random.default_rng([seed, 0]).choice(n, size=round(paired_ratio * n), replace=False))
    pick = np.random.default_rng([seed, 1]).integers(len(compressions), size=len(paired))
    twins = images[paired].copy()
    for k, spec in enumerate(compressions):
        if (pick == k).any():
            twins[pick == k] = compress(images[paired][pick == k], spec, seed=seed * 100 + k)
    return paired, twins


class PLADA(Detector):
    """PLADA over a frozen backbone's token map (see the module docstring)."""

    def __init__(self, config: PLADAConfig):
        from aigclab.nn import create_backbone

        self.config = config
        self.patch_size = config.patch_size
        kwargs = dict(config.backbone_kwargs) | ({"weights": config.weights} if config.weights else {})
        self.backbone = create_backbone(config.backbone, **kwargs).to(config.device).eval()
        self.backbone.requires_grad_(False)
        probe = self.tokens(np.zeros((1, config.patch_size, config.patch_size, 3), np.uint8))
        self.grid = math.isqrt(probe.shape[1])
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            self.net = PLADANet(config, probe.shape[1], probe.shape[2]).to(config.device)
        self.trained = False
        self.history: list[dict[str, float]] = []

    @torch.no_grad()
    def tokens(self, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
        """(N, T, C) float32 token maps of uint8 patches, on the CPU."""
        out = []
        for i in range(0, len(images), batch_size):
            x = self.backbone.preprocess(images[i : i + batch_size]).to(self.config.device)
            out.append(token_map(self.backbone, x, self.config.layer, self.config.token_grid).float().cpu())
        return torch.cat(out)

    def _flip(self, tokens: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Mirror the token grid of the samples where `flip` is True (a horizontal flip of the image)."""
        n, t, c = tokens.shape
        if self.grid * self.grid != t:
            return tokens
        mirrored = tokens.view(n, self.grid, self.grid, c).flip(2).reshape(n, t, c)
        return torch.where(flip[:, None, None], mirrored, tokens)

    def fit(self, images: np.ndarray, labels: np.ndarray) -> PLADA:
        from aigclab.data.mini import MiniSplit

        n = len(images)
        data = MiniSplit(images, np.asarray(labels), np.array(["?"] * n), np.arange(n).astype(str))
        self.train_on(data, seed=self.config.seed, log=lambda _msg: None)
        return self

    def train_on(
        self,
        labeled: MiniSplit,
        unlabeled: MiniSplit | None = None,
        *,
        seed: int = 0,
        log: Callable[[str], None] = print,
    ) -> dict[str, Any]:
        """Paired (raw + compressed twin) and unpaired (raw) training with the B2E and ODA losses."""
        cfg = self.config
        if unlabeled is not None:
            raise AigclabError("PLADA trains on labelled data only; drop --unlabeled")
        labels = np.asarray(labeled.labels)
        if set(np.unique(labels).tolist()) != {0, 1}:
            raise AigclabError("PLADA needs both real (0) and fake (1) training images")
        start = time.perf_counter()
        n = len(labeled)
        paired, twins = paired_views(labeled.images, cfg.paired_ratio, cfg.compressions, seed)
        raw_tokens = self.tokens(labeled.images)
        twin_tokens = self.tokens(twins) if len(paired) else raw_tokens[:0]
        twin_of = torch.full((n,), -1, dtype=torch.long)
        twin_of[torch.from_numpy(paired)] = torch.arange(len(paired))
        y_all = torch.from_numpy(labels).float()
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        log(
            f"PLADA: {n} images, {len(paired)} paired; tokens {tuple(raw_tokens.shape[1:])} ({time.perf_counter() - start:.0f}s)"
        )
        self.net.train()
        self.history = []
        for epoch in range(cfg.epochs):
            sums = dict.fromkeys(("loss", "tf", "cmp", "oda"), 0.0)
            order = torch.randperm(n, generator=gen)
            steps = 0
            for i in range(0, n, cfg.batch_size):
                parts = self._step(
                    order[i : i + cfg.batch_size], raw_tokens, twin_tokens, twin_of, y_all, gen
                )
                opt.zero_grad()
                parts["loss"].backward()
                opt.step()
                for key, value in parts.items():
                    sums[key] += float(value.detach())
                steps += 1
            self.history.append({k: v / steps for k, v in sums.items()})
            log(
                f"PLADA epoch {epoch + 1}/{cfg.epochs} "
                + " ".join(f"{k}={v:.4f}" for k, v in self.history[-1].items())
                + f" ({time.perf_counter() - start:.0f}s)"
            )
        self.net.eval()
        self.trained = True
        return {
            "n_train": n,
            "n_paired": len(paired),
            "loss_first_epoch": round(self.history[0]["loss"], 4) if self.history else None,
            "loss_last_epoch": round(self.history[-1]["loss"], 4) if self.history else None,
            "seconds": round(time.perf_counter() - start, 1),
        }

    def _step(
        self,
        idx: torch.Tensor,
        raw_tokens: torch.Tensor,
        twin_tokens: torch.Tensor,
        twin_of: torch.Tensor,
        y_all: torch.Tensor,
        gen: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """Losses of one batch: its raw views plus the compressed twins of its paired images."""
        cfg, dev = self.config, self.config.device
        twins = twin_of[idx]
        has = twins >= 0
        x = torch.cat([raw_tokens[idx], twin_tokens[twins[has]]])
        y = torch.cat([y_all[idx], y_all[idx][has]])
        compressed = torch.cat(
            [torch.zeros(len(idx), dtype=torch.bool), torch.ones(int(has.sum()), dtype=torch.bool)]
        )
        paired = torch.cat([has, torch.ones(int(has.sum()), dtype=torch.bool)])
        x = self._flip(x, torch.rand(len(x), generator=gen) < 0.5)
        pool_ids = self.net.pick_prefixes(y, gen) if cfg.b2e else None
        logits, tf_feat, feat = self.net(x.to(dev), None if pool_ids is None else pool_ids.to(dev))
        y, compressed, paired = y.to(dev), compressed.to(dev), paired.to(dev)
        parts = {"tf": F.binary_cross_entropy_with_logits(logits, y)}
        zero = logits.new_zeros(())
        parts["cmp"] = zero
        if cfg.b2e and paired.any():  # the compressed-vs-raw head sees the paired views, through the GRL
            reversed_feat = GradientReversal.apply(feat[paired], cfg.grl_alpha)
            cmp_logits, _ = self.net.cmp_head(reversed_feat)
            parts["cmp"] = F.binary_cross_entropy_with_logits(cmp_logits, compressed[paired].float())
        parts["oda"] = oda_loss(tf_feat, y, compressed) if cfg.oda else zero
        parts["loss"] = parts["tf"] + parts["cmp"] + parts["oda"]
        return parts

    def _score_patches(self, patches: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [self.score_tokens(self.tokens(patches[i : i + 512])) for i in range(0, len(patches), 512)]
        )

    @torch.inference_mode()
    def score_tokens(self, tokens: torch.Tensor) -> np.ndarray:
        """P(fake) from precomputed `tokens` (what `tokens(patches)` returns; shared by PLADA variants)."""
        if not self.trained:
            raise AigclabError("PLADA is not trained; train it (aigclab detect train) or load() a saved one")
        out = []
        for i in range(0, len(tokens), 512):
            logits, _, _ = self.net(tokens[i : i + 512].to(self.config.device))
            out.append(torch.sigmoid(logits).cpu())
        return torch.cat(out).double().numpy()

    def save(self, path: str | Path) -> None:
        """The transformer and heads (the frozen backbone is named by the config JSON beside)."""
        if not self.trained:
            raise AigclabError("nothing to save: PLADA is not trained")
        save_tensors(self, dict(self.net.state_dict()), path)

    @classmethod
    def load(cls, path: str | Path) -> PLADA:
        path = Path(path)
        det = cls(PLADAConfig.from_json(path.with_suffix(".json")))
        det.net.load_state_dict(load_file(path))
        det.net.eval()
        det.trained = True
        return restore_decision(det, path)


def _variant(preset: str):  # type: ignore[no-untyped-def]
    def build(**overrides: Any) -> PLADA:
        return PLADA(PLADAConfig.from_preset("aigclab.detect", preset, **overrides))

    build.__doc__ = f"PLADA with preset {preset!r}."
    return build


for _preset in ("plada-tiny", "plada-clip-l14"):
    DETECTORS.register(_preset)(_variant(_preset))
