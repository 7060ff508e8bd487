"""Write the README's demo images: real and fake patches from the AIGC-Mini *test* sets (fixed picks).

Run: python scripts/make_demo_images.py   (writes examples/demo/*.png)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from aigclab.data.mini import load_mini, mini_generators

OUT = Path(__file__).resolve().parents[1] / "examples" / "demo"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.png"):
        old.unlink()
    rng = np.random.default_rng(0)
    test = load_mini("test")
    for i in rng.choice(np.flatnonzero(test.labels == 0), 4, replace=False):
        Image.fromarray(test.images[i]).save(OUT / f"real_{i:05d}.png")
    for gen in mini_generators():
        i = rng.choice(np.flatnonzero(test.generators == gen))
        Image.fromarray(test.images[i]).save(OUT / f"fake_{gen}_{i:05d}.png")
    print(f"wrote {len(list(OUT.glob('*.png')))} demo images to {OUT}")


if __name__ == "__main__":
    main()
