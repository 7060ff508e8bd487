"""Torch ports of two Keras image classifiers (Keras 2.2 ``applications`` graphs plus a dense head).

Both take RGB in [0, 1] (N, 3, H, W), work at any input size their strides allow, and name every
torch layer after its Keras layer, so `load_keras_weights` fills them from Keras weight names.

- `KerasMobileNetV2` (alpha 1.0, 224 px native): ZeroPadding ((0, 1), (0, 1)) before the stem conv
  and every stride-2 depthwise conv, BatchNorm eps 1e-3, ReLU6. Stages ``block0`` (Keras
  ``expanded_conv``) ... ``block16``, then ``Conv_1`` (1280) -> ``pooled``.
- `KerasInceptionV3` (299 px native): conv + BatchNorm (eps 1e-3, no scale) + ReLU units, 'same'
  average pooling that excludes the padding from the mean. Stages ``mixed0`` ... ``mixed10`` -> ``pooled``.

The head (global mean -> Dense 256 relu -> Dense 128 relu -> Dense 5 softmax) gives ``probs``; at the
native size the Keras model's 7x7 / 8x8 average pooling is exactly that global mean.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from aigclab.errors import ConfigError

__all__ = ["KerasInceptionV3", "KerasMobileNetV2", "fold_batchnorm", "keras_to_torch", "load_keras_weights"]


def _through_blocks(
    x: torch.Tensor, blocks: nn.ModuleList, prefix: str, wanted: set[str], out: dict[str, torch.Tensor]
) -> torch.Tensor | None:
    """Run `blocks` in order, keeping the wanted maps ``<prefix><i>`` in `out`; None once all are kept."""
    for i, block in enumerate(blocks):
        if not wanted - out.keys():
            return None
        x = block(x)
        if f"{prefix}{i}" in wanted:
            out[f"{prefix}{i}"] = x
    return x


class ConvBN(nn.Module):
    """Keras Conv2D/DepthwiseConv2D (no bias) + BatchNormalization (eps 1e-3) + optional ReLU/ReLU6."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: tuple[int, int],
        stride: int = 1,
        same: bool = True,
        depthwise: bool = False,
        act: str | None = "relu6",
        pad01: bool = False,
    ):
        super().__init__()
        self.pad01 = pad01  # Keras ZeroPadding2D(((0, 1), (0, 1))) before the conv
        pad = (kernel[0] // 2, kernel[1] // 2) if same else (0, 0)
        groups = cin if depthwise else 1
        self.conv = nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(_pad01(x) if self.pad01 else x))
        if not torch.is_grad_enabled():  # x is this layer's own fresh tensor: activate it in place
            return x.clamp_(0.0, 6.0) if self.act == "relu6" else F.relu_(x) if self.act == "relu" else x
        if self.act == "relu6":
            return x.clamp(0.0, 6.0)
        return F.relu(x) if self.act == "relu" else x


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every `ConvBN`'s BatchNorm into its convolution, in place, for inference only.

    A 3x3 stride-2 convolution after a bottom/right zero pad becomes a 4x4 one with a zero first row
    and column and one pixel of padding all round: the same windows, without copying the padded input.
    The outputs stay those of the eval-mode model up to float rounding (a relative 1e-6); MobileNetV2
    runs in about a third of the CPU time (BatchNorm, the activation and the padding were each a pass
    over memory as long as the convolution's). Training the folded model is not training the original.
    """
    model.eval()
    for module in model.modules():
        if not isinstance(module, ConvBN) or not isinstance(module.bn, nn.BatchNorm2d):
            continue
        conv = fuse_conv_bn_eval(module.conv, module.bn)
        if module.pad01 and conv.kernel_size == (3, 3) and conv.stride == (2, 2) and conv.padding == (0, 0):
            wide = nn.Conv2d(conv.in_channels, conv.out_channels, 4, 2, 1, groups=conv.groups)
            with torch.no_grad():
                wide.weight.zero_()
                wide.weight[:, :, 1:, 1:] = conv.weight
                assert conv.bias is not None and wide.bias is not None  # folding always gives a bias
                wide.bias.copy_(conv.bias)
            conv, module.pad01 = wide, False
        module.conv, module.bn = conv, nn.Identity()
    return model.requires_grad_(False)


def _pad01(x: torch.Tensor) -> torch.Tensor:
    """Keras ZeroPadding2D(((0, 1), (0, 1))): one zero row at the bottom, one column at the right."""
    return F.pad(x, (0, 1, 0, 1))


class Head(nn.Module):
    """nsfwjs's classifier: Dense 256 relu -> Dense 128 relu -> Dense 5 softmax on the pooled vector."""

    def __init__(self, cin: int):
        super().__init__()
        self.dense_1, self.dense_2, self.dense_3 = nn.Linear(cin, 256), nn.Linear(256, 128), nn.Linear(128, 5)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.dense_2(F.relu(self.dense_1(pooled))))
        return torch.softmax(self.dense_3(x), dim=1)


class InvertedResidual(nn.Module):
    def __init__(self, index: int, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.prefix = f"block_{index}_" if index else "expanded_conv_"
        self.expand = ConvBN(cin, mid, (1, 1)) if expand != 1 else None
        self.depthwise = ConvBN(mid, mid, (3, 3), stride, same=stride == 1, depthwise=True, pad01=stride == 2)
        self.project = ConvBN(mid, cout, (1, 1), act=None)
        self.residual = stride == 1 and cin == cout

    def keras_layers(self) -> Iterator[tuple[str, nn.Module]]:
        if self.expand is not None:
            yield f"{self.prefix}expand", self.expand
        yield f"{self.prefix}depthwise", self.depthwise
        yield f"{self.prefix}project", self.project

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


# (expansion, channels, repeats, first stride) of MobileNetV2, alpha 1.0
_MOBILENET_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                     (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


class KerasMobileNetV2(nn.Module):
    layer_names = (*(f"block{i}" for i in range(17)), "pooled", "probs")

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBN(3, 32, (3, 3), 2, same=False, pad01=True)
        blocks: list[InvertedResidual] = []
        cin = 32
        for expand, cout, repeats, stride in _MOBILENET_STAGES:
            for r in range(repeats):
                blocks.append(InvertedResidual(len(blocks), cin, cout, stride if r == 0 else 1, expand))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.top = ConvBN(320, 1280, (1, 1))
        self.head = Head(1280)

    def keras_layers(self) -> Iterator[tuple[str, nn.Module]]:
        yield "Conv1", self.stem
        for block in self.blocks:
            yield from block.keras_layers()  # type: ignore[operator]
        yield "Conv_1", self.top
        yield from ((name, getattr(self.head, name)) for name in ("dense_1", "dense_2", "dense_3"))

    def forward_maps(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """Feature maps (N, C, H, W) of ``blockK``; (N, C) for ``pooled``/``probs``; stops at the deepest."""
        out: dict[str, torch.Tensor] = {}
        wanted = set(layers)
        last = _through_blocks(self.stem(x), self.blocks, "block", wanted, out)
        if last is not None and wanted - out.keys():
            pooled = self.top(last).mean(dim=(2, 3))
            out["pooled"] = pooled
            if "probs" in wanted:
                out["probs"] = self.head(pooled)
        return {k: out[k] for k in layers}


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool: int):
        super().__init__()
        self.b1 = ConvBN(cin, 64, (1, 1), act="relu")
        self.b5 = _unit_chain(cin, [(48, (1, 1), 1, True), (64, (5, 5), 1, True)])
        self.b3 = _unit_chain(cin, [(64, (1, 1), 1, True), (96, (3, 3), 1, True), (96, (3, 3), 1, True)])
        self.bp = ConvBN(cin, pool, (1, 1), act="relu")

    def units(self) -> list[nn.Module]:  # Keras creation order
        return [self.b1, *self.b5, *self.b3, self.bp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b5(x), self.b3(x), self.bp(_avg_same(x))], 1)


class InceptionB(nn.Module):  # mixed3: 35 -> 17
    def __init__(self, cin: int):
        super().__init__()
        self.b3 = ConvBN(cin, 384, (3, 3), 2, same=False, act="relu")
        self.b3d = _unit_chain(cin, [(64, (1, 1), 1, True), (96, (3, 3), 1, True), (96, (3, 3), 2, False)])

    def units(self) -> list[nn.Module]:
        return [self.b3, *self.b3d]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b3(x), self.b3d(x), F.max_pool2d(x, 3, 2)], 1)


def _unit_chain(cin: int, specs: list[tuple[int, tuple[int, int], int, bool]]) -> nn.Sequential:
    """Keras conv2d_bn units in a row: (filters, kernel, stride, 'same' padding)."""
    mods = []
    for cout, kernel, stride, same in specs:
        mods.append(ConvBN(cin, cout, kernel, stride, same=same, act="relu"))
        cin = cout
    return nn.Sequential(*mods)


class InceptionC(nn.Module):  # mixed4..7: 7x1 / 1x7 factorised
    def __init__(self, c7: int):
        super().__init__()
        self.b1 = ConvBN(768, 192, (1, 1), act="relu")
        self.b7 = _unit_chain(768, [(c7, (1, 1), 1, True), (c7, (1, 7), 1, True), (192, (7, 1), 1, True)])
        self.b7d = _unit_chain(768, [(c7, (1, 1), 1, True), (c7, (7, 1), 1, True), (c7, (1, 7), 1, True),
                                     (c7, (7, 1), 1, True), (192, (1, 7), 1, True)])  # fmt: skip
        self.bp = ConvBN(768, 192, (1, 1), act="relu")

    def units(self) -> list[nn.Module]:
        return [self.b1, *self.b7, *self.b7d, self.bp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b7(x), self.b7d(x), self.bp(_avg_same(x))], 1)


class InceptionD(nn.Module):  # mixed8: 17 -> 8
    def __init__(self) -> None:
        super().__init__()
        self.b3 = _unit_chain(768, [(192, (1, 1), 1, True), (320, (3, 3), 2, False)])
        self.b7 = _unit_chain(768, [(192, (1, 1), 1, True), (192, (1, 7), 1, True), (192, (7, 1), 1, True),
                                    (192, (3, 3), 2, False)])  # fmt: skip

    def units(self) -> list[nn.Module]:
        return [*self.b3, *self.b7]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b3(x), self.b7(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):  # mixed9, mixed10
    def __init__(self, cin: int):
        super().__init__()
        self.b1 = ConvBN(cin, 320, (1, 1), act="relu")
        self.b3 = ConvBN(cin, 384, (1, 1), act="relu")
        self.b3a, self.b3b = ConvBN(384, 384, (1, 3), act="relu"), ConvBN(384, 384, (3, 1), act="relu")
        self.bd = _unit_chain(cin, [(448, (1, 1), 1, True), (384, (3, 3), 1, True)])
        self.bda, self.bdb = ConvBN(384, 384, (1, 3), act="relu"), ConvBN(384, 384, (3, 1), act="relu")
        self.bp = ConvBN(cin, 192, (1, 1), act="relu")

    def units(self) -> list[nn.Module]:
        return [self.b1, self.b3, self.b3a, self.b3b, *self.bd, self.bda, self.bdb, self.bp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3, bd = self.b3(x), self.bd(x)
        parts = [self.b1(x), self.b3a(b3), self.b3b(b3), self.bda(bd), self.bdb(bd), self.bp(_avg_same(x))]
        return torch.cat(parts, 1)


def _avg_same(x: torch.Tensor) -> torch.Tensor:
    """Keras AveragePooling2D(3, strides=1, padding='same'): padding does not count in the mean."""
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class KerasInceptionV3(nn.Module):
    layer_names = (*(f"mixed{i}" for i in range(11)), "pooled", "probs")
    min_size = 75

    def __init__(self) -> None:
        super().__init__()
        stem = [(32, (3, 3), 2, False), (32, (3, 3), 1, False), (64, (3, 3), 1, True), (80, (1, 1), 1, False),
                (192, (3, 3), 1, False)]  # fmt: skip
        self.stem = _unit_chain(3, stem)
        mixed = [InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64), InceptionB(288)]
        mixed += [InceptionC(c7) for c7 in (128, 160, 160, 192)]
        mixed += [InceptionD(), InceptionE(1280), InceptionE(2048)]
        self.mixed = nn.ModuleList(mixed)
        self.head = Head(2048)

    def keras_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """Keras names ``conv2d_K``/``batch_normalization_K`` count conv units in creation order."""
        units = [*self.stem, *(u for block in self.mixed for u in block.units())]  # type: ignore[operator]
        yield from ((f"unit_{k}", unit) for k, unit in enumerate(units, 1))
        yield from ((name, getattr(self.head, name)) for name in ("dense_1", "dense_2", "dense_3"))

    def forward_maps(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        wanted = set(layers)
        x = self.stem[1](self.stem[0](x))
        x = F.max_pool2d(self.stem[2](x), 3, 2)
        x = F.max_pool2d(self.stem[4](self.stem[3](x)), 3, 2)
        last = _through_blocks(x, self.mixed, "mixed", wanted, out)
        if last is not None and wanted - out.keys():
            out["pooled"] = last.mean(dim=(2, 3))
            if "probs" in wanted:
                out["probs"] = self.head(out["pooled"])
        return {k: out[k] for k in layers}


def keras_to_torch(kind: str, value: np.ndarray) -> torch.Tensor:
    """A Keras kernel in torch layout: conv (kh, kw, in, out) -> (out, in, kh, kw); depthwise
    (kh, kw, in, 1) -> (in, 1, kh, kw); dense (in, out) -> (out, in); vectors unchanged."""
    t = torch.from_numpy(np.ascontiguousarray(value))
    if kind == "kernel" and t.ndim == 4:
        return t.permute(3, 2, 0, 1).contiguous()
    if kind == "depthwise_kernel":
        return t.permute(2, 3, 0, 1).contiguous()
    if kind == "kernel" and t.ndim == 2:
        return t.t().contiguous()
    return t


def _inception_keras_name(name: str) -> str:
    layer, _, param = name.partition("/")
    if param in ("kernel",) and layer.startswith("conv2d_"):
        return f"unit_{layer.removeprefix('conv2d_')}/kernel"
    if layer.startswith("batch_normalization_"):
        return f"unit_{layer.removeprefix('batch_normalization_')}/bn_{param}"
    return name


def load_keras_weights(model: KerasMobileNetV2 | KerasInceptionV3, weights: Mapping[str, np.ndarray]) -> None:
    """Fill `model` from Keras weight names (``layer/kernel``, ``layer_BN/gamma``, ``dense_1/bias`` ...);
    every torch parameter and buffer must be covered and every Keras weight used."""
    if isinstance(model, KerasInceptionV3):
        weights = {_inception_keras_name(k): v for k, v in weights.items()}
    mobilenet = isinstance(model, KerasMobileNetV2)
    targets: dict[str, tuple[torch.Tensor, str]] = {}
    for name, module in model.keras_layers():
        if isinstance(module, nn.Linear):
            targets[f"{name}/kernel"] = (module.weight, "kernel")
            targets[f"{name}/bias"] = (module.bias, "bias")
            continue
        assert isinstance(module, ConvBN)
        kind = "depthwise_kernel" if module.conv.groups > 1 else "kernel"
        targets[f"{name}/{kind}"] = (module.conv.weight, kind)
        bn = {"Conv1": "bn_Conv1/", "Conv_1": "Conv_1_bn/"}.get(
            name, f"{name}_BN/" if mobilenet else f"{name}/bn_"
        )
        if not isinstance(module.bn, nn.BatchNorm2d):
            raise ConfigError(f"{name}: BatchNorm already folded; load weights into a fresh model")
        assert module.bn.running_mean is not None and module.bn.running_var is not None
        for param, tensor in (("gamma", module.bn.weight), ("beta", module.bn.bias),
                              ("moving_mean", module.bn.running_mean),
                              ("moving_variance", module.bn.running_var)):  # fmt: skip
            targets[bn + param] = (tensor, param)
    # InceptionV3's BatchNorm has no scale: its gamma is 1
    missing = [k for k in targets if k not in weights and (mobilenet or not k.endswith("gamma"))]
    extra = [k for k in weights if k not in targets]
    if missing or extra:
        raise ConfigError(
            f"weights do not fit {type(model).__name__}: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    with torch.no_grad():
        for key, (tensor, kind) in targets.items():
            if key not in weights:
                tensor.fill_(1.0)
                continue
            value = keras_to_torch(kind, np.asarray(weights[key], np.float32))
            if value.shape != tensor.shape:
                raise ConfigError(
                    f"weight {key}: shape {tuple(value.shape)} does not fit {tuple(tensor.shape)}"
                )
            tensor.copy_(value)
