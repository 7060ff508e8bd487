"""Train and evaluate small torchvision detectors on X-ray scans, from scratch (``weights=None``).

Two detectors share one tiny two-level feature pyramid (strides 8 and 16, 64 channels): a two-stage
Faster R-CNN and the anchor-free one-stage FCOS. mAP (COCO, IoU .50:.95) and mAP50 come from
torchmetrics' ``MeanAveragePrecision`` (backed by pycocotools), accumulated over the whole test set.

Example:
    >>> from aigclab.augment.train_det import create_xray_detector
    >>> model = create_xray_detector("fcos-tiny", image_size=64)
    >>> sum(p.numel() for p in model.parameters()) > 0
    True
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aigclab._config import Config
from aigclab._registry import Registry
from aigclab.augment.transforms import DetectionAugment, DetSample, create_augmentation
from aigclab.augment.xray_sim import CLASSES
from aigclab.errors import ConfigError

__all__ = [
    "DETECTORS",
    "TrainConfig",
    "create_xray_detector",
    "evaluate",
    "load_detector",
    "save_detector",
    "train",
]

NUM_CLASSES = len(CLASSES) + 1  # + background


class TrainConfig(Config):
    """One training run: detector, mixing augmentation, fixed step budget and seed."""

    detector: str = "faster-rcnn-tiny"
    augmentation: str = "none"
    steps: int = 400
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    flip_p: float = 0.5
    scale_range: tuple[float, float] = (0.85, 1.15)
    image_size: int = 160
    seed: int = 0


class TinyFPN(nn.Module):
    """Four strided conv blocks and a top-down merge; returns feature maps at strides 8 and 16."""

    def __init__(self, width: int = 64):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.GroupNorm(8, cout), nn.ReLU(inplace=True)
            )

        self.stem = nn.Sequential(block(3, 16), block(16, 32))
        self.c3, self.c4 = block(32, 64), block(64, 96)
        self.lat3, self.lat4 = nn.Conv2d(64, width, 1), nn.Conv2d(96, width, 1)
        self.out3 = nn.Conv2d(width, width, 3, 1, 1)
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        c3 = self.c3(self.stem(x))
        c4 = self.c4(c3)
        p4 = self.lat4(c4)
        p3 = self.out3(self.lat3(c3) + nn.functional.interpolate(p4, size=c3.shape[-2:], mode="nearest"))
        return OrderedDict([("0", p3), ("1", p4)])


DETECTORS: Registry[nn.Module] = Registry("xray-detector")
_NORM = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}


@DETECTORS.register("faster-rcnn-tiny")
def faster_rcnn_tiny(image_size: int = 160, num_classes: int = NUM_CLASSES) -> nn.Module:
    """Faster R-CNN on the tiny FPN with small anchors and a 128-wide box head."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = TinyFPN()
    anchors = AnchorGenerator(sizes=((16, 32), (48, 80)), aspect_ratios=((0.33, 1.0, 3.0),) * 2)
    return FasterRCNN(
        backbone,
        min_size=image_size,
        max_size=image_size,
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(["0", "1"], 7, 2),
        box_head=TwoMLPHead(backbone.out_channels * 49, 128),
        box_predictor=FastRCNNPredictor(128, num_classes),
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=200,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=128,
        box_score_thresh=0.01,
        box_detections_per_img=30,
        **_NORM,
    )


@DETECTORS.register("fcos-tiny")
def fcos_tiny(image_size: int = 160, num_classes: int = NUM_CLASSES) -> nn.Module:
    """Anchor-free FCOS on the tiny FPN with a two-conv head."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead

    backbone = TinyFPN()
    anchors = AnchorGenerator(sizes=((8,), (16,)), aspect_ratios=((1.0,),) * 2)
    return FCOS(
        backbone,
        num_classes,
        min_size=image_size,
        max_size=image_size,
        anchor_generator=anchors,
        head=FCOSHead(backbone.out_channels, 1, num_classes, num_convs=2),
        score_thresh=0.05,
        detections_per_img=30,
        topk_candidates=200,
        **_NORM,
    )


def create_xray_detector(name: str, seed: int = 0, **overrides: Any) -> nn.Module:
    """Build a detector with freshly initialised weights (seeded, global RNG untouched)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return DETECTORS.create(name, **overrides)


def _to_tensors(batch: Sequence[DetSample]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images = [torch.tensor(s.image).permute(2, 0, 1).float() / 255.0 for s in batch]
    targets = [
        {
            "boxes": torch.as_tensor(s.boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(s.labels, dtype=torch.int64),
        }
        for s in batch
    ]
    return images, targets


def train(
    cfg: TrainConfig,
    data: Sequence[DetSample],
    log: Callable[[int, float], None] | None = None,
    every: int = 0,
    on_checkpoint: Callable[[int, nn.Module], None] | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """Train `cfg.detector` for `cfg.steps` steps on `data`; donors for mixing are other training scans.

    Three independent random streams derived from `cfg.seed`: the minibatch order (and donors), the
    flips and zooms, and the mixing parameters. Two runs with the same seed and different
    augmentations therefore see the same scans in the same order with the same geometry (paired
    seeds). `log(step, loss)` is called after every step; `on_checkpoint(step, model)` after every
    `every` steps and at the end (the model is back in training mode afterwards).

    Returns the model and timings: seconds in the augmentation and in total.
    """
    if len(data) < 2:
        raise ConfigError(f"need at least 2 training scans to mix, got {len(data)}")
    model = create_xray_detector(cfg.detector, seed=cfg.seed, image_size=cfg.image_size)
    augment = DetectionAugment(create_augmentation(cfg.augmentation), cfg.flip_p, cfg.scale_range)
    order_rng, geo_rng, mix_rng = (np.random.default_rng([cfg.seed, k]) for k in range(3))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps))
    )
    aug_seconds, start = 0.0, time.perf_counter()
    model.train()
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        for step in range(cfg.steps):
            idx = order_rng.integers(0, len(data), cfg.batch_size)
            donors = (idx + order_rng.integers(1, len(data), cfg.batch_size)) % len(data)
            t0 = time.perf_counter()
            batch = [
                augment.apply(augment.sample(geo_rng, data[i].image.shape[:2], mix_rng), data[i], data[j])
                for i, j in zip(idx, donors, strict=True)
            ]
            aug_seconds += time.perf_counter() - t0
            images, targets = _to_tensors(batch)
            losses = model(images, targets)
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            if log is not None:
                log(step, float(loss.detach()))
            if on_checkpoint is not None and ((every and (step + 1) % every == 0) or step + 1 == cfg.steps):
                ck_start = time.perf_counter()
                on_checkpoint(step + 1, model)
                model.train()
                start += time.perf_counter() - ck_start  # checkpoint evaluation is not training time
    n_images = cfg.steps * cfg.batch_size
    return model, {
        "train_seconds": time.perf_counter() - start,
        "augment_seconds": aug_seconds,
        "augment_ms_per_image": 1000.0 * aug_seconds / n_images,
    }


@torch.no_grad()
def evaluate(model: nn.Module, data: Sequence[DetSample], batch_size: int = 16) -> dict[str, float]:
    """COCO mAP (IoU .50:.95) and mAP50 over the whole set, via torchmetrics."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
    model.eval()
    for k in range(0, len(data), batch_size):
        images, targets = _to_tensors(data[k : k + batch_size])
        preds = model(images)
        metric.update([{key: p[key] for key in ("boxes", "scores", "labels")} for p in preds], targets)
    result = metric.compute()
    return {"map": float(result["map"]), "map50": float(result["map_50"])}


def save_detector(model: nn.Module, cfg: TrainConfig, out_dir: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into `out_dir`."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    cfg.to_json(out / "config.json")
    return out


def load_detector(model_dir: str | Path) -> tuple[nn.Module, TrainConfig]:
    """Load a detector saved by `save_detector`."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{model_dir}: no model.safetensors (train one with `aigclab augment xray train`)")
    cfg = TrainConfig.from_json(model_dir / "config.json")
    model = create_xray_detector(cfg.detector, seed=cfg.seed, image_size=cfg.image_size)
    model.load_state_dict(load_file(weights))
    model.eval()
    return model, cfg
