"""Make tests/fixtures/nsfwjs_tfjs.npz: TensorFlow.js's own outputs of nsfwjs's two models on a few images.

    npm install --prefix /tmp/tfjs @tensorflow/tfjs@4.22.0
    python scripts/make_nsfwjs_fixture.py --node-modules /tmp/tfjs/node_modules [--tarball nsfwjs-4.4.0.tgz]

The nsfwjs@4.4.0 tarball (downloaded and sha512-checked by the project's converter, or a local one)
is unpacked into a temporary folder; `scripts/nsfwjs_tfjs_reference.js` loads each model from the
package's own bundles with the pure-JS CPU backend of @tensorflow/tfjs (tfjs-node's native binary is
not used) and writes the outputs. Inputs are photos from scikit-image (resized with PIL) and seeded
noise, stored in the fixture as uint8 so the test feeds exactly the same pixels.

Fixture keys: ``<net>/<case>/input`` (uint8 NHWC) and ``<net>/<case>/<kind>/<layer>`` with the port's
layer names; ``map`` = NHWC map as TensorFlow.js returns it, ``mean`` = its spatial mean (tf.mean).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

from aigclab.nn.nsfwjs_fetch import read_tarball

ROOT = Path(__file__).resolve().parents[1]
MOBILENET_RESIDUAL = {2, 4, 5, 7, 8, 9, 11, 12, 14, 15}


def mobilenet_keras(i: int) -> str:
    if i == 0:
        return "expanded_conv_project_BN"
    return f"block_{i}_add" if i in MOBILENET_RESIDUAL else f"block_{i}_project_BN"


def photo(img: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((width, height), Image.BILINEAR), np.uint8)


def cases() -> list[dict]:
    noise = np.random.default_rng(0).integers(0, 256, (97, 113, 3), dtype=np.uint8)
    mn_blocks = {f"block{i}": mobilenet_keras(i) for i in range(17)}
    mixed = {f"mixed{i}": f"mixed{i}" for i in range(11)}
    return [
        {"net": "mobilenet_v2", "ours": "mobilenetv2", "name": "224", "images": [photo(skdata.astronaut(), 224, 224)],
         "maps": {"block16": "block_16_project_BN", "pooled": "flatten_1", "probs": "dense_3"},
         "means": mn_blocks, "last_layer": None},
        {"net": "mobilenet_v2", "ours": "mobilenetv2", "name": "97x113",
         "images": [photo(skdata.coffee(), 97, 113), noise],
         "maps": {"block5": "block_5_add"}, "means": {**mn_blocks, "pooled": "out_relu"},
         "last_layer": "out_relu"},
        {"net": "inception_v3", "ours": "inceptionv3", "name": "299", "images": [photo(skdata.chelsea(), 299, 299)],
         "maps": {"pooled": "flatten_1", "probs": "dense_3"}, "means": mixed, "last_layer": None},
        {"net": "inception_v3", "ours": "inceptionv3", "name": "120x140",
         "images": [photo(skdata.rocket(), 120, 140)], "maps": {}, "means": mixed, "last_layer": "mixed10"},
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-modules", type=Path, required=True, help="folder holding @tensorflow/tfjs")
    parser.add_argument("--tarball", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "nsfwjs_tfjs.npz")
    args = parser.parse_args()
    spec = cases()
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=io.BytesIO(read_tarball(args.tarball)), mode="r:gz") as tar:
            tar.extractall(tmp, filter="data")
        io_dir = Path(tmp) / "io"
        io_dir.mkdir()
        request = []
        for k, c in enumerate(spec):
            x = np.stack(c["images"])
            (io_dir / f"x{k}.bin").write_bytes(x.tobytes())
            request.append({"net": c["net"], "input": f"x{k}.bin", "shape": list(x.shape),
                            "maps": list(c["maps"].values()), "means": list(c["means"].values()),
                            "last_layer": c["last_layer"]})  # fmt: skip
        (io_dir / "request.json").write_text(json.dumps({"cases": request}))
        env = {**os.environ, "NODE_PATH": str(args.node_modules.resolve())}
        script = ROOT / "scripts" / "nsfwjs_tfjs_reference.js"
        subprocess.run(["node", str(script), str(Path(tmp) / "package"), str(io_dir)], check=True, env=env)
        answer = json.loads((io_dir / "answer.json").read_text())
        arrays: dict[str, np.ndarray] = {}
        for c, got in zip(spec, answer["cases"], strict=True):
            prefix = f"{c['ours']}/{c['name']}"
            arrays[f"{prefix}/input"] = np.stack(c["images"])
            for kind in ("maps", "means"):
                for ours, keras in c[kind].items():
                    entry = got["files"][f"{kind[:-1]}:{keras}"]
                    values = np.fromfile(io_dir / entry["file"], np.float32).reshape(entry["shape"])
                    arrays[f"{prefix}/{kind[:-1]}/{ours}"] = values
        arrays["meta"] = np.array(json.dumps({"tfjs": answer["tfjs_version"], "backend": answer["backend"]}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, tfjs {answer['tfjs_version']})")


if __name__ == "__main__":
    main()
