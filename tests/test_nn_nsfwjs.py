"""nsfwjs backbones: the torch ports against TensorFlow.js's own outputs, the converter and its errors.

The fixture ``fixtures/nsfwjs_tfjs.npz`` was made once by ``scripts/make_nsfwjs_fixture.py`` (the
pure-JS CPU backend of @tensorflow/tfjs 4.22.0 running nsfwjs@4.4.0's bundles). The port runs with
the converted weights, which keep the published uint8 values and dequantise them exactly as
TensorFlow.js does, so both sides use bit-identical float32 weights; what differs is only float32
arithmetic order. MobileNetV2 uses the shipped file; InceptionV3 the user's fetched cache.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aigclab.cli import app
from aigclab.errors import AigclabError, ConfigError, DataError
from aigclab.nn import create_backbone
from aigclab.nn.nsfwjs import (
    compare_with_reference,
    load_quantized,
    nsfwjs_weights_path,
    save_quantized,
    shipped_weights_path,
)
from aigclab.nn.nsfwjs_fetch import _check_topology, read_tarball
from aigclab.nn.tfjs import QuantTensor, decode_weights, parse_js_literal, read_bundle_export

FIXTURE = Path(__file__).parent / "fixtures" / "nsfwjs_tfjs.npz"
TOL = 1e-5  # max abs difference, relative to the reference's scale where it exceeds 1


def _compare(net: str, folded: bool = False) -> dict[str, float]:
    """Max abs difference port vs TensorFlow.js for every reference array of `net` in the fixture;
    `folded`: the inference-only port (BatchNorm folded, padded stride-2 convs widened)."""
    with np.load(FIXTURE) as fx:
        arrays = {k: fx[k] for k in fx.files if k.startswith(f"{net}/")}
    bb = create_backbone(f"{net}-nsfwjs")
    diffs = compare_with_reference(bb.for_inference() if folded else bb, arrays)
    assert len(diffs) == len(arrays) - sum(k.endswith("/input") for k in arrays) > 10
    for key, (diff, scale) in diffs.items():
        assert diff <= TOL * max(1.0, scale), f"{key}: {diff:.2e}"
    return {k: d for k, (d, _) in diffs.items()}


@pytest.mark.parametrize("folded", [False, True])
def test_mobilenetv2_matches_tfjs(folded: bool) -> None:
    worst = _compare("mobilenetv2", folded)
    assert any("/map/probs" in k for k in worst) and any("97x113/map/block5" in k for k in worst)
    assert max(v for k, v in worst.items() if "/mean/" in k or "pooled" in k) < 2e-5


@pytest.mark.parametrize("folded", [False, True])
def test_inceptionv3_matches_tfjs(folded: bool) -> None:
    if not nsfwjs_weights_path("inceptionv3").is_file():
        pytest.skip("InceptionV3 weights not converted here; run `aigclab models fetch nsfwjs`")
    worst = _compare("inceptionv3", folded)
    assert max(worst.values()) < 1e-5


def test_inference_port_has_no_batchnorm_or_padding_copies() -> None:
    bb = create_backbone("mobilenetv2-nsfwjs").for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bb.modules())
    assert not any(p.requires_grad for p in bb.parameters()) and not bb.training
    widened = [m for m in bb.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (4, 4)]
    assert len(widened) == 5  # the stem and the four stride-2 depthwise convolutions
    assert all(float(m.weight[:, :, 0].abs().max()) == 0.0 for m in widened)


def test_mobilenetv2_features_any_size_and_layers() -> None:
    bb = create_backbone("mobilenetv2-nsfwjs")
    imgs = np.random.default_rng(0).integers(0, 256, (3, 40, 57, 3), dtype=np.uint8)
    assert bb.features(imgs, layer="block5").shape == (3, 32)
    assert bb.features(imgs, layer="pooled").shape == (3, 1280)
    probs = bb.features(imgs, layer="probs")
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert bb.feature_maps(imgs[:1], "block1").shape == (
        1,
        24,
        10,
        14,
    )  # 57 -> 28 -> 14 (pad right, valid stride 2)
    with pytest.raises(AigclabError, match="no layer 'mixed3'"):
        bb.features(imgs, layer="mixed3")


def test_inceptionv3_small_inputs_and_missing_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIGCLAB_CACHE", str(tmp_path))
    with pytest.raises(AigclabError, match="aigclab models fetch nsfwjs"):
        create_backbone("inceptionv3-nsfwjs")
    bb = create_backbone("inceptionv3-nsfwjs", pretrained=False)
    imgs = np.zeros((2, 32, 32, 3), np.uint8)
    assert bb.preprocess(imgs).shape[-1] == 75  # below the stem's minimum, images are upsampled
    assert bb.features(imgs, layer="mixed2").shape == (2, 288)


def test_tfjs_literal_and_bundle_parsing() -> None:
    assert parse_js_literal('{a:[1,.5,-2e-1],b:!0,c:!1,"d e":null,f:"x\\"y"}') == {
        "a": [1, 0.5, -0.2], "b": True, "c": False, "d e": None, "f": 'x"y'}  # fmt: skip
    bundle = "!function(e){}(function(){return{1:[function(e,a,n){a.exports={k:[2,3]}},{}]},{},[1])(1)});"
    assert read_bundle_export(bundle) == {"k": [2, 3]}
    with pytest.raises(DataError, match="expected"):
        parse_js_literal("{a:[1,2}")
    with pytest.raises(DataError, match="not a browserify bundle"):
        read_bundle_export("module.exports = 1")


def test_decode_weights_uses_the_tfjs_rule() -> None:
    q = np.arange(6, dtype=np.uint8) * 40
    shard = base64.b64encode(q.tobytes() + bytes([7])).decode()
    manifest = [{"paths": ["s1"], "weights": [
        {"name": "a/kernel", "shape": [2, 3], "dtype": "float32",
         "quantization": {"min": -0.3, "scale": 0.01, "dtype": "uint8"}},
        {"name": "a/bias", "shape": [1], "dtype": "float32",
         "quantization": {"min": 1.0, "scale": 0.5, "dtype": "uint8"}}]}]  # fmt: skip
    w = decode_weights(manifest, {"s1": shard})
    expect = (q.astype(np.float64) * 0.01 - 0.3).astype(np.float32).reshape(2, 3)
    np.testing.assert_array_equal(w["a/kernel"].dequantize(), expect)
    assert w["a/bias"].dequantize()[0] == 4.5
    manifest[0]["weights"][1]["shape"] = [2]
    with pytest.raises(DataError, match="ends early"):
        decode_weights(manifest, {"s1": shard})
    with pytest.raises(DataError, match="missing"):
        decode_weights(manifest, {})


def test_quantized_file_roundtrip_and_errors(tmp_path: Path) -> None:
    q = np.array([[0, 255], [1, 128]], np.uint8)
    path = tmp_path / "w.safetensors"
    save_quantized({"x/kernel": QuantTensor(q, -1.25, 0.1)}, path, {"source": "test"})
    got = load_quantized(path)["x/kernel"]
    np.testing.assert_array_equal(got, (q * 0.1 - 1.25).astype(np.float32))
    with pytest.raises(ConfigError, match=r"not a \.safetensors"):
        load_quantized(tmp_path / "w.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(ConfigError, match=r"bad\.safetensors"):
        create_backbone("mobilenetv2-nsfwjs", weights=tmp_path / "bad.safetensors")
    with pytest.raises(ConfigError, match="do not fit"):
        create_backbone("mobilenetv2-nsfwjs", weights=path)


def test_shipped_weights_have_provenance_and_licence() -> None:
    folder = shipped_weights_path().parent
    card = json.loads((folder / "mobilenetv2-nsfwjs.json").read_text())
    assert "nsfwjs@4.4.0" in card["source"] and "ImageNet" in card["training"]
    assert "MIT License" in (folder / "LICENSE-nsfwjs.txt").read_text()
    assert 2.0 < shipped_weights_path().stat().st_size / 2**20 < 4.6


def test_fetch_errors_are_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "nsfwjs-4.4.0.tgz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz"):
        pass
    fake.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="sha512 does not match"):
        read_tarball(fake)
    with pytest.raises(AigclabError, match="cannot reach the npm registry"):
        read_tarball(registry="http://127.0.0.1:9", timeout=5)
    result = CliRunner().invoke(app, ["models", "fetch", "nsfwjs", "--tarball", str(tmp_path / "none.tgz")])
    assert result.exit_code != 0 and "not a regular file" in str(result.exception)
    listing = CliRunner().invoke(app, ["models", "list"])
    assert listing.exit_code == 0 and "mobilenetv2-nsfwjs" in listing.output and "shipped" in listing.output


def test_topology_check_names_the_difference() -> None:
    layers = [{"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [None, 224, 224, 3]}},
              {"class_name": "ZeroPadding2D", "config": {"name": "block_1_pad", "padding": [[1, 1], [1, 1]]}}]  # fmt: skip
    with pytest.raises(DataError, match="block_1_pad: padding"):
        _check_topology("mobilenetv2", {"model_config": {"config": {"layers": layers}}})
    layers[1]["config"]["padding"] = [[0, 1], [0, 1]]
    _check_topology("mobilenetv2", {"model_config": {"config": {"layers": layers}}})


def test_inception_nsfwjs_frechet_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The feature net is the backbone's pooled InceptionV3 feature at the chosen size (torchmetrics'
    2048-d matrix square root takes ~40 s here, so the full FID runs in the benchmark, not in this test)."""
    from aigclab.diffusion.fid import feature_net

    with pytest.raises(AigclabError, match="whole number"):
        feature_net("inception-nsfwjs:big")
    if not nsfwjs_weights_path("inceptionv3").is_file():
        pytest.skip("InceptionV3 weights not converted here; run `aigclab models fetch nsfwjs`")
    net = feature_net("inception-nsfwjs:96")
    imgs = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    feats = net(torch.from_numpy(imgs).permute(0, 3, 1, 2))
    assert net.num_features == 2048 and feats.shape == (3, 2048)
    direct = create_backbone("inceptionv3-nsfwjs", input_size=96).features(imgs, "pooled")
    np.testing.assert_array_equal(feats.numpy(), direct)
    monkeypatch.setenv("AIGCLAB_CACHE", str(tmp_path))
    with pytest.raises(AigclabError, match="aigclab models fetch nsfwjs"):
        feature_net("inception-nsfwjs")


def test_converter_reproduces_the_shipped_file(tmp_path: Path) -> None:
    """Set AIGCLAB_NSFWJS_TARBALL to a local nsfwjs-4.4.0.tgz (`npm pack nsfwjs@4.4.0`) to run this."""
    import os

    tarball = os.environ.get("AIGCLAB_NSFWJS_TARBALL")
    if not tarball:
        pytest.skip("AIGCLAB_NSFWJS_TARBALL not set (the converter needs the npm tarball)")
    result = CliRunner().invoke(
        app,
        ["models", "fetch", "nsfwjs", "--tarball", tarball, "--out", str(tmp_path), "--net", "mobilenetv2"],
    )
    assert result.exit_code == 0, result.output
    written = tmp_path / "nsfwjs-4.4.0" / "mobilenetv2.safetensors"
    assert written.read_bytes() == shipped_weights_path().read_bytes()
    assert (tmp_path / "nsfwjs-4.4.0" / "LICENSE-nsfwjs.txt").read_text().startswith("MIT License")
