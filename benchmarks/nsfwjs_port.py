"""nsfwjs backbones: how exactly the torch ports reproduce TensorFlow.js, how fast they are, how big.

1. Port vs TensorFlow.js: max abs difference against ``tests/fixtures/nsfwjs_tfjs.npz`` (outputs of
   @tensorflow/tfjs 4.22.0's pure-JS CPU backend running nsfwjs@4.4.0's own bundles; made by
   ``scripts/make_nsfwjs_fixture.py``). Both sides use bit-identical float32 weights (the published
   uint8 values dequantised by the TF.js rule), so the differences are float32 arithmetic order only.
   Split into spatially pooled features (what `features()` returns), raw maps and class probabilities.
2. Feature throughput (images/s, one CPU thread, batch 32) at 96, 128 and 224 px (and 299 for
   InceptionV3) for a mid layer and the pooled layer.
3. Weight sizes: the shipped MobileNetV2 file, the fetched InceptionV3 file, parameter counts.

Needs the InceptionV3 weights (``aigclab models fetch nsfwjs``) for its rows.
Writes benchmarks/results/nsfwjs_port.json and nsfwjs_port.md. Run: python benchmarks/nsfwjs_port.py
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch

from aigclab.nn import create_backbone
from aigclab.nn.nsfwjs import compare_with_reference, nsfwjs_weights_path, shipped_weights_path
from aigclab.reports import markdown_table, write_json

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
FIXTURE = ROOT / "tests" / "fixtures" / "nsfwjs_tfjs.npz"
NETS = {"mobilenetv2": ("block5", "pooled"), "inceptionv3": ("mixed5", "pooled")}
SIZES = {"mobilenetv2": (96, 128, 224), "inceptionv3": (96, 128, 224, 299)}
BATCH = 32


def port_diffs(net: str) -> dict[str, float]:
    with np.load(FIXTURE) as fx:
        arrays = {k: fx[k] for k in fx.files if k.startswith(f"{net}/")}
    diffs = compare_with_reference(create_backbone(f"{net}-nsfwjs"), arrays)  # type: ignore[arg-type]

    def worst(pick: str) -> float:
        return max(d for k, (d, _) in diffs.items() if pick in k)

    def rel(pick: str) -> float:
        return max(d / max(1.0, s) for k, (d, s) in diffs.items() if pick in k)

    pooled = [d for k, (d, _) in diffs.items() if "/mean/" in k or k.endswith("/pooled")]
    return {
        "n_compared_arrays": len(diffs),
        "max_abs_diff": max(d for d, _ in diffs.values()),
        "max_abs_diff_pooled_features": max(pooled),
        "max_abs_diff_maps": worst("/map/block") if any("/map/block" in k for k in diffs) else None,
        "max_rel_diff_maps": rel("/map/block") if any("/map/block" in k for k in diffs) else None,
        "max_abs_diff_probs": worst("/map/probs"),
        "cases": sorted({k.split("/")[1] for k in diffs}),
    }


def throughput(net: str, layer: str, size: int) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process) over >= 3 s."""
    bb = create_backbone(f"{net}-nsfwjs")
    imgs = np.random.default_rng(0).integers(0, 256, (BATCH, size, size, 3), dtype=np.uint8)
    bb.features(imgs[:4], layer=layer)  # warm-up
    n, wall, cpu = 0, time.perf_counter(), time.process_time()
    while n == 0 or time.perf_counter() - wall < 3.0:
        bb.features(imgs, layer=layer, batch_size=BATCH)
        n += BATCH
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main() -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()
    nets = [n for n in NETS if nsfwjs_weights_path(n).is_file()]
    result: dict = {"port_vs_tfjs": {}, "features_per_s": {}, "features_per_cpu_s": {}, "weights": {}}
    result["skipped"] = [f"{n}: weights not fetched" for n in NETS if n not in nets]
    speed_rows, diff_rows = [], []
    for net in nets:
        diffs = port_diffs(net)
        result["port_vs_tfjs"][net] = diffs
        diff_rows.append({"network": net, **{k: v for k, v in diffs.items() if k != "cases"}})
        per = result["features_per_s"][net] = {}
        for layer in NETS[net]:
            per[layer] = {str(s): throughput(net, layer, s) for s in SIZES[net]}
            speed_rows.append(
                {"network": net, "layer": layer, **{f"{s}px": v for s, v in per[layer].items()}}
            )
        model = create_backbone(f"{net}-nsfwjs").model
        path = nsfwjs_weights_path(net)
        result["weights"][net] = {
            "file": "shipped in the package" if path == shipped_weights_path() else "user cache (fetched)",
            "file_mib": path.stat().st_size / 2**20,
            "parameters_incl_head": sum(p.numel() for p in model.parameters()),
            "float32_mib": sum(p.numel() for p in model.parameters()) * 4 / 2**20,
        }
        print(net, diffs["max_abs_diff"], per)
    result["machine"] = (
        f"{platform.machine()}, torch {torch.__version__}, 1 thread; shared by ~8 jobs (pessimistic)"
    )
    result["seconds"] = time.perf_counter() - start
    write_json(OUT / "nsfwjs_port.json", result)
    weight_rows = [{"network": n, **w} for n, w in result["weights"].items()]
    md = [
        "# nsfwjs backbones: torch port vs TensorFlow.js, speed, size",
        "",
        "Port vs @tensorflow/tfjs 4.22.0 (pure-JS CPU) on the fixture images; identical float32 weights on "
        "both sides. `pooled_features` = spatial means of every block/mixed layer and the pooled vector; "
        "`maps` = raw NHWC maps (values up to ~40, so also relative to max(1, |ref|)).",
        "",
        markdown_table(diff_rows, ["network", "n_compared_arrays", "max_abs_diff_pooled_features",
                                   "max_abs_diff_maps", "max_rel_diff_maps", "max_abs_diff_probs"]),
        "",
        f"Images per CPU-second of this process (in brackets: per wall-clock second), one thread, batch {BATCH} "
        f"({result['machine']}); per CPU-second approximates an idle machine:",
        "",
        markdown_table(speed_rows, ["network", "layer", "96px", "128px", "224px", "299px"]),
        "",
        markdown_table(weight_rows, ["network", "file", "file_mib", "parameters_incl_head", "float32_mib"]),
        "",
        *(f"- skipped {s}" for s in result["skipped"]),
    ]  # fmt: skip
    (OUT / "nsfwjs_port.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
