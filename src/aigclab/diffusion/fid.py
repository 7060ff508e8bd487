"""FID without downloads: torchmetrics' `FrechetInceptionDistance` over a feature network that exists offline.

Feature networks (`feature_net(spec)`):

- ``random-cnn`` (default): a fixed, seeded, randomly initialised CNN (three conv blocks, mean- and
  max-pooled, 192 features). Random-weight embeddings are a documented stand-in when no trained
  network exists (Naeem et al., ICML 2020); the numbers compare models against each other on this
  machine only, never with published FIDs.
- ``backbone:<name>[:<layer>]``: a backbone of `aigclab.nn`, e.g. ``backbone:aigclab-tiny:pooled``.
- ``inception-nsfwjs[:<size>]``: pool features (2048) of nsfwjs's InceptionV3 (`aigclab.nn.nsfwjs`;
  weights from ``aigclab models fetch nsfwjs``), images resized to `size` (default 299) as FID does.
  A trained network, so closer to FID's intent than ``random-cnn``, but it is NOT the standard FID
  network: it was fine-tuned for content classification after ImageNet, so its numbers are internal
  and not comparable with papers.
- ``inception:<path>``: the standard FID Inception-v3 with weights from a local file (needs the
  ``torch-fidelity`` package); the only choice whose numbers mean the same as published FIDs.

Beside FID, `evaluate` reports improved precision and recall (Kynkäänniemi et al., NeurIPS 2019: the
share of generated samples inside the k-NN balls of the real ones, and vice versa) in the same space.

Example:
    >>> import numpy as np
    >>> from aigclab.diffusion.fid import evaluate, feature_net
    >>> rng = np.random.default_rng(0)
    >>> real = rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    >>> scores = evaluate(real, real, feature_net("random-cnn"))
    >>> abs(scores["fid"]) < 1e-3, scores["precision"]
    (True, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from aigclab.errors import AigclabError

__all__ = [
    "FeatureNet",
    "RandomCNN",
    "evaluate",
    "feature_net",
    "frechet_distance",
    "memoized",
    "precision_recall",
    "reference_images",
]


class FeatureNet(nn.Module):
    """uint8 (N, 3, H, W) tensors in, (N, D) float features out: what torchmetrics' FID calls."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], num_features: int, name: str):
        super().__init__()
        self.fn = fn
        self.num_features = num_features
        self.name = name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images)


class RandomCNN(nn.Module):
    """A seeded random CNN: three 3x3 conv blocks (stride 2 after the first), mean- and max-pooled."""

    def __init__(self, seed: int = 0, width: int = 32):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.blocks = nn.ModuleList(
                [
                    nn.Conv2d(3, width, 3, 1, 1),
                    nn.Conv2d(width, width, 3, 2, 1),
                    nn.Conv2d(width, width, 3, 2, 1),
                ]
            )
        self.num_features = 6 * width

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0
        pooled = []
        for conv in self.blocks:
            x = torch.relu(conv(x))
            pooled += [x.mean(dim=(2, 3)), x.amax(dim=(2, 3))]
        return torch.cat(pooled, dim=1)


def _backbone(name: str, layer: str) -> FeatureNet:
    from aigclab.nn import create_backbone

    bb = create_backbone(name)
    bb.check_layer(layer)
    probe = bb.features(np.zeros((1, 32, 32, 3), np.uint8), layer=layer)

    def fn(images: torch.Tensor) -> torch.Tensor:
        nhwc = images.permute(0, 2, 3, 1).contiguous().numpy()
        return torch.from_numpy(bb.features(nhwc, layer=layer))

    return FeatureNet(fn, probe.shape[1], f"backbone:{name}:{layer}")


def _inception_nsfwjs(size: int) -> FeatureNet:
    from aigclab.nn import create_backbone

    bb = create_backbone("inceptionv3-nsfwjs", input_size=size)

    def fn(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(bb.features(images.permute(0, 2, 3, 1).contiguous().numpy(), "pooled"))

    return FeatureNet(fn, 2048, f"inception-nsfwjs:{size}")


def _inception(path: str) -> FeatureNet:
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ModuleNotFoundError:
        raise AigclabError(
            "inception features need the torch-fidelity package: pip install torch-fidelity"
        ) from None
    net = NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=path
    )
    return FeatureNet(lambda images: net(images).reshape(len(images), -1), 2048, f"inception:{path}")


def feature_net(spec: str = "random-cnn") -> FeatureNet:
    """The feature network named by `spec` (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    if kind == "random-cnn":
        cnn = RandomCNN(seed=int(rest or 0))
        return FeatureNet(cnn, cnn.num_features, spec)
    if kind == "backbone":
        name, _, layer = rest.partition(":")
        return _backbone(name or "aigclab-tiny", layer or "pooled")
    if kind == "inception-nsfwjs":
        if rest and not rest.isdigit():
            raise AigclabError(f"feature network {spec!r}: the size must be a whole number of pixels")
        return _inception_nsfwjs(int(rest or 299))
    if kind == "inception" and rest:
        return _inception(rest)
    raise AigclabError(
        f"unknown feature network {spec!r}; use random-cnn[:seed], backbone:<name>[:layer], "
        "inception-nsfwjs[:size] or inception:<weights>"
    )


def memoized(net: FeatureNet, max_items: int = 4096) -> FeatureNet:
    """`net` with its outputs remembered per input batch (keyed by the batch's bytes).

    `evaluate` and `frechet_distance` embed the same real and reference images again on every call; with a
    trained network (``inception-nsfwjs``) that dominates a benchmark's run time. At most `max_items`
    batches are kept (oldest dropped first).
    """
    import hashlib

    store: dict[tuple[tuple[int, ...], str], torch.Tensor] = {}

    def fn(images: torch.Tensor) -> torch.Tensor:
        key = (tuple(images.shape), hashlib.sha1(images.contiguous().numpy().tobytes()).hexdigest())
        if key not in store:
            if len(store) >= max_items:
                store.pop(next(iter(store)))
            store[key] = net(images)
        return store[key].clone()

    return FeatureNet(fn, net.num_features, net.name)


def _nchw(images: np.ndarray) -> torch.Tensor:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise AigclabError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def frechet_distance(real: np.ndarray, fake: np.ndarray, net: FeatureNet, batch_size: int = 250) -> float:
    """FID between uint8 image sets with torchmetrics, using `net` as the feature extractor."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=net)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            metric.update(_nchw(images[i : i + batch_size]), real=is_real)
    return float(metric.compute())


@torch.no_grad()
def _features(images: np.ndarray, net: FeatureNet, batch_size: int = 250) -> torch.Tensor:
    return torch.cat(
        [net(_nchw(images[i : i + batch_size])).double() for i in range(0, len(images), batch_size)]
    )


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of feature sets (k-NN radii within each set)."""

    def radii(x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, x).kthvalue(k + 1, dim=1).values  # k+1: the point itself is at distance 0

    def coverage(x: torch.Tensor, ref: torch.Tensor, ref_radii: torch.Tensor) -> float:
        return float((torch.cdist(x, ref) <= ref_radii[None]).any(dim=1).double().mean())

    return coverage(fake, real, radii(real)), coverage(real, fake, radii(fake))


def reference_images(size: int = 32, n_max: int = 1000, split: str = "train", seed: int = 0) -> np.ndarray:
    """Up to `n_max` real photo patches of side `size` (the zoo trains on the ``train`` split)."""
    from aigclab.data.photos import photo_patches

    images = photo_patches(split, size=size).images  # type: ignore[arg-type]
    idx = np.random.default_rng(seed).choice(len(images), min(n_max, len(images)), replace=False)
    return images[np.sort(idx)]


def evaluate(real: np.ndarray, fake: np.ndarray, net: FeatureNet, k: int = 3) -> dict[str, float]:
    """FID (torchmetrics), precision and recall of uint8 `fake` against `real` in `net`'s feature space."""
    precision, recall = precision_recall(_features(real, net), _features(fake, net), k)
    return {"fid": frechet_distance(real, fake, net), "precision": precision, "recall": recall}
