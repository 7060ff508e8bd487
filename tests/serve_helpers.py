"""Shared pieces of the serve tests: a small real detector, image bytes, and a live uvicorn server."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image


@lru_cache(maxsize=1)
def tiny_detector():  # type: ignore[no-untyped-def]
    """The default detector's method (FTNet, nsfwjs feature) with a 4-per-generator prior bank, uncalibrated.

    Threshold 0.5 with an uncertain band from 0.45 to 0.55, so all three verdicts can occur.
    """
    from aigclab.detect.default import default_detector

    det = default_detector(per_generator=4, calibrate=False)
    det.threshold, det.band = 0.5, (0.45, 0.55)
    return det


def make_service(data_dir, **overrides: Any):  # type: ignore[no-untyped-def]
    from aigclab.explain.explainer import create_explainer
    from aigclab.serve.service import ServeConfig, Service

    anomaly = overrides.pop("anomaly", None)
    config = ServeConfig(data_dir=str(data_dir), **{"concurrency": 1, "queue_limit": 4, **overrides})
    return Service(config, tiny_detector(), create_explainer("cues"), anomaly)


def photo(seed: int = 0, size: tuple[int, int] = (64, 96)) -> np.ndarray:
    """A crop of a real photograph (scikit-image's astronaut) at a seeded offset."""
    from skimage import data

    img = data.astronaut()
    rng = np.random.default_rng(seed)
    y, x = rng.integers(0, img.shape[0] - size[0]), rng.integers(0, img.shape[1] - size[1])
    return np.ascontiguousarray(img[y : y + size[0], x : x + size[1]])


def encode(image: np.ndarray, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@contextmanager
def live_server(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Run `app` under a real uvicorn on 127.0.0.1 (ephemeral port) in a thread; yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
