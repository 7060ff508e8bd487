"""Look at AIGC-Mini: a PNG grid per generator and a summary table with Frechet distances.

The Frechet distance (FD) is computed between Gaussian fits of backbone features (default: the
embedded ``aigclab-tiny`` backbone, layer ``pooled``) of each generator's test fakes and of the real test
patches; lower means the fakes' feature statistics are closer to real ones.

Example:
    >>> from pathlib import Path
    >>> from aigclab.data.show import show_mini
    >>> rows = show_mini(Path("out/show"))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import linalg

from aigclab.data.mini import fake_set, mini_manifest, real_set

__all__ = ["frechet_distance", "image_grid", "show_mini"]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussians fitted to feature sets `a` (N, D) and `b` (M, D)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    covmean = np.real(linalg.sqrtm(cov_a @ cov_b))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def image_grid(images: np.ndarray, cols: int = 16, scale: int = 2) -> Image.Image:
    """Tile images into one PIL image (nearest-neighbour enlarged by `scale`)."""
    n, s = len(images), images.shape[1]
    rows = -(-n // cols)
    grid = np.full((rows * (s + 2), cols * (s + 2), 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (s + 2) + 1 : r * (s + 2) + 1 + s, c * (s + 2) + 1 : c * (s + 2) + 1 + s] = img
    out = Image.fromarray(grid)
    return out.resize((out.width * scale, out.height * scale), Image.Resampling.NEAREST)


def show_mini(
    out: Path, root: Path | None = None, backbone: Any = None, layer: str = "pooled", n_grid: int = 64
) -> list[dict[str, Any]]:
    """Write ``<out>/<name>.png`` per generator (and ``real.png``); return one summary row per set."""
    from aigclab.nn import create_backbone

    out.mkdir(parents=True, exist_ok=True)
    if backbone is None:  # a benchmark built elsewhere (e.g. --quick) carries its own backbone weights
        local = (root / "weights" / "aigclab-tiny.safetensors") if root else None
        backbone = create_backbone("aigclab-tiny", weights=local if local and local.is_file() else None)
    man = mini_manifest(root)
    real, _ = real_set("test", root)
    real_feats = backbone.features(real.images, layer=layer)
    image_grid(real.images[:n_grid]).save(out / "real.png")
    rows: list[dict[str, Any]] = [
        {
            "generator": "real",
            "family": "real",
            "n_train": man["real"]["train"]["n"],
            "n_test": len(real),
            "fd": 0.0,
        }
    ]
    for name in sorted(man["generators"]):
        fake = fake_set(name, "test", root)
        image_grid(fake.images[:n_grid]).save(out / f"{name}.png")
        rows.append(
            {
                "generator": name,
                "family": man["generators"][name]["family"],
                "n_train": man["generators"][name]["train"]["n"],
                "n_test": len(fake),
                "fd": frechet_distance(backbone.features(fake.images, layer=layer), real_feats),
            }
        )
    return rows
