"""The detector interface, its registry, and feature extraction with an on-disk cache.

Every detector maps uint8 RGB images to the probability that each is AI-generated. Images whose size
differs from the detector's ``patch_size`` are cut into a grid of patches and their patch scores are
averaged, so the 32-pixel embedded models also score full-size photographs. A mean over many patches
spreads less than one patch's score, so a detector may hold a decision per patch count
(`Detector.count_bands`); `verdicts` then takes each image's count.

Example:
    >>> from aigclab.detect import create_detector, list_detectors
    >>> "ftnet-tiny" in list_detectors()
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from pydantic import Field

from aigclab._config import Config
from aigclab._registry import Registry
from aigclab.errors import AigclabError
from aigclab.io import content_hash
from aigclab.parallel import Engine, map_items

if TYPE_CHECKING:
    from aigclab.data.mini import MiniSplit

__all__ = [
    "DETECTORS",
    "Detector",
    "FeatureConfig",
    "FeatureExtractor",
    "FitOnLabeled",
    "Trainable",
    "create_detector",
    "grid_count",
    "list_detectors",
    "load_detector",
    "restore_decision",
    "save_tensors",
    "to_patches",
]

DETECTORS: Registry[Detector] = Registry("detector")
D = TypeVar("D", bound="Detector")


def grid_count(height: int, width: int, size: int, max_patches: int = 64) -> int:
    """How many patches `to_patches` takes from a `height` x `width` image."""
    if height < size or width < size:
        s = size / min(height, width)
        height, width = max(size, round(height * s)), max(size, round(width * s))
    return min(max_patches, (height // size) * (width // size))


def to_patches(image: np.ndarray, size: int, max_patches: int = 64) -> np.ndarray:
    """Non-overlapping `size` patches on a centred grid (at most `max_patches`, evenly spread)."""
    h, w = image.shape[:2]
    if h < size or w < size:  # upscale tiny images so at least one patch fits
        from aigclab.degradations import resize

        s = size / min(h, w)
        image = resize(image, (max(size, round(h * s)), max(size, round(w * s))), "bicubic")
        h, w = image.shape[:2]
    rows, cols = h // size, w // size
    top, left = (h - rows * size) // 2, (w - cols * size) // 2
    grid = [(r, c) for r in range(rows) for c in range(cols)]
    if len(grid) > max_patches:
        grid = [grid[i] for i in np.linspace(0, len(grid) - 1, max_patches).round().astype(int)]
    return np.stack(
        [
            image[top + r * size : top + (r + 1) * size, left + c * size : left + (c + 1) * size]
            for r, c in grid
        ]
    )


_CLASSES: dict[str, type[Detector]] = {}


class Detector:
    """Base class. Subclasses implement `_score_patches` (and `fit` / `add_support` where they learn).

    Saved detectors are a safetensors file (its metadata names the class and holds the decision threshold
    and uncertain band) plus the config as JSON beside it.

    `threshold` is the probability at or above which an image is called fake (the binary decision).
    `band` = (real_below, fake_from), when set, gives the three-way verdict instead: "real" below the first,
    "fake" at or above the second, "uncertain" between (see `verdicts`). The two ends are chosen apart, so
    the band need not be centred on the threshold. Detectors that calibrate themselves (the embedded
    default) set both.

    `count_bands`, when set, maps a patch count n to (threshold, real_below, fake_from) for images read
    as n patches: an image of m patches takes the entry of the largest n <= m (the nearest calibrated
    count on the side of fewer patches, whose mean is the noisier). `threshold` and `band` then hold the
    entry for one patch. The embedded default calibrates it at 1, 2, 4, ... up to `max_patches`.
    """

    patch_size: int = 32
    max_patches: int = 64
    threshold: float = 0.5  # P(fake) at or above which an image is called fake
    band: tuple[float, float] | None = None  # (real below, fake at or above); None: the threshold alone
    count_bands: dict[int, tuple[float, float, float]] | None = (
        None  # n -> (threshold, real below, fake from)
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.__name__] = cls

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        raise NotImplementedError

    def fit(self, images: np.ndarray, labels: np.ndarray) -> Detector:
        raise AigclabError(f"{type(self).__name__} is training-free; use add_support() for few-shot examples")

    def add_support(self, images: np.ndarray, labels: np.ndarray) -> Detector:
        raise AigclabError(f"{type(self).__name__} takes no support set; train it with fit()")

    def _score_patches(self, patches: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decision(self, count: int = 1) -> tuple[float, float, float]:
        """(threshold, real_below, fake_from) for an image read as `count` patches."""
        if self.count_bands:
            fitting = [n for n in self.count_bands if n <= count]
            return self.count_bands[max(fitting) if fitting else min(self.count_bands)]
        lo, hi = self.band or (self.threshold, self.threshold)
        return self.threshold, lo, hi

    def verdicts(self, probs: np.ndarray, counts: np.ndarray | Sequence[int] | None = None) -> list[str]:
        """'fake' / 'real' / 'uncertain' per probability, from the band (else the threshold alone) of each
        image's patch count (`counts`; None: one patch each, i.e. `threshold` and `band`)."""
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        n = np.ones(len(p), int) if counts is None else np.asarray(counts, int).reshape(-1)
        if len(n) != len(p):
            raise AigclabError(f"verdicts: {len(p)} probabilities but {len(n)} patch counts")
        ends = np.array([self.decision(int(c))[1:] for c in n]).reshape(-1, 2)
        out = np.where(p >= ends[:, 1], "fake", np.where(p < ends[:, 0], "real", "uncertain"))
        return [str(v) for v in out]

    def set_uncertain(self, width: float) -> None:
        """A symmetric band of half-width `width` around `threshold` (0 removes the band)."""
        if width < 0:
            raise AigclabError(f"uncertain width {width} must not be negative")
        self.band = (self.threshold - width, self.threshold + width) if width > 0 else None
        self.count_bands = None  # one band for every count: the one asked for

    def score(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """P(fake) per image; a batch array of patch-sized images is scored directly."""
        return self.score_counted(images)[0]

    def score_counted(self, images: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """P(fake) per image and the number of patches each was read as (for `verdicts`)."""
        s = self.patch_size
        if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1:3] == (s, s):
            return self._score_patches(images), np.ones(len(images), int)
        patches = [to_patches(img, s, self.max_patches) for img in images]
        flat = self._score_patches(np.concatenate(patches)) if patches else np.zeros(0)
        bounds = np.cumsum([0] + [len(p) for p in patches])
        probs = np.array([flat[a:b].mean() for a, b in itertools.pairwise(bounds)])
        return probs, np.array([len(p) for p in patches], int)


@runtime_checkable
class Trainable(Protocol):
    """A detector that `aigclab detect train` can train and save.

    `train_on` trains in place on labelled patches (`labeled.labels`: 0 real, 1 fake) and, for detectors
    that use them, unlabelled patches (`unlabeled.labels` all -1); detectors that take no unlabelled
    data raise `AigclabError` when given some. `seed` drives the training randomness (the command also
    builds the detector with it when its config has a ``seed``); `log` receives progress lines. It
    returns a small summary (counts, final losses, seconds) that the command prints.
    """

    def train_on(
        self,
        labeled: MiniSplit,
        unlabeled: MiniSplit | None = None,
        *,
        seed: int = 0,
        log: Callable[[str], None] = print,
    ) -> dict[str, Any]: ...

    def save(self, path: str | Path) -> None: ...


class FitOnLabeled:
    """`Trainable.train_on` for supervised detectors trained by ``fit(images, labels)``."""

    def train_on(
        self,
        labeled: MiniSplit,
        unlabeled: MiniSplit | None = None,
        *,
        seed: int = 0,
        log: Callable[[str], None] = print,
    ) -> dict[str, Any]:
        import time

        if unlabeled is not None:
            raise AigclabError(f"{type(self).__name__} trains on labelled data only; drop --unlabeled")
        start = time.perf_counter()
        self.fit(labeled.images, labeled.labels)  # type: ignore[attr-defined]
        seconds = time.perf_counter() - start
        log(f"{type(self).__name__}: fitted on {len(labeled)} patches in {seconds:.1f}s")
        return {"n_train": len(labeled), "seconds": round(seconds, 2)}


def _weights_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _kwargs_hash(kwargs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(kwargs, sort_keys=True, default=str).encode()).hexdigest()[:8]


# Features kept in this process's memory, oldest evicted first past a byte budget: K-shot sweeps and
# repeated scoring of the same images cost one forward pass, and a stream of a million images scored
# once each holds at most the budget (issue 22: memory must not grow with the number of images).
_MEMORY: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()  # (extractor key, image hash) -> feature
_MEMORY_BYTES = 256 << 20
_memory_used = 0
_MEMORY_LOCK = threading.Lock()  # the server scores from several threads


_USE_MEMORY: ContextVar[bool] = ContextVar("aigclab_feature_memory", default=True)


@contextlib.contextmanager
def feature_memory(enabled: bool) -> Iterator[None]:
    """Turn the in-process feature memory on or off for this thread or task while the block runs.

    The streaming main job scores every file once, so remembering its features would only cost memory
    (and would let repeated files, e.g. hard links, be scored for free)."""
    token = _USE_MEMORY.set(enabled)
    try:
        yield
    finally:
        _USE_MEMORY.reset(token)


def _remember(key: str, hashes: Sequence[str], feats: np.ndarray) -> None:
    global _memory_used
    with _MEMORY_LOCK:
        for h, f in zip(hashes, feats, strict=True):
            old = _MEMORY.pop((key, h), None)
            _memory_used -= 0 if old is None else old.nbytes
            if f.nbytes > _MEMORY_BYTES:
                continue
            _MEMORY[(key, h)] = f = f.copy()  # not a view that would keep the whole batch alive
            _memory_used += f.nbytes
        while _memory_used > _MEMORY_BYTES:
            _, gone = _MEMORY.popitem(last=False)
            _memory_used -= gone.nbytes


def _recall(key: str, hashes: Sequence[str]) -> dict[int, np.ndarray]:
    with _MEMORY_LOCK:
        found = {i: _MEMORY.get((key, h)) for i, h in enumerate(hashes)}
        for i, f in found.items():
            if f is not None:
                _MEMORY.move_to_end((key, hashes[i]))
        return {i: f for i, f in found.items() if f is not None}


_CPU_BATCH_PIXELS = 16 * 96 * 96
_RAY_CHUNK = 256  # images per Ray extraction task unless `batch_size` is given


def _extract_chunk(job: tuple[str, dict[str, Any], str, np.ndarray]) -> np.ndarray:
    """Worker for parallel extraction: build the backbone in this process, return features."""
    from aigclab.nn import create_backbone

    name, kwargs, layer, images = job
    torch.set_num_threads(1)
    return create_backbone(name, **kwargs).for_inference().features(images, layer=layer)


class FeatureExtractor:
    """Backbone features at one layer, cached by (backbone, layer, kwargs, weights hash, image hash).

    Features are kept in this process's memory (so K-shot sweeps and repeated scoring of the same images
    cost one forward pass) and, with `cache_dir`, on disk (so re-runs do too).

    Args:
        backbone: a `aigclab.nn` backbone name.
        layer: the layer to read (e.g. "block3", "pooled").
        cache_dir: folder for cached features; None disables the cache.
        device: torch device for the forward pass.
        batch_size: images per forward pass (and per Ray task); default: sized to the CPU cache
            (see `_batch`), 256 on other devices.
        engine: "local" runs in-process; "ray" spreads chunks over a Ray cluster.
        backbone_kwargs: passed to `create_backbone` (e.g. `weights=` for local pretrained files).
    """

    def __init__(
        self,
        backbone: str = "aigclab-tiny",
        layer: str = "pooled",
        cache_dir: str | Path | None = None,
        device: str = "cpu",
        batch_size: int | None = None,
        engine: Engine = "local",
        workers: int | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
    ):
        from aigclab.nn import create_backbone

        self.backbone_name, self.layer, self.device = backbone, layer, device
        self.batch_size, self.engine, self.workers = batch_size, engine, workers
        self.backbone_kwargs = dict(backbone_kwargs or {})
        # frozen: the hash below is of the weights actually run (folded layers hash apart from unfolded)
        self.model = create_backbone(backbone, **self.backbone_kwargs).to(device).for_inference()
        self.model.check_layer(layer)
        kw = _kwargs_hash(self.backbone_kwargs)
        self.key = f"{backbone}-{layer}-{kw}-{_weights_hash(self.model)}"
        self.cache_dir = Path(cache_dir) / self.key if cache_dir is not None else None

    def _batch(self, images: np.ndarray) -> int:
        """`batch_size`, else on CPU as many images as fill `_CPU_BATCH_PIXELS` at the network's input
        size (MobileNetV2 on 96 px patches: 16 per pass take 1.9 ms each, 64 take 2.8, 128 take 3.8:
        larger batches' activations leave the cache), else 256."""
        if self.batch_size:
            return self.batch_size
        if self.device != "cpu":
            return 256
        side = self.model.input_size
        pixels = side * side if side else images.shape[1] * images.shape[2]
        return max(1, min(256, _CPU_BATCH_PIXELS // max(1, pixels)))

    def _compute(self, images: np.ndarray) -> np.ndarray:
        chunk = self.batch_size or _RAY_CHUNK
        if self.engine == "ray" and len(images) > chunk:
            chunks = [images[i : i + chunk] for i in range(0, len(images), chunk)]
            jobs = [(self.backbone_name, self.backbone_kwargs, self.layer, c) for c in chunks]
            return np.concatenate(map_items(_extract_chunk, jobs, engine="ray", workers=self.workers))
        batch = self._batch(images)
        with torch.inference_mode():
            out = []
            for i in range(0, len(images), batch):
                x = self.model.preprocess(images[i : i + batch]).to(self.device)
                out.append(self.model.forward_layers(x, [self.layer])[self.layer].float().cpu())
        return torch.cat(out).numpy()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, D) float32 features of uint8 images (N, H, W, 3)."""
        if len(images) == 0:
            raise AigclabError("FeatureExtractor got no images")
        memory = _USE_MEMORY.get()
        if not memory and self.cache_dir is None:
            return self._compute(images).astype(np.float32)
        keys = [content_hash(img) for img in images]
        found: dict[int, np.ndarray] = {}
        if self.cache_dir is not None:
            for i, k in enumerate(keys):
                path = self.cache_dir / f"{k}.npy"
                if path.is_file():
                    found[i] = np.load(path)
        new = [i for i in range(len(keys)) if i not in found]
        if memory:
            found.update({new[j]: f for j, f in _recall(self.key, [keys[i] for i in new]).items()})
        missing = [i for i in range(len(keys)) if i not in found]
        if missing:
            found.update(zip(missing, self._compute(images[missing]).astype(np.float32), strict=True))
        if self.cache_dir is not None and new:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for i in new:
                np.save(self.cache_dir / f"{keys[i]}.npy", found[i])
        feats = np.stack([found[i] for i in range(len(keys))]).astype(np.float32)
        if memory:
            _remember(self.key, keys, feats)
        return feats


def save_tensors(det: Detector, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write a detector's tensors (class name in the metadata) and its config JSON beside them."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {
        "aigclab_detector": type(det).__name__,
        "threshold": repr(float(det.threshold)),
        "band": json.dumps(None if det.band is None else [float(v) for v in det.band]),
        "count_bands": json.dumps(
            None
            if det.count_bands is None
            else {str(n): list(map(float, v)) for n, v in det.count_bands.items()}
        ),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
    path.with_suffix(".json").write_text(det.config.model_dump_json(indent=2))  # type: ignore[attr-defined]


def load_detector(path: str | Path) -> Detector:
    """Load any saved detector: the safetensors metadata names its class."""
    from safetensors import safe_open

    from aigclab.detect import baselines, ftnet  # noqa: F401  (defines every saved class)

    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise AigclabError(f"{path}: not a saved detector (.safetensors file expected)")
    with safe_open(str(path), "pt") as fh:
        name = (fh.metadata() or {}).get("aigclab_detector")
    _import_detectors()
    if name not in _CLASSES:
        raise AigclabError(f"{path}: no aigclab detector class in its metadata (got {name!r})")
    return _CLASSES[name].load(path)


def _count_bands(raw: dict[str, list[float]]) -> dict[int, tuple[float, float, float]]:
    out = {}
    for n, entry in raw.items():
        t, lo, hi = (float(v) for v in entry)
        if int(n) < 1 or not lo <= t <= hi:
            raise ValueError
        out[int(n)] = (t, lo, hi)
    return out


def restore_decision(det: D, path: str | Path) -> D:
    """Set `threshold` and `band` from a saved detector's metadata (every `load` calls this).

    Files written before the band had two ends carry a symmetric half-width ``uncertain`` instead."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    try:
        det.threshold = float(meta.get("threshold", 0.5))
        band = json.loads(meta["band"]) if "band" in meta else None
        if band is not None:
            lo, hi = (float(v) for v in band)
            if not lo <= hi:
                raise ValueError
            det.band = (lo, hi)
        else:
            det.set_uncertain(float(meta.get("uncertain", 0.0)))
        per_count = json.loads(meta.get("count_bands", "null"))
        det.count_bands = None if per_count is None else _count_bands(per_count)
    except (ValueError, TypeError, AttributeError, AigclabError):
        raise AigclabError(f"{path}: threshold/band in its metadata are not valid numbers") from None
    return det


class FeatureConfig(Config):
    """Fields shared by detectors that read frozen backbone features."""

    backbone: str = "aigclab-tiny"
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None  # local weight file for pretrained backbones (merged into backbone_kwargs)
    layer: str = "pooled"
    patch_size: int = 32
    device: str = "cpu"
    cache_dir: str | None = None
    engine: Literal["local", "ray"] = "local"  # where feature extraction of large batches runs

    def extractor(self) -> FeatureExtractor:
        kwargs = dict(self.backbone_kwargs) | ({"weights": self.weights} if self.weights else {})
        return FeatureExtractor(
            self.backbone, self.layer, self.cache_dir, self.device, engine=self.engine, backbone_kwargs=kwargs
        )


DETECTOR_MODULES = (
    "aigclab.detect.baselines",
    "aigclab.detect.ftnet",
    "aigclab.detect.plada",
    "aigclab.detect.dpgnet",
)


def _import_detectors() -> None:
    """Import every detector module, which registers its entries and classes."""
    import importlib

    for module in DETECTOR_MODULES:
        importlib.import_module(module)


def create_detector(name: str, **overrides: Any) -> Detector:
    """A registered detector; `overrides` replace fields of its preset config."""
    _import_detectors()
    return DETECTORS.create(name, **overrides)


def list_detectors() -> list[str]:
    _import_detectors()
    return DETECTORS.list()
