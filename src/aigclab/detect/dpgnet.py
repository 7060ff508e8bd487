"""DPGNet: learning from unlabeled images of new generators (Dual-Path Guidance Network, arXiv 2508.09022).

A detector is trained on labeled images of known generators and adapted to unlabeled images of new
ones (the target domain) with three parts:

1. **Text-guided cross-domain alignment.** Image features (a backbone with only its normalisation
   layers tuned, then a small head, L2-normalised) are scored against the text embeddings of two
   learnable prompts, "real" and "fake" (`aigclab.detect.prompt_text`: a frozen text encoder fed
   learnable context vectors, then a learned projection into the image feature space). A classifier
   head scores the same features; P(fake) is the mean of the two heads' softmax.
2. **Curriculum pseudo labels.** Each adaptation epoch starts by filling a feature bank with the
   `bank_size` most confident target images of each predicted class. A target image keeps its pseudo
   label (the detector's verdict) only when its confidence reaches the threshold (annealed linearly
   from `threshold_start` to `threshold_end` over the first adaptation epoch, then fixed) and its
   nearest bank class (mean of the top `bank_neighbours` cosine similarities) agrees. Kept images add
   cross-entropy on both heads plus a margin term on the image-text logits.
3. **Cross-domain knowledge distillation.** After the labeled phase (epoch 0) the image path is frozen
   as a teacher; images mixed between domains (source and target, lambda ~ Beta(a, a), a ~ U(0.5, 2))
   must keep the teacher's features (squared distance of normalised features), against forgetting.

Presets: ``dpgnet-tiny`` (the embedded default: the shipped nsfwjs MobileNetV2, BatchNorms tuned, its
``block12`` features at the 32-pixel patch size), ``dpgnet-cnn-tiny`` (the embedded AIGC-Mini CNN, which
was itself trained on the source family), ``dpgnet-clip-l14`` (local CLIP weights, LayerNorms tuned, CLIP's
text encoder).

Loss: labeled phase ``w0_cls * CE_cls + w0_aux * CE_text``; adaptation epochs ``w_cls * CE_cls +
w_aux * CE_text + w_pseudo * L_pseudo + w_distill * L_distill`` (weights in the preset, as released).

Choices where the released code differs or leaves room (see ``methods/detection.md``): the released
distillation pulls source-fake features towards their own mixup with target features, without a
teacher; we distil from the frozen labeled-phase model as the paper describes. The released bank check
labels an image fake when its best similarity to the fake bank exceeds 0.5; ours compares the two
class banks. Pseudo labels come from the detector's output (both heads), not the classifier alone.
With BatchNorm backbones, tuning "normalisation only" also adapts the running statistics to batches
that mix source and target images.

Example:
    >>> from aigclab.detect import create_detector
    >>> det = create_detector("dpgnet-tiny", epochs=2)  # doctest: +SKIP
    >>> history = det.adapt(images, labels, unlabeled_images)  # doctest: +SKIP
    >>> det.score(test_images)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors import safe_open
from torch import nn

from aigclab._config import Config
from aigclab.detect.base import DETECTORS, Detector, restore_decision, save_tensors
from aigclab.errors import AigclabError, ConfigError

if TYPE_CHECKING:
    from aigclab.data.mini import MiniSplit

__all__ = [
    "DPGNet",
    "DPGNetConfig",
    "DPGNetModel",
    "FeatureBank",
    "LossWeights",
    "curriculum_threshold",
    "select_pseudo_labels",
    "tune_norms_only",
]

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


class LossWeights(Config):
    w0_cls: float = 1.0  # labeled phase
    w0_aux: float = 0.8
    w_cls: float = 0.4  # adaptation epochs
    w_aux: float = 0.5
    w_pseudo: float = 1.0
    w_distill: float = 0.1


class DPGNetConfig(Config):
    backbone: str = "mobilenetv2-nsfwjs"
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None  # local weights of a pretrained backbone (merged into backbone_kwargs)
    layer: str = "block12"
    patch_size: int = 32
    device: str = "cpu"
    text: Literal["minilm", "clip"] = "minilm"  # "clip": the open_clip text tower of backbone_kwargs
    prompts: tuple[str, str] = ("real photograph", "AI-generated image")
    n_ctx: int = 4
    embed_dim: int = 128
    text_scale: float = 10.0  # image-text logits = text_scale * cosine
    epochs: int = 3  # epoch 0 is the labeled phase
    batch_labeled: int = 32
    batch_unlabeled: int = 32
    lr: float = 1e-3
    weight_decay: float = 5e-4
    threshold_start: float = 0.85
    threshold_end: float = 0.7
    bank_size: int = 100
    bank_neighbours: int = 5
    margin: float = 1.0
    mixup_alpha: tuple[float, float] = (0.5, 2.0)
    pseudo_labels: bool = True
    distill: bool = True
    loss: LossWeights = Field(default_factory=LossWeights)
    seed: int = 0


def tune_norms_only(module: nn.Module) -> list[nn.Parameter]:
    """Freeze every parameter of `module` except those of its normalisation layers; return those."""
    for p in module.parameters():
        p.requires_grad_(False)
    params = [p for m in module.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)]
    if not params:
        raise ConfigError(f"{type(module).__name__} has no normalisation layers to tune (DPGNet needs some)")
    for p in params:
        p.requires_grad_(True)
    return params


def curriculum_threshold(cfg: DPGNetConfig, epoch: int, progress: float) -> float:
    """Confidence threshold: annealed over the first adaptation epoch (epoch 1), then fixed."""
    if epoch <= 1:
        return cfg.threshold_start + (cfg.threshold_end - cfg.threshold_start) * min(max(progress, 0.0), 1.0)
    return cfg.threshold_end


class FeatureBank:
    """The most confident target features of each predicted class (refreshed once per epoch)."""

    def __init__(self, size: int, neighbours: int):
        self.size, self.neighbours = size, neighbours
        self.feats: dict[int, torch.Tensor] = {}

    def refresh(self, feats: torch.Tensor, prob_fake: torch.Tensor) -> None:
        pred = (prob_fake >= 0.5).long()
        conf = torch.maximum(prob_fake, 1 - prob_fake)
        self.feats = {}
        for c in (0, 1):
            idx = torch.nonzero(pred == c).squeeze(1)
            if len(idx):
                top = idx[torch.argsort(conf[idx], descending=True, stable=True)[: self.size]]
                self.feats[c] = feats[top]

    def vote(self, feats: torch.Tensor) -> torch.Tensor:
        """Class whose bank entries are nearest (mean of the top-k cosine similarities); -1 if empty."""
        scores = torch.full((len(feats), 2), -math.inf)
        for c, bank in self.feats.items():
            sims = feats @ bank.T
            scores[:, c] = sims.topk(min(self.neighbours, len(bank)), dim=1).values.mean(1)
        vote = scores.argmax(1)
        return torch.where(torch.isinf(scores.max(1).values), -1, vote)


def select_pseudo_labels(
    prob_fake: torch.Tensor, feats: torch.Tensor, bank: FeatureBank, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo labels (the detector's verdict) and the mask of those kept: confident and bank-agreed."""
    pseudo = (prob_fake >= 0.5).long()
    confident = torch.maximum(prob_fake, 1 - prob_fake) >= threshold
    return pseudo, confident & (bank.vote(feats) == pseudo)


class DPGNetModel(nn.Module):
    """Image tower (norm-tuned backbone + head), classifier, prompt text tower and its projection."""

    def __init__(self, cfg: DPGNetConfig):
        super().__init__()
        from aigclab.detect.prompt_text import create_text_tower
        from aigclab.nn import create_backbone

        self.layer = cfg.layer
        kwargs = dict(cfg.backbone_kwargs) | ({"weights": cfg.weights} if cfg.weights else {})
        self.backbone = create_backbone(cfg.backbone, **kwargs)
        self.backbone.check_layer(cfg.layer)
        tune_norms_only(self.backbone)
        size = self.backbone.input_size or cfg.patch_size
        with torch.no_grad():
            width = self.backbone.forward_layers(torch.zeros(2, 3, size, size), [cfg.layer])[cfg.layer].shape[
                1
            ]
        d = cfg.embed_dim
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            self.head = nn.Sequential(nn.Linear(width, d), nn.ReLU(), nn.Linear(d, d))
            self.classifier = nn.Sequential(nn.Linear(d, d // 2), nn.ReLU(), nn.Linear(d // 2, 2))
            self.text = create_text_tower(cfg.text, cfg.prompts, cfg.n_ctx, cfg.seed, clip=kwargs)
            self.text_proj = nn.Linear(self.text.dim, d)
        self.text_scale = cfg.text_scale

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(
            self.head(self.backbone.forward_layers(x, [self.layer])[self.layer].float()), dim=1
        )

    def class_text(self) -> torch.Tensor:
        """(2, D) normalised text embeddings of the real and fake prompts."""
        return F.normalize(self.text_proj(self.text()), dim=1)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Features, classifier logits and image-text logits of a preprocessed batch."""
        f = self.features(x)
        return f, self.classifier(f), self.text_scale * f @ text.T

    def tuned_state(self) -> dict[str, torch.Tensor]:
        """Everything training changes: trainable parameters and the normalisation layers' statistics."""
        state = {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}
        for name, m in self.backbone.named_modules():
            if isinstance(m, NORM_LAYERS):
                state |= {f"backbone.{name}.{b}": t for b, t in m.named_buffers(recurse=False)}
        return state


def detector_prob(cls_logits: torch.Tensor, text_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (cls_logits.softmax(1)[:, 1] + text_logits.softmax(1)[:, 1])


def margin_loss(text_logits: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Hinge: the pseudo class's image-text logit must beat the other's by `margin`."""
    sign = 1.0 - 2.0 * labels.float()  # +1 for real, -1 for fake
    return F.relu(margin - sign * (text_logits[:, 0] - text_logits[:, 1])).mean()


class DPGNet(Detector):
    """DPGNet behind the Detector API: `fit` (labeled only) or `adapt` (labeled + unlabeled)."""

    def __init__(self, config: DPGNetConfig):
        self.config = config
        self.patch_size = config.patch_size
        self.model = DPGNetModel(config).to(config.device)

    # ------------------------------------------------------------------ training

    def fit(self, images: np.ndarray, labels: np.ndarray) -> DPGNet:
        """Source-only training: every epoch is a labeled-phase epoch."""
        self.adapt(images, labels, None, log=lambda _: None)
        return self

    def adapt(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        unlabeled: np.ndarray | None,
        on_epoch: Callable[[int, DPGNet], None] | None = None,
        log: Callable[[str], None] = print,
    ) -> dict[str, Any]:
        """Labeled phase, then adaptation to `unlabeled` images; returns the training history.

        The history lists, per epoch, the threshold range, mean losses, how many unlabeled images were
        seen, and the indices (into `unlabeled`) and pseudo labels of those kept, so a caller that knows
        the hidden labels can measure pseudo-label precision. `on_epoch(epoch, self)` runs after each epoch.
        """
        cfg = self.config
        labels = np.asarray(labels)
        if len(images) == 0 or set(np.unique(labels).tolist()) != {0, 1}:
            raise AigclabError("DPGNet needs labeled images of both classes (0 real, 1 fake)")
        uses_unlabeled = unlabeled is not None and len(unlabeled) > 0 and (cfg.pseudo_labels or cfg.distill)
        gen = torch.Generator().manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = math.ceil(len(images) / cfg.batch_labeled)
        teacher: nn.Module | None = None
        u_order = torch.zeros(0, dtype=torch.long)
        history: dict[str, Any] = {"epochs": [], "steps_per_epoch": steps}
        start = time.perf_counter()
        for epoch in range(cfg.epochs):
            adapting = uses_unlabeled and epoch > 0
            bank = FeatureBank(cfg.bank_size, cfg.bank_neighbours)
            if adapting and teacher is None:
                teacher = self._teacher()
            if adapting and cfg.pseudo_labels:
                bank.refresh(*self._embed(unlabeled))  # type: ignore[arg-type]
            record: dict[str, Any] = {"epoch": epoch, "phase": "adapt" if adapting else "labeled"}
            sums: dict[str, float] = {}
            kept_idx: list[np.ndarray] = []
            kept_lab: list[np.ndarray] = []
            seen = 0
            order = torch.randperm(len(images), generator=gen)
            self.model.train()
            for step in range(steps):
                idx = order[step * cfg.batch_labeled : (step + 1) * cfg.batch_labeled]
                xs = self._prep(images[idx.numpy()], gen, flip=True)
                ys = torch.as_tensor(labels[idx.numpy()]).long()
                text = self.model.class_text()
                parts: dict[str, torch.Tensor] = {}
                if not adapting:
                    _, cls_s, txt_s = self.model(xs, text)
                    parts["cls"] = F.cross_entropy(cls_s, ys)
                    parts["aux"] = F.cross_entropy(txt_s, ys)
                    w = {"cls": cfg.loss.w0_cls, "aux": cfg.loss.w0_aux}
                else:
                    if len(u_order) < cfg.batch_unlabeled:
                        u_order = torch.cat([u_order, torch.randperm(len(unlabeled), generator=gen)])  # type: ignore[arg-type]
                    uidx, u_order = u_order[: cfg.batch_unlabeled], u_order[cfg.batch_unlabeled :]
                    xu = self._prep(unlabeled[uidx.numpy()], gen, flip=True)  # type: ignore[index]
                    batch = [xs, xu]
                    if cfg.distill:
                        m = min(len(xs), len(xu))
                        alpha = rng.uniform(*cfg.mixup_alpha)
                        lam = float(rng.beta(alpha, alpha))
                        batch.append(lam * xs[:m] + (1 - lam) * xu[:m])
                    f, cls, txt = self.model(torch.cat(batch), text)
                    n_s, n_u = len(xs), len(xu)
                    parts["cls"] = F.cross_entropy(cls[:n_s], ys)
                    parts["aux"] = F.cross_entropy(txt[:n_s], ys)
                    w = {"cls": cfg.loss.w_cls, "aux": cfg.loss.w_aux}
                    if cfg.pseudo_labels:
                        thr = curriculum_threshold(cfg, epoch, step / max(steps - 1, 1))
                        cls_u, txt_u = cls[n_s : n_s + n_u], txt[n_s : n_s + n_u]
                        prob = detector_prob(cls_u, txt_u).detach()
                        pseudo, keep = select_pseudo_labels(prob, f[n_s : n_s + n_u].detach(), bank, thr)
                        seen += n_u
                        kept_idx.append(uidx[keep].numpy())
                        kept_lab.append(pseudo[keep].numpy())
                        if keep.any():
                            yk = pseudo[keep]
                            parts["pseudo"] = (
                                F.cross_entropy(cls_u[keep], yk)
                                + F.cross_entropy(txt_u[keep], yk)
                                + margin_loss(txt_u[keep], yk, cfg.margin)
                            )
                            w["pseudo"] = cfg.loss.w_pseudo
                        record.setdefault("threshold", [thr, thr])[1] = thr
                    if cfg.distill and teacher is not None:
                        with torch.no_grad():
                            target = F.normalize(teacher(batch[2]), dim=1)
                        parts["distill"] = (f[n_s + n_u :] - target).pow(2).sum(1).mean()
                        w["distill"] = cfg.loss.w_distill
                loss = sum(w[k] * v for k, v in parts.items())
                opt.zero_grad()
                loss.backward()  # type: ignore[union-attr]
                opt.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
            record["loss"] = {k: round(v / steps, 5) for k, v in sums.items()}
            if adapting and cfg.pseudo_labels:
                record["seen"] = seen
                record["pseudo_index"] = np.concatenate(kept_idx).tolist()
                record["pseudo_label"] = np.concatenate(kept_lab).tolist()
                record["kept_share"] = len(record["pseudo_index"]) / max(seen, 1)
            history["epochs"].append(record)
            self.model.eval()
            log(
                f"dpgnet epoch {epoch + 1}/{cfg.epochs} ({record['phase']}) loss={record['loss']} "
                f"kept={record.get('kept_share', '-')} ({time.perf_counter() - start:.0f}s)"
            )
            if on_epoch is not None:
                on_epoch(epoch, self)
        self.model.eval()
        return history

    def train_on(
        self,
        labeled: MiniSplit,
        unlabeled: MiniSplit | None = None,
        *,
        seed: int = 0,
        log: Callable[[str], None] = print,
    ) -> dict[str, Any]:
        """`Trainable` protocol (``aigclab detect train dpgnet-tiny --unlabeled DIR``): `adapt`, summarised."""
        if seed != self.config.seed:  # the training randomness follows `seed`; the init used config.seed
            self.config = self.config.model_copy(update={"seed": seed})
        pool = unlabeled.images if unlabeled is not None else None
        history = self.adapt(labeled.images, labeled.labels, pool, log=log)
        last = history["epochs"][-1]
        return {
            "labeled": len(labeled),
            "unlabeled": 0 if unlabeled is None else len(unlabeled),
            "kept_share": [round(r["kept_share"], 3) for r in history["epochs"] if "kept_share" in r],
            "final_loss": last["loss"],
        }

    def _teacher(self) -> nn.Module:
        """A frozen copy of the image path (backbone + head) as it is now."""

        class Teacher(nn.Module):
            def __init__(self, model: DPGNetModel):
                super().__init__()
                self.backbone, self.head, self.layer = model.backbone, model.head, model.layer

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.head(self.backbone.forward_layers(x, [self.layer])[self.layer].float())

        teacher = copy.deepcopy(Teacher(self.model)).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    def _prep(
        self, images: np.ndarray, gen: torch.Generator | None = None, flip: bool = False
    ) -> torch.Tensor:
        x = self.model.backbone.preprocess(images).to(self.config.device)
        if flip and gen is not None:
            mask = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        return x

    @torch.no_grad()
    def _embed(self, images: np.ndarray, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and P(fake) of uint8 images in eval mode."""
        was = self.model.training
        self.model.eval()
        text = self.model.class_text()
        feats, probs = [], []
        for i in range(0, len(images), batch_size):
            f, cls, txt = self.model(self._prep(images[i : i + batch_size]), text)
            feats.append(f.cpu())
            probs.append(detector_prob(cls, txt).cpu())
        self.model.train(was)
        return torch.cat(feats), torch.cat(probs)

    # ------------------------------------------------------------------ scoring, saving

    def _score_patches(self, patches: np.ndarray) -> np.ndarray:
        return self._embed(patches)[1].numpy().astype(np.float64)

    def save(self, path: str | Path) -> None:
        """The tuned tensors (norm layers, heads, prompt contexts, projection); frozen parts are rebuilt."""
        save_tensors(self, {k: v.cpu() for k, v in self.model.tuned_state().items()}, path)

    @classmethod
    def load(cls, path: str | Path) -> DPGNet:
        path = Path(path)
        det = cls(DPGNetConfig.from_json(path.with_suffix(".json")))
        with safe_open(str(path), "pt") as fh:
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        expected = det.model.tuned_state()
        bad = sorted(set(expected) ^ set(state))
        bad += [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
        if bad:
            raise AigclabError(f"{path}: tensors do not fit its DPGNet config: {', '.join(sorted(bad)[:3])}")
        det.model.load_state_dict(state, strict=False)
        det.model.eval()
        return restore_decision(det, path)


def _variant(preset: str):  # type: ignore[no-untyped-def]
    def build(**overrides: Any) -> DPGNet:
        return DPGNet(DPGNetConfig.from_preset("aigclab.detect", preset, **overrides))

    build.__doc__ = f"DPGNet with preset {preset!r}."
    return build


for _preset in ("dpgnet-tiny", "dpgnet-cnn-tiny", "dpgnet-clip-l14"):
    DETECTORS.register(_preset)(_variant(_preset))
