"""AIGC-Mini: the embedded AI-generated-image benchmark (32x32 RGB patches, real vs seven generator families).

Layout of ``aigclab/assets/aigc_mini/`` (rebuilt by ``aigclab data build-mini``):

- ``real.npz``: real patches, ``train`` from training photos and ``test`` from test-only photos (see
  `aigclab.data.photos`), with each patch's photo name and scale;
- ``fake_<generator>.npz``: that generator's ``train`` and ``test`` samples (1,000 test fakes each);
- ``manifest.json``: counts, families, SHA-256 of every set's pixels and of every weights file;
- ``protocols.json``: the cross-generator, few-shot and compression protocols.

Images are stored losslessly as PNG mosaics inside the ``.npz`` files (about half the raw size). JPEG and
social-network variants are *not* stored: `load_mini(compression=...)` regenerates them at load time with
`aigclab.degradations`, deterministically (fixed quality, one seeded generator per image).

Example:
    >>> from aigclab.data.mini import load_mini, few_shot_episodes
    >>> test = load_mini("test", generators=["ddpm"], compression="jpeg75")
    >>> test.images.shape[1:], sorted(set(test.generators))
    ((32, 32, 3), ['ddpm', 'real'])
    >>> ep = few_shot_episodes(generator="ldm", k=4, seed=0)[0]
    >>> len(ep.support.images), ep.support.labels.sum()
    (8, 4)
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from aigclab.errors import DataError
from aigclab.io import content_hash

if TYPE_CHECKING:
    from aigclab.data.build import BuildSizes
    from aigclab.data.photos import Patches

__all__ = [
    "COMPRESSIONS",
    "Episode",
    "MiniSplit",
    "compress",
    "few_shot_episodes",
    "load_mini",
    "mini_generators",
    "mini_manifest",
    "mini_protocols",
    "mini_root",
    "paired_training_views",
]

Split = Literal["train", "test"]
_COLS = 64
COMPRESSIONS: dict[str, str] = {
    "jpeg95": "jpeg:quality=95",
    "jpeg75": "jpeg:quality=75",
    "jpeg50": "jpeg:quality=50",
    "jpeg30": "jpeg:quality=30",
    "osn-facebook": "osn-facebook",
    "osn-instagram": "osn-instagram",
    "osn-twitter": "osn-twitter",
    "osn-wechat": "osn-wechat",
}
FEW_SHOT_K = (1, 4, 8)
FEW_SHOT_SEEDS = (0, 1, 2)
PAIRED_SPEC = "jpeg:quality=30-100"


def mini_root() -> Path:
    """The shipped benchmark folder."""
    return Path(str(resources.files("aigclab") / "assets" / "aigc_mini"))


# ---------------------------------------------------------------- storage


def encode_mosaic(images: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 -> PNG bytes (as a uint8 array) of a 64-column mosaic."""
    n, s = len(images), images.shape[1]
    rows = max(1, -(-n // _COLS))
    grid = np.zeros((rows * _COLS, s, s, 3), np.uint8)
    grid[:n] = images
    mosaic = grid.reshape(rows, _COLS, s, s, 3).transpose(0, 2, 1, 3, 4).reshape(rows * s, _COLS * s, 3)
    buf = io.BytesIO()
    Image.fromarray(mosaic).save(buf, format="PNG", compress_level=9)
    return np.frombuffer(buf.getvalue(), np.uint8)


def decode_mosaic(png: np.ndarray, n: int, size: int) -> np.ndarray:
    """Inverse of `encode_mosaic`."""
    grid = np.asarray(Image.open(io.BytesIO(png.tobytes())).convert("RGB"))
    rows = grid.shape[0] // size
    tiles = grid.reshape(rows, size, _COLS, size, 3).transpose(0, 2, 1, 3, 4).reshape(-1, size, size, 3)
    return np.ascontiguousarray(tiles[:n])


def _file_sha(path: Path) -> str:
    return content_hash(path)


def write_mini(
    out: Path,
    real: dict[str, Patches],
    fakes: dict[str, dict[str, np.ndarray]],
    weights: Path,
    sizes: BuildSizes,
    log: Callable[[str], None] = print,
) -> Path:
    """Write real/fake sets, zoo weights, manifest and protocols; returns the manifest path."""
    from aigclab.data.build import TRAIN_GENERATOR
    from aigclab.data.zoo import create_generator, weights_dir

    out.mkdir(parents=True, exist_ok=True)
    size = int(real["test"].images.shape[1])
    manifest: dict[str, Any] = {
        "name": "aigc-mini",
        "size": size,
        "rebuild": "aigclab data build-mini",
        "train_generator": TRAIN_GENERATOR,
        "quick": sizes.quick,
        "real": {},
        "generators": {},
    }
    arrays: dict[str, np.ndarray] = {}
    for split, p in real.items():
        arrays |= {split: encode_mosaic(p.images), f"{split}_photos": p.photos, f"{split}_scales": p.scales}
        photos = sorted(set(p.photos.tolist()))
        manifest["real"][split] = {"n": len(p.images), "sha256": content_hash(p.images), "photos": photos}
    np.savez(out / "real.npz", **arrays)  # type: ignore[arg-type]
    manifest["real"]["file_sha256"] = _file_sha(out / "real.npz")
    wdir = out / "weights" if sizes.quick else weights_dir()
    wdir.mkdir(parents=True, exist_ok=True)
    for name, sets in fakes.items():
        cfg = create_generator(name, preset=sizes.preset(name)).config
        wname = cfg.weights or name
        for ext in (".safetensors", ".json"):
            shutil.copyfile(weights / f"{wname}{ext}", wdir / f"{wname}{ext}")
        path = out / f"fake_{name}.npz"
        np.savez(path, **{split: encode_mosaic(imgs) for split, imgs in sets.items()})  # type: ignore[arg-type]
        manifest["generators"][name] = {
            "family": cfg.family,
            "weights": f"{wname}.safetensors",
            "weights_sha256": _file_sha(wdir / f"{wname}.safetensors"),
            "file_sha256": _file_sha(path),
            **{split: {"n": len(imgs), "sha256": content_hash(imgs)} for split, imgs in sets.items()},
        }
        log(f"wrote {path.name}: {path.stat().st_size / 1e6:.2f} MB")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    protocols = make_protocols(manifest, seed=0)
    (out / "protocols.json").write_text(json.dumps(protocols, indent=1) + "\n")
    return out / "manifest.json"


def make_protocols(manifest: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Cross-generator split, few-shot support indices (from the *train* sets) and compression specs."""
    train_gen = manifest["train_generator"]
    gens = sorted(manifest["generators"])
    n_real = manifest["real"]["train"]["n"]
    episodes = []
    for gi, gen in enumerate(gens):
        n_fake = manifest["generators"][gen]["train"]["n"]
        for k in FEW_SHOT_K:
            for s in FEW_SHOT_SEEDS:
                rng = np.random.default_rng([seed, gi, k, s])
                real_idx = rng.choice(n_real, size=k, replace=False)
                fake_idx = rng.choice(n_fake, size=k, replace=False)
                episodes.append(
                    {
                        "generator": gen,
                        "k": k,
                        "seed": s,
                        "real": real_idx.tolist(),
                        "fake": fake_idx.tolist(),
                    }
                )
    return {
        "cross_generator": {"train": [train_gen], "test": [g for g in gens if g != train_gen]},
        "few_shot": {
            "k": list(FEW_SHOT_K),
            "seeds": list(FEW_SHOT_SEEDS),
            "support_from": "train",
            "query_from": "test",
            "episodes": episodes,
        },
        "compression": {"test": COMPRESSIONS, "paired_training": {"spec": PAIRED_SPEC, "seed": seed}},
    }


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class MiniSplit:
    """Images with label (0 real, 1 fake), generator name ("real" for real) and a unique sample id."""

    images: np.ndarray
    labels: np.ndarray
    generators: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray | Sequence[int]) -> MiniSplit:
        idx = np.asarray(index)
        return MiniSplit(self.images[idx], self.labels[idx], self.generators[idx], self.ids[idx])

    @staticmethod
    def concat(parts: Sequence[MiniSplit]) -> MiniSplit:
        return MiniSplit(*(np.concatenate([getattr(p, f) for p in parts]) for f in MiniSplit._fields()))

    @staticmethod
    def _fields() -> tuple[str, ...]:
        return ("images", "labels", "generators", "ids")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: AIGC-Mini file missing; run `aigclab data build-mini`")
    return json.loads(path.read_text())


def mini_manifest(root: Path | None = None) -> dict[str, Any]:
    return _read_json((root or mini_root()) / "manifest.json")


def mini_protocols(root: Path | None = None) -> dict[str, Any]:
    return _read_json((root or mini_root()) / "protocols.json")


def mini_generators(root: Path | None = None) -> list[str]:
    """Generator names in the benchmark, sorted."""
    return sorted(mini_manifest(root)["generators"])


def _load_set(root: Path, file: str, split: str, n: int, size: int) -> np.ndarray:
    with np.load(root / file) as z:
        return decode_mosaic(z[split], n, size)


def _make(images: np.ndarray, label: int, gen: str, split: str) -> MiniSplit:
    n = len(images)
    ids = np.array([f"{gen}/{split}/{i}" for i in range(n)])
    return MiniSplit(images, np.full(n, label, np.int64), np.array([gen] * n), ids)


def real_set(split: Split, root: Path | None = None) -> tuple[MiniSplit, np.ndarray]:
    """The real patches of `split` and the photo each came from."""
    root = root or mini_root()
    man = mini_manifest(root)
    images = _load_set(root, "real.npz", split, man["real"][split]["n"], man["size"])
    with np.load(root / "real.npz") as z:
        photos = z[f"{split}_photos"]
    return _make(images, 0, "real", split), photos


def fake_set(generator: str, split: Split, root: Path | None = None) -> MiniSplit:
    """The fakes of one generator in `split`."""
    root = root or mini_root()
    man = mini_manifest(root)
    if generator not in man["generators"]:
        raise DataError(
            f"{root}: no generator {generator!r} in AIGC-Mini; known: {', '.join(sorted(man['generators']))}"
        )
    n = man["generators"][generator][split]["n"]
    return _make(_load_set(root, f"fake_{generator}.npz", split, n, man["size"]), 1, generator, split)


def compress(images: np.ndarray, condition: str, seed: int = 0) -> np.ndarray:
    """Apply a compression condition (a `COMPRESSIONS` key or a degradation spec) image by image."""
    from aigclab.degradations import parse_degradation

    deg = parse_degradation(COMPRESSIONS.get(condition, condition))
    out = [deg(img, np.random.default_rng([seed, i])) for i, img in enumerate(images)]
    return np.stack(out) if out else images.copy()


def load_mini(
    split: Split = "test",
    generators: Sequence[str] | None = None,
    compression: str | None = None,
    real: bool = True,
    root: Path | None = None,
) -> MiniSplit:
    """Real patches (if `real`) plus the fakes of `generators` (default: all) for `split`.

    Args:
        split: "train" or "test".
        generators: generator names; default every generator in the manifest.
        compression: None (raw), a `COMPRESSIONS` key such as "jpeg75" or "osn-wechat", or any
            degradation spec; applied to every image (real and fake) at load time.
        real: include the real patches of `split`.
        root: benchmark folder (default: the shipped one).
    """
    root = root or mini_root()
    names = list(generators) if generators is not None else mini_generators(root)
    parts = [real_set(split, root)[0]] if real else []
    parts += [fake_set(g, split, root) for g in names]
    if not parts:
        raise DataError("load_mini: nothing selected (real=False and no generators)")
    data = MiniSplit.concat(parts)
    if compression is not None:
        data = MiniSplit(compress(data.images, compression), data.labels, data.generators, data.ids)
    return data


def paired_training_views(
    images: np.ndarray, spec: str = PAIRED_SPEC, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Raw and compressed copies of training images, paired index by index (PLADA-style training)."""
    return images.copy(), compress(images, spec, seed)


@dataclass(frozen=True)
class Episode:
    """A few-shot episode: `support` (k real + k fake from the train sets) and `query` (the test sets)."""

    generator: str
    k: int
    seed: int
    support: MiniSplit
    query: MiniSplit


def few_shot_episodes(
    generator: str | None = None,
    k: int | None = None,
    seed: int | None = None,
    compression: str | None = None,
    root: Path | None = None,
) -> list[Episode]:
    """The frozen few-shot episodes of `protocols.json`, filtered by generator, k and seed.

    Support images come from the train split, queries from the test split, so they never overlap.
    """
    root = root or mini_root()
    eps = [
        e
        for e in mini_protocols(root)["few_shot"]["episodes"]
        if (generator is None or e["generator"] == generator)
        and (k is None or e["k"] == k)
        and (seed is None or e["seed"] == seed)
    ]
    if not eps:
        raise DataError(f"no few-shot episode for generator={generator!r}, k={k!r}, seed={seed!r}")
    real_train = real_set("train", root)[0]
    real_test = real_set("test", root)[0]
    cache: dict[str, tuple[MiniSplit, MiniSplit]] = {}
    out = []
    for e in eps:
        g = e["generator"]
        if g not in cache:
            cache[g] = (fake_set(g, "train", root), fake_set(g, "test", root))
        support = MiniSplit.concat([real_train.subset(e["real"]), cache[g][0].subset(e["fake"])])
        query = MiniSplit.concat([real_test, cache[g][1]])
        if compression is not None:
            support = MiniSplit(compress(support.images, compression), *_rest(support))
            query = MiniSplit(compress(query.images, compression), *_rest(query))
        out.append(Episode(g, e["k"], e["seed"], support, query))
    return out


def _rest(s: MiniSplit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return s.labels, s.generators, s.ids
