"""Strong baselines behind the detector API: UnivFD, CNNDetection and NPR.

- ``univfd-tiny``: a linear probe (logistic regression) on frozen, L2-normalised backbone features
  (UnivFD, CVPR 2023, probes CLIP ViT-L/14; ``univfd-clip-l14`` does that with local weights). It reads
  the same generic pretrained feature as FTNet's default (mobilenetv2-nsfwjs block6 at 96 px), not a
  network trained on AIGC-Mini.
- ``cnndet-tiny``: a CNN trained from scratch on pixels with blur + JPEG augmentation (CNNDetection,
  CVPR 2020). Their blur sigma in [0, 3] is for 256-pixel crops; on 32-pixel patches we scale it to
  [0, 1] (configurable).
- ``npr-tiny``: the same CNN on the neighbouring-pixel residual ``x - up(down(x))`` with nearest
  down/up-sampling by 2 (NPR, CVPR 2024), which exposes up-sampling traces.

The CNN is the embedded `TinyCNN` architecture, freshly initialised and trained here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from aigclab._config import Config
from aigclab.degradations import gaussian_blur, jpeg
from aigclab.detect.base import (
    DETECTORS,
    Detector,
    FeatureConfig,
    FitOnLabeled,
    restore_decision,
    save_tensors,
)
from aigclab.errors import AigclabError

__all__ = ["CNNConfig", "CNNDetector", "LinearProbe", "LinearProbeConfig", "npr_residual"]


class LinearProbeConfig(FeatureConfig):
    c: float = 1.0


class LinearProbe(FitOnLabeled, Detector):
    """UnivFD: logistic regression on frozen features."""

    def __init__(self, config: LinearProbeConfig):
        self.config = config
        self.patch_size = config.patch_size
        self.extractor = config.extractor()
        self.coef: np.ndarray | None = None
        self.intercept = 0.0

    def fit(
        self, images: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> LinearProbe:
        """Fit on labelled images (0 real, 1 fake)."""
        return self.fit_features(self.extractor(images), labels, sample_weight)

    def fit_features(
        self, feats: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> LinearProbe:
        """`fit` on precomputed extractor features."""
        from sklearn.linear_model import LogisticRegression

        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        labels = np.asarray(labels)
        if len(set(labels.tolist())) < 2:
            raise AigclabError("the linear probe needs labelled real (0) and fake (1) images")
        clf = LogisticRegression(C=self.config.c, max_iter=2000).fit(
            feats, labels, sample_weight=sample_weight
        )
        self.coef, self.intercept = clf.coef_[0].astype(np.float64), float(clf.intercept_[0])
        return self

    def score_features(self, feats: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise AigclabError("the linear probe is not trained; call fit() or load() first")
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        return 1.0 / (1.0 + np.exp(-(feats @ self.coef + self.intercept)))

    def _score_patches(self, patches: np.ndarray) -> np.ndarray:
        return self.score_features(self.extractor(patches))

    def save(self, path: str | Path) -> None:
        if self.coef is None:
            raise AigclabError("nothing to save: the linear probe is not trained")
        save_tensors(
            self, {"coef": torch.from_numpy(self.coef), "intercept": torch.tensor([self.intercept])}, path
        )

    @classmethod
    def load(cls, path: str | Path) -> LinearProbe:
        det = cls(LinearProbeConfig.from_json(Path(path).with_suffix(".json")))
        state = load_file(Path(path))
        det.coef, det.intercept = state["coef"].numpy(), float(state["intercept"][0])
        return restore_decision(det, path)


class CNNConfig(Config):
    input: Literal["pixels", "npr"] = "pixels"
    channels: tuple[int, int, int, int] = (16, 32, 64, 128)
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)
    seed: int = 0
    patch_size: int = 32
    device: str = "cpu"


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """x - nearest_up(nearest_down(x, 1/2), 2) for a (N, C, H, W) batch with even H, W."""
    down = F.interpolate(x, scale_factor=0.5, mode="nearest")
    return x - F.interpolate(down, scale_factor=2.0, mode="nearest")


def _augment(img: np.ndarray, cfg: CNNConfig, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < cfg.blur_prob:
        img = gaussian_blur(img, float(rng.uniform(*cfg.blur_sigma)))
    if rng.random() < cfg.jpeg_prob:
        img = jpeg(img, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return img


class CNNDetector(FitOnLabeled, Detector):
    """A TinyCNN classifier on pixels (CNNDetection) or on NPR residuals (NPR)."""

    def __init__(self, config: CNNConfig):
        from aigclab.nn.tiny import TinyConfig, build_tiny

        self.config = config
        self.patch_size = config.patch_size
        self.model = build_tiny(TinyConfig(channels=config.channels, seed=config.seed)).to(config.device)
        self.trained = False

    def _inputs(self, images: np.ndarray) -> torch.Tensor:
        x = self.model.preprocess(images).to(self.config.device)
        return npr_residual(x) * 4.0 if self.config.input == "npr" else x

    def fit(self, images: np.ndarray, labels: np.ndarray) -> CNNDetector:
        """Train with blur + JPEG augmentation drawn afresh every epoch, and random horizontal flips."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        y_all = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.model.train()
        for _ in range(cfg.epochs):
            augmented = np.stack([_augment(img, cfg, rng) for img in images])
            flips = rng.random(len(images)) < 0.5
            augmented[flips] = augmented[flips, :, ::-1]
            order = torch.randperm(len(images), generator=gen).numpy()
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                loss = F.binary_cross_entropy_with_logits(
                    self.model(self._inputs(augmented[idx])), y_all[idx]
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
        self._recalibrate_batchnorm(images)
        self.model.eval()
        self.trained = True
        return self

    @torch.no_grad()
    def _recalibrate_batchnorm(self, images: np.ndarray) -> None:
        """Replace BatchNorm running statistics by exact averages over the training images.

        Short CPU budgets leave the exponential running averages far from the final weights' statistics,
        which shifts eval-mode scores away from the 0.5 threshold.
        """
        norms = [m for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self.model.train()
        for i in range(0, len(images), 256):
            self.model(self._inputs(images[i : i + 256]))
        for m in norms:
            m.momentum = 0.1

    @torch.inference_mode()
    def _score_patches(self, patches: np.ndarray) -> np.ndarray:
        if not self.trained:
            raise AigclabError("the CNN detector is not trained; call fit() or load() first")
        out = [
            torch.sigmoid(self.model(self._inputs(patches[i : i + 512]))) for i in range(0, len(patches), 512)
        ]
        return torch.cat(out).cpu().double().numpy()

    def save(self, path: str | Path) -> None:
        save_tensors(self, dict(self.model.state_dict()), path)

    @classmethod
    def load(cls, path: str | Path) -> CNNDetector:
        det = cls(CNNConfig.from_json(Path(path).with_suffix(".json")))
        det.model.load_state_dict(load_file(Path(path)))
        det.model.eval()
        det.trained = True
        return restore_decision(det, path)


@DETECTORS.register("univfd-tiny")
def univfd_tiny(**overrides: Any) -> LinearProbe:
    """Linear probe on the embedded backbone's pooled features."""
    return LinearProbe(LinearProbeConfig.from_preset("aigclab.detect", "univfd-tiny", **overrides))


@DETECTORS.register("univfd-clip-l14")
def univfd_clip_l14(**overrides: Any) -> LinearProbe:
    """Linear probe on CLIP ViT-L/14 image embeddings (needs `weights=` a local safetensors file)."""
    return LinearProbe(LinearProbeConfig.from_preset("aigclab.detect", "univfd-clip-l14", **overrides))


@DETECTORS.register("cnndet-tiny")
def cnndet_tiny(**overrides: Any) -> CNNDetector:
    """CNNDetection-style CNN with blur + JPEG augmentation."""
    return CNNDetector(CNNConfig.from_preset("aigclab.detect", "cnndet-tiny", **overrides))


@DETECTORS.register("npr-tiny")
def npr_tiny(**overrides: Any) -> CNNDetector:
    """NPR: the CNN on neighbouring-pixel residuals."""
    return CNNDetector(CNNConfig.from_preset("aigclab.detect", "npr-tiny", **overrides))
