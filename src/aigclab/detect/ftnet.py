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
- Support groups (`SupportBank`): a detector's shipped *prior* bank and the user's few-shot supports
  are averaged per group and the user group is weighted by `user_weight`, so a few user supports move the
  decision instead of drowning in a bank of hundreds (plain FTNet when there is no prior bank).

Feature and kernel of the ``-tiny`` presets, chosen by `aigclab.detect.trust.ablation` on the training
family only (dcgan train fakes vs real train patches; 4+4 supports and 300+300 queries from disjoint
photos and samples; 5 seeds; AUC; the full grid is in benchmarks/results/detect_fewshot.json):
- Feature: **mobilenetv2-nsfwjs block6 at 96 px** (32-px patches upsampled bilinearly), a generic
  pretrained feature (ImageNet-initialised nsfwjs MobileNetV2, see `aigclab.nn.nsfwjs`): AUC 0.947;
  block5 0.927, block8 0.930 at 96 px; block6 at 64 / 128 px 0.936 / 0.936.
- beta **50** vs the paper's 15: 0.9468 vs 0.9465 there, a tie (beta 4: 0.932); 50 is kept. FTNet-T
  uses the same beta (the paper uses 4 for FTNet-T; not tuned separately here).
- center **"none"**: subtracting the support mean (``center="support"``, which the earlier residual-
  spectrum default needed) lowers the AUC on this feature (0.932 vs 0.947).

Example:
    >>> import numpy as np
    >>> from aigclab.detect import create_detector
    >>> det = create_detector("ftnet-tiny")  # doctest: +SKIP
    >>> det.add_support(support_images, support_labels).score(test_images)  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from aigclab.detect.base import DETECTORS, Detector, FeatureConfig, restore_decision, save_tensors
from aigclab.errors import AigclabError

__all__ = ["FTNet", "FTNetConfig", "SupportBank", "kernel_scores"]


class FTNetConfig(FeatureConfig):
    layer: str = "block3"
    center: Literal["none", "support"] = "none"  # subtract the support bank's mean feature first
    beta: float = 15.0
    prob: Literal["vote", "softmax"] = "vote"
    index: Literal["exact", "flat", "hnsw", "ivf"] = "exact"
    neighbours: int = 32
    user_weight: float = 1.0  # weight of the user's supports against a prior bank (see SupportBank)
    finetune_epochs: int = 0
    finetune_lr: float = 1e-3
    finetune_batch: int = 32
    seed: int = 0


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kernel_scores(sims: np.ndarray, beta: float, valid: np.ndarray | None = None) -> np.ndarray:
    """log sum_i exp(-beta (1 - sims_i)) along the last axis (entries where `valid` is False excluded).

    A row without any valid entry gives -inf (an empty sum), never NaN.
    """
    logits = -beta * (1.0 - sims.astype(np.float64))
    if valid is not None:
        logits = np.where(valid, logits, -np.inf)
    top = logits.max(axis=-1, keepdims=True)
    safe_top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return (safe_top + np.log(np.exp(logits - safe_top).sum(axis=-1, keepdims=True)))[..., 0]


GROUPS = ("prior", "user")


class SupportBank:
    """Normalised support features per class and group, searched exactly or through a faiss index.

    Two groups: ``prior`` (a large bank shipped with a detector, e.g. the embedded default's AIGC-Mini
    images) and ``user`` (the few-shot supports a user adds). A class's log score is
    ``log sum_g w_g * mean_{i in g, c} exp(-beta (1 - cos(q, k_i)))`` with ``w_prior = 1`` and
    ``w_user = user_weight``: each group's kernel is averaged over its own keys, so four user supports are
    not swamped by a bank of a thousand, and `user_weight` sets how much they count against it. With one
    group and balanced classes this is FTNet's kernel sum up to a constant, so decisions are unchanged.
    """

    def __init__(
        self, index: str = "exact", neighbours: int = 32, center: str = "none", user_weight: float = 1.0
    ):
        self.kind, self.neighbours, self.center = index, neighbours, center
        self.user_weight = user_weight
        self.raw: dict[tuple[str, int], np.ndarray] = {}
        self.normed: dict[tuple[str, int], np.ndarray] = {}
        self.mean: np.ndarray | float = 0.0
        self._index: dict[tuple[str, int], Any] = {}
        self._index_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # shipped to Ray workers: indexes are rebuilt there
        return {k: v for k, v in self.__dict__.items() if k not in ("_index", "_index_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index, self._index_lock = {}, threading.Lock()

    def add(self, features: np.ndarray, labels: np.ndarray, group: str = "user") -> None:
        if group not in GROUPS:
            raise AigclabError(f"unknown support group {group!r}; choose prior or user")
        feats, labels = np.asarray(features, np.float32), np.asarray(labels)
        for c in (0, 1):
            if (labels == c).any():
                old = self.raw.get((group, c), np.zeros((0, feats.shape[1]), np.float32))
                self.raw[(group, c)] = np.concatenate([old, feats[labels == c]])
        if self.center == "support":
            self.mean = np.concatenate(list(self.raw.values())).mean(axis=0)
        self.normed = {gc: _normalise(f - self.mean) for gc, f in self.raw.items()}
        self._index = {}  # rebuilt lazily

    @property
    def keys(self) -> dict[int, np.ndarray]:
        """All normalised keys of each class (prior first, then user)."""
        return {
            c: np.concatenate([self.normed[(g, c)] for g in GROUPS if (g, c) in self.normed])
            for c in (0, 1)
            if any((g, c) in self.normed for g in GROUPS)
        }

    def log_weights(self, c: int) -> np.ndarray:
        """Per-key log weight of class `c`'s keys (same order as `keys[c]`): log(w_group / n_group)."""
        parts = []
        for g in GROUPS:
            if (g, c) in self.normed:
                n = len(self.normed[(g, c)])
                w = self._weight(g, c)
                parts.append(np.full(n, np.log(w / n) if w > 0 else -np.inf))
        return np.concatenate(parts)

    def _weight(self, group: str, c: int) -> float:
        """w_prior = 1; w_user = user_weight when a prior bank of class c exists, else 1 (plain FTNet)."""
        return self.user_weight if group == "user" and ("prior", c) in self.normed else 1.0

    def prepare(self, features: np.ndarray) -> np.ndarray:
        """Centre (if configured) and L2-normalise query features like the keys."""
        return _normalise(np.asarray(features, np.float32) - self.mean)

    def __len__(self) -> int:
        return sum(len(k) for k in self.normed.values())

    def _faiss(self, gc: tuple[str, int]) -> Any:
        import faiss

        with self._index_lock:  # built once, even when batches are scored on several threads
            if gc in self._index:
                return self._index[gc]
            keys = np.ascontiguousarray(self.normed[gc])
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
            self._index[gc] = index
            return index

    def _group_kernel(self, q: np.ndarray, gc: tuple[str, int], beta: float) -> np.ndarray:
        """log mean kernel of queries `q` against one group's keys of one class."""
        keys = self.normed[gc]
        if self.kind == "exact":
            return kernel_scores(q @ keys.T, beta) - np.log(len(keys))
        k = min(self.neighbours, len(keys))
        sims, ids = self._faiss(gc).search(np.ascontiguousarray(q), k)
        out = kernel_scores(sims, beta, valid=ids >= 0)
        empty = ~(ids >= 0).any(axis=1)  # IVF probed only empty lists: fall back to the exact sum
        if empty.any():
            out[empty] = kernel_scores(q[empty] @ keys.T, beta)
        return out - np.log(len(keys))

    def log_kernel(self, queries: np.ndarray, beta: float) -> np.ndarray:
        """(N, 2) log kernel scores of queries against the real (0) and fake (1) keys."""
        if set(self.keys) != {0, 1}:
            raise AigclabError("FTNet needs at least one real and one fake support image before scoring")
        q = self.prepare(queries)
        out = np.full((len(q), 2), -np.inf)
        for c in (0, 1):
            for g in GROUPS:
                if (g, c) in self.normed:
                    w = self._weight(g, c)
                    if w > 0:
                        out[:, c] = np.logaddexp(out[:, c], np.log(w) + self._group_kernel(q, (g, c), beta))
        return out


class FTNet(Detector):
    """FTNet / FTNet-T over a frozen backbone (see the module docstring)."""

    def __init__(self, config: FTNetConfig):
        self.config = config
        self.patch_size = config.patch_size
        self.extractor = config.extractor()
        self.bank = SupportBank(config.index, config.neighbours, config.center, config.user_weight)
        self.adapter: torch.Tensor | None = None
        self._train_feats: list[np.ndarray] = []
        self._train_labels: list[np.ndarray] = []

    def add_support(self, images: np.ndarray, labels: np.ndarray) -> FTNet:
        """Few-shot supports (the ``user`` group): weighted by `user_weight` against any prior bank."""
        return self._add(images, labels, "user")

    def add_prior(self, images: np.ndarray, labels: np.ndarray) -> FTNet:
        """A prior bank (e.g. the embedded default's training images); user supports are weighed against it."""
        return self._add(images, labels, "prior")

    def _add(self, images: np.ndarray, labels: np.ndarray, group: str) -> FTNet:
        labels = np.asarray(labels)
        feats = self.extractor(images)
        self.bank.add(feats, labels, group)
        if self.config.finetune_epochs > 0:
            self._train_feats += [feats, self.extractor(np.ascontiguousarray(images[:, :, ::-1]))]
            self._train_labels += [labels, labels]
            self._finetune()
        return self

    def add_support_features(self, features: np.ndarray, labels: np.ndarray, group: str = "user") -> FTNet:
        """Add precomputed features (made with this detector's extractor) to a support group."""
        self.bank.add(features, labels, group)
        return self

    def _key_table(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        keys = self.bank.keys
        flat = torch.from_numpy(np.concatenate([keys[0], keys[1]]))
        onehot = torch.cat([torch.zeros(len(keys[0])), torch.ones(len(keys[1]))]).long()
        logw = torch.from_numpy(np.concatenate([self.bank.log_weights(0), self.bank.log_weights(1)])).float()
        return flat, onehot, logw

    def _finetune(self) -> None:
        """FTNet-T: fine-tune a key-initialised linear adapter on the support features."""
        cfg = self.config
        keys, onehot, logw = self._key_table()
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
                loss = F.cross_entropy(self._adapter_logits(x[idx], weight, onehot, logw), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        self.adapter = weight.detach()

    def _adapter_logits(
        self, q: torch.Tensor, weight: torch.Tensor, onehot: torch.Tensor, logw: torch.Tensor
    ) -> torch.Tensor:
        aff = -self.config.beta * (1.0 - q @ weight.T) + logw  # (N, S)
        masked = torch.stack([aff.masked_fill(onehot != c, float("-inf")) for c in (0, 1)], dim=1)
        return torch.logsumexp(masked, dim=2)  # (N, 2) log kernel scores

    def log_kernel(self, features: np.ndarray) -> np.ndarray:
        if self.adapter is not None:
            _, onehot, logw = self._key_table()
            q = torch.from_numpy(self.bank.prepare(features))
            return self._adapter_logits(q, self.adapter, onehot, logw).numpy().astype(np.float64)
        return self.bank.log_kernel(features, self.config.beta)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """P(fake) of precomputed patch features."""
        lk = self.log_kernel(features)
        if self.config.prob == "softmax":
            raw = np.exp(lk)
            return 1.0 / (1.0 + np.exp(raw[:, 0] - raw[:, 1]))
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(lk[:, 0] - lk[:, 1]))

    def _score_patches(self, patches: np.ndarray) -> np.ndarray:
        return self.score_features(self.extractor(patches))

    def save(self, path: str | Path) -> None:
        """Support features per group (and the FTNet-T adapter) as safetensors, the config as JSON."""
        tensors = {f"{g}_{c}": torch.from_numpy(f) for (g, c), f in self.bank.raw.items()}
        if self.adapter is not None:
            tensors["adapter"] = self.adapter
        save_tensors(self, tensors, path)

    @classmethod
    def load(cls, path: str | Path) -> FTNet:
        path = Path(path)
        det = cls(FTNetConfig.from_json(path.with_suffix(".json")))
        state = load_file(path)
        for g in GROUPS:
            for c in (0, 1):
                if f"{g}_{c}" in state:
                    feats = state[f"{g}_{c}"].numpy()
                    det.bank.add(feats, np.full(len(feats), c), g)
        if "adapter" in state:
            det.adapter = state["adapter"]
        return restore_decision(det, path)


def _variant(preset: str):  # type: ignore[no-untyped-def]
    def build(**overrides: Any) -> FTNet:
        return FTNet(FTNetConfig.from_preset("aigclab.detect", preset, **overrides))

    build.__doc__ = f"FTNet with preset {preset!r}."
    return build


_PRESETS = (
    "ftnet-tiny",
    "ftnet-t-tiny",
    "ftnet-spectrum-tiny",
    "ftnet-cnn-tiny",
    "ftnet-clip-l14",
    "ftnet-t-clip-l14",
)
for _preset in _PRESETS:
    DETECTORS.register(_preset)(_variant(_preset))
