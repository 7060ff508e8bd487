"""Rebuild the shipped MobileNetV2 backbone from the npm package nsfwjs@4.4.0.

    python scripts/convert_nsfwjs.py [--tarball nsfwjs-4.4.0.tgz]

Runs the same converter as ``aigclab models fetch nsfwjs`` (download over HTTPS or a local tarball from
``npm pack nsfwjs@4.4.0``, pinned sha512, published uint8 weights kept exactly) and writes into
``src/aigclab/assets/weights/backbones/``: ``mobilenetv2-nsfwjs.safetensors``, its provenance
``mobilenetv2-nsfwjs.json`` and ``LICENSE-nsfwjs.txt``. Deterministic: no randomness is involved.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from aigclab.nn.nsfwjs_fetch import NSFWJS_INTEGRITY, NSFWJS_VERSION, fetch_nsfwjs

OUT = Path(__file__).resolve().parents[1] / "src" / "aigclab" / "assets" / "weights" / "backbones"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = fetch_nsfwjs(tmp, args.tarball, ("mobilenetv2",))["mobilenetv2"]
        target = OUT / "mobilenetv2-nsfwjs.safetensors"
        shutil.copyfile(path, target)
        shutil.copyfile(path.parent / "LICENSE-nsfwjs.txt", OUT / "LICENSE-nsfwjs.txt")
    provenance = {
        "backbone": "mobilenetv2-nsfwjs",
        "source": f"npm package nsfwjs@{NSFWJS_VERSION}, dist/models/mobilenet_v2 (TensorFlow.js Layers model)",
        "tarball_integrity": NSFWJS_INTEGRITY,
        "licence": "MIT (c) 2019 Infinite Red, Inc.; see LICENSE-nsfwjs.txt",
        "training": "Keras MobileNetV2 (alpha 1.0, 224 px) initialised from ImageNet, then fine-tuned by the "
        "nsfwjs authors as a 5-class content classifier (drawing, hentai, neutral, porn, sexy); not the "
        "torchvision or Keras ImageNet checkpoint",
        "format": "uint8 per tensor with float64 [min, scale] (<name>::min_scale); value = min + scale * q, "
        "exactly the published TensorFlow.js weights",
        "input": "RGB, x / 255 in [0, 1], any size (native 224)",
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "made_by": "python scripts/convert_nsfwjs.py (same converter as `aigclab models fetch nsfwjs`)",
    }
    (OUT / "mobilenetv2-nsfwjs.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"wrote {target} ({target.stat().st_size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
