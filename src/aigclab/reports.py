"""Evaluation reports: a JSON file, a markdown table (one row per generator, mean row last) and plots.

Example:
    >>> from aigclab.reports import markdown_table
    >>> print(markdown_table([{"gen": "a", "acc": 0.5}], ["gen", "acc"]))
    | gen | acc |
    |---|---|
    | a | 0.500 |
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aigclab.metrics.detection import detection_report

__all__ = ["markdown_table", "plot_generator_bars", "plot_roc", "write_detection_report", "write_json"]

DETECTION_COLUMNS = ["generator", "acc", "best_acc", "ap", "auc", "eer", "real_acc", "fake_acc"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN to None."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(data), indent=2) + "\n")
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(
    path: str | Path, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "ROC"
) -> Path:
    """One ROC curve per entry of `curves` (name -> (scores, labels))."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (scores, labels) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_generator_bars(path: str | Path, values: Mapping[str, float], metric: str, title: str = "") -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(values) + 2), 3.5))
    names = list(values)
    ax.bar(names, [values[n] for n in names], color="tab:blue")
    ax.set(ylabel=metric, ylim=(0, 1), title=title or metric)
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_detection_report(
    out_dir: str | Path,
    name: str,
    scores: np.ndarray,
    labels: np.ndarray,
    generators: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute metrics and write `<name>.json`, `<name>.md`, `<name>_roc.png`, `<name>_acc.png`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores, labels, gens = np.asarray(scores, np.float64), np.asarray(labels), np.asarray(list(generators))
    report: dict[str, Any] = dict(detection_report(scores, labels, list(gens)))
    report.update(extra or {})
    write_json(out / f"{name}.json", report)
    rows = [{"generator": g, **m} for g, m in report["per_generator"].items()]
    if "mean" in report:
        rows.append({"generator": "**mean**", **report["mean"]})
    (out / f"{name}.md").write_text(f"# {name}\n\n" + markdown_table(rows, DETECTION_COLUMNS) + "\n")
    curves = {
        g: (scores[(labels == 0) | (gens == g)], labels[(labels == 0) | (gens == g)])
        for g in report["per_generator"]
    }
    if curves:
        plot_roc(out / f"{name}_roc.png", curves, title=f"{name}: ROC per generator")
        accs = {g: m["acc"] for g, m in report["per_generator"].items()}
        plot_generator_bars(
            out / f"{name}_acc.png", accs, "accuracy", title=f"{name}: accuracy per generator"
        )
    return report
