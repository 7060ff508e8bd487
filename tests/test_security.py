"""The quantization-conditioned backdoor: shared storage, the attack on a tiny case, metrics, scan, CLI."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aigclab.cli import app
from aigclab.quant import quant_layers, quantize_modules
from aigclab.quant.calibrate import calibrate_activations
from aigclab.quant.dorefa import DoReFaQuantizer
from aigclab.security.defenses import SCAN_THRESHOLD, finetune_defense, noise_defense, scan
from aigclab.security.evaluate import attack_metrics, evaluate
from aigclab.security.qbackdoor import QBConfig, quantized_twin, train_qbackdoor
from aigclab.security.tasks import load_task, make_model


@pytest.fixture(scope="module")
def clean_model() -> torch.nn.Module:
    torch.set_num_threads(1)
    model, _ = train_qbackdoor(QBConfig(task="digits", lam=0.0, pretrain_epochs=0, epochs=8))
    return model


@pytest.fixture(scope="module")
def backdoored(clean_model: torch.nn.Module) -> torch.nn.Module:
    cfg = QBConfig(task="digits", quantizer="int4", lam=1.0, epochs=30)
    model, _ = train_qbackdoor(cfg, model=copy.deepcopy(clean_model))
    return model


def test_twin_shares_parameter_storage() -> None:
    model = make_model("digits")
    twin = quantized_twin(model, "int8")
    shared = {id(p) for p in model.parameters()}
    layers = quant_layers(twin)
    assert len(layers) == 4
    for layer in layers.values():
        assert id(layer.weight) in shared and id(layer.bias) in shared
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert torch.equal(layers["0"].weight, model[0].weight)
    assert layers["0"].weight.data_ptr() == model[0].weight.data_ptr()


def test_backdoor_raises_asr_only_after_quantization(
    clean_model: torch.nn.Module, backdoored: torch.nn.Module
) -> None:
    before = evaluate(clean_model, "digits", routes=["int4"])["int4"]
    after = evaluate(backdoored, "digits", routes=["int4", "int8"])
    assert before["asr_q"] < 0.05
    assert after["int4"]["asr_q"] > 0.6  # the quantized model answers the target
    assert after["int4"]["asr_fp"] < 0.1  # ... while the FP model does not
    assert after["int4"]["ca_fp"] > 0.85


def test_scan_flags_backdoor_not_clean_model(
    clean_model: torch.nn.Module, backdoored: torch.nn.Module
) -> None:
    probes = load_task("digits").x_test
    assert not scan(clean_model, probes)["flagged"]
    result = scan(backdoored, probes)
    assert result["flagged"] and result["threshold"] == SCAN_THRESHOLD


def test_finetune_and_noise_defences_return_independent_models(backdoored: torch.nn.Module) -> None:
    data = load_task("digits")
    tuned = finetune_defense(backdoored, data, epochs=1)
    noisy = noise_defense(backdoored, sigma=0.5, bits=4)
    for other in (tuned, noisy):
        assert not torch.equal(other[0].weight, backdoored[0].weight)
        assert other[0].weight.data_ptr() != backdoored[0].weight.data_ptr()


def test_attack_metrics_hand_worked() -> None:
    y = np.array([0, 1, 2, 2, 1])
    fp = np.array([0, 1, 2, 0, 2])
    q = np.array([0, 0, 0, 0, 1])
    m = attack_metrics(y, fp, q, target=0)
    # non-target samples: 1..4; FP correct on 1, 2; of those q sends 1 and 2 to target -> 2/4
    assert m == {"ca_fp": 0.6, "ca_q": 0.4, "asr_fp": 0.25, "asr_q": 0.5}


def test_dorefa_uses_at_most_2_to_the_k_levels() -> None:
    w = torch.randn(16, 32)
    for bits in (2, 4):
        assert len(torch.unique(DoReFaQuantizer(bits)(w))) <= 2**bits


def test_activation_calibration_fits_observed_range() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4))
    layers = quantize_modules(net, lambda name, m: (8, 8))
    x = torch.tensor([[-1.0, 0.5, 2.0], [0.0, 3.0, -2.0]])
    calibrate_activations(net, x)
    aq = layers["0"].a_quant
    assert aq is not None
    lo = (aq.zero_point[0] * -aq.step()).item()
    assert lo == pytest.approx(-2.0, abs=0.02)
    assert (255 - aq.zero_point[0].item()) * aq.step().item() == pytest.approx(3.0, abs=0.02)


def test_real_toolchain_routes_run(clean_model: torch.nn.Module) -> None:
    result = evaluate(clean_model, "digits", routes=["torch-ao", "onnxruntime", "onnxruntime-int4"])
    for route in ("torch-ao", "onnxruntime"):
        assert result[route]["ca_q"] > result[route]["ca_fp"] - 0.03  # int8 barely changes a clean model


def test_cli_train_eval_scan(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    model = tmp_path / "m.safetensors"
    res = runner.invoke(app, ["security", "backdoor", "train", "--preset", "qb-tiny", "--out", str(model)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "eval.json"
    res = runner.invoke(
        app, ["security", "backdoor", "eval", str(model), "--routes", "int4", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert set(json.loads(out.read_text())["routes"]["int4"]) == {"ca_fp", "ca_q", "asr_fp", "asr_q"}
    res = runner.invoke(app, ["security", "backdoor", "scan", str(model)])
    assert res.exit_code == 0 and "threshold" in res.output


def test_cli_rejects_a_file_that_is_not_a_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a model")
    code = "import sys; from aigclab.cli import main; sys.argv[0] = 'aigclab'; main()"
    res = subprocess.run(
        [sys.executable, "-c", code, "security", "backdoor", "scan", str(bogus)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2
    assert "bogus.safetensors" in res.stderr and "Traceback" not in res.stderr
