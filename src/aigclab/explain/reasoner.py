"""A small trainable anomaly reasoner: image -> AnomReason quadruples.

A CNN encoder (seven 3x3 convolutions, four of stride 2, batch norm, ReLU; average- and max-pooled)
feeds three heads per anomaly kind of AnomReason-Mini: presence (a logit; its sigmoid is the quadruple's
confidence), region (a box, normalised coordinates) and severity (regressed on the 1-5 scale). The text
of each quadruple is *composed* from what the network predicts — kind, where the box lies, severity —
with the reasoner's own templates (`_COMPOSE`), which are worded differently from the ground truth's,
so SemAP/SemF1 measure it through semantic matching, not string equality.

Train with ``aigclab explain train-reasoner`` (fixed seed); the shipped weights are
``assets/explain/anom_reasoner.safetensors`` (fp16) with their config beside them.

Example:
    >>> from aigclab.explain.reasoner import load_reasoner  # doctest: +SKIP
    >>> quads = load_reasoner().predict([image])[0]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aigclab._config import Config
from aigclab.errors import ConfigError
from aigclab.explain.anomreason_mini import KINDS, SIZE, Scene, make_split
from aigclab.explain.quadruples import Quadruple

__all__ = [
    "AnomalyReasoner",
    "ReasonerConfig",
    "ReasonerNet",
    "load_reasoner",
    "reasoner_path",
    "train_reasoner",
]

# name, phenomenon, reasoning per kind; {pos} is where the predicted box lies.
_COMPOSE = {
    "shadow_direction": (
        "tree {pos}",
        "the tree's shadow points toward the sun",
        "shadows must fall away from the light source",
    ),
    "floating": (
        "ball {pos}",
        "the ball floats in the air above its shadow without support",
        "unsupported objects fall to the ground",
    ),
    "reflection_mismatch": (
        "reflection in the pond {pos}",
        "the water's reflection does not match the post",
        "a reflection is a mirrored copy of the object",
    ),
    "impossible_count": (
        "clock {pos}",
        "the clock dial has the wrong number of hour marks",
        "a clock shows twelve hour marks",
    ),
    "scale_inconsistency": (
        "person {pos}",
        "the person is taller than the nearby house",
        "people are smaller than houses",
    ),
    "garbled_text": (
        "sign {pos}",
        "the sign's letters are garbled and mirrored",
        "real signs show readable words",
    ),
}


class ReasonerConfig(Config):
    width: int = 16
    n_train: int = 3000
    n_val: int = 300
    epochs: int = 14
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    min_confidence: float = 0.5  # quadruples are emitted for kinds at or above this presence probability


class ReasonerNet(nn.Module):
    def __init__(self, width: int = 16, n_kinds: int = len(KINDS)):
        super().__init__()
        chans = [3, width, width, 2 * width, 2 * width, 4 * width, 4 * width, 6 * width]
        strides = [2, 1, 2, 1, 2, 1, 2]
        layers: list[nn.Module] = []
        for cin, cout, s in zip(chans[:-1], chans[1:], strides, strict=True):
            layers += [nn.Conv2d(cin, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.encoder = nn.Sequential(*layers)
        self.neck = nn.Sequential(nn.Linear(2 * chans[-1], 128), nn.ReLU(inplace=True))
        self.presence = nn.Linear(128, n_kinds)
        self.region = nn.Linear(128, 4 * n_kinds)
        self.severity = nn.Linear(128, n_kinds)
        self.n_kinds = n_kinds

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.encoder(x.float() / 255.0)
        h = self.neck(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))
        return {
            "presence": self.presence(h),
            "region": torch.sigmoid(self.region(h)).view(-1, self.n_kinds, 4),
            "severity": 1.0 + 4.0 * torch.sigmoid(self.severity(h)),
        }


def _to_tensor(images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    from aigclab.degradations import resize

    arr = np.stack(
        [im if im.shape[:2] == (SIZE, SIZE) else resize(im, (SIZE, SIZE), "bilinear") for im in images]
    )
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # uint8; the net divides by 255


def _targets(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    k = len(KINDS)
    present, region, severity = (
        torch.zeros(len(scenes), k),
        torch.zeros(len(scenes), k, 4),
        torch.ones(len(scenes), k),
    )
    for i, s in enumerate(scenes):
        for q in s.anomalies:
            j = KINDS.index(str(q.kind))
            present[i, j] = 1.0
            region[i, j] = torch.tensor(q.region or [0, 0, SIZE, SIZE], dtype=torch.float32) / SIZE
            severity[i, j] = float(q.severity)
    return {"presence": present, "region": region, "severity": severity}


def _loss(out: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor]) -> torch.Tensor:
    m = tgt["presence"]
    bce = nn.functional.binary_cross_entropy_with_logits(out["presence"], m)
    denom = m.sum().clamp(min=1.0)
    box = ((out["region"] - tgt["region"]).abs().sum(-1) * m).sum() / denom
    sev = (((out["severity"] - tgt["severity"]) / 4.0) ** 2 * m).sum() / denom
    return bce + box + sev


def _where(box: list[int]) -> str:
    cx = (box[0] + box[2]) / 2 / SIZE
    return "on the left" if cx < 1 / 3 else "in the middle" if cx < 2 / 3 else "on the right"


class AnomalyReasoner:
    """The trained network plus text composition; `predict(images)` gives quadruples per image."""

    name = "reasoner"

    def __init__(self, net: ReasonerNet, cfg: ReasonerConfig):
        self.net, self.cfg = net.eval(), cfg

    @torch.inference_mode()
    def predict(self, images: list[np.ndarray]) -> list[list[Quadruple]]:
        out = []
        for start in range(0, len(images), 64):
            o = self.net(_to_tensor(images[start : start + 64]))
            probs = torch.sigmoid(o["presence"]).numpy()
            for b in range(len(probs)):
                h, w = images[start + b].shape[:2]
                scale = np.array([w, h, w, h]) / 1.0
                quads = []
                for j in np.argsort(-probs[b]):
                    if probs[b, j] < self.cfg.min_confidence:
                        break
                    box = [int(v) for v in (o["region"][b, j].numpy() * scale).round()]
                    name, phen, reason = _COMPOSE[KINDS[j]]
                    sev = int(np.clip(round(float(o["severity"][b, j])), 1, 5))
                    quads.append(
                        Quadruple(
                            name=name.format(pos=_where([v * SIZE // max(w, 1) for v in box])),
                            phenomenon=phen,
                            reasoning=reason,
                            severity=sev,
                            region=box,
                            confidence=round(float(probs[b, j]), 4),
                            kind=KINDS[j],
                        )
                    )
                out.append(quads)
        return out


def reasoner_path() -> Path:
    return Path(str(resources.files("aigclab") / "assets" / "explain" / "anom_reasoner.safetensors"))


def _scenes_tensor(scenes: list[Scene]) -> torch.Tensor:
    return _to_tensor([s.image for s in scenes])


def train_reasoner(cfg: ReasonerConfig, out: Path | None = None, log: Any = print) -> AnomalyReasoner:
    """Train on AnomReason-Mini's train split (`cfg.n_train` scenes), validate on its val split, save fp16."""
    from safetensors.torch import save_file

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    train, val = make_split("train", cfg.n_train), make_split("val", cfg.n_val)
    x, t = _scenes_tensor(train), _targets(train)
    xv, tv = _scenes_tensor(val), _targets(val)
    net = ReasonerNet(cfg.width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * ((len(train) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps)
    t0 = time.time()
    for epoch in range(cfg.epochs):
        net.train()
        perm = torch.randperm(len(train), generator=gen)
        total = 0.0
        for start in range(0, len(train), cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            loss = _loss(net(x[idx]), {k: v[idx] for k, v in t.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        net.eval()
        with torch.inference_mode():
            ov = net(xv)
            val_loss = float(_loss(ov, tv))
            acc = float(((ov["presence"] > 0) == (tv["presence"] > 0.5)).float().mean())
        log(
            f"epoch {epoch + 1}/{cfg.epochs} train loss {total / len(train):.4f} val loss {val_loss:.4f} "
            f"val kind accuracy {acc:.3f} ({time.time() - t0:.0f} s)"
        )
    net.eval()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.half().contiguous() for k, v in net.state_dict().items() if v.is_floating_point()}, out
        )
        out.with_suffix(".json").write_text(cfg.model_dump_json(indent=1) + "\n")
    return AnomalyReasoner(net, cfg)


def load_reasoner(path: str | Path | None = None) -> AnomalyReasoner:
    """The reasoner saved at `path` (default: the shipped weights) with its config JSON beside it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path) if path else reasoner_path()
    cfg_path = path.with_suffix(".json")
    if not path.is_file() or not cfg_path.is_file():
        raise ConfigError(
            f"{path}: reasoner weights or their config {cfg_path.name} missing; "
            "run `aigclab explain train-reasoner`"
        )
    cfg = ReasonerConfig._validate(json.loads(cfg_path.read_text()), str(cfg_path))
    net = ReasonerNet(cfg.width)
    try:
        state = {k: v.float() for k, v in load_file(str(path)).items()}
    except SafetensorError as err:
        raise ConfigError(f"{path}: not a safetensors file ({err})") from None
    missing = net.load_state_dict(state, strict=False)
    if missing.unexpected_keys or any(not k.endswith("num_batches_tracked") for k in missing.missing_keys):
        raise ConfigError(f"{path}: not reasoner weights of width {cfg.width}")
    return AnomalyReasoner(net, cfg)
