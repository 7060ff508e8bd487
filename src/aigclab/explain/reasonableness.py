"""Semantic reasonableness of image generators: anomaly rate and mean severity per generator.

An anomaly model (see `explain.anomaly_models`) is run on every image of a folder; each sub-folder is
one generator (images directly in the folder count as a generator named after the folder). Per
generator: ``anomaly_rate`` = fraction of images with at least one quadruple, ``mean_severity`` = mean
severity over all quadruples found (NaN when none), ``anomalies_per_image``, and counts per kind when the
model names kinds. Bad files are skipped and listed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from aigclab.errors import DataError

__all__ = ["generator_folders", "reasonableness_report", "write_report"]


def generator_folders(root: Path) -> dict[str, list[Path]]:
    from aigclab.io import IMAGE_SUFFIXES, list_images

    if not root.is_dir():
        raise DataError(f"{root}: not a folder of images")
    groups = {d.name: list_images(d) for d in sorted(root.iterdir()) if d.is_dir()}
    direct = [p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if direct:
        groups[root.name] = direct
    groups = {g: files for g, files in groups.items() if files}
    if not groups:
        raise DataError(f"{root}: no images found (expected one sub-folder of images per generator)")
    return groups


def reasonableness_report(root: Path, model: Any, batch: int = 32) -> dict[str, Any]:
    from aigclab.io import iter_images

    report: dict[str, Any] = {"model": model.name, "generators": {}, "skipped": []}
    for gen, files in generator_folders(root).items():
        skipped: list[tuple[str, str]] = []
        images = [img for _, img in iter_images(files, skipped)]
        report["skipped"] += [{"file": f, "reason": r} for f, r in skipped]
        quads = [
            q for start in range(0, len(images), batch) for q in model.predict(images[start : start + batch])
        ]
        sev = [a.severity for qs in quads for a in qs]
        report["generators"][gen] = {
            "n_images": len(images),
            "anomaly_rate": float(np.mean([len(qs) > 0 for qs in quads])) if quads else float("nan"),
            "mean_severity": float(np.mean(sev)) if sev else float("nan"),
            "anomalies_per_image": float(np.mean([len(qs) for qs in quads])) if quads else float("nan"),
            "kinds": dict(Counter(a.kind for qs in quads for a in qs if a.kind)),
        }
    return report


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """reasonableness.json, reasonableness.md (table) and reasonableness.png (two bar charts)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    gens = report["generators"]
    lines = [
        f"Semantic reasonableness per generator (anomaly model: {report['model']})",
        "",
        "| generator | images | anomaly rate | mean severity | anomalies / image |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {g} | {r['n_images']} | {r['anomaly_rate']:.3f} | {r['mean_severity']:.2f} | {r['anomalies_per_image']:.2f} |"
        for g, r in gens.items()
    ]
    paths = [out_dir / "reasonableness.json", out_dir / "reasonableness.md", out_dir / "reasonableness.png"]
    paths[0].write_text(json.dumps(report, indent=1) + "\n")
    paths[1].write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    names = list(gens)
    axes[0].bar(names, [gens[g]["anomaly_rate"] for g in names], color="tab:red")
    axes[0].set_title("anomaly rate")
    axes[0].set_ylim(0, 1)
    axes[1].bar(names, [np.nan_to_num(gens[g]["mean_severity"]) for g in names], color="tab:purple")
    axes[1].set_title("mean severity (1-5)")
    axes[1].set_ylim(0, 5)
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)
    plt.close(fig)
    return paths
