"""Checks a user needs before trusting the default detector: the feature-choice ablation (on the training
family only), false positives on real photos nobody generated, and what a user's supports change.

- `ablation`: FTNet's layer, input size, beta and centring on a validation split of the *training* family
  (dcgan train fakes vs real train patches; supports and queries come from disjoint photos), K-shot AUC.
- `real_photo_fpr`: the default detector on held-out photos (AIGC-Mini's test photos, never in its bank)
  and extra real images, each as shipped and after JPEG re-compression and resizing.
- `support_effect`: leave one family out of the default bank, give K supports of it, and compare no
  supports, supports pooled into the bank (the old behaviour), weighted user supports and supports alone.
  ``split="validation"`` uses train splits only (to choose `user_weight`); ``"test"`` reports on the test
  splits of the six unseen families.

Example:
    >>> from aigclab.detect.trust import real_photo_fpr
    >>> real_photo_fpr()["real_photo_fpr"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aigclab.detect.default import DEFAULT_DETECTOR, default_bank, default_detector
from aigclab.detect.ftnet import FTNet, FTNetConfig, SupportBank
from aigclab.metrics import binary_metrics

__all__ = ["VARIANTS", "ablation", "real_photo_fpr", "support_effect"]


def _probs(bank: SupportBank, feats: np.ndarray, beta: float) -> np.ndarray:
    lk = bank.log_kernel(feats, beta)
    return 1.0 / (1.0 + np.exp(np.clip(lk[:, 0] - lk[:, 1], -700, 700)))


def ablation(
    backbone: str = "mobilenetv2-nsfwjs",
    sizes: Sequence[int] = (64, 96, 128),
    layers: Sequence[str] = (
        "block2",
        "block3",
        "block4",
        "block5",
        "block6",
        "block8",
        "block10",
        "block13",
    ),
    betas: Sequence[float] = (4.0, 15.0, 50.0),
    centers: Sequence[str] = ("none", "support"),
    k: int = 4,
    seeds: int = 5,
    n_queries: int = 300,
) -> dict[str, Any]:
    """FTNet K-shot AUC on the training family's validation split for each feature / kernel choice."""
    import torch

    from aigclab.data.mini import fake_set, mini_manifest, real_set
    from aigclab.nn import create_backbone

    train_gen = mini_manifest()["train_generator"]
    fakes = fake_set(train_gen, "train")
    reals, photos = real_set("train")
    names = sorted(set(photos.tolist()))
    in_a = np.isin(photos, names[0::2])  # support photos; queries come from the others
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(fakes))
    fake_a, fake_b = perm[: len(perm) // 2], perm[len(perm) // 2 :]
    real_a, real_b = np.flatnonzero(in_a), np.flatnonzero(~in_a)
    pick_r = rng.choice(real_b, size=min(n_queries, len(real_b)), replace=False)
    pick_f = rng.choice(fake_b, size=min(n_queries, len(fake_b)), replace=False)
    episodes = [
        (
            np.random.default_rng([s, 1]).choice(real_a, k, replace=False),
            np.random.default_rng([s, 2]).choice(fake_a, k, replace=False),
        )
        for s in range(seeds)
    ]
    sup_r = np.unique(np.concatenate([e[0] for e in episodes]))
    sup_f = np.unique(np.concatenate([e[1] for e in episodes]))
    images = np.concatenate(
        [reals.images[pick_r], fakes.images[pick_f], reals.images[sup_r], fakes.images[sup_f]]
    )
    q_labels = np.r_[np.zeros(len(pick_r)), np.ones(len(pick_f))]
    rows: list[dict[str, Any]] = []
    for size in sizes:
        bb = create_backbone(backbone, input_size=size).eval()
        wanted = [layer for layer in layers if layer in bb.layers]
        with torch.inference_mode():
            parts = [
                bb.forward_layers(bb.preprocess(images[i : i + 256]), wanted)
                for i in range(0, len(images), 256)
            ]
        feats = {layer: torch.cat([p[layer] for p in parts]).float().numpy() for layer in wanted}
        nq = len(q_labels)
        r_pos = {j: nq + i for i, j in enumerate(sup_r)}
        f_pos = {j: nq + len(sup_r) + i for i, j in enumerate(sup_f)}
        for layer in wanted:
            f = feats[layer]
            for center in centers:
                for beta in betas:
                    aucs = []
                    for er, ef in episodes:
                        bank = SupportBank("exact", center=center)
                        rows_s = [r_pos[j] for j in er] + [f_pos[j] for j in ef]
                        bank.add(f[rows_s], np.r_[np.zeros(k), np.ones(k)])
                        aucs.append(binary_metrics(_probs(bank, f[:nq], beta), q_labels)["auc"])
                    rows.append(
                        {
                            "input_size": size,
                            "layer": layer,
                            "center": center,
                            "beta": beta,
                            "auc": float(np.mean(aucs)),
                            "auc_std": float(np.std(aucs)),
                        }
                    )
    best = max(rows, key=lambda r: r["auc"])
    same = [r for r in rows if r["input_size"] == best["input_size"] and r["layer"] == best["layer"]]
    top = sorted(rows, key=lambda r: -r["auc"])[:8]
    shown = top + [r for r in same if r not in top]
    return {
        "protocol": f"{train_gen} train fakes vs real train patches, {k}+{k} supports and {len(pick_r)}+{len(pick_f)} "
        f"queries from disjoint photos / samples, {seeds} seeds; AUC",
        "backbone": backbone,
        "chosen": {key: best[key] for key in ("input_size", "layer", "center", "beta")},
        "rows": [{**r, "auc": round(r["auc"], 4), "auc_std": round(r["auc_std"], 4)} for r in shown],
        "rows_all": rows,
    }


VARIANTS: dict[str, tuple[float, int | None]] = {  # name: (resize factor, JPEG quality)
    "original": (1.0, None),
    "jpeg75": (1.0, 75),
    "jpeg50": (1.0, 50),
    "resize0.5": (0.5, None),
    "resize0.5+jpeg75": (0.5, 75),
}


def _variant(img: np.ndarray, factor: float, quality: int | None) -> np.ndarray:
    from aigclab.degradations import jpeg, resize

    if factor != 1.0:
        h, w = img.shape[:2]
        img = resize(img, (max(8, round(h * factor)), max(8, round(w * factor))), "bicubic")
    return jpeg(img, quality) if quality is not None else img


def real_photo_fpr(
    det: FTNet | None = None,
    extra: dict[str, np.ndarray] | None = None,
    variants: dict[str, tuple[float, int | None]] = VARIANTS,
) -> dict[str, Any]:
    """Share of real photos (held-out photos plus `extra` images, under each variant) called fake."""
    from aigclab.data.photos import PHOTOS, load_photo

    det = det or default_detector()
    photos = {n: load_photo(n) for n, p in PHOTOS.items() if p.split == "test"} | dict(extra or {})
    rows, verdicts, at_half = [], [], []
    for vname, (factor, quality) in variants.items():
        imgs = [_variant(img, factor, quality) for img in photos.values()]
        probs, counts = det.score_counted(imgs)
        v = det.verdicts(probs, counts)
        verdicts += v
        at_half += (probs >= 0.5).tolist()
        rows.append(
            {
                "variant": vname,
                "n": len(v),
                "fpr": float(np.mean([x == "fake" for x in v])),
                "uncertain": float(np.mean([x == "uncertain" for x in v])),
                "fpr_at_0.5": float(np.mean(probs >= 0.5)),
                "mean_prob": float(np.mean(probs)),
            }
        )
    return {
        "real_photo_fpr": float(np.mean([x == "fake" for x in verdicts])),
        "uncertain_rate": float(np.mean([x == "uncertain" for x in verdicts])),
        "fpr_at_0.5": float(np.mean(at_half)),
        "threshold": det.threshold,
        "band": det.band,
        "count_bands": det.count_bands,
        "n": len(verdicts),
        "photos": sorted(photos),
        "rows": rows,
    }


def support_effect(
    split: str = "test",
    seeds: Sequence[int] = (0, 1, 2),
    k: int = 4,
    weights: Sequence[float] = (0.25, 1.0, 4.0, 16.0),
    per_generator: int = 64,
    n_queries: int = 300,
) -> dict[str, Any]:
    """AUC and calibrated accuracy per mode on families left out of the default bank (see module docstring)."""
    from aigclab.data.mini import fake_set, few_shot_episodes, mini_generators, mini_protocols, real_set

    det = default_detector(per_generator, calibrate=False)
    cfg: FTNetConfig = det.config
    bank, bank_photos = default_bank(per_generator)
    bank_feats = det.extractor(bank.images)
    gens = mini_protocols()["cross_generator"]["test"] if split == "test" else mini_generators()
    reals, photos = real_set("train" if split == "validation" else "test")
    names = sorted(set(photos.tolist()))
    modes = ["bank only", "pooled into bank", *(f"user weight {w:g}" for w in weights), "supports only"]
    per: dict[str, list[float]] = {m: [] for m in modes}
    flips: list[float] = []
    for fold, g in enumerate(gens):
        keep = bank.generators != g
        held = names[fold :: len(gens)] if split == "validation" else names
        if split == "validation":
            keep &= ~np.isin(bank_photos, held)
        for seed in seeds:
            rng = np.random.default_rng([seed, fold])
            fakes = fake_set(g, "train" if split == "validation" else "test")
            if split == "validation":  # supports and queries both from train splits, disjoint
                in_bank = set(bank.ids[bank.generators == g].tolist())
                pool = np.array([i for i, s in enumerate(fakes.ids) if s not in in_bank])
                rng.shuffle(pool)
                sup_f, q_f = fakes.images[pool[:k]], fakes.images[pool[k : k + n_queries]]
                rpool = rng.permutation(np.flatnonzero(np.isin(photos, held)))
                sup_r, q_r = reals.images[rpool[:k]], reals.images[rpool[k : k + n_queries]]
            else:
                ep = few_shot_episodes(g, k=k, seed=seed)[0]
                sup_r, sup_f = (
                    ep.support.images[ep.support.labels == 0],
                    ep.support.images[ep.support.labels == 1],
                )
                q_f = fakes.images[rng.choice(len(fakes), min(n_queries, len(fakes)), replace=False)]
                q_r = reals.images[rng.choice(len(reals), min(n_queries, len(reals)), replace=False)]
            sf = det.extractor(np.concatenate([sup_r, sup_f]))
            sl = np.r_[np.zeros(len(sup_r)), np.ones(len(sup_f))]
            qf = det.extractor(np.concatenate([q_r, q_f]))
            ql = np.r_[np.zeros(len(q_r)), np.ones(len(q_f))]
            base_p = None
            for m in modes:
                sb = SupportBank(cfg.index, cfg.neighbours, cfg.center, cfg.user_weight)
                if m != "supports only":
                    sb.add(bank_feats[keep], bank.labels[keep], "prior")
                if m == "pooled into bank":
                    sb.add(sf, sl, "prior")
                elif m.startswith("user") or m == "supports only":
                    sb.user_weight = float(m.split()[-1]) if m.startswith("user") else 1.0
                    sb.add(sf, sl, "user")
                p = _probs(sb, qf, cfg.beta)
                per[m].append(binary_metrics(p, ql)["auc"])
                if m == "bank only":
                    base_p = p
                elif m == f"user weight {cfg.user_weight:g}" and base_p is not None:
                    flips.append(float(((p >= 0.5) != (base_p >= 0.5)).mean()))
    summary = {m: {"mean_auc": float(np.mean(v)), "auc_std": float(np.std(v))} for m, v in per.items()}
    user = {m: v for m, v in summary.items() if m.startswith("user")}
    return {
        "split": split,
        "k": k,
        "detector": DEFAULT_DETECTOR,
        "families": list(gens),
        "modes": summary,
        "best_user_weight": float(max(user, key=lambda m: user[m]["mean_auc"]).split()[-1]),
        "decisions_changed_by_supports": float(np.mean(flips)) if flips else float("nan"),
        "rows": [
            {"mode": m, "mean_auc": round(v["mean_auc"], 4), "auc_std": round(v["auc_std"], 4)}
            for m, v in summary.items()
        ],
    }
