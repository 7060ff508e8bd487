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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from aigclab.detect.base import Detector, Trainable, create_detector
from aigclab.metrics import binary_metrics
from aigclab.reports import markdown_table, write_detection_report, write_json

__all__ = ["BASELINES", "cross_generator", "few_shot", "train_baselines"]

BASELINES = ("univfd-tiny", "cnndet-tiny", "npr-tiny")
console = Console()


def _log(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}")


def _cap(data: Any, n: int | None, seed: int = 0) -> Any:
    """At most `n` images of each generator ("real" included): a seeded subset in the original order."""
    if n is None:
        return data
    rng = np.random.default_rng(seed)
    keep = []
    for g in sorted(set(data.generators.tolist())):
        idx = np.flatnonzero(data.generators == g)
        keep.append(rng.choice(idx, size=min(n, len(idx)), replace=False))
    return data.subset(np.sort(np.concatenate(keep)))


def train_baselines(
    methods: Sequence[str], cache_dir: str | None, max_train: int | None = None, **overrides: Any
) -> dict[str, Detector]:
    """Fit each baseline on the cross-generator training split (at most `max_train` images per class).

    With a `cache_dir`, each fitted model is kept there (safetensors, under ``trained/``) and reused while
    its name, settings, training images and the detector and backbone code are unchanged."""
    from aigclab.data.mini import load_mini, mini_protocols
    from aigclab.detect.base import load_detector

    train = _cap(load_mini("train", generators=mini_protocols()["cross_generator"]["train"]), max_train)
    out = {}
    for name in methods:
        t0 = time.perf_counter()
        kw = {"cache_dir": cache_dir} if name.startswith("univfd") else {}
        path = _trained_path(cache_dir, name, overrides.get(name, {}), train)
        if path is not None and path.is_file():
            out[name] = load_detector(path)
            _log(f"{name}: the model trained on these {len(train)} images, from {path}")
            continue
        det = create_detector(name, **kw, **overrides.get(name, {})).fit(train.images, train.labels)
        _log(f"trained {name} on {len(train)} images in {time.perf_counter() - t0:.0f}s")
        if path is not None and isinstance(det, Trainable):
            path.parent.mkdir(parents=True, exist_ok=True)
            det.save(path)
        out[name] = det
    return out


def _trained_path(cache_dir: str | None, name: str, settings: dict[str, Any], train: Any) -> Path | None:
    """Where a baseline fitted on `train` is cached: keyed by everything its weights depend on."""
    if cache_dir is None:
        return None
    import hashlib
    import json

    import torch

    import aigclab

    key = hashlib.sha256(json.dumps([name, settings], sort_keys=True, default=str).encode())
    key.update(f"{aigclab.__version__} {torch.__version__}".encode())
    key.update(np.ascontiguousarray(train.images).tobytes())
    key.update(np.ascontiguousarray(train.labels).tobytes())
    src = Path(aigclab.__file__).parent
    for f in sorted([*(src / "detect").glob("*.py"), *(src / "nn").glob("*.py")]):
        key.update(f.read_bytes())
    return Path(cache_dir) / "trained" / f"{name}-{key.hexdigest()[:16]}.safetensors"


def cross_generator(
    out_dir: str | Path,
    methods: Sequence[str] = (*BASELINES, "ftnet-tiny"),
    compression: str | None = None,
    cache_dir: str | None = None,
    trained: dict[str, Detector] | None = None,
    max_queries: int | None = None,
    max_train: int | None = None,
) -> dict[str, Any]:
    """Train on the training family (or use `trained` baselines), test on all; returns {method: report}.

    `max_queries` / `max_train` cap the test images per generator and the training images per class."""
    from aigclab.data.mini import load_mini, mini_protocols

    prot = mini_protocols()["cross_generator"]
    test = _cap(load_mini("test", compression=compression), max_queries)
    names = [m for m in methods if not m.startswith("ftnet")]
    baselines = trained or train_baselines(names, cache_dir, max_train)
    train = _cap(load_mini("train", generators=prot["train"]), max_train)  # FTNet's support bank
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


def _metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    m = binary_metrics(scores, labels)
    pred = np.asarray(scores) >= threshold
    m["calibrated_acc"] = float((pred == (np.asarray(labels) == 1)).mean())
    return m


_KEYS = ("auc", "ap", "acc", "calibrated_acc")


def _summary(per_seed: dict[str, list[dict[str, float]]], k: int) -> dict[str, Any]:
    """Per generator mean/std over seeds; means over generators; spread of the generator mean over seeds."""
    per_gen: dict[str, dict[str, float]] = {}
    for g, ms in per_seed.items():
        per_gen[g] = {key: float(np.mean([m[key] for m in ms])) for key in _KEYS}
        per_gen[g] |= {f"{key}_std": float(np.std([m[key] for m in ms])) for key in _KEYS}
        per_gen[g]["n_seeds"] = len(ms)
    n_seeds = min(len(ms) for ms in per_seed.values())
    seed_means = {
        key: [float(np.mean([ms[s][key] for ms in per_seed.values()])) for s in range(n_seeds)]
        for key in _KEYS
    }
    return {
        "k": k,
        "mean_auc": float(np.mean([v["auc"] for v in per_gen.values()])),
        "mean_ap": float(np.mean([v["ap"] for v in per_gen.values()])),
        "mean_acc": float(np.mean([v["acc"] for v in per_gen.values()])),
        "calibrated_acc": float(np.mean([v["calibrated_acc"] for v in per_gen.values()])),
        "mean_acc_std": float(np.mean([v["acc_std"] for v in per_gen.values()])),
        **{
            f"{'mean_' if key != 'calibrated_acc' else ''}{key}_seed_std": float(np.std(v))
            for key, v in seed_means.items()
        },
        "per_generator": per_gen,
    }


class _Support:
    """The joint support set of one (K, seed): images, labels, and the episode (generator) of each."""

    def __init__(self, eps: Sequence[Any], compression: str | None = None):
        from aigclab.data.mini import compress

        # few_shot_episodes(compression=...) compresses each support set exactly like this
        imgs = [
            e.support.images if compression is None else compress(e.support.images, compression) for e in eps
        ]
        self.images = np.concatenate(imgs)
        self.labels = np.concatenate([e.support.labels for e in eps])
        self.generators = np.concatenate([e.support.generators for e in eps])
        self.episode = np.concatenate([np.full(len(e.support), i) for i, e in enumerate(eps)])

    def __len__(self) -> int:
        return len(self.labels)


def _folds(support: _Support, k: int) -> np.ndarray:
    """Two cross-fitting folds: alternate within each (episode, class), or whole episodes at K=1."""
    fold = np.zeros(len(support), int)
    for e in np.unique(support.episode):
        for c in (0, 1):
            idx = np.flatnonzero((support.episode == e) & (support.labels == c))
            fold[idx] = np.arange(len(idx)) % 2 if k >= 2 else e % 2
    return fold


def support_threshold(
    fit_score: Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]] | None,
    support: _Support,
    k: int,
    score: Callable[[np.ndarray], np.ndarray] | None = None,
) -> float:
    """A threshold chosen on the supports (best balanced accuracy).

    Methods that learn from the supports are cross-fitted: `fit_score(mask)` fits on the supports in
    `mask` (plus whatever they train on anyway) and returns a scorer; each fold is scored by the fit on the
    other. Methods that do not (`fit_score` None) score the supports directly with `score`.
    """
    from aigclab.detect.default import choose_threshold

    if fit_score is None:
        assert score is not None
        return choose_threshold(score(support.images), support.labels)
    fold = _folds(support, k)
    s = np.zeros(len(support))
    for f in (0, 1):
        train = fold != f
        if len(set(support.labels[train].tolist())) < 2 or not (fold == f).any():
            continue
        s[fold == f] = fit_score(train)(support.images[fold == f])
    return choose_threshold(s, support.labels)


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
    refit_k: Sequence[int] | None = None,
    calibration_k: int = 4,
    extra_ftnet: Sequence[tuple[str, str, int]] = (),
    max_queries: int | None = None,
    max_train: int | None = None,
) -> dict[str, Any]:
    """FTNet K-shot against baselines given the same supports, on each unseen generator, over seeds.

    Rows: each zero-shot baseline (trained on the training family; its threshold chosen on the
    `calibration_k`-shot supports); the UnivFD probe refitted with the supports (``univfd-tiny-refit-Kshot``);
    FTNet K-shot, FTNet-T, FTNet on the trained CNN, and `extra_ftnet` runs
    ``(family, preset, k)``. Every row reports AUC, AP, accuracy at 0.5 and `calibrated_acc` (accuracy at
    a threshold chosen on that seed's supports, see `support_threshold`). `max_queries` / `max_train`
    cap the test queries per class and generator and the training images per class (quick runs).
    """
    from aigclab.data.mini import few_shot_episodes, load_mini, mini_protocols

    prot = mini_protocols()
    unseen = prot["cross_generator"]["test"]
    seeds = list(seeds if seeds is not None else prot["few_shot"]["seeds"])
    refit_k = list(ks if refit_k is None else refit_k)
    test = load_mini("test", compression=compression)  # decoded once, split per generator
    queries = {
        g: _cap(test.subset(np.flatnonzero((test.labels == 0) | (test.generators == g))), max_queries)
        for g in unseen
    }
    wanted = {*ks, *finetune_k, *cnn_k, *refit_k, calibration_k, *(r[2] for r in extra_ftnet)}
    episodes = {(e.generator, e.k, e.seed): e for e in few_shot_episodes() if e.k in wanted}  # decode once
    supports = {
        (k, s): _Support([episodes[(g, k, s)] for g in unseen], compression)
        for k in sorted(wanted)
        for s in seeds
    }
    results: dict[str, Any] = {}
    models = trained or train_baselines(baselines, cache_dir, max_train)

    def run(name: str, k: int, make: Callable[[int, np.ndarray | None], Detector], learns: bool) -> None:
        t0 = time.perf_counter()
        per: dict[str, list[dict[str, float]]] = {g: [] for g in unseen}
        fixed_scores: dict[str, np.ndarray] = {}  # a model that does not learn scores each query set once
        for seed in seeds:
            sup = supports[(k, seed)]
            det = make(seed, np.ones(len(sup), bool))

            def fitted(mask: np.ndarray, seed: int = seed) -> Callable[[np.ndarray], np.ndarray]:
                return make(seed, mask).score

            t = support_threshold(fitted if learns else None, sup, k, score=det.score)
            for g, q in queries.items():
                if learns or g not in fixed_scores:
                    fixed_scores[g] = det.score(q.images)
                per[g].append(_metrics(fixed_scores[g], q.labels, t))
        results[name] = _summary(per, k)
        r = results[name]
        _log(
            f"{name}: AUC {r['mean_auc']:.3f} AP {r['mean_ap']:.3f} acc@0.5 {r['mean_acc']:.3f} "
            f"calibrated acc {r['calibrated_acc']:.3f} ({time.perf_counter() - t0:.0f}s)"
        )

    for name, model in models.items():

        def fixed(seed: int, mask: np.ndarray | None, model: Detector = model) -> Detector:
            return model

        run(name, calibration_k, fixed, learns=False)
    probe = next((m for m in models if m.startswith("univfd")), None)
    if probe is not None:
        train = _cap(
            load_mini("train", generators=prot["cross_generator"]["train"], compression=compression),
            max_train,
        )
        for k in refit_k:
            run(f"{probe}-refit-{k}shot", k, _refit(probe, train, supports, k, cache_dir), learns=True)
    runs = [("ftnet", "ftnet-tiny", k) for k in ks] + [("ftnet-t", "ftnet-t-tiny", k) for k in finetune_k]
    runs += [("ftnet-cnn", "ftnet-cnn-tiny", k) for k in cnn_k]  # FTNet on the trained CNN's block3
    for family, preset, k in [*runs, *extra_ftnet]:

        def make(seed: int, mask: np.ndarray | None, preset: str = preset, k: int = k) -> Detector:
            sup = supports[(k, seed)]
            m = np.ones(len(sup), bool) if mask is None else mask
            return create_detector(preset, cache_dir=cache_dir, seed=seed).add_support(
                sup.images[m], sup.labels[m]
            )

        run(f"{family}-{k}shot", k, make, learns=True)
    if out_dir is not None:
        write_few_shot_report(out_dir, results, unseen, compression)
    return results


def _refit(
    name: str,
    train: Any,
    supports: dict[tuple[int, int], _Support],
    k: int,
    cache_dir: str | None,
    support_share: float = 0.5,
) -> Callable[[int, np.ndarray | None], Detector]:
    """A probe fitted on the training family plus the K-shot supports (their total weight `support_share`)."""

    def make(seed: int, mask: np.ndarray | None) -> Detector:
        sup = supports[(k, seed)]
        m = np.ones(len(sup), bool) if mask is None else mask
        x = [train.images, sup.images[m]]
        y = [train.labels, sup.labels[m]]
        w_sup = support_share / (1 - support_share) * len(train) / max(1, int(m.sum()))
        w = [np.ones(len(train)), np.full(int(m.sum()), w_sup)]
        det = create_detector(name, cache_dir=cache_dir)
        return det.fit(np.concatenate(x), np.concatenate(y), sample_weight=np.concatenate(w))  # type: ignore[call-arg]

    return make


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
            **{g: f"{r['per_generator'][g]['auc']:.3f}" for g in generators},
            "mean AUC": r["mean_auc"],
            "mean AP": r["mean_ap"],
            "calibrated acc": r["calibrated_acc"],
            "acc@0.5": r["mean_acc"],
        }
        for m, r in results.items()
    ]
    cols = ["method", *generators, "mean AUC", "mean AP", "calibrated acc", "acc@0.5"]
    (out / f"{name}.md").write_text(
        f"# {name} (AUC per unseen generator; accuracy at a threshold chosen on the supports)\n\n"
        + markdown_table(rows, cols)
        + "\n"
    )
