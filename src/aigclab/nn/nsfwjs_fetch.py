"""Get nsfwjs@4.4.0 from the npm registry and convert its two Keras models to safetensors.

`fetch_nsfwjs()` downloads the package tarball over HTTPS (or reads one made by
``npm pack nsfwjs@4.4.0``), checks its pinned sha512, reads the TensorFlow.js bundles straight from the
tar archive (nothing is extracted or executed), checks that each model's graph is the one the torch
ports in `aigclab.nn.keras_ports` implement, and writes one safetensors file per network that keeps
the uint8 weights exactly as published (see `save_quantized`). The command is
``aigclab models fetch nsfwjs``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aigclab.errors import AigclabError, DataError
from aigclab.nn.tfjs import QuantTensor, decode_weights, read_bundle_export

__all__ = ["NETS", "NSFWJS_VERSION", "default_cache_dir", "fetch_nsfwjs", "read_package", "read_tarball"]

NSFWJS_VERSION = "4.4.0"
# `npm view nsfwjs@4.4.0 dist.integrity` (the registry's sha512 of the tarball), pinned.
NSFWJS_INTEGRITY = (
    "sha512-krC1fgeTLXtZwgdpKJ0jm7hqv0gTSRQQRL+FhOaxaJ9Wj92t42BO3csO2odwgTAgZgf2RvkwPtp0R8Aa7dc+MA=="
)
DEFAULT_REGISTRY = "https://registry.npmjs.org"
MAX_TARBALL = 64 << 20
# aigclab network name -> folder under the package's dist/models
NETS = {"mobilenetv2": "mobilenet_v2", "inceptionv3": "inception_v3"}


def default_cache_dir() -> Path:
    """``$AIGCLAB_CACHE`` or ``$XDG_CACHE_HOME/aigclab`` or ``~/.cache/aigclab``, plus ``models``."""
    root = os.environ.get("AIGCLAB_CACHE")
    if root:
        return Path(root) / "models"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "aigclab" / "models"


def _download(registry: str, timeout: float) -> bytes:
    url = f"{registry.rstrip('/')}/nsfwjs/-/nsfwjs-{NSFWJS_VERSION}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: bytes = response.read(MAX_TARBALL + 1)
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise AigclabError(
            f"cannot reach the npm registry at {url} ({reason}); get the file elsewhere with "
            f"`npm pack nsfwjs@{NSFWJS_VERSION}` and run `aigclab models fetch nsfwjs --tarball FILE`"
        ) from None
    if len(data) > MAX_TARBALL:
        raise DataError(f"{url}: larger than {MAX_TARBALL >> 20} MiB, not the nsfwjs package")
    return data


def _verify(data: bytes, source: str) -> None:
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != NSFWJS_INTEGRITY:
        raise DataError(f"{source}: sha512 does not match nsfwjs@{NSFWJS_VERSION} ({digest[:24]}...)")


def read_tarball(
    tarball: str | Path | None = None, registry: str | None = None, timeout: float = 60
) -> bytes:
    """The verified nsfwjs@4.4.0 tarball: from `tarball` (a local .tgz) or downloaded from `registry`."""
    if tarball is not None:
        path = Path(tarball)
        if not path.is_file():
            raise DataError(f"{path}: not a regular file")
        if path.stat().st_size > MAX_TARBALL:
            raise DataError(f"{path}: larger than {MAX_TARBALL >> 20} MiB, not the nsfwjs package")
        data, source = path.read_bytes(), str(path)
    else:
        registry = registry or os.environ.get("NPM_CONFIG_REGISTRY") or DEFAULT_REGISTRY
        data, source = _download(registry, timeout), registry
    _verify(data, source)
    return data


def read_package(data: bytes, net: str) -> tuple[dict[str, Any], dict[str, QuantTensor], str]:
    """(model.json, Keras weights, licence text) of network `net` from the tarball bytes."""
    folder = f"package/dist/models/{NETS[net]}/"
    texts: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and (member.name.startswith(folder) or member.name == "package/LICENSE"):
                handle = tar.extractfile(member)
                assert handle is not None
                texts[member.name] = handle.read().decode("utf-8")
    if folder + "model.min.js" not in texts:
        raise DataError(f"nsfwjs tarball: {folder}model.min.js is missing")
    model = read_bundle_export(texts[folder + "model.min.js"], f"{folder}model.min.js")
    shards = {
        name.removeprefix(folder).removesuffix(".min.js"): read_bundle_export(text, name)
        for name, text in texts.items()
        if name.startswith(folder + "group")
    }
    _check_topology(net, model["modelTopology"])
    return model, decode_weights(model["weightsManifest"], shards), texts.get("package/LICENSE", "")


def _check_topology(net: str, topology: dict[str, Any]) -> None:
    """Fail unless the graph has the settings the torch port assumes (see `aigclab.nn.keras_ports`)."""
    layers = topology["model_config"]["config"]["layers"]
    problems: list[str] = []
    for layer in layers:
        cls, cfg = layer["class_name"], layer["config"]
        if cls == "BatchNormalization":
            if (
                abs(cfg["epsilon"] - 1e-3) > 1e-9
                or cfg["scale"] != (net == "mobilenetv2")
                or not cfg["center"]
            ):
                problems.append(f"{cfg['name']}: epsilon/scale/center")
        elif cls == "ZeroPadding2D" and cfg["padding"] != [[0, 1], [0, 1]]:
            problems.append(f"{cfg['name']}: padding {cfg['padding']}")
        elif cls == "ReLU" and cfg.get("max_value") != 6:
            problems.append(f"{cfg['name']}: max_value {cfg.get('max_value')}")
        elif cls == "AveragePooling2D" and cfg["pool_size"] == [3, 3]:
            if cfg["padding"] != "same" or cfg["strides"] != [1, 1]:
                problems.append(f"{cfg['name']}: pooling {cfg['padding']} {cfg['strides']}")
        elif cls in ("Conv2D", "DepthwiseConv2D") and cfg["use_bias"]:
            problems.append(f"{cfg['name']}: conv with bias")
    size = {"mobilenetv2": 224, "inceptionv3": 299}[net]
    if layers[0]["config"]["batch_input_shape"] != [None, size, size, 3]:
        problems.append(f"input {layers[0]['config']['batch_input_shape']}")
    if problems:
        raise DataError(f"nsfwjs {net}: graph differs from the torch port: {'; '.join(problems[:4])}")


def fetch_nsfwjs(
    out_dir: str | Path | None = None,
    tarball: str | Path | None = None,
    nets: tuple[str, ...] = tuple(NETS),
    registry: str | None = None,
) -> dict[str, Path]:
    """Download (or read), verify and convert; returns network -> written safetensors path.

    Files: ``<out_dir>/nsfwjs-4.4.0/<net>.safetensors`` and ``LICENSE-nsfwjs.txt`` beside them
    (`out_dir` defaults to `default_cache_dir()`).
    """
    from aigclab.nn.nsfwjs import save_quantized

    unknown = [n for n in nets if n not in NETS]
    if unknown:
        raise AigclabError(f"unknown nsfwjs network {unknown[0]!r}; known: {', '.join(NETS)}")
    data = read_tarball(tarball, registry)
    folder = Path(out_dir) if out_dir is not None else default_cache_dir()
    folder = folder / f"nsfwjs-{NSFWJS_VERSION}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AigclabError(f"{folder}: cannot create the model folder ({err.strerror})") from None
    sha = NSFWJS_INTEGRITY
    written: dict[str, Path] = {}
    for net in nets:
        _, weights, licence = read_package(data, net)
        path = folder / f"{net}.safetensors"
        meta = {"source": f"npm nsfwjs@{NSFWJS_VERSION} dist/models/{NETS[net]}", "tarball_integrity": sha}
        save_quantized(weights, path, meta)
        (folder / "LICENSE-nsfwjs.txt").write_text(licence)
        written[net] = path
    return written
