"""AIGC-Mini benchmark: is the shipped benchmark hard in the right way, and does it rebuild identically?

1. Reference detector: the embedded `aigclab-tiny` recipe (small CNN, BCE, h-flips) is retrained here on
   the cross-generator training split (real train + the training family's train fakes only) and must
   reproduce the shipped backbone weights bit for bit. Its accuracy at logit 0 on each generator's
   test set (with the real test set), clean and under JPEG / social-network compression.
2. Frechet distance of each generator's test fakes to the real test patches in the shipped backbone's
   pooled feature space.

Writes benchmarks/results/aigc_mini.json and aigc_mini.md. Run: python benchmarks/aigc_mini.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aigclab.data.build import BuildSizes, sample_sets, train_generator
from aigclab.data.mini import COMPRESSIONS, compress, load_mini, mini_manifest
from aigclab.data.show import frechet_distance
from aigclab.io import content_hash
from aigclab.metrics import binary_metrics
from aigclab.nn import create_backbone
from aigclab.nn.tiny import TinyConfig, save_tiny, tiny_weights_path, train_tiny
from aigclab.reports import markdown_table, write_json

OUT = Path(__file__).parent / "results"
REBUILD_CHECK = "vae"  # the cheapest generator to retrain from scratch here


def rebuild_check(name: str, man: dict) -> dict:
    """Retrain generator `name` from scratch with the build code and compare hashes with the manifest."""
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp)
        train_generator(name, weights, BuildSizes(), log=lambda _: None)
        sets = sample_sets(name, weights, BuildSizes())
        entry = man["generators"][name]
        return {
            "generator": name,
            "weights_identical": content_hash(weights / entry["weights"]) == entry["weights_sha256"],
            "train_identical": content_hash(sets["train"]) == entry["train"]["sha256"],
            "test_identical": content_hash(sets["test"]) == entry["test"]["sha256"],
        }


def main() -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()
    man = mini_manifest()
    train_gen = man["train_generator"]
    train = load_mini("train", generators=[train_gen])
    test = load_mini("test")
    detector = train_tiny(train.images, train.labels, TinyConfig.from_preset("aigclab.nn", "aigclab-tiny"))
    retrained = save_tiny(detector, OUT / "aigc_mini_detector.safetensors")
    identical = content_hash(retrained) == content_hash(tiny_weights_path())
    retrained.unlink()
    retrained.with_suffix(".json").unlink()

    shipped = create_backbone("aigclab-tiny")
    real = test.generators == "real"
    real_feats = shipped.features(test.images[real])
    conditions = ["raw", *COMPRESSIONS]
    logits = {c: detector.logits(test.images if c == "raw" else compress(test.images, c)) for c in conditions}
    rows, gens = [], {}
    for name in sorted(man["generators"]):
        keep = real | (test.generators == name)
        fd = frechet_distance(shipped.features(test.images[test.generators == name]), real_feats)
        m = binary_metrics(logits["raw"][keep], test.labels[keep], threshold=0.0)
        accs = {
            c: binary_metrics(logits[c][keep], test.labels[keep], threshold=0.0)["acc"] for c in conditions
        }
        gens[name] = {
            "family": man["generators"][name]["family"],
            "n_train": man["generators"][name]["train"]["n"],
            "n_test": int((test.generators == name).sum()),
            "fd": fd,
            "acc": m["acc"],
            "real_acc": m["real_acc"],
            "fake_acc": m["fake_acc"],
            "ap": m["ap"],
            "auc": m["auc"],
            "acc_under": {c: accs[c] for c in COMPRESSIONS},
        }
        rows.append(
            {"generator": name, **{k: v for k, v in gens[name].items() if k != "acc_under"}}
            | {
                "acc_jpeg75": accs["jpeg75"],
                "acc_jpeg30": accs["jpeg30"],
                "acc_osn_wechat": accs["osn-wechat"],
            }
        )
    others = [g for g in gens if g != train_gen]
    result = {
        "train_generator": train_gen,
        "detector": "aigclab-tiny recipe retrained on real train + train_generator train fakes; acc at logit 0",
        "n_real_test": int(real.sum()),
        "n_train_images": len(train),
        "generators": gens,
        "acc_train_generator": gens[train_gen]["acc"],
        "mean_acc_other_generators": float(np.mean([gens[g]["acc"] for g in others])),
        "backbone_retrain_identical": identical,
        "generator_rebuild_check": rebuild_check(REBUILD_CHECK, man),
        "manifest_sha256": {n: g["test"]["sha256"] for n, g in man["generators"].items()},
        "seconds": time.perf_counter() - start,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(OUT / "aigc_mini.json", result)
    cols = ["generator", "family", "n_train", "n_test", "fd", "acc", "real_acc", "fake_acc", "auc", "acc_jpeg75",
            "acc_jpeg30", "acc_osn_wechat"]  # fmt: skip
    md = [
        f"# AIGC-Mini: detector trained on `{train_gen}` only (real test n={int(real.sum())})",
        "",
        markdown_table(rows, cols),
        "",
        f"- accuracy on the training family `{train_gen}`: {result['acc_train_generator']:.3f}",
        f"- mean accuracy on the {len(others)} other families: {result['mean_acc_other_generators']:.3f}",
        f"- retrained detector identical to the shipped backbone weights: {identical}",
        f"- generator rebuilt from scratch vs manifest: {result['generator_rebuild_check']}",
        "- fd: Frechet distance to real test patches in aigclab-tiny pooled features (lower = closer)",
    ]
    (OUT / "aigc_mini.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
