"""Rebuild AIGC-Mini from scratch: train the zoo, sample every generator, cut the real patches, write assets.

Every step is seeded; `build_mini` is what `aigclab data build-mini` runs. Stages checkpoint to
`work` (one weights file + one samples file per generator, then the backbone), so an interrupted build
resumes where it stopped. ``quick=True`` uses the ``-tiny`` presets and a few samples (tests, seconds).

Reproducibility: the build runs with ``torch.set_num_threads(1)``; every random draw (batches, flips,
latents, diffusion noise) comes from a `torch.Generator` seeded per generator and split, and parameter
initialisation runs under a fixed seed inside `torch.random.fork_rng`. On one CPU type with the same
library versions a rebuild gives the same manifest hashes (checked: the ``--quick`` build twice in the
tests; the backbone and ``vae`` retrained by ``benchmarks/aigc_mini.py``; further generators retrained
by ``scripts/check_mini_rebuild.py``, results in ``benchmarks/results/aigc_mini_rebuild.jsonl``). Hashes can
differ across CPU instruction sets (oneDNN/MKL pick different kernels, e.g. AVX-512 vs AVX2, which
changes float rounding), across torch/diffusers versions, and with more threads (parallel reductions
sum in a different order). Manifest set hashes are of decoded pixels, so they do not depend on the
zlib version that wrote the PNG mosaics; the ``file_sha256`` entries do.

Example:
    >>> from pathlib import Path
    >>> from aigclab.data.build import build_mini
    >>> build_mini(Path("/tmp/mini"), work=Path("/tmp/mini-work"), quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from aigclab.data.photos import photo_patches
from aigclab.data.zoo import create_generator, fit, load_generator, round_to_fp16, save_generator
from aigclab.io import content_hash

__all__ = ["BuildSizes", "build_mini", "sample_sets", "train_backbone", "train_generator"]

TRAIN_GENERATOR = "dcgan"
ZOO_ORDER = ("dcgan", "upgan", "vae", "ddpm", "ddim", "ldm", "flow")


class BuildSizes:
    """How many images each set gets (full build, or `quick` for tests)."""

    def __init__(self, quick: bool = False):
        self.quick = quick
        self.n_test = 24 if quick else 1000
        self.n_train = 16 if quick else 200
        self.n_train_main = 32 if quick else 2000  # the training family (the "ProGAN role")
        self.real_train_per_photo = 4 if quick else 300
        self.real_test_per_photo = 4 if quick else 150
        self.zoo_per_photo = 50 if quick else 1000

    def preset(self, name: str) -> str:
        return f"{name}-tiny" if self.quick else name


def _seed(name: str, split: str) -> int:
    return 1000 + 10 * ZOO_ORDER.index(name) + (0 if split == "train" else 1)


def train_generator(name: str, weights: Path, sizes: BuildSizes, log: Callable[[str], None]) -> None:
    """Train `name` on training-photo patches (skipped when its weights exist) and save fp16 weights."""
    model = create_generator(name, preset=sizes.preset(name))
    if (weights / f"{model.weights_name}.safetensors").is_file():
        log(f"{name}: weights {model.weights_name}.safetensors exist, not retraining")
        return
    patches = photo_patches("train", stride=16, max_per_photo=sizes.zoo_per_photo).images
    log(f"{name}: training on {len(patches)} training patches, {model.config.steps} steps")
    fit(model, patches, log=log)
    save_generator(round_to_fp16(model), weights)


def sample_sets(name: str, weights: Path, sizes: BuildSizes) -> dict[str, np.ndarray]:
    """Train and test fakes of `name`, each drawn from its own fixed seed with the saved weights."""
    model = load_generator(name, root=weights, preset=sizes.preset(name))
    n_train = sizes.n_train_main if name == TRAIN_GENERATOR else sizes.n_train
    out = {}
    for split, n in (("train", n_train), ("test", sizes.n_test)):
        out[split] = model.sample(n, generator=torch.Generator().manual_seed(_seed(name, split)))
    return out


def build_mini(
    out: Path,
    work: Path,
    generators: Sequence[str] = ZOO_ORDER,
    quick: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Train, sample and write the whole benchmark to `out`; returns the manifest path."""
    from aigclab.data.mini import write_mini

    torch.set_num_threads(1)
    sizes = BuildSizes(quick)
    weights = work / "weights"
    samples = work / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    fakes: dict[str, dict[str, np.ndarray]] = {}
    for name in generators:
        start = time.perf_counter()
        cache = samples / f"{name}.npz"
        if not cache.is_file():
            train_generator(name, weights, sizes, log)
            np.savez(cache, **sample_sets(name, weights, sizes))  # type: ignore[arg-type]
        with np.load(cache) as z:
            fakes[name] = {k: z[k] for k in z.files}
        log(f"{name}: done in {time.perf_counter() - start:.0f}s")
    real = {
        "train": photo_patches("train", max_per_photo=sizes.real_train_per_photo),
        "test": photo_patches("test", max_per_photo=sizes.real_test_per_photo),
    }
    manifest_path = write_mini(out, real, fakes, weights, sizes, log)
    train_backbone(out, work, sizes, log)
    return manifest_path


def train_backbone(out: Path, work: Path, sizes: BuildSizes, log: Callable[[str], None] = print) -> Path:
    """Train the embedded backbone on the cross-generator training split of the benchmark in `out`.

    The weights are checkpointed as ``<work>/weights/aigclab-tiny.safetensors`` (reused when present)
    and copied to the shipped location (or ``<out>/weights`` for a quick build).
    """
    from aigclab.data.mini import load_mini, mini_manifest
    from aigclab.nn.tiny import TinyConfig, save_tiny, tiny_weights_path, train_tiny

    train_gen = mini_manifest(out)["train_generator"]
    checkpoint = work / "weights" / "aigclab-tiny.safetensors"
    if checkpoint.is_file():
        log(f"aigclab-tiny: {checkpoint} exists, not retraining")
    else:
        data = load_mini("train", generators=[train_gen], root=out)
        config = TinyConfig.from_preset("aigclab.nn", "aigclab-tiny-test" if sizes.quick else "aigclab-tiny")
        log(f"aigclab-tiny: training on {len(data)} images (real + {train_gen})")
        save_tiny(train_tiny(data.images, data.labels, config, log), checkpoint)
    path = out / "weights" / "aigclab-tiny.safetensors" if sizes.quick else tiny_weights_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(checkpoint.with_suffix(suffix), path.with_suffix(suffix))
    log(f"aigclab-tiny: wrote {path}")
    manifest = mini_manifest(out)
    manifest["backbone"] = {"name": "aigclab-tiny", "sha256": content_hash(path), "trained_on": [train_gen]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return path
