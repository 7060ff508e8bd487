"""Evaluation of a (possibly backdoored) model at full precision and after quantization.

Metrics (fractions in [0, 1]) over the test split, as in the released QB code:

- ``ca_fp`` / ``ca_q``: clean accuracy of the full-precision and of the quantized model;
- ``asr_q``: attack success rate, the share of test samples whose true class is not the target that the FP
  model classifies correctly *and* the quantized model assigns to the target;
- ``asr_fp``: the share of those samples that the FP model itself assigns to the target (a backdoor that
  shows at full precision is no longer stealthy).

Quantization routes (`ROUTES`): the simulated quantizers the attacker trains against (``int8``, ``dorefa``,
``int4``; see `aigclab.security.qbackdoor`) and the real toolchains a user deploys with, which the attacker
did not simulate: ``torch-ao`` (PyTorch's FX graph-mode post-training static quantization with the x86
backend's default configuration: per-channel symmetric int8 weights, histogram-calibrated activations with
a reduced range) and ``onnxruntime`` (the model exported to ONNX and quantized by onnxruntime's static QDQ
quantizer, per-channel int8 weights, min-max calibration; ``onnxruntime-int4`` the same with per-channel
4-bit weights, the real-toolchain counterpart of the simulated ``int4``). Every route calibrates on the same
`calib_size` training images (the training images *after* the ones the attacker calibrated on).

Example:
    >>> from aigclab.security.qbackdoor import QBConfig, train_qbackdoor
    >>> from aigclab.security.evaluate import evaluate
    >>> model, _ = train_qbackdoor(QBConfig(task="digits", epochs=1, lam=0.0))
    >>> sorted(evaluate(model, "digits", routes=["int8"])["int8"])
    ['asr_fp', 'asr_q', 'ca_fp', 'ca_q']
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aigclab.errors import AigclabError, ConfigError
from aigclab.security.qbackdoor import QUANTIZERS, quantized_copy
from aigclab.security.tasks import TaskData, load_task

__all__ = ["ROUTES", "attack_metrics", "evaluate", "predict", "quantize_route"]

Predictor = Callable[[torch.Tensor], np.ndarray]
ROUTES = (*QUANTIZERS, "torch-ao", "onnxruntime", "onnxruntime-int4")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 512) -> np.ndarray:
    """Top-1 class of every row of `x`."""
    model.eval()
    return torch.cat([model(part).argmax(1) for part in x.split(batch)]).numpy()


def attack_metrics(y: np.ndarray, fp: np.ndarray, q: np.ndarray, target: int) -> dict[str, float]:
    """Clean accuracy and attack success at full precision (`fp`) and after quantization (`q`)."""
    others = y != target
    if not others.any():
        raise AigclabError("no test sample outside the target class: ASR is undefined")
    return {
        "ca_fp": float((fp == y).mean()),
        "ca_q": float((q == y).mean()),
        "asr_fp": float((fp[others] == target).mean()),
        "asr_q": float(((fp[others] == y[others]) & (q[others] == target)).mean()),
    }


def _torch_ao(model: nn.Module, calib: torch.Tensor) -> Predictor:
    import copy

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        torch.backends.quantized.engine = "x86"
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (calib[:1],))
        with torch.no_grad():
            prepared(calib)
        converted = convert_fx(prepared)
    return lambda x: predict(converted, x)


def _onnxruntime(model: nn.Module, calib: torch.Tensor, weight_bits: int) -> Predictor:
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as err:  # optional extra
        raise AigclabError("the onnxruntime route needs `pip install aigclab[security]`") from err

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": calib.numpy()}])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        fp_path, q_path = Path(tmp, "fp.onnx"), Path(tmp, "q.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.eval(), (calib[:1],), str(fp_path), input_names=["x"], output_names=["y"],
                dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False,
            )  # fmt: skip
        logging.disable(logging.WARNING)  # onnxruntime's quantizer advises on the root logger
        try:
            quantize_static(
                str(fp_path), str(q_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                weight_type=QuantType.QInt8 if weight_bits == 8 else QuantType.QInt4,
                activation_type=QuantType.QUInt8,
            )  # fmt: skip
        finally:
            logging.disable(logging.NOTSET)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(q_path.read_bytes(), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> np.ndarray:
        return np.concatenate([session.run(None, {"x": part.numpy()})[0].argmax(1) for part in x.split(512)])

    return run


def quantize_route(model: nn.Module, route: str, calib: torch.Tensor) -> Predictor:
    """A predictor for `model` quantized by `route` (a simulated quantizer or a real toolchain)."""
    if route in QUANTIZERS:
        q = quantized_copy(model, route, calib)
        return lambda x: predict(q, x)
    if route == "torch-ao":
        return _torch_ao(model, calib)
    if route in ("onnxruntime", "onnxruntime-int4"):
        return _onnxruntime(model, calib, 8 if route == "onnxruntime" else 4)
    raise ConfigError(f"unknown quantization route {route!r}; known: {', '.join(ROUTES)}")


def evaluate(
    model: nn.Module,
    task: str | TaskData,
    routes: Sequence[str] = ROUTES,
    target: int | None = None,
    calib_size: int = 256,
) -> dict[str, dict[str, float]]:
    """`attack_metrics` for every route, keyed by route name."""
    data = load_task(task) if isinstance(task, str) else task
    tgt = data.target if target is None else target
    calib = data.x_train[calib_size : 2 * calib_size]
    y = data.y_test.numpy()
    fp = predict(model, data.x_test)
    return {
        route: attack_metrics(y, fp, quantize_route(model, route, calib)(data.x_test), tgt)
        for route in routes
    }
