"""FTNet: few-shot, training-free detection by comparing a query with known real and fake samples.

FTNet (arXiv 2508.09475) keeps a Tip-Adapter-style cache: keys are L2-normalised middle-layer features
of support images, values their labels. A query's score for class c is the kernel sum
``sum_i exp(-beta * (1 - cos(q, k_i)))`` over the supports of class c; with one real and one fake support
this is exactly nearest-neighbour classification by cosine similarity, and with K supports a kernel-
weighted vote. FTNet-T ("Tip-Adapter-F") fine-tunes a bias-free linear layer initialised with the keys.

Choices we made where the released code leaves room:
- P(fake) is the normalised vote ``s_fake / (s_real + s_fake)``, computed in log space so far-away
  queries do not underflow (``prob="softmax"`` applies the released code's softmax over the raw sums;
  both give the same decisions, they rank differently).
- For large banks a faiss index (flat, HNSW or IVF) returns each class's `neighbours` nearest keys and
  the kernel sum runs over those (a k-NN kernel). The nearer class keeps nearly all its mass, so
  decisions match the exact sum; the farther class's sum is a lower bound. ``index="exact"`` uses
  every key.
- FTNet-T trains on the support features and their horizontal flips with cross-entropy on the log
  kernel sums (AdamW, cosine schedule).

Example:
    >>> import numpy as np
    >>> from aigclab.detect import create_detector
    >>> det = create_detector("ftnet-tiny")  # doctest: +SKIP
    >>> det.add_support(support_images, support_labels).score(test_images)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from aigclab.detect.base import DETECTORS, Detector, FeatureConfig, save_tensors
from aigclab.errors import AigclabError

__all__ = ["FTNet", "FTNetConfig", "SupportBank", "kernel_scores"]


class FTNetConfig(FeatureConfig):
    layer: str = "block3"
    center: Literal["none", "support"] = "none"  # subtract the support bank's mean feature first
    beta: float = 15.0
    prob: Literal["vote", "softmax"] = "vote"
    index: Literal["exact", "flat", "hnsw", "ivf"] = "exact"
    neighbours: int = 32
    finetune_epochs: int = 0
    finetune_lr: float = 1e-3
    finetune_batch: int = 32
    seed: int = 0


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kernel_scores(sims: np.ndarray, beta: float, valid: np.ndarray | None = None) -> np.ndarray:
    """log sum_i exp(-beta (1 - sims_i)) along the last axis (entries where `valid` is False excluded)."""
    logits = -beta * (1.0 - sims.astype(np.float64))
    if valid is not None:
        logits = np.where(valid, logits, -np.inf)
    top = logits.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)))[..., 0]


class SupportBank:
    """Normalised support features per class, searched exactly or through a faiss index."""

    def __init__(self, index: str = "exact", neighbours: int = 32, center: str = "none"):
        self.kind, self.neighbours, self.center = index, neighbours, center
        self.raw: dict[int, np.ndarray] = {}
        self.keys: dict[int, np.ndarray] = {}
        self.mean: np.ndarray | float = 0.0
        self._index: dict[int, Any] = {}

    def add(self, features: np.ndarray, labels: np.ndarray) -> None:
        feats, labels = np.asarray(features, np.float32), np.asarray(labels)
        for c in (0, 1):
            if (labels == c).any():
                old = self.raw.get(c, np.zeros((0, feats.shape[1]), np.float32))
                self.raw[c] = np.concatenate([old, feats[labels == c]])
        if self.center == "support":
            self.mean = np.concatenate(list(self.raw.values())).mean(axis=0)
        self.keys = {c: _normalise(f - self.mean) for c, f in self.raw.items()}
        self._index = {}  # rebuilt lazily

    def prepare(self, features: np.ndarray) -> np.ndarray:
        """Centre (if configured) and L2-normalise query features like the keys."""
        return _normalise(np.asarray(features, np.float32) - self.mean)

    def __len__(self) -> int:
        return sum(len(k) for k in self.keys.values())

    def _faiss(self, c: int) -> Any:
        import faiss

        if c not in self._index:
            keys = np.ascontiguousarray(self.keys[c])
            d = keys.shape[1]
            index: Any
            if self.kind == "flat":
                index = faiss.IndexFlatIP(d)
            elif self.kind == "hnsw":
                index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efSearch = max(64, 2 * self.neighbours)
            else:  # ivf
                nlist = max(1, min(4096, int(4 * np.sqrt(len(keys))), len(keys) // 39))
                index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
                index.train(keys[:: max(1, len(keys) // (64 * nlist))])
                index.nprobe = min(nlist, 16)
            index.add(keys)
            self._index[c] = index
        return self._index[c]

    def log_kernel(self, queries: np.ndarray, beta: float) -> np.ndarray:
        """(N, 2) log kernel sums of normalised queries against the real (0) and fake (1) keys."""
        if set(self.keys) != {0, 1}:
            raise AigclabError("FTNet needs at least one real and one fake support image before scoring")
        q = self.prepare(queries)
        out = np.empty((len(q), 2))
        for c in (0, 1):
            if self.kind == "exact":
                out[:, c] = kernel_scores(q @ self.keys[c].T, beta)
            else:
                k = min(self.neighbours, len(self.keys[c]))
                sims, ids = self._faiss(c).search(np.ascontiguousarray(q), k)
                out[:, c] = kernel_scores(sims, beta, valid=ids >= 0)
        return out


class FTNet(Detector):
    """FTNet / FTNet-T over a frozen backbone (see the module docstring)."""

    def __init__(self, config: FTNetConfig):
        self.config = config
        self.patch_size = config.patch_size
        self.extractor = config.extractor()
        self.bank = SupportBank(config.index, config.neighbours, config.center)
        self.adapter: torch.Tensor | None = None
        self._train_feats: list[np.ndarray] = []
        self._train_labels: list[np.ndarray] = []

    def add_support(self, images: np.ndarray, labels: np.ndarray) -> FTNet:
        labels = np.asarray(labels)
        feats = self.extractor(images)
        self.bank.add(feats, labels)
        if self.config.finetune_epochs > 0:
            self._train_feats += [feats, self.extractor(np.ascontiguousarray(images[:, :, ::-1]))]
            self._train_labels += [labels, labels]
            self._finetune()
        return self

    def add_support_features(self, features: np.ndarray, labels: np.ndarray) -> FTNet:
        """Add precomputed features (e.g. a large bank built elsewhere with the same extractor)."""
        self.bank.add(features, labels)
        return self

    def _finetune(self) -> None:
        """FTNet-T: fine-tune a key-initialised linear adapter on the support features."""
        cfg = self.config
        keys = torch.from_numpy(np.concatenate([self.bank.keys[0], self.bank.keys[1]]))
        onehot = torch.cat([torch.zeros(len(self.bank.keys[0])), torch.ones(len(self.bank.keys[1]))]).long()
        x = torch.from_numpy(self.bank.prepare(np.concatenate(self._train_feats)))
        y = torch.from_numpy(np.concatenate(self._train_labels)).long()
        weight = torch.nn.Parameter(keys.clone())
        opt = torch.optim.AdamW([weight], lr=cfg.finetune_lr, weight_decay=0.01)
        steps_per_epoch = -(-len(x) // cfg.finetune_batch)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.finetune_epochs * steps_per_epoch)
        gen = torch.Generator().manual_seed(cfg.seed)
        for _ in range(cfg.finetune_epochs):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), cfg.finetune_batch):
                idx = order[i : i + cfg.finetune_batch]
                loss = F.cross_entropy(self._adapter_logits(x[idx], weight, onehot), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        self.adapter = weight.detach()
        self._onehot = onehot

    def _adapter_logits(self, q: torch.Tensor, weight: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        aff = -self.config.beta * (1.0 - q @ weight.T)  # (N, S)
        masked = torch.stack([aff.masked_fill(onehot != c, float("-inf")) for c in (0, 1)], dim=1)
        return torch.logsumexp(masked, dim=2)  # (N, 2) log kernel sums

    def log_kernel(self, features: np.ndarray) -> np.ndarray:
        if self.adapter is not None:
            q = torch.from_numpy(self.bank.prepare(features))
            return self._adapter_logits(q, self.adapter, self._onehot).numpy().astype(np.float64)
        return self.bank.log_kernel(features, self.config.beta)

    def _score_patches(self, patches: np.ndarray) -> np.ndarray:
        lk = self.log_kernel(self.extractor(patches))
        if self.config.prob == "softmax":
            raw = np.exp(lk)
            return 1.0 / (1.0 + np.exp(raw[:, 0] - raw[:, 1]))
        return 1.0 / (1.0 + np.exp(lk[:, 0] - lk[:, 1]))

    def save(self, path: str | Path) -> None:
        """Support features (and the FTNet-T adapter) as safetensors, the config beside it as JSON."""
        tensors = {f"support_{c}": torch.from_numpy(f) for c, f in self.bank.raw.items()}
        if self.adapter is not None:
            tensors["adapter"] = self.adapter
        save_tensors(self, tensors, path)

    @classmethod
    def load(cls, path: str | Path) -> FTNet:
        path = Path(path)
        det = cls(FTNetConfig.from_json(path.with_suffix(".json")))
        state = load_file(path)
        for c in (0, 1):
            if f"support_{c}" in state:
                feats = state[f"support_{c}"].numpy()
                det.bank.add(feats, np.full(len(feats), c))
        if "adapter" in state:
            det.adapter = state["adapter"]
            det._onehot = torch.cat(
                [torch.zeros(len(det.bank.keys[0])), torch.ones(len(det.bank.keys[1]))]
            ).long()
        return det


def _variant(preset: str):  # type: ignore[no-untyped-def]
    def build(**overrides: Any) -> FTNet:
        return FTNet(FTNetConfig.from_preset("aigclab.detect", preset, **overrides))

    build.__doc__ = f"FTNet with preset {preset!r}."
    return build


for _preset in ("ftnet-tiny", "ftnet-t-tiny", "ftnet-cnn-tiny", "ftnet-clip-l14", "ftnet-t-clip-l14"):
    DETECTORS.register(_preset)(_variant(_preset))
