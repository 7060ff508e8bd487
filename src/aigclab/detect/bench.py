"""AIGC-Mini protocols for detectors: cross-generator training and few-shot episodes.

- ``cross_generator``: every trainable baseline is fitted on the training family's train split (plus real
  train patches) and tested on every generator's test split; FTNet is given the same training split as
  its support bank (training-free). One report per method (JSON, markdown, ROC and accuracy plots).
- ``few_shot``: for every K and episode seed, FTNet gets one joint cache of K real + K fake support
  images per unseen generator (FTNet's released protocol), drawn from the train splits, and scores each
  unseen generator's test split; the baselines are zero-shot (trained once on the training family).
  Means and standard deviations over seeds are reported per generator.

Support images come from train splits and queries from test splits, so they never overlap.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from aigclab.detect.base import Detector, create_detector
from aigclab.metrics import binary_metrics
from aigclab.reports import markdown_table, write_detection_report, write_json

__all__ = ["BASELINES", "cross_generator", "few_shot", "train_baselines"]

BASELINES = ("univfd-tiny", "cnndet-tiny", "npr-tiny")
console = Console()


def _log(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}")


def train_baselines(methods: Sequence[str], cache_dir: str | None, **overrides: Any) -> dict[str, Detector]:
    """Fit each baseline on the cross-generator training split."""
    from aigclab.data.mini import load_mini, mini_protocols

    train = load_mini("train", generators=mini_protocols()["cross_generator"]["train"])
    out = {}
    for name in methods:
        t0 = time.perf_counter()
        kw = {"cache_dir": cache_dir} if name.startswith("univfd") else {}
        out[name] = create_detector(name, **kw, **overrides.get(name, {})).fit(train.images, train.labels)
        _log(f"trained {name} on {len(train)} images in {time.perf_counter() - t0:.0f}s")
    return out


def cross_generator(
    out_dir: str | Path,
    methods: Sequence[str] = (*BASELINES, "ftnet-tiny"),
    compression: str | None = None,
    cache_dir: str | None = None,
    trained: dict[str, Detector] | None = None,
) -> dict[str, Any]:
    """Train on the training family (or use `trained` baselines), test on all; returns {method: report}."""
    from aigclab.data.mini import load_mini, mini_protocols

    prot = mini_protocols()["cross_generator"]
    test = load_mini("test", compression=compression)
    baselines = trained or train_baselines([m for m in methods if not m.startswith("ftnet")], cache_dir)
    train = load_mini("train", generators=prot["train"])  # FTNet's support bank
    reports = {}
    for name in methods:
        if name.startswith("ftnet"):
            det: Detector = create_detector(name, cache_dir=cache_dir, index="flat").add_support(
                train.images, train.labels
            )
        else:
            det = baselines[name]
        tag = f"cross-{name}" + (f"-{compression}" if compression else "")
        reports[name] = write_detection_report(
            out_dir,
            tag,
            det.score(test.images),
            test.labels,
            test.generators.tolist(),
            extra={"method": name, "train": prot["train"], "compression": compression},
        )
        _log(
            f"{name}: mean acc {reports[name]['mean']['acc']:.3f}, mean AP {reports[name]['mean']['ap']:.3f}"
        )
    return reports


def _summary(per_seed: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Per generator mean/std over seeds, then the mean over generators."""
    per_gen = {
        g: {
            "acc": float(np.mean([m["acc"] for m in ms])),
            "ap": float(np.mean([m["ap"] for m in ms])),
            "acc_std": float(np.std([m["acc"] for m in ms])),
            "ap_std": float(np.std([m["ap"] for m in ms])),
            "n_seeds": len(ms),
        }
        for g, ms in per_seed.items()
    }
    return {
        "mean_acc": float(np.mean([v["acc"] for v in per_gen.values()])),
        "mean_ap": float(np.mean([v["ap"] for v in per_gen.values()])),
        "mean_acc_std": float(np.mean([v["acc_std"] for v in per_gen.values()])),
        "per_generator": per_gen,
    }


def few_shot(
    out_dir: str | Path | None = None,
    ks: Sequence[int] = (1, 4, 8),
    seeds: Sequence[int] | None = None,
    finetune_k: Sequence[int] = (4,),
    cnn_k: Sequence[int] = (4,),
    baselines: Sequence[str] = BASELINES,
    compression: str | None = None,
    cache_dir: str | None = None,
    trained: dict[str, Detector] | None = None,
) -> dict[str, Any]:
    """FTNet K-shot (and FTNet-T) against zero-shot baselines (or `trained` ones) on each unseen generator."""
    from aigclab.data.mini import few_shot_episodes, load_mini, mini_protocols

    prot = mini_protocols()
    unseen = prot["cross_generator"]["test"]
    seeds = list(seeds if seeds is not None else prot["few_shot"]["seeds"])
    queries = {g: load_mini("test", generators=[g], compression=compression) for g in unseen}
    results: dict[str, Any] = {}
    for name, det in (trained or train_baselines(baselines, cache_dir)).items():
        results[name] = _summary(
            {g: [binary_metrics(det.score(q.images), q.labels)] for g, q in queries.items()}
        )
    runs = [("ftnet", "ftnet-tiny", k) for k in ks] + [("ftnet-t", "ftnet-t-tiny", k) for k in finetune_k]
    runs += [("ftnet-cnn", "ftnet-cnn-tiny", k) for k in cnn_k]  # FTNet on the trained CNN's block3 instead
    for family, preset, k in runs:
        per: dict[str, list[dict[str, float]]] = {g: [] for g in unseen}
        for seed in seeds:
            eps = [few_shot_episodes(g, k=k, seed=seed, compression=compression)[0] for g in unseen]
            support_x = np.concatenate([e.support.images for e in eps])
            support_y = np.concatenate([e.support.labels for e in eps])
            det = create_detector(preset, cache_dir=cache_dir, seed=seed).add_support(support_x, support_y)
            for g, q in queries.items():
                per[g].append(binary_metrics(det.score(q.images), q.labels))
        results[f"{family}-{k}shot"] = _summary(per)
        _log(f"{family}-{k}shot: mean acc {results[f'{family}-{k}shot']['mean_acc']:.3f}")
    if out_dir is not None:
        write_few_shot_report(out_dir, results, unseen, compression)
    return results


def write_few_shot_report(
    out_dir: str | Path, results: dict[str, Any], generators: Sequence[str], compression: str | None = None
) -> None:
    out = Path(out_dir)
    name = "few-shot" + (f"-{compression}" if compression else "")
    write_json(
        out / f"{name}.json", {"methods": results, "generators": list(generators), "compression": compression}
    )
    rows = [
        {
            "method": m,
            **{g: f"{r['per_generator'][g]['acc']:.3f}" for g in generators},
            "mean acc": r["mean_acc"],
            "mean AP": r["mean_ap"],
        }
        for m, r in results.items()
    ]
    (out / f"{name}.md").write_text(
        f"# {name} (accuracy per unseen generator)\n\n"
        + markdown_table(rows, ["method", *generators, "mean acc", "mean AP"])
        + "\n"
    )
