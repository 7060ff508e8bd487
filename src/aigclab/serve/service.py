"""What the server computes, loaded once and shared by every request: detector, explainer, anomaly model.

CPU work (decoding, patching, scoring, cues, heat maps) runs in a thread pool of `concurrency` threads,
never on the event loop. `Gate` admits at most ``concurrency + queue_limit`` jobs at once; a job that
would pass that is refused at once with 503 and a Retry-After header, before its body is read, so
memory holds at most that many request bodies whatever the load.

Detection goes through the streaming pipeline's own steps (`aigclab.detect.pipeline.prepare_image` and
`score_items`), so a file gets the same probability, verdict and aspect-ratio note over HTTP as from
`aigclab detect`.

Example:
    >>> from aigclab.serve.service import Service, ServeConfig  # doctest: +SKIP
    >>> service = Service.load(ServeConfig(detector="default"))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pydantic import Field

from aigclab._config import Config
from aigclab.serve.uploads import ApiError, Limits, Upload, decode_upload

if TYPE_CHECKING:
    from aigclab.detect.base import Detector
    from aigclab.explain.anomaly_models import AnomalyModel
    from aigclab.explain.explainer import Explainer

__all__ = ["Gate", "ServeConfig", "Service"]

T = TypeVar("T")


class ServeConfig(Config):
    """Everything `aigclab serve` can set; the defaults are the command's."""

    host: str = "127.0.0.1"
    port: int = 8000
    detector: str = "default"  # 'default' or a saved detector .safetensors
    explainer: str = "cues"
    anomaly_model: str = ""  # '' none; 'reasoner', a reasoner .safetensors, 'zero-shot-rule', ...
    data_dir: str = "aigclab-serve"  # the only place the server writes (the review store)
    review_db: str | None = None  # default: <data_dir>/anomagent.db
    api_key_env: str | None = None  # name of the environment variable holding the API key
    cors_origins: list[str] = Field(default_factory=list)  # empty: no CORS headers at all
    concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    queue_limit: int = Field(default=16, ge=0)
    retry_after_s: int = 2
    max_upload_mb: float = 32.0
    max_files: int = 16
    max_pixels: int = Limits.max_pixels
    explain_max_pixels: int = Limits.explain_max_pixels

    def limits(self) -> Limits:
        return Limits(
            max_upload_bytes=int(self.max_upload_mb * 2**20),
            max_files=self.max_files,
            max_pixels=self.max_pixels,
            explain_max_pixels=self.explain_max_pixels,
        )

    def review_path(self) -> Path:
        return Path(self.review_db) if self.review_db else Path(self.data_dir) / "anomagent.db"


class Gate:
    """At most `concurrency` jobs run and `queue_limit` wait; beyond that `slot()` raises a 503."""

    def __init__(self, concurrency: int, queue_limit: int, retry_after_s: int = 2):
        self.concurrency, self.capacity = concurrency, concurrency + queue_limit
        self.retry_after_s = retry_after_s
        self.admitted = 0
        self.executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="aigclab-serve")

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.admitted >= self.capacity:
            raise ApiError(
                503,
                "busy",
                f"server busy ({self.admitted} requests in progress or queued); retry later",
                {"Retry-After": str(self.retry_after_s)},
            )
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def stats(self) -> dict[str, int]:
        return {
            "in_progress": self.admitted,
            "concurrency": self.concurrency,
            "capacity": self.capacity,
        }

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class Service:
    """The shared models and the work they do for one request (called in the gate's threads)."""

    def __init__(
        self,
        config: ServeConfig,
        detector: Detector,
        explainer: Explainer,
        anomaly_model: AnomalyModel | None = None,
    ):
        self.config, self.detector, self.explainer = config, detector, explainer
        self.anomaly_model = anomaly_model
        self.limits = config.limits()
        self.gate = Gate(config.concurrency, config.queue_limit, config.retry_after_s)
        Path(config.data_dir).mkdir(parents=True, exist_ok=True)

    @classmethod
    def load(cls, config: ServeConfig) -> Service:
        """Build the detector, explainer and anomaly model named by `config` (once, at start-up)."""
        from aigclab.detect.default import resolve_detector
        from aigclab.explain.explainer import create_explainer

        return cls(
            config,
            resolve_detector(config.detector),
            create_explainer(config.explainer),
            _anomaly_model(config.anomaly_model) if config.anomaly_model else None,
        )

    def describe(self) -> dict[str, Any]:
        det = self.detector
        return {
            "name": self.config.detector,
            "class": type(det).__name__,
            "threshold": round(float(det.threshold), 6),
            "band": None if det.band is None else [round(float(v), 6) for v in det.band],
            "count_bands": None
            if det.count_bands is None
            else {str(n): [round(float(v), 6) for v in e] for n, e in sorted(det.count_bands.items())},
            "patch_size": det.patch_size,
            "max_patches": det.max_patches,
        }

    def _patches_read(self, image: np.ndarray) -> int:
        from aigclab.detect.base import grid_count

        h, w = image.shape[:2]
        return grid_count(h, w, self.detector.patch_size, self.detector.max_patches)

    def detect(self, uploads: list[Upload]) -> list[dict[str, Any]]:
        """One row per upload, in order: probability and verdict, or the error that refused the file."""
        from aigclab.detect.pipeline import FileKey, Item, Prep, prepare_image, score_items

        prep = Prep.of(self.detector)
        items: list[Item] = []
        shapes: list[tuple[int, int] | None] = []
        errors: dict[int, ApiError] = {}
        for i, up in enumerate(uploads):
            key = FileKey(up.filename or up.field, len(up.data), None)
            try:
                image = decode_upload(up, self.limits.max_pixels)
            except ApiError as err:
                errors[i] = err
                items.append(Item(key, error=err.message))
                shapes.append(None)
                continue
            shapes.append((image.shape[0], image.shape[1]))
            items.append(prepare_image(key, image, prep))
            del image
        rows = []
        for i, row in enumerate(score_items(self.detector, items, prep)):
            out: dict[str, Any] = {"file": row["file"], "bytes": row["size"]}
            if i in errors:
                out["error"] = _error_body(errors[i])
            else:
                height, width = shapes[i]  # type: ignore[misc]
                out |= {"width": width, "height": height}
                out |= {k: row[k] for k in ("probability", "verdict", "note") if k in row}
            rows.append(out)
        return rows

    def explain(self, upload: Upload, heatmap: bool = True) -> dict[str, Any]:
        """Verdict, evidence, explanation, heat map (PNG, base64) and quadruples when configured."""
        from aigclab.detect.pipeline import bound_aspect
        from aigclab.explain.explainer import explain_image

        image = decode_upload(upload, self.limits.max_pixels)
        name = upload.filename or upload.field
        if image.shape[0] * image.shape[1] > self.limits.explain_max_pixels:
            raise ApiError(
                413,
                "too_many_pixels",
                f"{name}: {image.shape[1]}x{image.shape[0]} is over the {self.limits.explain_max_pixels}-pixel "
                "limit of /v1/explain (use /v1/detect for the verdict)",
            )
        image, note = bound_aspect(image, self.detector.patch_size, self.detector.max_patches)
        start = time.perf_counter()
        result = explain_image(image, self.detector, self.explainer)
        p = result.detector_probability
        out: dict[str, Any] = {
            "file": name,
            "width": image.shape[1],
            "height": image.shape[0],
            "probability": round(p, 4),
            "verdict": self.detector.verdicts(np.array([p]), [self._patches_read(image)])[0],
            **result.to_record(),
        }
        if note:
            out["note"] = note
        out["heatmap_png"] = _heatmap_png(image, result.heatmap) if heatmap else None
        out["anomalies"] = (
            [q.model_dump(exclude_none=True) for q in self.anomaly_model.predict([image])[0]]
            if self.anomaly_model is not None
            else None
        )
        out["latency_ms"] = round(1000 * (time.perf_counter() - start), 1)
        return out


def _error_body(err: ApiError) -> dict[str, Any]:
    return {"status": err.status, "code": err.code, "message": err.message}


def _heatmap_png(image: np.ndarray, heat: np.ndarray, max_side: int = 512) -> str:
    """The heat-map overlay as a base64 PNG, shrunk for display to at most `max_side` pixels."""
    from PIL import Image

    from aigclab.explain.explainer import heatmap_overlay

    pil = heatmap_overlay(image, heat)
    pil.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _anomaly_model(name: str) -> AnomalyModel:
    from aigclab.explain.anomaly_models import create_anomaly_model

    if name.endswith(".safetensors"):
        return create_anomaly_model("reasoner", path=name)
    return create_anomaly_model(name)
